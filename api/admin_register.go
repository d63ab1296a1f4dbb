package api

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"strings"
	"time"

	"engram/projections"
)

// Shared-secret registration, exactly as Synapse's
// /_synapse/admin/v1/register: GET returns a nonce; POST registers a user if
// its mac is the hex HMAC-SHA1, keyed with registration_shared_secret, of
//
//	nonce \x00 username \x00 password \x00 ("admin" | "notadmin") [\x00 user_type]
//
// A nonce is single use (deleted before the MAC is checked, valid or not)
// and expires after a minute. This works when open registration is off:
// it is how operators make the first (admin) account.

const (
	nonceLife = 60 * time.Second // Synapse's NONCE_TIMEOUT
	maxNonces = 10_000
)

func (s *Server) adminRegisterRoutes() {
	s.rt.handle("GET", "/_synapse/admin/v1/register", public, s.adminRegisterNonce)
	s.rt.handle("POST", "/_synapse/admin/v1/register", public, s.adminRegister)
}

// clearNoncesLocked drops expired nonces (and, past the cap, all of them:
// only an attacker holds ten thousand unused nonces).
func (a *accounts) clearNoncesLocked(now time.Time) {
	for n, t := range a.nonces {
		if now.Sub(t) > nonceLife {
			delete(a.nonces, n)
		}
	}
	if len(a.nonces) >= maxNonces {
		clear(a.nonces)
	}
}

func (s *Server) adminRegisterNonce(r *Req) error {
	var b [64]byte
	rand.Read(b[:])
	nonce := hex.EncodeToString(b[:])
	now := time.Now()
	a := s.accounts
	a.mu.Lock()
	a.clearNoncesLocked(now)
	a.nonces[nonce] = now
	a.mu.Unlock()
	return r.json(map[string]string{"nonce": nonce})
}

// takeNonce consumes a nonce, reporting whether it was valid.
func (a *accounts) takeNonce(nonce string) bool {
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.clearNoncesLocked(now)
	t, ok := a.nonces[nonce]
	delete(a.nonces, nonce)
	return ok && now.Sub(t) <= nonceLife
}

// SharedSecretMAC is the mac of a shared-secret registration request, as
// register_new_matrix_user computes it.
func SharedSecretMAC(secret, nonce, user, password string, admin bool, userType string) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(nonce))
	m.Write([]byte{0})
	m.Write([]byte(user))
	m.Write([]byte{0})
	m.Write([]byte(password))
	m.Write([]byte{0})
	if admin {
		m.Write([]byte("admin"))
	} else {
		m.Write([]byte("notadmin"))
	}
	if userType != "" {
		m.Write([]byte{0})
		m.Write([]byte(userType))
	}
	return hex.EncodeToString(m.Sum(nil))
}

type adminRegisterBody struct {
	Nonce                    *string `json:"nonce"`
	Username                 *string `json:"username"`
	Password                 *string `json:"password"`
	Admin                    any     `json:"admin"`
	UserType                 *string `json:"user_type"`
	Displayname              *string `json:"displayname"`
	Mac                      *string `json:"mac"`
	DeviceID                 string  `json:"device_id"`
	InitialDeviceDisplayName string  `json:"initial_device_display_name"`
	InhibitLogin             bool    `json:"inhibit_login"`
}

// truthy is Python's truth value of a JSON value (Synapse tests `if admin`).
func truthy(v any) bool {
	switch x := v.(type) {
	case bool:
		return x
	case float64:
		return x != 0
	case string:
		return x != ""
	case []any:
		return len(x) > 0
	case map[string]any:
		return len(x) > 0
	}
	return false
}

func (s *Server) adminRegister(r *Req) error {
	secret := s.cfg.RegistrationSharedSecret
	if secret == "" {
		return merr(400, "M_UNKNOWN", "Shared secret registration is not enabled")
	}
	var b adminRegisterBody
	if e := r.decode(&b); e != nil {
		return e
	}
	if b.Nonce == nil {
		return errBadJSON("nonce must be specified")
	}
	if !s.accounts.takeNonce(*b.Nonce) {
		return merr(400, "M_UNKNOWN", "unrecognised nonce")
	}
	if b.Username == nil {
		return errBadJSON("username must be specified")
	}
	if len(*b.Username) > 512 || strings.IndexByte(*b.Username, 0) >= 0 {
		return merr(400, "M_UNKNOWN", "Invalid username")
	}
	if b.Password == nil {
		return errBadJSON("password must be specified")
	}
	if len(*b.Password) > 512 || strings.IndexByte(*b.Password, 0) >= 0 {
		return merr(400, "M_UNKNOWN", "Invalid password")
	}
	userType := ""
	if b.UserType != nil {
		if userType = *b.UserType; userType != "support" && userType != "bot" {
			return merr(400, "M_UNKNOWN", "Invalid user type")
		}
	}
	if b.Mac == nil {
		return errBadJSON("mac must be specified")
	}
	admin := truthy(b.Admin)
	want := SharedSecretMAC(secret, *b.Nonce, *b.Username, *b.Password, admin, userType)
	if !hmac.Equal([]byte(want), []byte(*b.Mac)) {
		return errForbidden("HMAC incorrect")
	}

	if e := checkDeviceName(b.InitialDeviceDisplayName); e != nil {
		return e
	}
	localpart := strings.ToLower(*b.Username)
	if e := s.accounts.checkLocalpart(localpart); e != nil {
		return e
	}
	user := s.accounts.userID(localpart)
	hash, err := s.accounts.hash(*b.Password)
	if err != nil {
		return err
	}
	var extra []any
	if b.Displayname != nil && *b.Displayname != "" {
		extra = append(extra, &projections.ProfileRecord{UserID: user, Key: "displayname", Value: mustJSON(*b.Displayname), TS: nowMS()})
	}
	if err := s.accounts.createHashed(user, hash, admin, extra...); err != nil {
		return err
	}
	resp := map[string]any{"user_id": user, "home_server": s.cfg.ServerName}
	if !b.InhibitLogin {
		ss, err := s.accounts.login(user, b.DeviceID, b.InitialDeviceDisplayName, false)
		if err != nil {
			return err
		}
		ss.fields(resp)
	}
	return r.json(resp)
}
