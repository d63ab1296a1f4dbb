package api

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"slices"

	"engram/projections"
)

// Registration tokens (spec: "Token-authenticated registration"): the
// validity endpoint, the UIA stage's bookkeeping, and Synapse's admin API
// (/_synapse/admin/v1/registration_tokens) to manage them. Tokens made with
// the admin API are logged (KindRegToken); tokens from the configuration
// file have unlimited uses.

func (s *Server) regTokenRoutes() {
	rt := &s.rt
	rt.handle("GET", "/_matrix/client/v1/register/m.login.registration_token/validity", public, s.regTokenValidity)
	const base = "/_synapse/admin/v1/registration_tokens"
	rt.handle("GET", base, authed, s.adminListRegTokens)
	rt.handle("POST", base+"/new", authed, s.adminNewRegToken)
	rt.handle("GET", base+"/{token}", authed, s.adminGetRegToken)
	rt.handle("PUT", base+"/{token}", authed, s.adminUpdateRegToken)
	rt.handle("DELETE", base+"/{token}", authed, s.adminDeleteRegToken)
}

// regTokenUsable reports whether a token can authorise one more registration.
// Pending uses count against uses_allowed, so a limited token cannot be
// spent twice by registrations running at the same time.
func (a *accounts) regTokenUsableLocked(tok string, t *projections.RegToken) bool {
	if t.ExpiryTime != nil && *t.ExpiryTime <= nowMS() {
		return false
	}
	return t.UsesAllowed == nil || t.Completed+int64(a.pending[tok]) < *t.UsesAllowed
}

func (a *accounts) configToken(tok string) bool {
	return slices.Contains(a.s.cfg.Accounts.RegistrationTokens, tok)
}

// regTokenValid answers the validity endpoint.
func (a *accounts) regTokenValid(tok string) (bool, error) {
	if a.configToken(tok) {
		return true, nil
	}
	t, err := a.s.store.RegToken(tok)
	if errors.Is(err, projections.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.regTokenUsableLocked(tok, t), nil
}

// reserveRegToken completes the token stage for a session: an admin token
// gets a pending use, held until the session ends.
func (a *accounts) reserveRegToken(sess *uiaSession, tok string) (bool, error) {
	if a.configToken(tok) {
		return true, nil
	}
	t, err := a.s.store.RegToken(tok)
	if errors.Is(err, projections.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if sess.regToken == tok {
		return true, nil // this session already holds a use
	}
	if !a.regTokenUsableLocked(tok, t) {
		return false, nil
	}
	if sess.regToken != "" {
		a.pending[sess.regToken]--
	}
	sess.regToken = tok
	a.pending[tok]++
	return true, nil
}

func (s *Server) regTokenValidity(r *Req) error {
	if !s.cfg.EnableRegistration {
		return errForbidden("Registration is disabled")
	}
	tok := r.Query("token")
	if tok == "" {
		return errMissing("Missing string query parameter: token")
	}
	if e := s.limitAddr(r, s.accounts.regAddr, false); e != nil {
		return e
	}
	ok, err := s.accounts.regTokenValid(tok)
	if err != nil {
		return err
	}
	return r.json(map[string]bool{"valid": ok})
}

// requireAdmin refuses non-admins, as Synapse's admin API does.
func (s *Server) requireAdmin(r *Req) *Error {
	acc, err := s.store.Account(r.User)
	if err != nil || !acc.Admin {
		return errForbidden("You are not a server admin")
	}
	return nil
}

func (s *Server) regTokenJSON(tok string, t *projections.RegToken) map[string]any {
	s.accounts.mu.Lock()
	pending := s.accounts.pending[tok]
	s.accounts.mu.Unlock()
	return map[string]any{"token": tok, "uses_allowed": t.UsesAllowed, "pending": pending,
		"completed": t.Completed, "expiry_time": t.ExpiryTime}
}

func (s *Server) adminListRegTokens(r *Req) error {
	if e := s.requireAdmin(r); e != nil {
		return e
	}
	var filter *bool
	switch r.Query("valid") {
	case "":
	case "true":
		filter = new(bool)
		*filter = true
	case "false":
		filter = new(bool)
	default:
		return errInvalid("Query parameter valid must be true or false")
	}
	toks, err := s.store.RegTokens()
	if err != nil {
		return err
	}
	out := []map[string]any{}
	for i := range toks {
		t := &toks[i]
		if filter != nil {
			s.accounts.mu.Lock()
			usable := s.accounts.regTokenUsableLocked(t.Token, &t.RegToken)
			s.accounts.mu.Unlock()
			if usable != *filter {
				continue
			}
		}
		out = append(out, s.regTokenJSON(t.Token, &t.RegToken))
	}
	return r.json(map[string]any{"registration_tokens": out})
}

// validRegToken: the spec's opaque identifier grammar, at most 64 characters.
func validRegToken(t string) bool {
	if t == "" || len(t) > 64 {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '~' || c == '-') {
			return false
		}
	}
	return true
}

// optInt parses a field that is an integer or null; present says whether
// the field was given at all.
func optInt(m map[string]json.RawMessage, key string) (v *int64, present bool, e *Error) {
	raw, ok := m[key]
	if !ok {
		return nil, false, nil
	}
	if string(raw) == "null" {
		return nil, true, nil
	}
	var n int64
	if err := json.Unmarshal(raw, &n); err != nil {
		return nil, true, errInvalid(key + " must be an integer or null")
	}
	return &n, true, nil
}

// tokenLimits validates uses_allowed and expiry_time.
func tokenLimits(m map[string]json.RawMessage) (uses, expiry *int64, setUses, setExpiry bool, e *Error) {
	if uses, setUses, e = optInt(m, "uses_allowed"); e != nil {
		return
	}
	if uses != nil && *uses < 0 {
		e = errInvalid("uses_allowed must be a non-negative integer or null")
		return
	}
	if expiry, setExpiry, e = optInt(m, "expiry_time"); e != nil {
		return
	}
	if expiry != nil && *expiry < nowMS() {
		e = errInvalid("expiry_time must not be in the past")
	}
	return
}

const tokenChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-"

// randomString returns n characters drawn uniformly from alphabet
// (rejection sampling: no modulo bias).
func randomString(n int, alphabet string) string {
	limit := 256 - 256%len(alphabet)
	out := make([]byte, 0, n)
	var buf [64]byte
	for len(out) < n {
		rand.Read(buf[:])
		for _, c := range buf {
			if int(c) < limit && len(out) < n {
				out = append(out, alphabet[int(c)%len(alphabet)])
			}
		}
	}
	return string(out)
}

func (s *Server) adminNewRegToken(r *Req) error {
	if e := s.requireAdmin(r); e != nil {
		return e
	}
	var m map[string]json.RawMessage
	if e := r.decode(&m); e != nil {
		return e
	}
	uses, expiry, _, _, e := tokenLimits(m)
	if e != nil {
		return e
	}
	var tok string
	if raw, ok := m["token"]; ok {
		if json.Unmarshal(raw, &tok) != nil || !validRegToken(tok) {
			return errInvalid("token must consist only of characters matched by the regex [A-Za-z0-9._~-] and be at most 64 characters")
		}
	} else {
		length := int64(16)
		if l, present, e := optInt(m, "length"); e != nil {
			return e
		} else if present {
			if l == nil || *l <= 0 || *l > 64 {
				return errInvalid("length must be an integer > 0 and <= 64")
			}
			length = *l
		}
		tok = randomString(int(length), tokenChars)
	}
	key := "\x00regtoken:" + tok // claimed like a user ID: no two creates race
	a := s.accounts
	a.mu.Lock()
	if a.claimed[key] {
		a.mu.Unlock()
		return errInvalid("Token already exists")
	}
	a.claimed[key] = true
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.claimed, key)
		a.mu.Unlock()
	}()
	if _, err := s.store.RegToken(tok); err == nil {
		return errInvalid("Token already exists")
	} else if !errors.Is(err, projections.ErrNotFound) {
		return err
	}
	if err := s.appendRecords(&projections.RegTokenRecord{Token: tok, Op: projections.RegTokenCreate, UsesAllowed: uses, ExpiryTime: expiry}); err != nil {
		return err
	}
	return r.json(s.regTokenJSON(tok, &projections.RegToken{UsesAllowed: uses, ExpiryTime: expiry}))
}

func (s *Server) adminGetRegToken(r *Req) error {
	if e := s.requireAdmin(r); e != nil {
		return e
	}
	tok := r.Param("token")
	t, err := s.store.RegToken(tok)
	if errors.Is(err, projections.ErrNotFound) {
		return errNotFound("No such registration token: " + tok)
	}
	if err != nil {
		return err
	}
	return r.json(s.regTokenJSON(tok, t))
}

func (s *Server) adminUpdateRegToken(r *Req) error {
	if e := s.requireAdmin(r); e != nil {
		return e
	}
	var m map[string]json.RawMessage
	if e := r.decode(&m); e != nil {
		return e
	}
	uses, expiry, setUses, setExpiry, e := tokenLimits(m)
	if e != nil {
		return e
	}
	tok := r.Param("token")
	if _, err := s.store.RegToken(tok); errors.Is(err, projections.ErrNotFound) {
		return errNotFound("No such registration token: " + tok)
	} else if err != nil {
		return err
	}
	if setUses || setExpiry {
		if err := s.appendRecords(&projections.RegTokenRecord{Token: tok, Op: projections.RegTokenUpdate,
			UsesAllowed: uses, ExpiryTime: expiry, SetUses: setUses, SetExpiry: setExpiry}); err != nil {
			return err
		}
	}
	return s.adminGetRegToken(r)
}

func (s *Server) adminDeleteRegToken(r *Req) error {
	if e := s.requireAdmin(r); e != nil {
		return e
	}
	tok := r.Param("token")
	if _, err := s.store.RegToken(tok); errors.Is(err, projections.ErrNotFound) {
		return errNotFound("No such registration token: " + tok)
	} else if err != nil {
		return err
	}
	if err := s.appendRecords(&projections.RegTokenRecord{Token: tok, Op: projections.RegTokenDelete}); err != nil {
		return err
	}
	return r.json(struct{}{})
}
