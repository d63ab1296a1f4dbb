package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"engram/dag"
	"engram/projections"
)

func TestPushRulesAPI(t *testing.T) {
	ts, alice, bob, room := syRoomPair(t, Config{EnableRegistration: true})
	_ = alice
	pr := "/pushrules/global/"
	cases := []struct {
		name, method, path, body, code string
		status                         int
	}{
		{"unknown kind", "PUT", pr + "sideways/x", `{"actions":[]}`, "M_INVALID_PARAM", 400},
		{"reserved id", "PUT", pr + "override/.mine", `{"actions":[]}`, "M_INVALID_PARAM", 400},
		{"slash id", "PUT", pr + "override/a%2Fb", `{"actions":[]}`, "M_INVALID_PARAM", 400},
		{"no actions", "PUT", pr + "override/x", `{}`, "M_MISSING_PARAM", 400},
		{"bad action", "PUT", pr + "override/x", `{"actions":["shout"]}`, "M_INVALID_PARAM", 400},
		{"bad tweak", "PUT", pr + "override/x", `{"actions":[{"value":1}]}`, "M_INVALID_PARAM", 400},
		{"not json", "PUT", pr + "override/x", `{`, "M_NOT_JSON", 400},
		{"wrong shape", "PUT", pr + "override/x", `{"actions":"notify"}`, "M_BAD_JSON", 400},
		{"content no pattern", "PUT", pr + "content/x", `{"actions":[]}`, "M_MISSING_PARAM", 400},
		{"condition no kind", "PUT", pr + "override/x", `{"actions":[],"conditions":[{"key":"type"}]}`, "M_INVALID_PARAM", 400},
		{"before unknown", "PUT", pr + "override/x?before=nope", `{"actions":[]}`, "M_UNKNOWN", 400},
		{"after default", "PUT", pr + "override/x?after=.m.rule.master", `{"actions":[]}`, "M_INVALID_PARAM", 400},
		{"get unknown", "GET", pr + "override/nope", ``, "M_NOT_FOUND", 404},
		{"get unknown kind", "GET", pr + "sideways/nope", ``, "M_INVALID_PARAM", 400},
		{"delete unknown", "DELETE", pr + "override/nope", ``, "M_NOT_FOUND", 404},
		{"delete default", "DELETE", pr + "override/.m.rule.master", ``, "M_INVALID_PARAM", 400},
		{"enabled unknown", "PUT", pr + "override/nope/enabled", `{"enabled":true}`, "M_NOT_FOUND", 404},
		{"enabled missing", "PUT", pr + "override/.m.rule.master/enabled", `{}`, "M_MISSING_PARAM", 400},
		{"actions bad", "PUT", pr + "override/.m.rule.master/actions", `{"actions":[5]}`, "M_INVALID_PARAM", 400},
	}
	for _, c := range cases {
		if r := ts.do(c.method, syV3+c.path, bob, c.body); r.status != c.status || r.errcode() != c.code {
			t.Errorf("%s: %d %s", c.name, r.status, r.body)
		}
	}
	ids := func() []string {
		var rs projections.PushRuleset
		json.Unmarshal(ts.syOK("GET", "/pushrules/global/", bob, "").body, &rs)
		var out []string
		for _, r := range rs.Override {
			out = append(out, r.RuleID)
		}
		return out[:min(len(out), 5)]
	}
	ts.syOK("PUT", pr+"override/a", bob, `{"actions":["notify"],"conditions":[{"kind":"event_match","key":"content.body","pattern":"alpha"}]}`)
	ts.syOK("PUT", pr+"override/b", bob, `{"actions":["notify"]}`)          // new rules go first
	ts.syOK("PUT", pr+"override/c?after=a", bob, `{"actions":["notify"]}`)  // after a
	ts.syOK("PUT", pr+"override/d?before=b", bob, `{"actions":["notify"]}`) // before b
	ts.syOK("PUT", pr+"override/a?before=d&after=c", bob, `{"actions":[]}`) // before wins
	if got := fmt.Sprint(ids()); got != "[.m.rule.master a d b c]" {
		t.Fatalf("order: %s", got)
	}
	ts.syOK("PUT", pr+"override/b/enabled", bob, `{"enabled":false}`)
	if r := ts.syOK("GET", pr+"override/b/enabled", bob, ""); string(r.body) != `{"enabled":false}` {
		t.Fatalf("enabled: %s", r.body)
	}
	ts.syOK("PUT", pr+"override/.m.rule.master/enabled", bob, `{"enabled":true}`)
	ts.syOK("PUT", pr+"underride/.m.rule.message/actions", bob, `{"actions":["notify",{"set_tweak":"sound","value":"x"}]}`)
	if r := ts.syOK("GET", pr+"underride/.m.rule.message/actions", bob, ""); string(r.body) != `{"actions":["notify",{"set_tweak":"sound","value":"x"}]}` {
		t.Fatalf("actions: %s", r.body)
	}
	var rule projections.PushRule
	json.Unmarshal(ts.syOK("GET", pr+"override/.m.rule.master", bob, "").body, &rule)
	if !rule.Enabled || !rule.Default {
		t.Fatalf("master: %+v", rule)
	}
	ts.syOK("DELETE", pr+"override/d", bob, ``)
	if got := fmt.Sprint(ids()); got != "[.m.rule.master a b c .m.rule.suppress_notices]" {
		t.Fatalf("after delete: %s", got)
	}
	ts.syOK("PUT", pr+"content/cake", bob, `{"pattern":"cake","actions":["notify"]}`)
	ts.syOK("PUT", pr+"room/"+url.PathEscape(room), bob, `{"actions":[]}`)
	var all struct {
		Global projections.PushRuleset `json:"global"`
	}
	json.Unmarshal(ts.syOK("GET", "/pushrules/", bob, "").body, &all)
	if len(all.Global.Content) != 1 || *all.Global.Content[0].Pattern != "cake" || len(all.Global.Room) != 1 || all.Global.Room[0].RuleID != room {
		t.Fatalf("all: %+v", all.Global)
	}
	// The master rule now silences everything for bob.
	since := ts.sySync(bob, "").NextBatch
	ts.syMsg(alice, room, "hello")
	if s := ts.syAfter(bob, since); *s.Rooms.Join[room].Unread != (syCounts{}) {
		t.Fatalf("master enabled: %s", s.raw)
	}
	// Another user's rules are untouched.
	var other projections.PushRuleset
	json.Unmarshal(ts.syOK("GET", "/pushrules/global", alice, "").body, &other)
	if other.Override[0].Enabled || len(other.Override) != 10 {
		t.Fatalf("alice's rules changed: %+v", other.Override[:2])
	}
}

// gateway is a loopback push gateway that records notifications and can
// fail or reject.
type gateway struct {
	mu       sync.Mutex
	got      []map[string]any
	failures int      // answer 500 this many times first
	reject   []string // pushkeys to reject
	srv      *httptest.Server
	ch       chan struct{}
}

func newGateway(t *testing.T) *gateway {
	g := &gateway{ch: make(chan struct{}, 100)}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != pushGatewayPath || r.Method != "POST" {
			http.NotFound(w, r)
			return
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.failures > 0 {
			g.failures--
			w.WriteHeader(500)
			return
		}
		var body struct {
			Notification map[string]any `json:"notification"`
		}
		json.NewDecoder(r.Body).Decode(&body)
		g.got = append(g.got, body.Notification)
		rej := g.reject
		if rej == nil {
			rej = []string{}
		}
		json.NewEncoder(w).Encode(map[string]any{"rejected": rej})
		g.ch <- struct{}{}
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *gateway) url() string { return g.srv.URL + pushGatewayPath }

func (g *gateway) wait(t *testing.T, n int) []map[string]any {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		g.mu.Lock()
		if len(g.got) >= n {
			out := append([]map[string]any(nil), g.got...)
			g.mu.Unlock()
			return out
		}
		g.mu.Unlock()
		select {
		case <-g.ch:
		case <-deadline:
			t.Fatalf("gateway got %d notifications, want %d", len(g.got), n)
		}
	}
}

func pusherBody(gw, key string, extra string) string {
	return fmt.Sprintf(`{"kind":"http","app_id":"org.example.app","pushkey":%q,"app_display_name":"App","device_display_name":"Phone","lang":"en","data":{"url":%q%s}}`, key, gw, extra)
}

func TestPushers(t *testing.T) {
	ts, alice, bob, room := syRoomPair(t, Config{EnableRegistration: true})
	ts.srv.hub.pushers.backoffBase = time.Millisecond
	g := newGateway(t)
	cases := []struct {
		name, body, code string
	}{
		{"no kind", `{"app_id":"a","pushkey":"k"}`, "M_MISSING_PARAM"},
		{"no pushkey", `{"kind":"http","app_id":"a"}`, "M_MISSING_PARAM"},
		{"no data", `{"kind":"http","app_id":"a","pushkey":"k","app_display_name":"A","device_display_name":"D","lang":"en"}`, "M_MISSING_PARAM"},
		{"no url", `{"kind":"http","app_id":"a","pushkey":"k","app_display_name":"A","device_display_name":"D","lang":"en","data":{}}`, "M_MISSING_PARAM"},
		{"bad path", pusherBody("https://gw.example/notify", "k", ""), "M_INVALID_PARAM"},
		{"bad scheme", pusherBody("ftp://gw.example"+pushGatewayPath, "k", ""), "M_INVALID_PARAM"},
		{"email", `{"kind":"email","app_id":"m.email","pushkey":"a@b.c","app_display_name":"A","device_display_name":"D","lang":"en","data":{}}`, "M_INVALID_PARAM"},
		{"bad format", pusherBody(g.url(), "k", `,"format":"full"`), "M_INVALID_PARAM"},
		{"long app id", `{"kind":null,"app_id":"` + fmt.Sprintf("%070d", 0) + `","pushkey":"k"}`, "M_INVALID_PARAM"},
		{"not json", `{`, "M_NOT_JSON"},
		{"kind number", `{"kind":5,"app_id":"a","pushkey":"k"}`, "M_BAD_JSON"},
	}
	for _, c := range cases {
		if r := ts.do("POST", syV3+"/pushers/set", bob, c.body); r.status != 400 || r.errcode() != c.code {
			t.Errorf("%s: %d %s", c.name, r.status, r.body)
		}
	}
	ts.syOK("POST", "/pushers/set", bob, pusherBody(g.url(), "bobkey", `,"custom":"x"`))
	var list struct {
		Pushers []map[string]any `json:"pushers"`
	}
	json.Unmarshal(ts.syOK("GET", "/pushers", bob, "").body, &list)
	if len(list.Pushers) != 1 || list.Pushers[0]["pushkey"] != "bobkey" || list.Pushers[0]["kind"] != "http" {
		t.Fatalf("pushers: %+v", list)
	}
	// A notification reaches the gateway, after two failures (retried).
	g.mu.Lock()
	g.failures = 2
	g.mu.Unlock()
	id := ts.sySend(alice, room, "m.room.message", `{"msgtype":"m.text","body":"ping","m.mentions":{"user_ids":["@bob:test.local"]}}`)
	got := g.wait(t, 1)
	n := got[0]
	dev := n["devices"].([]any)[0].(map[string]any)
	if n["event_id"] != id || n["room_id"] != room || n["sender"] != "@alice:test.local" || n["prio"] != "high" ||
		n["counts"].(map[string]any)["unread"] != float64(1) || dev["pushkey"] != "bobkey" ||
		dev["data"].(map[string]any)["url"] != nil || dev["data"].(map[string]any)["custom"] != "x" ||
		dev["tweaks"].(map[string]any)["highlight"] != true {
		t.Fatalf("notification: %+v", n)
	}
	// The sender's own messages are not pushed; the next one from alice is.
	ts.syMsg(bob, room, "me")
	id2 := ts.syMsg(alice, room, "second")
	if got := g.wait(t, 2); got[1]["event_id"] != id2 {
		t.Fatalf("second: %+v", got[1])
	}
	// event_id_only format.
	ts.syOK("POST", "/pushers/set", bob, pusherBody(g.url(), "bobkey", `,"format":"event_id_only"`))
	id3 := ts.syMsg(alice, room, "third")
	if got := g.wait(t, 3); got[2]["event_id"] != id3 || got[2]["content"] != nil || got[2]["sender"] != nil {
		t.Fatalf("event_id_only: %+v", got[2])
	}
	// A non-append set by another user takes the pushkey over.
	ts.syOK("POST", "/pushers/set", alice, pusherBody(g.url(), "bobkey", ""))
	json.Unmarshal(ts.syOK("GET", "/pushers", bob, "").body, &list)
	if len(list.Pushers) != 0 {
		t.Fatalf("bob's pusher not removed: %+v", list)
	}
	// A rejected pushkey removes the pusher.
	g.mu.Lock()
	g.reject = []string{"bobkey"}
	g.mu.Unlock()
	ts.syMsg(bob, room, "for alice")
	g.wait(t, 4)
	deadline := time.Now().Add(5 * time.Second)
	for {
		json.Unmarshal(ts.syOK("GET", "/pushers", alice, "").body, &list)
		if len(list.Pushers) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rejected pusher kept: %+v", list)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Logging the device out removes its pushers.
	ts.syOK("POST", "/pushers/set", bob, pusherBody(g.url(), "k3", ""))
	ts.syOK("POST", "/logout", bob, "")
	bob = ts.do("POST", syV3+"/login", "", `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"bob"},"password":"pw"}`).field("access_token")
	json.Unmarshal(ts.syOK("GET", "/pushers", bob, "").body, &list)
	if len(list.Pushers) != 0 {
		t.Fatalf("pusher of a logged out device: %+v", list)
	}
	// kind null deletes.
	ts.syOK("POST", "/pushers/set", bob, pusherBody(g.url(), "k2", ""))
	ts.syOK("POST", "/pushers/set", bob, `{"kind":null,"app_id":"org.example.app","pushkey":"k2"}`)
	json.Unmarshal(ts.syOK("GET", "/pushers", bob, "").body, &list)
	if len(list.Pushers) != 0 {
		t.Fatalf("delete: %+v", list)
	}
}

// TestPusherResumesAfterRestart: the pusher's position is in the log, so
// a restarted server pushes what arrived while it was down, once.
func TestPusherResumesAfterRestart(t *testing.T) {
	dir := t.TempDir()
	g := newGateway(t)
	key, err := dag.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	start := func() (*testServer, func()) {
		return startTestServer(t, dir, Config{EnableRegistration: true}, key)
	}
	ts, stop := start()
	alice, bob := ts.register("alice"), ts.register("bob")
	room := ts.syCreate(alice, `{"preset":"public_chat"}`)
	ts.syJoin(bob, room)
	ts.syOK("POST", "/pushers/set", bob, pusherBody(g.url(), "bobkey", ""))
	first := ts.syMsg(alice, room, "before restart")
	g.wait(t, 1)
	stop()

	// While down: nothing pushes. Append an event through a server with
	// its pushers stopped, by starting one and stopping its pool first.
	ts, stop = start()
	ts.srv.hub.pushers.close()
	login := ts.do("POST", syV3+"/login", "", `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"pw"}`)
	alice = login.field("access_token")
	during := ts.syMsg(alice, room, "while the pusher was down")
	stop()

	ts, stop = start()
	defer stop()
	got := g.wait(t, 2)
	time.Sleep(50 * time.Millisecond) // nothing else should come
	g.mu.Lock()
	n := len(g.got)
	g.mu.Unlock()
	if got[0]["event_id"] != first || got[1]["event_id"] != during || n != 2 {
		t.Fatalf("after restart: %d notifications, %v / %v", n, got[0]["event_id"], got[1]["event_id"])
	}
}
