package api

import (
	"fmt"
	"strconv"
	"testing"
	"time"
)

// slow is a limit that does not refill during a test.
var slow = Limit{PerSecond: 0.001, Burst: 2}

func checkLimited(t *testing.T, r resp, hdr map[string][]string) {
	t.Helper()
	if r.status != 429 || r.errcode() != "M_LIMIT_EXCEEDED" {
		t.Fatalf("got %d %s, want 429 M_LIMIT_EXCEEDED", r.status, r.body)
	}
	ms, _ := r.obj(t)["retry_after_ms"].(float64)
	if ms <= 0 {
		t.Fatalf("retry_after_ms missing: %s", r.body)
	}
	ra := ""
	if v := hdr["Retry-After"]; len(v) > 0 {
		ra = v[0]
	}
	if n, err := strconv.Atoi(ra); err != nil || n <= 0 || int64(n)*1000 < int64(ms) {
		t.Fatalf("Retry-After %q with retry_after_ms %v", ra, ms)
	}
}

func TestRateLimits(t *testing.T) {
	cases := []struct {
		name   string
		limits RateLimits
		run    func(t *testing.T, ts *testServer)
	}{
		{"login per address", RateLimits{LoginAddress: slow, Loopback: true}, func(t *testing.T, ts *testServer) {
			body := `{"type":"m.login.password","user":"ann","password":"pw"}`
			for i := 0; i < 2; i++ {
				if r := ts.do("POST", "/_matrix/client/v3/login", "", body); r.status != 200 {
					t.Fatalf("login %d: %d %s", i, r.status, r.body)
				}
			}
			r, h := ts.doH("POST", "/_matrix/client/v3/login", "", body)
			checkLimited(t, r, h)
		}},
		{"login per account", RateLimits{LoginAccount: slow, Loopback: true}, func(t *testing.T, ts *testServer) {
			ts.login("ann", "pw")
			ts.login("ann", "pw")
			r, h := ts.doH("POST", "/_matrix/client/v3/login", "", `{"type":"m.login.password","user":"ann","password":"pw"}`)
			checkLimited(t, r, h)
			ts.login("bob", "pw") // another account is not affected
		}},
		{"failed attempts", RateLimits{LoginFailed: slow, Loopback: true}, func(t *testing.T, ts *testServer) {
			wrong := `{"type":"m.login.password","user":"ann","password":"wrong"}`
			for i := 0; i < 2; i++ {
				if r := ts.do("POST", "/_matrix/client/v3/login", "", wrong); r.errcode() != "M_FORBIDDEN" {
					t.Fatalf("attempt %d: %s", i, r.body)
				}
			}
			// Even the right password is refused now.
			r, h := ts.doH("POST", "/_matrix/client/v3/login", "", `{"type":"m.login.password","user":"ann","password":"pw"}`)
			checkLimited(t, r, h)
			ts.login("bob", "pw")
		}},
		{"failed UIA attempts", RateLimits{LoginFailed: slow, Loopback: true}, func(t *testing.T, ts *testServer) {
			tok, _ := ts.login("ann", "pw")
			for i := 0; i < 2; i++ {
				r := ts.uiaDo("POST", "/_matrix/client/v3/delete_devices", tok, `{"devices":[]}`, "ann", "wrong")
				if r.status != 401 || r.errcode() != "M_FORBIDDEN" {
					t.Fatalf("attempt %d: %d %s", i, r.status, r.body)
				}
			}
			r, h := ts.doH("POST", "/_matrix/client/v3/delete_devices", tok, `{"devices":[]}`)
			checkLimited(t, r, h)
		}},
		{"registration", RateLimits{Registration: slow, Loopback: true}, func(t *testing.T, ts *testServer) {
			// ann and bob were registered by the setup: the bucket is empty.
			r, h := ts.doH("POST", "/_matrix/client/v3/register", "", `{"username":"cat","password":"pw"}`)
			checkLimited(t, r, h)
		}},
		{"loopback exempt by default", DefaultRateLimits(), func(t *testing.T, ts *testServer) {
			for i := 0; i < 10; i++ {
				ts.login("ann", "pw")
				ts.do("POST", "/_matrix/client/v3/login", "", `{"type":"m.login.password","user":"ann","password":"wrong"}`)
				ts.register(fmt.Sprintf("u%d", i))
			}
			ts.login("ann", "pw")
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			lim := c.limits
			ts := newTestServer(t, Config{EnableRegistration: true, Accounts: AccountConfig{RateLimits: &lim}})
			ts.register("ann")
			ts.register("bob")
			c.run(t, ts)
		})
	}
}

func TestLimiter(t *testing.T) {
	l := newLimiter(Limit{PerSecond: 1000, Burst: 1})
	if ok, _ := l.allow("k", true); !ok {
		t.Fatal("first action refused")
	}
	ok, wait := l.allow("k", true)
	if ok || wait <= 0 || wait > 2*time.Millisecond {
		t.Fatalf("second action: %v %v", ok, wait)
	}
	if ok, _ := l.allow("other", false); !ok {
		t.Fatal("keys share a bucket")
	}
	var none *limiter
	if ok, _ := none.allow("k", true); !ok {
		t.Fatal("nil limiter limits")
	}
	if ok, _ := newLimiter(Limit{}).allow("k", true); !ok {
		t.Fatal("zero limit limits")
	}
	// Sweeping keeps the map bounded and forgets only full buckets.
	l = newLimiter(Limit{PerSecond: 0.001, Burst: 1})
	l.allow("busy", true)
	l.mu.Lock()
	l.sweep(time.Now())
	_, kept := l.buckets["busy"]
	l.mu.Unlock()
	if !kept {
		t.Fatal("sweep forgot a busy bucket")
	}
}
