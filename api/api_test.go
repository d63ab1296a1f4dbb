package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"engram/dag"
	"engram/dag/rooms"
	"engram/log"
	"engram/projections"
)

// testServer is an in-process engram on a loopback listener.
type testServer struct {
	t   testing.TB
	url string
	log *log.Log
	srv *Server
}

func newTestServer(t testing.TB, cfg Config) *testServer {
	t.Helper()
	key, err := dag.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	ts, _ := startTestServer(t, t.TempDir(), cfg, key)
	return ts
}

// startTestServer runs an in-process server on the data directory dir
// (catching its projections up, as serve does). stop shuts it down so
// another can open the same directory: a restart. It also runs at cleanup.
func startTestServer(t testing.TB, dir string, cfg Config, key dag.SigningKey) (*testServer, func()) {
	t.Helper()
	set, err := projections.All()
	if err != nil {
		t.Fatal(err)
	}
	l, err := log.Open(log.Options{Dir: dir, Apply: set.Apply})
	if err != nil {
		t.Fatal(err)
	}
	if err := set.CatchUp(l, l.DB()); err != nil {
		t.Fatal(err)
	}
	store, err := projections.NewStore(l, l.DB(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ServerName == "" {
		cfg.ServerName = "test.local"
	}
	cfg.PasswordCost = 4
	seq := rooms.New(rooms.Config{ServerName: cfg.ServerName, KeyID: key.ID, Key: key.Key}, l, store)
	srv := New(cfg, l, store, seq, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		http.DefaultClient.CloseIdleConnections()
		srv.Shutdown()
		store.Close()
		l.Close()
	}
	t.Cleanup(stop)
	return &testServer{t: t, url: "http://" + ln.Addr().String(), log: l, srv: srv}, stop
}

type resp struct {
	status int
	body   []byte
}

func (r resp) errcode() string {
	var e struct {
		Errcode string `json:"errcode"`
	}
	json.Unmarshal(r.body, &e)
	return e.Errcode
}

func (r resp) field(name string) string {
	var m map[string]any
	json.Unmarshal(r.body, &m)
	s, _ := m[name].(string)
	return s
}

func (ts *testServer) do(method, path, token string, body string) resp {
	ts.t.Helper()
	req, err := http.NewRequest(method, ts.url+path, strings.NewReader(body))
	if err != nil {
		ts.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		ts.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{res.StatusCode, b}
}

// register makes a user through the m.login.dummy flow and returns its token.
func (ts *testServer) register(user string) string {
	ts.t.Helper()
	first := ts.do("POST", "/_matrix/client/v3/register", "", fmt.Sprintf(`{"username":%q,"password":"pw"}`, user))
	if first.status != 401 {
		ts.t.Fatalf("register %s: %d %s", user, first.status, first.body)
	}
	r := ts.do("POST", "/_matrix/client/v3/register", "", fmt.Sprintf(`{"username":%q,"password":"pw","auth":{"type":"m.login.dummy","session":%q}}`, user, first.field("session")))
	if r.status != 200 {
		ts.t.Fatalf("register %s: %d %s", user, r.status, r.body)
	}
	return r.field("access_token")
}

func TestBadInput(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true, MaxBodyBytes: 4096})
	tok := ts.register("alice")
	room := ts.do("POST", "/_matrix/client/v3/createRoom", tok, `{}`).field("room_id")
	if room == "" {
		t.Fatal("no room")
	}
	send := "/_matrix/client/v3/rooms/" + room + "/send/m.room.message/"
	big := `{"body":"` + strings.Repeat("x", 5000) + `"}`
	cases := []struct {
		name, method, path, token, body string
		status                          int
		code                            string
	}{
		{"not json", "PUT", send + "1", tok, `{"body":`, 400, "M_NOT_JSON"},
		{"not an object", "PUT", send + "2", tok, `["body"]`, 400, "M_BAD_JSON"},
		{"wrong shape", "POST", "/_matrix/client/v3/createRoom", tok, `{"name":5}`, 400, "M_BAD_JSON"},
		{"wrong shape login", "POST", "/_matrix/client/v3/login", "", `{"type":"m.login.password","password":[1]}`, 400, "M_BAD_JSON"},
		{"too large", "PUT", send + "3", tok, big, 413, "M_TOO_LARGE"},
		{"unknown endpoint", "GET", "/_matrix/client/v3/nope", tok, ``, 404, "M_UNRECOGNIZED"},
		{"unknown prefix", "GET", "/foo/bar", "", ``, 404, "M_UNRECOGNIZED"},
		{"wrong method", "DELETE", "/_matrix/client/v3/createRoom", tok, ``, 405, "M_UNRECOGNIZED"},
		{"missing token", "GET", "/_matrix/client/v3/account/whoami", "", ``, 401, "M_MISSING_TOKEN"},
		{"wrong token", "GET", "/_matrix/client/v3/account/whoami", "nope", ``, 401, "M_UNKNOWN_TOKEN"},
		{"wrong token send", "PUT", send + "4", "nope", `{}`, 401, "M_UNKNOWN_TOKEN"},
		{"unknown room", "PUT", "/_matrix/client/v3/rooms/!nope:test.local/send/m.room.message/5", tok, `{}`, 404, "M_NOT_FOUND"},
		{"bad room version", "POST", "/_matrix/client/v3/createRoom", tok, `{"room_version":"99"}`, 400, "M_UNSUPPORTED_ROOM_VERSION"},
		{"bad dir", "GET", "/_matrix/client/v3/rooms/" + room + "/messages?dir=x", tok, ``, 400, "M_INVALID_PARAM"},
		{"bad since", "GET", "/_matrix/client/v3/sync?since=garbage", tok, ``, 400, "M_INVALID_PARAM"},
		{"bad login", "POST", "/_matrix/client/v3/login", "", `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"wrong"}`, 403, "M_FORBIDDEN"},
		{"user in use", "POST", "/_matrix/client/v3/register", "", `{"username":"alice","password":"x"}`, 400, "M_USER_IN_USE"},
		{"invalid username", "POST", "/_matrix/client/v3/register", "", `{"username":"Al ice!","password":"x"}`, 400, "M_INVALID_USERNAME"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := ts.log.Last()
			r := ts.do(c.method, c.path, c.token, c.body)
			if r.status != c.status || r.errcode() != c.code {
				t.Errorf("got %d %s, want %d %s", r.status, r.body, c.status, c.code)
			}
			if after := ts.log.Last(); after != before {
				t.Errorf("bad input appended %d records", after-before)
			}
		})
	}
}

func TestRegistrationClosed(t *testing.T) {
	ts := newTestServer(t, Config{})
	r := ts.do("POST", "/_matrix/client/v3/register", "", `{"username":"bob","password":"pw"}`)
	if r.status != 403 || r.errcode() != "M_FORBIDDEN" {
		t.Fatalf("got %d %s", r.status, r.body)
	}
}

func TestLoginWhoamiLogout(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	ts.register("carol")
	r := ts.do("POST", "/_matrix/client/v3/login", "", `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"carol"},"password":"pw"}`)
	if r.status != 200 {
		t.Fatalf("login: %d %s", r.status, r.body)
	}
	tok := r.field("access_token")
	if who := ts.do("GET", "/_matrix/client/v3/account/whoami", tok, ""); who.field("user_id") != "@carol:test.local" {
		t.Fatalf("whoami: %s", who.body)
	}
	if out := ts.do("POST", "/_matrix/client/v3/logout", tok, ""); out.status != 200 {
		t.Fatalf("logout: %d %s", out.status, out.body)
	}
	if who := ts.do("GET", "/_matrix/client/v3/account/whoami", tok, ""); who.errcode() != "M_UNKNOWN_TOKEN" {
		t.Fatalf("token alive after logout: %s", who.body)
	}
}

// TestSendSyncMessages drives the core path: create, join, send with
// idempotency, initial and incremental sync, pagination both ways.
func TestSendSyncMessages(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	a, b := ts.register("alice"), ts.register("bob")
	room := ts.do("POST", "/_matrix/client/v3/createRoom", a, `{"preset":"public_chat"}`).field("room_id")
	if r := ts.do("POST", "/_matrix/client/v3/join/"+room, b, `{}`); r.status != 200 {
		t.Fatalf("join: %d %s", r.status, r.body)
	}
	initial := ts.do("GET", "/_matrix/client/v3/sync", b, "")
	since := initial.field("next_batch")
	if since == "" {
		t.Fatalf("sync: %s", initial.body)
	}
	var ids []string
	for i := 0; i < 15; i++ {
		r := ts.do("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/txn%d", room, i), a, fmt.Sprintf(`{"msgtype":"m.text","body":"m%d"}`, i))
		if r.status != 200 {
			t.Fatalf("send: %d %s", r.status, r.body)
		}
		ids = append(ids, r.field("event_id"))
	}
	again := ts.do("PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/txn3", a, `{"msgtype":"m.text","body":"m3"}`)
	if again.field("event_id") != ids[3] {
		t.Fatalf("transaction not idempotent: %s vs %s", again.field("event_id"), ids[3])
	}
	var inc struct {
		NextBatch string `json:"next_batch"`
		Rooms     struct {
			Join map[string]struct {
				Timeline struct {
					Events []struct {
						EventID string `json:"event_id"`
					} `json:"events"`
					Limited   bool   `json:"limited"`
					PrevBatch string `json:"prev_batch"`
				} `json:"timeline"`
			} `json:"join"`
		} `json:"rooms"`
	}
	r := ts.do("GET", "/_matrix/client/v3/sync?timeout=1000&since="+since, b, "")
	json.Unmarshal(r.body, &inc)
	tl := inc.Rooms.Join[room].Timeline
	if !tl.Limited || len(tl.Events) != 10 || tl.Events[9].EventID != ids[14] {
		t.Fatalf("incremental sync: %s", r.body)
	}
	// Page back from prev_batch: the 5 messages the timeline left out come next.
	var page struct {
		Chunk []struct {
			EventID string `json:"event_id"`
		} `json:"chunk"`
		End string `json:"end"`
	}
	p := ts.do("GET", "/_matrix/client/v3/rooms/"+room+"/messages?dir=b&limit=5&from="+tl.PrevBatch, b, "")
	json.Unmarshal(p.body, &page)
	if len(page.Chunk) != 5 || page.Chunk[0].EventID != ids[4] || page.Chunk[4].EventID != ids[0] {
		t.Fatalf("messages back: %s", p.body)
	}
	f := ts.do("GET", "/_matrix/client/v3/rooms/"+room+"/messages?dir=f&limit=3&from="+page.End, b, "")
	json.Unmarshal(f.body, &page)
	if len(page.Chunk) != 3 || page.Chunk[0].EventID != ids[0] || page.Chunk[2].EventID != ids[2] {
		t.Fatalf("messages forward: %s", f.body)
	}
	// Nothing new: a long-poll with timeout 0 answers at once, empty.
	empty := ts.do("GET", "/_matrix/client/v3/sync?timeout=0&since="+inc.NextBatch, b, "")
	if bytes.Contains(empty.body, []byte(room)) {
		t.Fatalf("empty sync mentions the room: %s", empty.body)
	}
}

func TestMetrics(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true, EnableMetrics: true})
	sizes := NewHistogram(1, 4, 16)
	ts.srv.AddHistogram("engram_test_sizes", "Test sizes.", sizes)
	for _, v := range []float64{1, 3, 3, 100} {
		sizes.Observe(v)
	}
	ts.register("m")
	ts.do("GET", "/_matrix/client/v3/nope", "", "")
	r := ts.do("GET", "/metrics", "", "")
	if r.status != 200 {
		t.Fatalf("metrics: %d", r.status)
	}
	for _, want := range []string{
		`engram_http_requests_total{method="POST",route="/_matrix/client/v3/register",code="4xx"} 1`,
		`engram_http_requests_total{method="POST",route="/_matrix/client/v3/register",code="2xx"} 1`,
		`engram_http_request_seconds_count{method="POST",route="/_matrix/client/v3/register"} 2`,
		"engram_sync_waiters 0",
		"engram_log_position ",
		"# TYPE engram_test_sizes histogram\n" +
			`engram_test_sizes_bucket{le="1"} 1` + "\n" + `engram_test_sizes_bucket{le="4"} 3` + "\n" +
			`engram_test_sizes_bucket{le="16"} 3` + "\n" + `engram_test_sizes_bucket{le="+Inf"} 4` + "\n" +
			"engram_test_sizes_sum 107\nengram_test_sizes_count 4\n",
	} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("metrics lack %q:\n%s", want, r.body)
		}
	}
	off := newTestServer(t, Config{})
	if r := off.do("GET", "/metrics", "", ""); r.status != 404 {
		t.Fatalf("metrics served when disabled: %d", r.status)
	}
}
