package api

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"engram/log"
	"engram/projections"
)

// AccountConfig configures registration, login, tokens and their rate limits.
// The zero value is a working default: no well-known documents, no
// registration tokens, no login tokens, refresh tokens with 5-minute access
// tokens, and DefaultRateLimits (loopback exempt).
type AccountConfig struct {
	// PublicBaseURL is the client-facing base URL, served as
	// /.well-known/matrix/client and in login responses' well_known.
	// Empty: /.well-known/matrix/client answers 404.
	PublicBaseURL string
	// WellKnownServer is the delegated "host:port" served as
	// /.well-known/matrix/server. Empty: 404.
	WellKnownServer string
	// RegistrationRequiresToken adds the m.login.registration_token stage to
	// open registration (Synapse's registration_requires_token).
	RegistrationRequiresToken bool
	// RegistrationTokens are tokens with unlimited uses from the
	// configuration file, valid beside those made with the admin API.
	RegistrationTokens []string
	// LoginToken enables POST /v1/login/get_token and the m.login.token login
	// type (Synapse's login_via_existing_session; off by default there too).
	LoginToken bool
	// AccessTokenLifetime is the lifetime of access tokens issued together
	// with a refresh token (Synapse's refreshable_access_token_lifetime).
	// 0 means 5 minutes; negative disables refresh tokens.
	AccessTokenLifetime time.Duration
	// RateLimits for login and registration; nil means DefaultRateLimits.
	RateLimits *RateLimits
	// TrustForwardedFor takes the client address from X-Forwarded-For: set it
	// behind a reverse proxy.
	TrustForwardedFor bool
}

func (c AccountConfig) refreshEnabled() bool { return c.AccessTokenLifetime >= 0 }

func (c AccountConfig) accessLifetime() time.Duration {
	if c.AccessTokenLifetime == 0 {
		return 5 * time.Minute
	}
	return c.AccessTokenLifetime
}

// accounts holds the account service's in-memory state: user IDs being
// claimed, user-interactive auth sessions, shared-secret nonces, login tokens
// and rate limiters. All of it is ephemeral: losing it on restart costs a
// client a retry, never an account.
type accounts struct {
	s *Server

	limits                                     RateLimits
	loginAddr, loginAcct, loginFailed, regAddr *limiter

	mu          sync.Mutex
	claimed     map[string]bool
	sessions    map[string]*uiaSession
	sessionQ    []sessionRef // creation order, for expiry
	nonces      map[string]time.Time
	loginTokens map[string]loginToken
	pending     map[string]int // registration token -> sessions holding a use

	dummyOnce sync.Once
	dummy     []byte
}

type sessionRef struct {
	id      string
	created time.Time
}

type loginToken struct {
	user    string
	expires time.Time
}

func newAccounts(s *Server) *accounts {
	lim := DefaultRateLimits()
	if s.cfg.Accounts.RateLimits != nil {
		lim = *s.cfg.Accounts.RateLimits
	}
	return &accounts{
		s: s, limits: lim,
		loginAddr: newLimiter(lim.LoginAddress), loginAcct: newLimiter(lim.LoginAccount),
		loginFailed: newLimiter(lim.LoginFailed), regAddr: newLimiter(lim.Registration),
		claimed: map[string]bool{}, sessions: map[string]*uiaSession{},
		nonces: map[string]time.Time{}, loginTokens: map[string]loginToken{}, pending: map[string]int{},
	}
}

var errUserInUse = merr(400, "M_USER_IN_USE", "User ID already taken.")

func errInvalidUsername(msg string) *Error { return merr(400, "M_INVALID_USERNAME", msg) }

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

// checkLocalpart applies Synapse's check_username rules to a new localpart.
func (a *accounts) checkLocalpart(l string) *Error {
	switch {
	case l == "":
		return errInvalidUsername("User ID cannot be empty")
	case !validLocalpart(l):
		return errInvalidUsername("User ID can only contain characters a-z, 0-9, or '=_-./+'")
	case l[0] == '_':
		return errInvalidUsername("User ID may not begin with _")
	case isDigits(l):
		return errInvalidUsername("Numeric user IDs are reserved for guest users.")
	case len(a.userID(l)) > 255:
		return errInvalidUsername("User ID may not be longer than 255 characters")
	}
	return nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func (a *accounts) userID(localpart string) string { return "@" + localpart + ":" + a.s.cfg.ServerName }

// isLocal reports whether a user ID belongs to this server.
func (a *accounts) isLocal(user string) bool {
	return strings.HasPrefix(user, "@") && strings.HasSuffix(user, ":"+a.s.cfg.ServerName)
}

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

// hash returns the bcrypt hash of a password ("" for none).
func (a *accounts) hash(password string) (string, error) {
	if password == "" {
		return "", nil
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), a.s.cfg.PasswordCost)
	return string(h), err
}

// createHashed appends a new account with the given password hash, and extra
// record bodies in the same batch (a registration token use, a display
// name). The user ID is claimed in memory until the records are durable, so
// two concurrent registrations cannot both win.
func (a *accounts) createHashed(user, hash string, admin bool, extra ...any) error {
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
	bodies := append([]any{&projections.AccountRecord{UserID: user, PasswordHash: hash, Admin: admin, TS: time.Now().UnixMilli()}}, extra...)
	return a.s.appendRecords(bodies...)
}

// appendRecords encodes record bodies and appends them in one batch.
func (s *Server) appendRecords(bodies ...any) error {
	recs := make([]log.Record, 0, len(bodies))
	for _, b := range bodies {
		rec, err := projections.Encode(b)
		if err != nil {
			return err
		}
		recs = append(recs, rec)
	}
	_, err := s.log.Append(recs...)
	return err
}

// session is what a login or registration returns to the client.
type session struct {
	Token, Device, Refresh string
	ExpiresInMS            int64
}

// fields adds the session to a login or registration response.
func (ss session) fields(m map[string]any) {
	m["access_token"], m["device_id"] = ss.Token, ss.Device
	if ss.Refresh != "" {
		m["refresh_token"], m["expires_in_ms"] = ss.Refresh, ss.ExpiresInMS
	}
}

// Token shapes. The prefix says whether an access token can expire, so only
// those cost a second lookup when authenticating. A forged prefix gains
// nothing: the token's hash still has to match.
const (
	accessPrefix   = "eg_"
	expiringPrefix = "egx_"
	refreshPrefix  = "egr_"
)

// maxDeviceNameLen is Synapse's MAX_DEVICE_DISPLAY_NAME_LEN.
const maxDeviceNameLen = 100

// login issues a new access token (and refresh token when asked and
// enabled) for a device, new or existing.
func (a *accounts) login(user, deviceID, displayName string, refresh bool) (session, error) {
	if deviceID == "" {
		deviceID = randomID(10)
	}
	// Logging in to an existing device keeps its name, as in Synapse.
	if dev, err := a.s.store.Device(user, deviceID); err == nil {
		displayName = dev.DisplayName
	} else if !errors.Is(err, projections.ErrNotFound) {
		return session{}, err
	}
	now := time.Now()
	rec := &projections.LoginRecord{UserID: user, DeviceID: deviceID, DisplayName: displayName, TS: now.UnixMilli()}
	ss := session{Device: deviceID}
	if refresh && a.s.cfg.Accounts.refreshEnabled() {
		life := a.s.cfg.Accounts.accessLifetime()
		ss.Token, ss.Refresh, ss.ExpiresInMS = expiringPrefix+randomToken(), refreshPrefix+randomToken(), life.Milliseconds()
		rec.RefreshHash, rec.ExpiresTS = tokenHash([]byte(ss.Refresh)), now.Add(life).UnixMilli()
	} else {
		ss.Token = accessPrefix + randomToken()
	}
	rec.TokenHash = tokenHash([]byte(ss.Token))
	return ss, a.s.appendRecords(rec)
}

func (a *accounts) logout(user, device string, all bool) error {
	return a.s.appendRecords(&projections.LogoutRecord{UserID: user, DeviceID: device, All: all})
}

// tokenOwner authenticates an access token. An expired token is a soft
// logout (spec: "Any HTTP calls that use an expired access token will return
// with an error code M_UNKNOWN_TOKEN, preferably with soft_logout: true").
func (s *Server) tokenOwner(tok []byte) (user, device string, e *Error) {
	return s.tokenOwnerExpired(tok, false)
}

// tokenOwnerExpired is tokenOwner that may accept an expired token: logging
// out works with one, as in Synapse (allow_expired).
func (s *Server) tokenOwnerExpired(tok []byte, allowExpired bool) (user, device string, e *Error) {
	h := tokenHash(tok)
	user, device, err := s.store.TokenOwner(h)
	if errors.Is(err, projections.ErrNotFound) {
		return "", "", &Error{Status: 401, Code: "M_UNKNOWN_TOKEN", Message: "Unrecognised access token", Extra: `"soft_logout":false`}
	}
	if err != nil {
		s.logger.Error("token lookup failed", "err", err)
		return "", "", errUnknown("Internal server error")
	}
	if strings.HasPrefix(string(tok), expiringPrefix) && !allowExpired {
		exp, ok, err := s.store.TokenExpiry(h)
		if err != nil {
			s.logger.Error("token expiry lookup failed", "err", err)
			return "", "", errUnknown("Internal server error")
		}
		if ok && nowMS() >= exp {
			return "", "", &Error{Status: 401, Code: "M_UNKNOWN_TOKEN", Message: "Access token has expired", Extra: `"soft_logout":true`}
		}
	}
	return user, device, nil
}

// pwCheck is the outcome of a password check.
type pwCheck int

const (
	pwWrong       pwCheck = iota // unknown user or wrong password
	pwOK                         // the password is right
	pwDeactivated                // the account is deactivated
)

// checkPassword verifies a user's password. The user is found
// case-insensitively in its localpart, as Synapse does; the canonical user
// ID is returned. A deactivated account is reported before the password is
// checked (Synapse: its hash is gone).
func (a *accounts) checkPassword(user, password string) (string, pwCheck, error) {
	acc, err := a.s.store.Account(user)
	if errors.Is(err, projections.ErrNotFound) && strings.ToLower(user) != user && a.isLocal(user) {
		lower := "@" + strings.ToLower(user[1:len(user)-len(a.s.cfg.ServerName)-1]) + ":" + a.s.cfg.ServerName
		if acc, err = a.s.store.Account(lower); err == nil {
			user = lower
		}
	}
	if err != nil && !errors.Is(err, projections.ErrNotFound) {
		return "", pwWrong, err
	}
	if acc != nil && acc.Deactivated {
		return user, pwDeactivated, nil
	}
	if acc == nil || acc.PasswordHash == "" {
		// Spend the same time as a real check so timing does not reveal users.
		bcrypt.CompareHashAndPassword(a.dummyHash(), []byte(password))
		return user, pwWrong, nil
	}
	if bcrypt.CompareHashAndPassword([]byte(acc.PasswordHash), []byte(password)) != nil {
		return user, pwWrong, nil
	}
	return user, pwOK, nil
}

// dummyHash is a hash at the configured cost, made on first use.
func (a *accounts) dummyHash() []byte {
	a.dummyOnce.Do(func() {
		a.dummy, _ = bcrypt.GenerateFromPassword([]byte("engram-dummy"), a.s.cfg.PasswordCost)
	})
	return a.dummy
}

// newLoginToken makes a single-use m.login.token for user.
func (a *accounts) newLoginToken(user string, life time.Duration) string {
	tok := "egl_" + randomToken()
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, t := range a.loginTokens { // few: they live two minutes
		if now.After(t.expires) {
			delete(a.loginTokens, k)
		}
	}
	a.loginTokens[string(tokenHash([]byte(tok)))] = loginToken{user: user, expires: now.Add(life)}
	return tok
}

// useLoginToken consumes a login token, returning its user.
func (a *accounts) useLoginToken(tok string) (string, bool) {
	k := string(tokenHash([]byte(tok)))
	a.mu.Lock()
	defer a.mu.Unlock()
	t, ok := a.loginTokens[k]
	if !ok {
		return "", false
	}
	delete(a.loginTokens, k)
	return t.user, time.Now().Before(t.expires)
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

// passwordDigest identifies a password within a UIA session without keeping
// it: a registration that sends the same password again reuses the bcrypt
// hash computed for the first request.
func passwordDigest(p string) [32]byte { return sha256.Sum256([]byte("engram-uia\x00" + p)) }
