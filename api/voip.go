package api

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"strconv"
	"time"
)

// TURNConfig is the TURN server clients are sent to for VoIP, with the
// shared secret of coturn's use-auth-secret (REST API) mode.
type TURNConfig struct {
	URIs         []string
	SharedSecret string
	UserLifetime time.Duration // default 1h
}

func (s *Server) voipRoutes() {
	s.rt.client("GET", "/voip/turnServer", authed, s.turnServer)
}

// turnServer serves time-limited TURN credentials: the username is
// "<expiry unix seconds>:<user ID>" and the password the base64 HMAC-SHA1 of
// the username under the shared secret, which is what coturn checks. Without
// a TURN server configured, the answer is {} (as Synapse gives): clients
// then call without relaying.
func (s *Server) turnServer(r *Req) error {
	t := s.cfg.TURN
	if len(t.URIs) == 0 || t.SharedSecret == "" {
		r.raw(200, []byte("{}"))
		return nil
	}
	ttl := t.UserLifetime
	if ttl <= 0 {
		ttl = time.Hour
	}
	username, password := turnCredentials(t.SharedSecret, r.User, time.Now().Add(ttl))
	return r.json(map[string]any{
		"username": username,
		"password": password,
		"uris":     t.URIs,
		"ttl":      int64(ttl / time.Second),
	})
}

func turnCredentials(secret, user string, expiry time.Time) (username, password string) {
	username = strconv.FormatInt(expiry.Unix(), 10) + ":" + user
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username))
	return username, base64.StdEncoding.EncodeToString(mac.Sum(nil))
}
