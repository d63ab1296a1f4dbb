package api

import (
	"encoding/json"
	"testing"
	"time"

	"engram/dag"
)

// TestOpenIDRequestToken: the token answer, 403 for another user, the
// token is no access token, and it is still known after a restart.
func TestOpenIDRequestToken(t *testing.T) {
	dir := t.TempDir()
	key, _ := dag.GenerateSigningKey()
	ts, stop := startTestServer(t, dir, Config{EnableRegistration: true}, key)
	alice := ts.register("alice")
	path := "/_matrix/client/v3/user/@alice:test.local/openid/request_token"

	tests := []struct {
		name, path, tok, body string
		status                int
		code                  string
	}{
		{"other user", "/_matrix/client/v3/user/@bob:test.local/openid/request_token", alice, `{}`, 403, "M_FORBIDDEN"},
		{"no token", path, "", `{}`, 401, "M_MISSING_TOKEN"},
		{"not JSON", path, alice, `{`, 400, "M_NOT_JSON"},
		{"not an object", path, alice, `[]`, 400, "M_BAD_JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := ts.log.Last()
			r := ts.do("POST", tt.path, tt.tok, tt.body)
			if r.status != tt.status || r.errcode() != tt.code {
				t.Errorf("got %d %s, want %d %s", r.status, r.body, tt.status, tt.code)
			}
			if ts.log.Last() != before {
				t.Error("a refused request appended a record")
			}
		})
	}

	r := ts.do("POST", path, alice, `{}`)
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	var ans struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ServerName  string `json:"matrix_server_name"`
		ExpiresIn   int    `json:"expires_in"`
	}
	if err := json.Unmarshal(r.body, &ans); err != nil {
		t.Fatal(err)
	}
	if ans.AccessToken == "" || ans.TokenType != "Bearer" || ans.ServerName != "test.local" || ans.ExpiresIn != 3600 {
		t.Fatalf("answer %s", r.body)
	}
	// r0 too, and every call gives a new token.
	if r2 := ts.do("POST", "/_matrix/client/r0/user/@alice:test.local/openid/request_token", alice, ``); r2.field("access_token") == ans.AccessToken || r2.status != 200 {
		t.Errorf("second token: %d %s", r2.status, r2.body)
	}
	// "It cannot be used to request another OpenID access token or call /sync."
	if w := ts.do("GET", "/_matrix/client/v3/account/whoami", ans.AccessToken, ""); w.status != 401 {
		t.Errorf("OpenID token used as access token: %d %s", w.status, w.body)
	}
	if w := ts.do("POST", path, ans.AccessToken, `{}`); w.status != 401 {
		t.Errorf("OpenID token requested another: %d %s", w.status, w.body)
	}

	stop()
	ts, _ = startTestServer(t, dir, Config{EnableRegistration: true}, key)
	user, exp, err := ts.srv.store.OpenIDUser(tokenHash([]byte(ans.AccessToken)))
	now := time.Now().UnixMilli()
	if err != nil || user != "@alice:test.local" || exp <= now || exp > now+3600*1000 {
		t.Fatalf("after restart: %q %d %v", user, exp, err)
	}
}
