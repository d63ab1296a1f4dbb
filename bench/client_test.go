package bench

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestSharedSecretMAC(t *testing.T) {
	// Vectors computed independently with Python's hmac module:
	// hmac.new(b"secret", b"abcd\0alice\0pw\0notadmin", hashlib.sha1).hexdigest()
	if got := sharedSecretMAC("secret", "abcd", "alice", "pw", false); got != "34581d633f71742cfa36177f121f09973c7948c6" {
		t.Errorf("notadmin mac %s", got)
	}
	if got := sharedSecretMAC("secret", "abcd", "alice", "pw", true); got != "ad7e828b2e55e5373685e26f8551dd3fa7d77194" {
		t.Errorf("admin mac %s", got)
	}
}

func newTestServer(t *testing.T, h http.HandlerFunc) *server {
	t.Helper()
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	s, err := newServer(ts.URL, nil, false, 5*time.Second, new(atomic.Int64))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.close)
	return s
}

func decodeBody(t *testing.T, r *http.Request) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
		t.Errorf("decode request: %v", err)
	}
	return m
}

func TestRegisterOpenUIA(t *testing.T) {
	tests := []struct {
		name     string
		flows    string
		token    string
		wantErr  string
		wantAuth []string // auth types of successive requests
	}{
		{"dummy", `[{"stages":["m.login.email.identity"]},{"stages":["m.login.dummy"]}]`, "", "", []string{"", "m.login.dummy"}},
		{"token", `[{"stages":["m.login.registration_token"]}]`, "tok", "", []string{"", "m.login.registration_token"}},
		{"token then dummy", `[{"stages":["m.login.registration_token","m.login.dummy"]}]`, "tok", "", []string{"", "m.login.registration_token", "m.login.dummy"}},
		{"token flow without token", `[{"stages":["m.login.registration_token"]}]`, "", "no flow", []string{""}},
		{"email only", `[{"stages":["m.login.email.identity"]}]`, "", "no flow", []string{""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var seen []string
			var stages []string
			var flows []struct{ Stages []string }
			_ = json.Unmarshal([]byte(tt.flows), &flows)
			for _, f := range flows {
				if len(f.Stages) > len(stages) {
					stages = f.Stages
				}
			}
			s := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/_matrix/client/v3/register" || r.Method != http.MethodPost {
					t.Errorf("unexpected %s %s", r.Method, r.URL.Path)
				}
				body := decodeBody(t, r)
				if body["username"] != "alice" || body["password"] != "pw" {
					t.Errorf("body %v", body)
				}
				auth, _ := body["auth"].(map[string]any)
				typ, _ := auth["type"].(string)
				seen = append(seen, typ)
				if auth != nil {
					if auth["session"] != "S1" {
						t.Errorf("session %v", auth["session"])
					}
					if typ == "m.login.registration_token" && auth["token"] != tt.token {
						t.Errorf("token %v", auth["token"])
					}
				}
				done := len(seen) - 1
				if done < len(stages) {
					w.WriteHeader(http.StatusUnauthorized)
					w.Write([]byte(`{"session":"S1","flows":` + tt.flows + `}`))
					return
				}
				w.Write([]byte(`{"user_id":"@alice:hs","access_token":"AT","device_id":"D"}`))
			})
			u, err := s.registerOpen(context.Background(), "alice", "pw", tt.token)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			} else if u.userID != "@alice:hs" || u.token != "AT" {
				t.Fatalf("user %+v", u)
			}
			if strings.Join(seen, ",") != strings.Join(tt.wantAuth, ",") {
				t.Errorf("auth sequence %q, want %q", seen, tt.wantAuth)
			}
		})
	}
}

func TestRegisterOpenImmediate(t *testing.T) {
	// Servers may skip UIA entirely and answer 200 at once.
	s := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"user_id":"@b:hs","access_token":"T"}`))
	})
	if u, err := s.registerOpen(context.Background(), "b", "pw", ""); err != nil || u.token != "T" {
		t.Fatalf("%v %+v", err, u)
	}
	// A 200 without a token (inhibit_login) is an error, not a nil user.
	s = newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"user_id":"@b:hs"}`))
	})
	if _, err := s.registerOpen(context.Background(), "b", "pw", ""); err == nil {
		t.Fatal("accepted answer without access_token")
	}
}

func TestRegisterShared(t *testing.T) {
	s := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_synapse/admin/v1/register" {
			t.Errorf("path %s", r.URL.Path)
		}
		if r.Method == http.MethodGet {
			w.Write([]byte(`{"nonce":"abcd"}`))
			return
		}
		body := decodeBody(t, r)
		if body["nonce"] != "abcd" || body["admin"] != false || body["mac"] != sharedSecretMAC("secret", "abcd", "alice", "pw", false) {
			w.WriteHeader(http.StatusForbidden)
			w.Write([]byte(`{"errcode":"M_FORBIDDEN","error":"HMAC incorrect"}`))
			return
		}
		w.Write([]byte(`{"user_id":"@alice:hs","access_token":"AT"}`))
	})
	if u, err := s.registerShared(context.Background(), "secret", "alice", "pw"); err != nil || u.token != "AT" {
		t.Fatalf("%v %+v", err, u)
	}
	_, err := s.registerShared(context.Background(), "wrong", "alice", "pw")
	var me *MatrixError
	if !errors.As(err, &me) || me.Status != 403 || me.ErrCode != "M_FORBIDDEN" {
		t.Fatalf("err = %v", err)
	}
}

func TestRateLimitRetry(t *testing.T) {
	var calls atomic.Int64
	s := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch calls.Add(1) {
		case 1:
			w.WriteHeader(http.StatusTooManyRequests)
			w.Write([]byte(`{"errcode":"M_LIMIT_EXCEEDED","error":"slow down","retry_after_ms":10}`))
		case 2:
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusTooManyRequests)
			w.Write([]byte(`{"errcode":"M_LIMIT_EXCEEDED"}`))
		default:
			w.Write([]byte(`{"event_id":"$e"}`))
		}
	})
	u := &user{srv: s, token: "T"}
	id, err := u.sendMessage(context.Background(), "!r:hs", "txn1", map[string]any{"body": "x"})
	if err != nil || id != "$e" {
		t.Fatalf("%v %q", err, id)
	}
	if calls.Load() != 3 || s.retries.Load() != 2 {
		t.Errorf("calls %d retries %d", calls.Load(), s.retries.Load())
	}
}

func TestNoRetryOnClientError(t *testing.T) {
	var calls atomic.Int64
	s := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusForbidden)
		w.Write([]byte(`{"errcode":"M_FORBIDDEN","error":"no"}`))
	})
	u := &user{srv: s, token: "T"}
	err := u.join(context.Background(), "!r:hs")
	var me *MatrixError
	if !errors.As(err, &me) || me.ErrCode != "M_FORBIDDEN" || calls.Load() != 1 {
		t.Fatalf("err %v calls %d", err, calls.Load())
	}
	if !strings.HasPrefix(err.Error(), "bench: POST /_matrix/client/v3/join/") {
		t.Errorf("message %q", err.Error())
	}
}

func TestRetryBoundedByContext(t *testing.T) {
	s := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "3600")
		w.WriteHeader(http.StatusTooManyRequests)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	u := &user{srv: s, token: "T"}
	if err := u.join(ctx, "!r:hs"); err == nil {
		t.Fatal("no error")
	}
}

func TestJoinVia(t *testing.T) {
	s := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.EscapedPath() != "/_matrix/client/v3/join/%21r:hs1" {
			t.Errorf("path %s", r.URL.EscapedPath())
		}
		q := r.URL.Query()
		if q.Get("via") != "hs1" || q.Get("server_name") != "hs1" {
			t.Errorf("query %v", q)
		}
		if r.Header.Get("Authorization") != "Bearer T" {
			t.Errorf("auth %q", r.Header.Get("Authorization"))
		}
		w.Write([]byte(`{"room_id":"!r:hs1"}`))
	})
	u := &user{srv: s, token: "T"}
	if err := u.join(context.Background(), "!r:hs1", serverName("@a:hs1")); err != nil {
		t.Fatal(err)
	}
}

func TestServerName(t *testing.T) {
	for in, want := range map[string]string{"@a:hs": "hs", "@a:hs:8448": "hs:8448", "@nocolon": ""} {
		if got := serverName(in); got != want {
			t.Errorf("serverName(%q) = %q", in, got)
		}
	}
}
