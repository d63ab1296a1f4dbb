package federation

import (
	"crypto/sha256"
	"errors"
	"time"

	"engram/projections"
)

// handleOpenIDUserinfo serves GET /_matrix/federation/v1/openid/userinfo
// (spec: server-server-api.md, "OpenID"): "Exchanges an OpenID access
// token for information about the user who generated the token." Tokens
// are issued by the client API (POST /user/{userId}/openid/request_token)
// and kept, hashed, in the openid projection.
func (f *Federation) handleOpenIDUserinfo(r *req) error {
	unknown := ferr(401, "M_UNKNOWN_TOKEN", "Access token unknown or expired")
	tok := r.query("access_token")
	if tok == "" || f.store == nil {
		return unknown
	}
	h := sha256.Sum256([]byte(tok))
	user, expires, err := f.store.OpenIDUser(h[:])
	if errors.Is(err, projections.ErrNotFound) {
		return unknown
	}
	if err != nil {
		return err
	}
	if time.Now().UnixMilli() >= expires {
		return unknown
	}
	return r.json(map[string]string{"sub": user})
}
