package api

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestTurnServer(t *testing.T) {
	off := newTestServer(t, Config{EnableRegistration: true})
	tok := off.register("v")
	if r := off.do("GET", "/_matrix/client/v3/voip/turnServer", tok, ""); r.status != 200 || string(r.body) != "{}" {
		t.Fatalf("unconfigured: %d %s", r.status, r.body)
	}
	if r := off.do("GET", "/_matrix/client/v3/voip/turnServer", "", ""); r.errcode() != "M_MISSING_TOKEN" {
		t.Fatalf("no token: %s", r.body)
	}
	on := newTestServer(t, Config{EnableRegistration: true, TURN: TURNConfig{URIs: []string{"turn:turn.example:3478?transport=udp"}, SharedSecret: "s3cret", UserLifetime: time.Minute}})
	tok = on.register("v")
	r := on.do("GET", "/_matrix/client/v3/voip/turnServer", tok, "")
	var got struct {
		Username, Password string
		URIs               []string `json:"uris"`
		TTL                int64    `json:"ttl"`
	}
	if err := json.Unmarshal(r.body, &got); err != nil || r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if !strings.HasSuffix(got.Username, ":@v:test.local") || got.TTL != 60 || len(got.URIs) != 1 {
		t.Fatalf("credentials: %+v", got)
	}
	// coturn recomputes the password from the username and the secret.
	if _, want := turnCredentials("s3cret", "@v:test.local", time.Unix(mustInt(t, strings.SplitN(got.Username, ":", 2)[0]), 0)); got.Password != want {
		t.Fatalf("password %q, want %q", got.Password, want)
	}
}

// A fixed vector: HMAC-SHA1("s3cret", "1700000000:@a:x"), base64.
func TestTurnCredentialsVector(t *testing.T) {
	u, p := turnCredentials("s3cret", "@a:x", time.Unix(1700000000, 0))
	if u != "1700000000:@a:x" || p != "gAzqOGIQRDm9J8tW5L+mZsISRH8=" {
		t.Fatalf("%s %s", u, p)
	}
}

func mustInt(t *testing.T, s string) int64 {
	var n int64
	for _, c := range s {
		if c < '0' || c > '9' {
			t.Fatalf("not a number: %q", s)
		}
		n = n*10 + int64(c-'0')
	}
	return n
}
