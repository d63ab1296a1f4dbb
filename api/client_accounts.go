package api

import (
	"encoding/json"
	"errors"
	"strings"
	"time"

	"engram/projections"
)

// Client-server API: registration, login, logout, tokens, whoami, discovery.

func (s *Server) accountRoutes() {
	rt := &s.rt
	rt.client("GET", "/register/available", public, s.registerAvailable)
	rt.client("POST", "/register", public, s.register)
	rt.client("GET", "/login", public, s.loginFlows)
	rt.client("POST", "/login", public, s.login)
	// Public routes that authenticate themselves: an expired token may log out.
	rt.client("POST", "/logout", public, s.logout)
	rt.client("POST", "/logout/all", public, s.logoutAll)
	rt.client("POST", "/refresh", public, s.refresh)
	rt.handle("POST", "/_matrix/client/v1/refresh", public, s.refresh)
	rt.handle("POST", "/_matrix/client/v1/login/get_token", authed, s.getLoginToken)
	rt.client("GET", "/account/whoami", authed, s.whoami)
	rt.client("GET", "/capabilities", authed, s.capabilities)
	rt.handle("GET", "/.well-known/matrix/client", public, s.wellKnownClient)
	rt.handle("GET", "/.well-known/matrix/server", public, s.wellKnownServer)
	s.deviceRoutes()
	s.profileRoutes()
	s.regTokenRoutes()
	s.adminRegisterRoutes()
	s.adminUserRoutes()
}

type registerBody struct {
	Username                 *string  `json:"username"`
	Password                 *string  `json:"password"`
	DeviceID                 string   `json:"device_id"`
	InitialDeviceDisplayName string   `json:"initial_device_display_name"`
	InhibitLogin             bool     `json:"inhibit_login"`
	RefreshToken             bool     `json:"refresh_token"`
	Auth                     *uiaAuth `json:"auth"`
}

// registrationFlows are Synapse's: m.login.dummy, preceded by
// m.login.registration_token when a token is required.
func (s *Server) registrationFlows() [][]string {
	if s.cfg.Accounts.RegistrationRequiresToken {
		return [][]string{{stageRegToken, stageDummy}}
	}
	return [][]string{{stageDummy}}
}

func (s *Server) register(r *Req) error {
	switch kind := r.Query("kind"); kind {
	case "", "user":
	case "guest":
		// Guest access is off (and not implemented): Synapse answers this.
		return merr(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest access is disabled")
	default:
		return errInvalid("Invalid kind")
	}
	if !s.cfg.EnableRegistration {
		return errForbidden("Registration has been disabled")
	}
	var b registerBody
	if e := r.decode(&b); e != nil {
		return e
	}
	if e := s.limitAddr(r, s.accounts.regAddr, false); e != nil {
		return e
	}
	a := s.accounts
	onlyAuth := b.Username == nil && b.Password == nil && b.DeviceID == "" && b.InitialDeviceDisplayName == "" && !b.InhibitLogin && !b.RefreshToken
	if onlyAuth && b.Auth != nil && b.Auth.Session != "" {
		// A request with only "auth" continues with the parameters given before.
		if sess := a.getSession(b.Auth.Session); sess != nil {
			a.mu.Lock()
			if p := sess.regParams; p != nil {
				auth := b.Auth
				b = *p
				b.Auth = auth
			}
			a.mu.Unlock()
		}
	}
	localpart := ""
	if b.Username != nil {
		if len(*b.Username) > 512 {
			return errInvalidUsername("Invalid username")
		}
		// Synapse lowercases the requested name, so CrAzY users get crazy.
		localpart = strings.ToLower(*b.Username)
		if e := s.accounts.checkLocalpart(localpart); e != nil {
			return e
		}
		ok, err := s.accounts.available(s.accounts.userID(localpart))
		if err != nil {
			return err
		}
		if !ok {
			return errUserInUse
		}
	}
	password := ""
	if b.Password != nil {
		if password = *b.Password; len(password) > 512 {
			return errInvalid("Invalid password")
		}
	}
	if len(b.DeviceID) > 255 {
		return errInvalid("device_id is too long")
	}
	if e := checkDeviceName(b.InitialDeviceDisplayName); e != nil {
		return e
	}
	out, err := s.uia(r, b.Auth, s.registrationFlows(), "")
	if err != nil {
		return err
	}
	if !onlyAuth {
		p := b
		p.Password, p.Auth = nil, nil // the password is kept only as a hash
		a.mu.Lock()
		out.sess.regParams = &p
		a.mu.Unlock()
	}
	if !out.done {
		// The client need not send the password again: keep its hash.
		if password != "" {
			a.mu.Lock()
			have := out.sess.pwHash != ""
			a.mu.Unlock()
			if !have {
				h, err := a.hash(password)
				if err != nil {
					return err
				}
				a.mu.Lock()
				out.sess.pwHash, out.sess.pwDigest = h, passwordDigest(password)
				a.mu.Unlock()
			}
		}
		return r.jsonStatus(401, out.body)
	}
	a.mu.Lock()
	hash, digest, regToken := out.sess.pwHash, out.sess.pwDigest, out.sess.regToken
	a.mu.Unlock()
	if password != "" && (hash == "" || digest != passwordDigest(password)) {
		if hash, err = a.hash(password); err != nil {
			return err
		}
	}
	if hash == "" {
		return errMissing("Missing params: password")
	}
	if localpart == "" {
		localpart = strings.ToLower(randomID(12))
	}
	user := a.userID(localpart)
	var extra []any
	if regToken != "" {
		extra = append(extra, &projections.RegTokenUseRecord{Token: regToken, UserID: user})
	}
	if err := a.createHashed(user, hash, false, extra...); err != nil {
		return err
	}
	a.endSession(out.sess)
	s.recordAddr(r, a.regAddr)
	resp := map[string]any{"user_id": user, "home_server": s.cfg.ServerName}
	if !b.InhibitLogin {
		ss, err := a.login(user, b.DeviceID, b.InitialDeviceDisplayName, b.RefreshToken)
		if err != nil {
			return err
		}
		ss.fields(resp)
	}
	return r.json(resp)
}

func (s *Server) registerAvailable(r *Req) error {
	l := r.Query("username")
	if l == "" {
		return errMissing("Missing string query parameter: username")
	}
	if e := s.accounts.checkLocalpart(l); e != nil {
		return e
	}
	ok, err := s.accounts.available(s.accounts.userID(l))
	if err != nil {
		return err
	}
	if !ok {
		return errUserInUse
	}
	return r.json(map[string]bool{"available": true})
}

func (s *Server) loginFlows(r *Req) error {
	flows := []map[string]any{{"type": "m.login.password"}}
	if s.cfg.Accounts.LoginToken {
		// spec 1.7: get_login_token tells unauthenticated clients that
		// POST /login/get_token is offered.
		flows = append(flows, map[string]any{"type": "m.login.token", "get_login_token": true})
	}
	return r.json(map[string]any{"flows": flows})
}

type loginBody struct {
	Type                     string          `json:"type"`
	Identifier               *userIdentifier `json:"identifier"`
	User                     string          `json:"user"` // deprecated form
	Medium                   string          `json:"medium"`
	Address                  string          `json:"address"`
	Password                 *string         `json:"password"`
	Token                    string          `json:"token"`
	DeviceID                 string          `json:"device_id"`
	InitialDeviceDisplayName string          `json:"initial_device_display_name"`
	RefreshToken             bool            `json:"refresh_token"`
}

func (s *Server) login(r *Req) error {
	var b loginBody
	if e := r.decode(&b); e != nil {
		return e
	}
	a := s.accounts
	if e := s.limitAddr(r, a.loginAddr, true); e != nil {
		return e
	}
	if len(b.DeviceID) > 255 {
		return errInvalid("device_id is too long")
	}
	if e := checkDeviceName(b.InitialDeviceDisplayName); e != nil {
		return e
	}
	var user string
	switch b.Type {
	case "m.login.password":
		if b.Password == nil {
			return errInvalid("Bad parameter: password")
		}
		id := b.Identifier
		if id == nil && b.Medium != "" && b.Address != "" { // deprecated 3PID form
			id = &userIdentifier{Type: "m.id.thirdparty", Medium: b.Medium, Address: b.Address}
		}
		if id != nil && id.Type == "" && id.Medium != "" { // the spec's example omits the type
			id.Type = "m.id.thirdparty"
		}
		u, e := s.identify(id, b.User)
		if e != nil {
			return e
		}
		if e := s.limitUser(r, a.loginFailed, strings.ToLower(u), false); e != nil {
			return e
		}
		canonical, res, err := a.checkPassword(u, *b.Password)
		if err != nil {
			return err
		}
		switch res {
		case pwDeactivated:
			return errDeactivated()
		case pwWrong:
			s.recordUser(r, a.loginFailed, strings.ToLower(u))
			return errForbidden("Invalid username or password")
		}
		user = canonical
	case "m.login.token":
		if !s.cfg.Accounts.LoginToken {
			return merr(400, "M_UNKNOWN", "Unknown login type m.login.token")
		}
		u, ok := a.useLoginToken(b.Token)
		if !ok {
			return errForbidden("Invalid login token")
		}
		acc, err := s.store.Account(u)
		if err != nil && !errors.Is(err, projections.ErrNotFound) {
			return err
		}
		if acc == nil {
			return errForbidden("Invalid login token")
		}
		if acc.Deactivated {
			return errDeactivated()
		}
		user = u
	case "":
		return errBadJSON("Missing login type")
	default:
		return merr(400, "M_UNKNOWN", "Unknown login type "+b.Type)
	}
	if e := s.limitUser(r, a.loginAcct, user, true); e != nil {
		return e
	}
	ss, err := a.login(user, b.DeviceID, b.InitialDeviceDisplayName, b.RefreshToken)
	if err != nil {
		return err
	}
	resp := map[string]any{"user_id": user, "home_server": s.cfg.ServerName}
	ss.fields(resp)
	if base := s.cfg.Accounts.PublicBaseURL; base != "" {
		resp["well_known"] = map[string]any{"m.homeserver": map[string]string{"base_url": base}}
	}
	return r.json(resp)
}

// qualify turns a localpart into a user ID on this server; IDs stay as they are.
func (s *Server) qualify(user string) string {
	if strings.HasPrefix(user, "@") {
		return user
	}
	return s.accounts.userID(strings.ToLower(user))
}

// authExpired authenticates r accepting an expired access token.
func (s *Server) authExpired(r *Req) *Error {
	tok := accessToken(r.ctx)
	if len(tok) == 0 {
		return merr(401, "M_MISSING_TOKEN", "Missing access token")
	}
	user, device, e := s.tokenOwnerExpired(tok, true)
	if e != nil {
		return e
	}
	r.User, r.Device = user, device
	return nil
}

func (s *Server) logout(r *Req) error {
	if e := s.authExpired(r); e != nil {
		return e
	}
	if err := s.accounts.logout(r.User, r.Device, false); err != nil {
		return err
	}
	return r.json(struct{}{})
}

func (s *Server) logoutAll(r *Req) error {
	if e := s.authExpired(r); e != nil {
		return e
	}
	if err := s.accounts.logout(r.User, "", true); err != nil {
		return err
	}
	return r.json(struct{}{})
}

func (s *Server) whoami(r *Req) error {
	return r.json(map[string]any{"user_id": r.User, "device_id": r.Device, "is_guest": false})
}

// refresh exchanges a refresh token for a new access token and refresh
// token (spec: POST /refresh). An unknown or revoked token is 401
// M_UNKNOWN_TOKEN without soft_logout: the session is gone.
func (s *Server) refresh(r *Req) error {
	var b struct {
		RefreshToken *string `json:"refresh_token"`
	}
	if e := r.decode(&b); e != nil {
		return e
	}
	if b.RefreshToken == nil || *b.RefreshToken == "" {
		return errInvalid("Invalid param: refresh_token")
	}
	old := tokenHash([]byte(*b.RefreshToken))
	user, device, err := s.store.RefreshOwner(old)
	if errors.Is(err, projections.ErrNotFound) {
		return &Error{Status: 401, Code: "M_UNKNOWN_TOKEN", Message: "refresh token does not exist", Extra: `"soft_logout":false`}
	}
	if err != nil {
		return err
	}
	life := s.cfg.Accounts.accessLifetime()
	if life <= 0 {
		life = 5 * time.Minute // refresh tokens were enabled when this one was issued
	}
	now := time.Now()
	tok, ref := expiringPrefix+randomToken(), refreshPrefix+randomToken()
	if err := s.appendRecords(&projections.RefreshRecord{UserID: user, DeviceID: device, OldRefreshHash: old,
		TokenHash: tokenHash([]byte(tok)), RefreshHash: tokenHash([]byte(ref)),
		ExpiresTS: now.Add(life).UnixMilli(), TS: now.UnixMilli()}); err != nil {
		return err
	}
	// The refresh lost a race with a logout or another refresh of the same token.
	if u, _, err := s.store.RefreshOwner(tokenHash([]byte(ref))); err != nil || u != user {
		return &Error{Status: 401, Code: "M_UNKNOWN_TOKEN", Message: "refresh token is no longer valid", Extra: `"soft_logout":false`}
	}
	return r.json(map[string]any{"access_token": tok, "refresh_token": ref, "expires_in_ms": life.Milliseconds()})
}

// loginTokenLife is the spec's recommended default (2 minutes).
const loginTokenLife = 2 * time.Minute

// getLoginToken serves POST /v1/login/get_token: after the password stage
// ("servers MUST always re-prompt"), a single-use m.login.token.
func (s *Server) getLoginToken(r *Req) error {
	if !s.cfg.Accounts.LoginToken {
		return errUnrecognized()
	}
	var b struct {
		Auth *uiaAuth `json:"auth"`
	}
	if e := r.decode(&b); e != nil {
		return e
	}
	sess, err := s.reauth(r, b.Auth)
	if sess == nil {
		return err
	}
	tok := s.accounts.newLoginToken(r.User, loginTokenLife)
	return r.json(map[string]any{"login_token": tok, "expires_in_ms": loginTokenLife.Milliseconds()})
}

// wellKnownClient serves the client discovery document (spec: "Well-known
// URIs") from public_baseurl.
func (s *Server) wellKnownClient(r *Req) error {
	base := s.cfg.Accounts.PublicBaseURL
	if base == "" {
		return errNotFound("No .well-known configured")
	}
	r.ctx.Response.Header.Set("Cache-Control", "max-age=3600")
	return r.json(map[string]any{"m.homeserver": map[string]string{"base_url": base}})
}

// wellKnownServer serves server delegation (server-server API) from well_known_server.
func (s *Server) wellKnownServer(r *Req) error {
	srv := s.cfg.Accounts.WellKnownServer
	if srv == "" {
		return errNotFound("No .well-known configured")
	}
	r.ctx.Response.Header.Set("Cache-Control", "max-age=3600")
	b, err := json.Marshal(map[string]string{"m.server": srv})
	if err != nil {
		return err
	}
	r.raw(200, b)
	return nil
}
