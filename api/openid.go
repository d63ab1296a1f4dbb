package api

import (
	"engram/projections"
)

// openIDLifetime is how long an OpenID token lasts: the spec's example
// answer, and Synapse's default, is "expires_in": 3600.
const openIDLifetime = 3600 // seconds

// openIDRequestToken serves POST /user/{userId}/openid/request_token:
// "Gets an OpenID token object that the requester may supply to another
// service to verify their identity in Matrix. The generated token is only
// valid for exchanging for user information from the federation API for
// OpenID." The token is a log record (only its hash), so it survives a
// restart; it lives in its own projection, so it is never an access
// token ("It cannot be used to request another OpenID access token or call
// /sync").
func (s *Server) openIDRequestToken(r *Req) error {
	if r.Param("userId") != r.User {
		return errForbidden("Cannot request OpenID tokens for other users")
	}
	var body map[string]any // "An empty object. Reserved for future expansion."
	if e := r.decode(&body); e != nil {
		return e
	}
	tok := randomToken()
	now := nowMS()
	rec, err := projections.Encode(&projections.OpenIDRecord{UserID: r.User, TokenHash: tokenHash([]byte(tok)),
		ExpiresTS: now + openIDLifetime*1000, TS: now})
	if err != nil {
		return err
	}
	if _, err := s.log.Append(rec); err != nil {
		return err
	}
	return r.json(map[string]any{
		"access_token":       tok,
		"token_type":         "Bearer",
		"matrix_server_name": s.cfg.ServerName,
		"expires_in":         openIDLifetime,
	})
}
