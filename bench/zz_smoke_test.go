package bench

// TEMPORARY scratch fake homeserver used only to smoke-test the scenario
// code during development; removed before handing over.

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

type fakeEv struct {
	pos  int
	room string
	raw  map[string]any
}

type fakeHS struct {
	name    string
	secret  string
	mu      *sync.Mutex
	cond    *sync.Cond
	events  *[]fakeEv
	tokens  map[string]string // token -> user
	members map[string]map[string]bool
	state   map[string]map[string]map[string]any
	txns    map[string]string
	nextID  *int
	filters map[string]map[string]any
}

func newFakeBackend(name string) *fakeHS {
	mu := &sync.Mutex{}
	var evs []fakeEv
	id := 0
	return &fakeHS{name: name, secret: "s3cret", mu: mu, cond: sync.NewCond(mu), events: &evs, tokens: map[string]string{},
		members: map[string]map[string]bool{}, state: map[string]map[string]map[string]any{}, txns: map[string]string{}, nextID: &id, filters: map[string]map[string]any{}}
}

func (f *fakeHS) clone(name string) *fakeHS {
	g := *f
	g.name = name
	return &g
}

func (f *fakeHS) appendLocked(room string, ev map[string]any) string {
	*f.nextID++
	id := fmt.Sprintf("$e%d", *f.nextID)
	ev["event_id"] = id
	ev["room_id"] = room
	*f.events = append(*f.events, fakeEv{pos: len(*f.events) + 1, room: room, raw: ev})
	if sk, ok := ev["state_key"].(string); ok {
		typ := ev["type"].(string)
		if f.state[room][typ] == nil {
			f.state[room][typ] = map[string]any{}
		}
		f.state[room][typ][sk] = ev
	}
	f.cond.Broadcast()
	return id
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeHS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	var body map[string]any
	if r.Body != nil {
		_ = json.NewDecoder(r.Body).Decode(&body)
	}
	switch {
	case p == "/_matrix/client/versions":
		writeJSON(w, 200, map[string]any{"versions": []string{"v1.11"}})
		return
	case p == "/_synapse/admin/v1/register" && r.Method == "GET":
		writeJSON(w, 200, map[string]any{"nonce": "n123"})
		return
	case p == "/_synapse/admin/v1/register":
		user, _ := body["username"].(string)
		pw, _ := body["password"].(string)
		mac := sharedSecretMAC(f.secret, "n123", user, pw, false)
		if !hmac.Equal([]byte(mac), []byte(body["mac"].(string))) {
			writeJSON(w, 403, map[string]any{"errcode": "M_FORBIDDEN", "error": "bad mac"})
			return
		}
		f.reg(w, user)
		return
	case p == "/_matrix/client/v3/register":
		auth, _ := body["auth"].(map[string]any)
		if auth == nil || auth["session"] != "sess" || auth["type"] != "m.login.dummy" {
			writeJSON(w, 401, map[string]any{"session": "sess", "flows": []any{map[string]any{"stages": []string{"m.login.dummy"}}}})
			return
		}
		f.reg(w, body["username"].(string))
		return
	}
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	f.mu.Lock()
	uid, ok := f.tokens[tok]
	f.mu.Unlock()
	if !ok {
		writeJSON(w, 401, map[string]any{"errcode": "M_UNKNOWN_TOKEN"})
		return
	}
	parts := strings.Split(strings.TrimPrefix(p, "/_matrix/client/v3/"), "/")
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case parts[0] == "createRoom":
		*f.nextID++
		room := fmt.Sprintf("!r%d:%s", *f.nextID, f.name)
		f.members[room] = map[string]bool{uid: true}
		f.state[room] = map[string]map[string]any{}
		f.appendLocked(room, map[string]any{"type": "m.room.create", "state_key": "", "sender": uid, "content": map[string]any{}})
		f.appendLocked(room, map[string]any{"type": "m.room.member", "state_key": uid, "sender": uid, "content": map[string]any{"membership": "join"}})
		writeJSON(w, 200, map[string]any{"room_id": room})
	case parts[0] == "join":
		room := parts[1]
		if f.members[room] == nil {
			writeJSON(w, 404, map[string]any{"errcode": "M_NOT_FOUND"})
			return
		}
		f.members[room][uid] = true
		f.appendLocked(room, map[string]any{"type": "m.room.member", "state_key": uid, "sender": uid, "content": map[string]any{"membership": "join"}})
		writeJSON(w, 200, map[string]any{"room_id": room})
	case parts[0] == "user" && parts[2] == "filter":
		*f.nextID++
		id := strconv.Itoa(*f.nextID)
		f.filters[id] = body
		writeJSON(w, 200, map[string]any{"filter_id": id})
	case parts[0] == "rooms" && len(parts) == 5 && parts[2] == "send":
		room, txn := parts[1], parts[4]
		if id, ok := f.txns[tok+txn]; ok {
			writeJSON(w, 200, map[string]any{"event_id": id})
			return
		}
		id := f.appendLocked(room, map[string]any{"type": parts[3], "sender": uid, "content": body})
		f.txns[tok+txn] = id
		writeJSON(w, 200, map[string]any{"event_id": id})
	case parts[0] == "rooms" && len(parts) == 5 && parts[2] == "state":
		id := f.appendLocked(parts[1], map[string]any{"type": parts[3], "state_key": parts[4], "sender": uid, "content": body})
		writeJSON(w, 200, map[string]any{"event_id": id})
	case parts[0] == "rooms" && len(parts) == 3 && parts[2] == "state":
		var out []any
		for _, m := range f.state[parts[1]] {
			for _, ev := range m {
				out = append(out, ev)
			}
		}
		writeJSON(w, 200, out)
	case parts[0] == "rooms" && parts[2] == "joined_members":
		j := map[string]any{}
		for u := range f.members[parts[1]] {
			j[u] = map[string]any{}
		}
		writeJSON(w, 200, map[string]any{"joined": j})
	case parts[0] == "rooms" && parts[2] == "messages":
		room := parts[1]
		q := r.URL.Query()
		from := len(*f.events)
		if t := q.Get("from"); t != "" {
			from, _ = strconv.Atoi(t[1:])
		}
		limit, _ := strconv.Atoi(q.Get("limit"))
		var chunk []any
		last := 0
		for i := from; i >= 1 && len(chunk) < limit; i-- {
			ev := (*f.events)[i-1]
			if ev.room == room {
				chunk = append(chunk, ev.raw)
				last = i
			}
		}
		ans := map[string]any{"chunk": chunk, "start": q.Get("from")}
		if len(chunk) == limit && last > 1 {
			ans["end"] = "t" + strconv.Itoa(last-1)
		}
		writeJSON(w, 200, ans)
	case parts[0] == "sync":
		q := r.URL.Query()
		since := 0
		if s := q.Get("since"); s != "" {
			since, _ = strconv.Atoi(s[1:])
		}
		limit := 10
		if fl, ok := f.filters[q.Get("filter")]; ok {
			if rm, ok := fl["room"].(map[string]any); ok {
				if tl, ok := rm["timeline"].(map[string]any); ok {
					limit = int(tl["limit"].(float64))
				}
			}
		}
		timeout, _ := strconv.Atoi(q.Get("timeout"))
		deadline := time.Now().Add(time.Duration(timeout) * time.Millisecond)
		// Small fake limit to exercise gap filling.
		if limit > 7 && since > 0 {
			limit = 7
		}
		for len(*f.events) <= since && time.Now().Before(deadline) && r.Context().Err() == nil {
			go func() { time.Sleep(20 * time.Millisecond); f.mu.Lock(); f.cond.Broadcast(); f.mu.Unlock() }()
			f.cond.Wait()
		}
		join := map[string]any{}
		for room, mem := range f.members {
			if !mem[uid] {
				continue
			}
			var evs []fakeEv
			for _, ev := range (*f.events)[since:] {
				if ev.room == room {
					evs = append(evs, ev)
				}
			}
			if len(evs) == 0 && since > 0 {
				continue
			}
			tl := map[string]any{"events": []any{}}
			if len(evs) > limit {
				evs = evs[len(evs)-limit:]
				tl["limited"] = true
			}
			raws := []any{}
			for _, e := range evs {
				raws = append(raws, e.raw)
			}
			tl["events"] = raws
			prev := since
			if len(evs) > 0 {
				prev = evs[0].pos - 1
			}
			tl["prev_batch"] = "t" + strconv.Itoa(prev)
			join[room] = map[string]any{"timeline": tl}
		}
		writeJSON(w, 200, map[string]any{"next_batch": "s" + strconv.Itoa(len(*f.events)), "rooms": map[string]any{"join": join}})
	default:
		writeJSON(w, 404, map[string]any{"errcode": "M_UNRECOGNIZED", "error": p})
	}
}

func (f *fakeHS) reg(w http.ResponseWriter, user string) {
	f.mu.Lock()
	*f.nextID++
	tok := "tok" + strconv.Itoa(*f.nextID)
	uid := "@" + user + ":" + f.name
	f.tokens[tok] = uid
	f.mu.Unlock()
	writeJSON(w, 200, map[string]any{"user_id": uid, "access_token": tok, "device_id": "D"})
}

func TestSmokeFake(t *testing.T) {
	be := newFakeBackend("hs1")
	srv := httptest.NewServer(be)
	defer srv.Close()
	srv2 := httptest.NewServer(be.clone("hs2"))
	defer srv2.Close()
	cases := []Config{
		{Scenario: "busy-room", Users: 4, Senders: 2, Messages: 40, Listeners: 2},
		{Scenario: "busy-room", Users: 4, Senders: 2, Messages: 40, Listeners: 2, SharedSecret: "s3cret", Rate: 200},
		{Scenario: "fan-out", Rooms: 3, Listeners: 5, Messages: 30, Senders: 2},
		{Scenario: "federated", HS2: srv2.URL, Senders: 2, Listeners: 2, Messages: 20},
		{Scenario: "join-storm", Users: 20, Concurrency: 5},
		{Scenario: "initial-sync", Rooms: 3, History: 25, PageLimit: 7, Repeat: 2},
		{Scenario: "state-heavy", StateEvents: 30, Repeat: 2},
	}
	for _, c := range cases {
		c.HS = srv.URL
		c.Grace = 5 * time.Second
		c.SyncTimeout = 2 * time.Second
		var log strings.Builder
		c.Log = &log
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		res, err := Run(ctx, c)
		cancel()
		if err != nil {
			t.Fatalf("%s: %v\n%s", c.Scenario, err, log.String())
		}
		var tb strings.Builder
		res.WriteTable(&tb)
		t.Logf("%s\n%s", log.String(), tb.String())
		if res.Counts.Undelivered != 0 || res.Counts.Failures != 0 || res.Counts.SendFailures != 0 {
			t.Errorf("%s: counts %+v notes %v", c.Scenario, res.Counts, res.Notes)
		}
	}
}

func TestCLIFake(t *testing.T) {
	be := newFakeBackend("hs1")
	srv := httptest.NewServer(be)
	defer srv.Close()
	dir := t.TempDir()
	for i, sc := range []string{"a", "b"} {
		code := Main([]string{"--hs", srv.URL, "--scenario", "busy-room", "--users", "6", "--senders", "3", "--messages", strconv.Itoa(3000 + i*1000), "--listeners", "3", "--rate", "2000",
			"--json", dir + "/" + sc + ".json", "--plot", dir + "/" + sc + ".svg"}, os.Stdout, os.Stderr)
		if code != 0 {
			t.Fatalf("code %d", code)
		}
	}
	code := Main([]string{"compare", dir + "/a.json", dir + "/b.json", "--plot", "/tmp/bench_cmp.svg"}, os.Stdout, os.Stderr)
	if code != 0 {
		t.Fatalf("code %d", code)
	}
	data, _ := os.ReadFile(dir + "/a.svg")
	os.WriteFile("/tmp/bench_a.svg", data, 0o644)
}
