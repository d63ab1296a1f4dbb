package api

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"engram/projections"
)

// accounts serializes account creation: a user ID is claimed in memory until
// its record is durable, so two concurrent registrations cannot both win.
type accounts struct {
	s *Server

	mu       sync.Mutex
	claimed  map[string]bool
	sessions map[string]time.Time // user-interactive auth sessions
}

func newAccounts(s *Server) *accounts {
	return &accounts{s: s, claimed: map[string]bool{}, sessions: map[string]time.Time{}}
}

var errUserInUse = merr(400, "M_USER_IN_USE", "User ID already taken.")

// validLocalpart reports whether a localpart is allowed for new users: the
// spec's user ID grammar restricted to lowercase, as Synapse does.
func validLocalpart(l string) bool {
	if l == "" || len(l) > 200 {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("._=-/+", c) >= 0) {
			return false
		}
	}
	return true
}

func (a *accounts) userID(localpart string) string { return "@" + localpart + ":" + a.s.cfg.ServerName }

// available reports whether a user ID can be registered.
func (a *accounts) available(user string) (bool, error) {
	a.mu.Lock()
	claimed := a.claimed[user]
	a.mu.Unlock()
	if claimed {
		return false, nil
	}
	_, err := a.s.store.Account(user)
	if errors.Is(err, projections.ErrNotFound) {
		return true, nil
	}
	return false, err
}

// create appends a new account. The password is hashed before the claim so
// the CPU-heavy work is outside the lock.
func (a *accounts) create(user, password string, admin bool) error {
	var hash string
	if password != "" {
		h, err := bcrypt.GenerateFromPassword([]byte(password), a.s.cfg.PasswordCost)
		if err != nil {
			return err
		}
		hash = string(h)
	}
	a.mu.Lock()
	if a.claimed[user] {
		a.mu.Unlock()
		return errUserInUse
	}
	a.claimed[user] = true
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.claimed, user)
		a.mu.Unlock()
	}()
	if _, err := a.s.store.Account(user); err == nil {
		return errUserInUse
	} else if !errors.Is(err, projections.ErrNotFound) {
		return err
	}
	rec, err := projections.Encode(&projections.AccountRecord{UserID: user, PasswordHash: hash, Admin: admin, TS: time.Now().UnixMilli()})
	if err != nil {
		return err
	}
	_, err = a.s.log.Append(rec)
	return err
}

// login issues a new access token for a device (new or existing).
func (a *accounts) login(user, deviceID, displayName string) (token, device string, err error) {
	if deviceID == "" {
		deviceID = randomID(10)
	}
	token = "eg_" + randomToken()
	rec, err := projections.Encode(&projections.LoginRecord{
		UserID: user, DeviceID: deviceID, TokenHash: tokenHash([]byte(token)),
		DisplayName: displayName, TS: time.Now().UnixMilli(),
	})
	if err != nil {
		return "", "", err
	}
	if _, err := a.s.log.Append(rec); err != nil {
		return "", "", err
	}
	return token, deviceID, nil
}

func (a *accounts) logout(user, device string, all bool) error {
	rec, err := projections.Encode(&projections.LogoutRecord{UserID: user, DeviceID: device, All: all})
	if err != nil {
		return err
	}
	_, err = a.s.log.Append(rec)
	return err
}

// checkPassword verifies a user's password.
func (a *accounts) checkPassword(user, password string) bool {
	acc, err := a.s.store.Account(user)
	if err != nil || acc.PasswordHash == "" {
		// Spend the same time as a real check so timing does not reveal users.
		bcrypt.CompareHashAndPassword(dummyHash, []byte(password))
		return false
	}
	return bcrypt.CompareHashAndPassword([]byte(acc.PasswordHash), []byte(password)) == nil
}

var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("engram-dummy"), bcrypt.MinCost)

// newSession starts a user-interactive auth session.
func (a *accounts) newSession() string {
	id := randomToken()
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	for k, t := range a.sessions { // bounded: sessions expire after 10 minutes
		if now.Sub(t) > 10*time.Minute {
			delete(a.sessions, k)
		}
	}
	a.sessions[id] = now
	return id
}

func (a *accounts) validSession(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.sessions[id]
	return ok
}

func (a *accounts) endSession(id string) {
	a.mu.Lock()
	delete(a.sessions, id)
	a.mu.Unlock()
}

func randomToken() string {
	var b [24]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// randomID returns n random uppercase letters (device IDs, as Synapse makes them).
func randomID(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		b[i] = 'A' + b[i]%26
	}
	return string(b)
}
