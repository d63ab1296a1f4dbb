package api

import (
	"strings"
)

// Client-server API: registration, login, logout, whoami.

func (s *Server) accountRoutes() {
	rt := &s.rt
	rt.client("GET", "/register/available", public, s.registerAvailable)
	rt.client("POST", "/register", public, s.register)
	rt.client("GET", "/login", public, s.loginFlows)
	rt.client("POST", "/login", public, s.login)
	rt.client("POST", "/logout", authed, s.logout)
	rt.client("POST", "/logout/all", authed, s.logoutAll)
	rt.client("GET", "/account/whoami", authed, s.whoami)
	rt.client("GET", "/capabilities", authed, s.capabilities)
}

type uiaAuth struct {
	Type    string `json:"type"`
	Session string `json:"session"`
}

type registerBody struct {
	Username                 string   `json:"username"`
	Password                 string   `json:"password"`
	DeviceID                 string   `json:"device_id"`
	InitialDeviceDisplayName string   `json:"initial_device_display_name"`
	InhibitLogin             bool     `json:"inhibit_login"`
	Auth                     *uiaAuth `json:"auth"`
}

// uiaChallenge is the 401 that starts (or continues) user-interactive auth.
func (s *Server) uiaChallenge(r *Req, session string) error {
	return r.jsonStatus(401, map[string]any{
		"flows":   []map[string]any{{"stages": []string{"m.login.dummy"}}},
		"params":  map[string]any{},
		"session": session,
	})
}

func (s *Server) register(r *Req) error {
	switch kind := r.Query("kind"); kind {
	case "", "user":
	case "guest":
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
	localpart := strings.ToLower(b.Username)
	if b.Username != "" {
		if !validLocalpart(localpart) {
			return merr(400, "M_INVALID_USERNAME", "User ID may only contain a-z, 0-9, and ._=-/+")
		}
		ok, err := s.accounts.available(s.accounts.userID(localpart))
		if err != nil {
			return err
		}
		if !ok {
			return errUserInUse
		}
	}
	if b.Auth == nil || b.Auth.Type == "" {
		return s.uiaChallenge(r, s.accounts.newSession())
	}
	if b.Auth.Type != "m.login.dummy" || !s.accounts.validSession(b.Auth.Session) {
		return s.uiaChallenge(r, s.accounts.newSession())
	}
	if localpart == "" {
		localpart = strings.ToLower(randomID(12))
	}
	user := s.accounts.userID(localpart)
	if err := s.accounts.create(user, b.Password, false); err != nil {
		return err
	}
	s.accounts.endSession(b.Auth.Session)
	resp := map[string]any{"user_id": user, "home_server": s.cfg.ServerName}
	if !b.InhibitLogin {
		tok, dev, err := s.accounts.login(user, b.DeviceID, b.InitialDeviceDisplayName)
		if err != nil {
			return err
		}
		resp["access_token"], resp["device_id"] = tok, dev
	}
	return r.json(resp)
}

func (s *Server) registerAvailable(r *Req) error {
	l := strings.ToLower(r.Query("username"))
	if !validLocalpart(l) {
		return merr(400, "M_INVALID_USERNAME", "User ID may only contain a-z, 0-9, and ._=-/+")
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
	return r.json(map[string]any{"flows": []map[string]string{{"type": "m.login.password"}}})
}

type loginBody struct {
	Type       string `json:"type"`
	Identifier *struct {
		Type string `json:"type"`
		User string `json:"user"`
	} `json:"identifier"`
	User                     string `json:"user"` // deprecated form
	Password                 string `json:"password"`
	DeviceID                 string `json:"device_id"`
	InitialDeviceDisplayName string `json:"initial_device_display_name"`
}

func (s *Server) login(r *Req) error {
	var b loginBody
	if e := r.decode(&b); e != nil {
		return e
	}
	if b.Type != "m.login.password" {
		return merr(400, "M_UNKNOWN", "Unknown login type "+b.Type)
	}
	user := b.User
	if b.Identifier != nil {
		if b.Identifier.Type != "m.id.user" {
			return merr(400, "M_UNKNOWN", "Unknown identifier type")
		}
		user = b.Identifier.User
	}
	if user == "" {
		return errMissing("Missing user")
	}
	user = s.qualify(user)
	if !s.accounts.checkPassword(user, b.Password) {
		return errForbidden("Invalid username or password")
	}
	tok, dev, err := s.accounts.login(user, b.DeviceID, b.InitialDeviceDisplayName)
	if err != nil {
		return err
	}
	return r.json(map[string]any{"user_id": user, "access_token": tok, "device_id": dev, "home_server": s.cfg.ServerName})
}

// qualify turns a localpart into a user ID on this server; IDs stay as they are.
func (s *Server) qualify(user string) string {
	if strings.HasPrefix(user, "@") {
		return user
	}
	return s.accounts.userID(strings.ToLower(user))
}

func (s *Server) logout(r *Req) error {
	if err := s.accounts.logout(r.User, r.Device, false); err != nil {
		return err
	}
	return r.json(struct{}{})
}

func (s *Server) logoutAll(r *Req) error {
	if err := s.accounts.logout(r.User, "", true); err != nil {
		return err
	}
	return r.json(struct{}{})
}

func (s *Server) whoami(r *Req) error {
	return r.json(map[string]any{"user_id": r.User, "device_id": r.Device, "is_guest": false})
}
