package api

import (
	"encoding/json"
	"fmt"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// hierWorld is a space tree on one server:
//
//	S  (space, public)          children: A (order "b", suggested), B (order "a"), C (order "c"), E (order "d"), gone (no via)
//	  A  public
//	  B  invite only
//	  C  (space, public)        children: D, S (a loop)
//	    D  invite only, world_readable
//	  E  restricted to members of S
type hierWorld struct {
	ts                        *testServer
	alice, bob                string
	s, a, b, c, d, e, missing string
}

func newHierWorld(t *testing.T) *hierWorld {
	ts := newTestServer(t, Config{EnableRegistration: true})
	w := &hierWorld{ts: ts, alice: ts.register("alice"), bob: ts.register("bob")}
	space := `{"preset":"public_chat","name":"%s","creation_content":{"type":"m.space"}}`
	w.s = ts.rmCreate(w.alice, fmt.Sprintf(space, "S"))
	w.a = ts.rmCreate(w.alice, `{"preset":"public_chat","name":"A","topic":"room a"}`)
	w.b = ts.rmCreate(w.alice, `{"preset":"private_chat","name":"B"}`)
	w.c = ts.rmCreate(w.alice, fmt.Sprintf(space, "C"))
	w.d = ts.rmCreate(w.alice, `{"preset":"private_chat","name":"D","initial_state":[{"type":"m.room.history_visibility","content":{"history_visibility":"world_readable"}}]}`)
	w.e = ts.rmCreate(w.alice, fmt.Sprintf(`{"preset":"private_chat","name":"E","initial_state":[{"type":"m.room.join_rules","content":{"join_rule":"restricted","allow":[{"type":"m.room_membership","room_id":%q}]}}]}`, w.s))
	w.missing = "!gone:test.local"
	child := func(parent, room, extra string) {
		ts.rmState(w.alice, parent, "m.space.child", room, `{"via":["test.local"]`+extra+`}`)
	}
	child(w.s, w.a, `,"order":"b","suggested":true`)
	child(w.s, w.b, `,"order":"a"`)
	child(w.s, w.c, `,"order":"c"`)
	child(w.s, w.e, `,"order":"d"`)
	ts.rmState(w.alice, w.s, "m.space.child", w.missing, `{}`) // removed: no via
	// No order: by the child events' origin_server_ts, then room ID; the
	// two could share a millisecond, so D's is made the older.
	child(w.c, w.d, ``)
	time.Sleep(2 * time.Millisecond)
	child(w.c, w.s, ``)
	return w
}

type hierPage struct {
	Rooms []struct {
		RoomID        string  `json:"room_id"`
		Name          string  `json:"name"`
		Topic         string  `json:"topic"`
		JoinRule      string  `json:"join_rule"`
		RoomType      *string `json:"room_type"`
		WorldReadable bool    `json:"world_readable"`
		NumJoined     int     `json:"num_joined_members"`
		RoomVersion   string  `json:"room_version"`
		Allowed       []string
		ChildrenState []struct {
			Type     string          `json:"type"`
			StateKey string          `json:"state_key"`
			Sender   string          `json:"sender"`
			TS       int64           `json:"origin_server_ts"`
			Content  json.RawMessage `json:"content"`
		} `json:"children_state"`
	} `json:"rooms"`
	NextBatch string `json:"next_batch"`
}

func (p hierPage) names() []string {
	var out []string
	for _, r := range p.Rooms {
		out = append(out, r.Name)
	}
	return out
}

func hierPath(room, query string) string {
	return "/_matrix/client/v1/rooms/" + url.PathEscape(room) + "/hierarchy" + query
}

func (w *hierWorld) get(t *testing.T, tok, room, query string) (hierPage, resp) {
	t.Helper()
	r := w.ts.do("GET", hierPath(room, query), tok, "")
	var p hierPage
	if r.status == 200 {
		if err := json.Unmarshal(r.body, &p); err != nil {
			t.Fatal(err)
		}
	}
	return p, r
}

// TestHierarchy: the depth-first walk, the child ordering, who sees what,
// suggested_only and max_depth.
func TestHierarchy(t *testing.T) {
	w := newHierWorld(t)
	tests := []struct {
		name  string
		tok   string
		query string
		want  []string
	}{
		{"creator sees all, depth first, by order", w.alice, "", []string{"S", "B", "A", "C", "D", "E"}},
		{"outsider: no invite-only or restricted room", w.bob, "", []string{"S", "A", "C", "D"}},
		{"suggested only", w.alice, "?suggested_only=true", []string{"S", "A"}},
		{"max_depth 1", w.alice, "?max_depth=1", []string{"S", "B", "A", "C", "E"}},
		{"max_depth 0", w.alice, "?max_depth=0", []string{"S"}},
		{"from a subspace: the loop back to S is walked once", w.alice, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			room := w.s
			if tt.want == nil {
				room, tt.want = w.c, []string{"C", "D", "S", "B", "A", "E"}
			}
			p, r := w.get(t, tt.tok, room, tt.query)
			if r.status != 200 {
				t.Fatalf("%d %s", r.status, r.body)
			}
			if got := p.names(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("rooms %v, want %v", got, tt.want)
			}
			if p.NextBatch != "" {
				t.Errorf("next_batch %q on a complete answer", p.NextBatch)
			}
		})
	}

	// The summary fields and the stripped child events.
	p, _ := w.get(t, w.alice, w.s, "?max_depth=1")
	s := p.Rooms[0]
	if s.RoomType == nil || *s.RoomType != "m.space" || s.JoinRule != "public" || s.NumJoined != 1 || s.RoomVersion == "" {
		t.Errorf("space summary: %+v", s)
	}
	var kids []string
	for _, c := range s.ChildrenState {
		if c.Type != "m.space.child" || c.Sender != "@alice:test.local" || c.TS == 0 || !strings.Contains(string(c.Content), "via") {
			t.Errorf("child event %+v", c)
		}
		kids = append(kids, c.StateKey)
	}
	if want := []string{w.b, w.a, w.c, w.e}; !reflect.DeepEqual(kids, want) {
		t.Errorf("children_state %v, want %v (removed child must be absent)", kids, want)
	}
	if a := p.Rooms[2]; a.Name != "A" || a.Topic != "room a" || len(a.ChildrenState) != 0 || a.RoomType != nil {
		t.Errorf("room A: %+v", a)
	}
	if !strings.Contains(string(w.ts.do("GET", hierPath(w.s, "?max_depth=1"), w.alice, "").body), `"children_state":[]`) {
		t.Error("a non-space room must have an empty children_state")
	}

	// Bob joins S: the room restricted to S's members shows up.
	w.ts.rmOK("POST", rmPath(w.s, "/join"), w.bob, `{}`)
	if p, _ := w.get(t, w.bob, w.s, ""); !reflect.DeepEqual(p.names(), []string{"S", "A", "C", "D", "E"}) {
		t.Errorf("after joining S: %v", p.names())
	}
}

func TestHierarchyErrors(t *testing.T) {
	w := newHierWorld(t)
	tests := []struct {
		name   string
		tok    string
		room   string
		query  string
		status int
		code   string
	}{
		{"limit 0", w.alice, w.s, "?limit=0", 400, "M_INVALID_PARAM"},
		{"limit not a number", w.alice, w.s, "?limit=x", 400, "M_INVALID_PARAM"},
		{"negative max_depth", w.alice, w.s, "?max_depth=-1", 400, "M_INVALID_PARAM"},
		{"bad suggested_only", w.alice, w.s, "?suggested_only=maybe", 400, "M_INVALID_PARAM"},
		{"unknown token", w.alice, w.s, "?from=nope", 400, "M_INVALID_PARAM"},
		{"unknown room", w.alice, "!nope:test.local", "", 403, "M_FORBIDDEN"},
		{"not a room ID", w.alice, "nope", "", 403, "M_FORBIDDEN"},
		{"private room of others", w.bob, w.b, "", 403, "M_FORBIDDEN"},
		{"no token", "", w.s, "", 401, "M_MISSING_TOKEN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, r := w.get(t, tt.tok, tt.room, tt.query)
			if r.status != tt.status || r.errcode() != tt.code {
				t.Errorf("got %d %s, want %d %s", r.status, r.body, tt.status, tt.code)
			}
		})
	}
}

// TestHierarchyPagination: pages of limit rooms add up to the whole walk;
// the token is bound to its user, room, suggested_only and max_depth.
func TestHierarchyPagination(t *testing.T) {
	w := newHierWorld(t)
	full, _ := w.get(t, w.alice, w.s, "")
	var got []string
	from := ""
	for i := 0; ; i++ {
		q := "?limit=2"
		if from != "" {
			q += "&from=" + url.QueryEscape(from)
		}
		p, r := w.get(t, w.alice, w.s, q)
		if r.status != 200 || len(p.Rooms) > 2 || i > 5 {
			t.Fatalf("page %d: %d %s", i, r.status, r.body)
		}
		got = append(got, p.names()...)
		if p.NextBatch == "" {
			break
		}
		from = p.NextBatch
	}
	if !reflect.DeepEqual(got, full.names()) {
		t.Fatalf("pages %v, want %v", got, full.names())
	}

	first, _ := w.get(t, w.alice, w.s, "?limit=1&max_depth=3")
	tok := "&from=" + url.QueryEscape(first.NextBatch)
	for _, tt := range []struct{ name, tok, room, query string }{
		{"max_depth changed", w.alice, w.s, "?max_depth=2"},
		{"max_depth left out", w.alice, w.s, "?limit=1"},
		{"suggested_only changed", w.alice, w.s, "?max_depth=3&suggested_only=true"},
		{"other user", w.bob, w.s, "?max_depth=3"},
		{"other room", w.alice, w.c, "?max_depth=3"},
	} {
		if _, r := w.get(t, tt.tok, tt.room, tt.query+tok); r.status != 400 || r.errcode() != "M_INVALID_PARAM" {
			t.Errorf("%s: %d %s", tt.name, r.status, r.body)
		}
	}
	// The same parameters continue (a refused request did not use the
	// token up); a used token is gone.
	if p, r := w.get(t, w.alice, w.s, "?limit=10&max_depth=3"+tok); r.status != 200 || len(p.Rooms) != 5 || p.NextBatch != "" {
		t.Errorf("continuation: %d %s", r.status, r.body)
	}
	if _, r := w.get(t, w.alice, w.s, "?limit=10&max_depth=3"+tok); r.status != 400 {
		t.Errorf("used token: %d %s", r.status, r.body)
	}
}

// fakeHierFed answers /hierarchy lookups as a remote server would.
type fakeHierFed struct {
	Federation
	mu      sync.Mutex
	answers map[string]string // room -> answer
	calls   []string
}

func (f *fakeHierFed) SendEDU([]string, string, any) {}

func (f *fakeHierFed) Hierarchy(servers []string, room string, suggestedOnly bool) (json.RawMessage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, room+" via "+strings.Join(servers, ","))
	if a, ok := f.answers[room]; ok {
		return json.RawMessage(a), nil
	}
	return nil, fmt.Errorf("unreachable")
}

// TestHierarchyRemote: a child this server is not in is asked of its via
// servers; the answer's children are used without asking again, its
// inaccessible children are skipped, its membership claims ignored, and a
// child the answer lists that this server hosts is described locally.
func TestHierarchyRemote(t *testing.T) {
	w := newHierWorld(t)
	remote := "!rs:other.example"
	child := func(id, name, rule string) string {
		return fmt.Sprintf(`{"room_id":%q,"name":%q,"join_rule":%q,"num_joined_members":3,"world_readable":false,"guest_can_join":false,"membership":"join","children_state":[]}`, id, name, rule)
	}
	cs := func(id string) string {
		return fmt.Sprintf(`{"type":"m.space.child","state_key":%q,"content":{"via":["other.example"]},"sender":"@x:other.example","origin_server_ts":%d}`, id, len(id))
	}
	fed := &fakeHierFed{answers: map[string]string{
		remote: `{"room":{"room_id":"!rs:other.example","name":"RS","room_type":"m.space","join_rule":"public","num_joined_members":3,"world_readable":false,"guest_can_join":false,
			"children_state":[` + cs("!r1:other.example") + `,` + cs("!r2:other.example") + `,` + cs("!secret:other.example") + `,` + cs(w.a) + `,{"type":"m.space.child","state_key":"!bad:x","content":{}}]},
			"children":[` + child("!r1:other.example", "R1", "public") + `,` + child("!r2:other.example", "R2", "invite") + `,` + child(w.a, "fake A", "public") + `],
			"inaccessible_children":["!secret:other.example"]}`,
	}}
	local := w.ts.rmCreate(w.alice, `{"preset":"public_chat","name":"L"}`)
	fed.answers[remote] = strings.Replace(strings.Replace(fed.answers[remote], `"children":[`, `"children":[`+child(local, "fake L", "public")+`,`, 1),
		`"children_state":[`, `"children_state":[`+cs(local)+`,`, 1)
	w.ts.srv.SetFederation(fed)
	w.ts.rmState(w.alice, w.s, "m.space.child", remote, `{"via":["other.example"],"order":"e"}`)
	w.ts.rmState(w.alice, w.s, "m.space.child", "!dead:other.example", `{"via":["dead.example"],"order":"f"}`)

	p, r := w.get(t, w.bob, w.s, "")
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	want := []string{"S", "A", "C", "D", "RS", "R1", "L"}
	if !reflect.DeepEqual(p.names(), want) {
		t.Fatalf("rooms %v, want %v", p.names(), want)
	}
	if strings.Contains(string(r.body), `"membership"`) {
		t.Error("a remote membership claim was passed on")
	}
	rs := p.Rooms[4]
	if len(rs.ChildrenState) != 5 {
		t.Errorf("remote children_state %+v: the invalid child must be dropped", rs.ChildrenState)
	}
	fed.mu.Lock()
	calls := append([]string(nil), fed.calls...)
	fed.mu.Unlock()
	wantCalls := []string{remote + " via other.example", "!dead:other.example via dead.example"}
	if !reflect.DeepEqual(calls, wantCalls) {
		t.Errorf("federation calls %q, want %q", calls, wantCalls)
	}
	// A second walk is served from the cache.
	w.get(t, w.bob, w.s, "")
	fed.mu.Lock()
	if len(fed.calls) != 2 {
		t.Errorf("cached answers asked again: %q", fed.calls)
	}
	fed.mu.Unlock()
}

// TestFedHierarchy: the answer to another server, which sees the rooms
// it could peek or join and learns which children it could not.
func TestFedHierarchy(t *testing.T) {
	w := newHierWorld(t)
	var ans struct {
		Room struct {
			RoomID        string `json:"room_id"`
			ChildrenState []struct {
				StateKey string `json:"state_key"`
			} `json:"children_state"`
		} `json:"room"`
		Children []struct {
			RoomID string `json:"room_id"`
			Name   string `json:"name"`
		} `json:"children"`
		Inaccessible []string `json:"inaccessible_children"`
	}
	b, status := w.ts.srv.FedHierarchy("other.example", w.s, false)
	if status != 200 {
		t.Fatalf("%d %s", status, b)
	}
	if err := json.Unmarshal(b, &ans); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range ans.Children {
		names = append(names, c.Name)
	}
	if ans.Room.RoomID != w.s || len(ans.Room.ChildrenState) != 4 || !reflect.DeepEqual(names, []string{"A", "C"}) ||
		!reflect.DeepEqual(ans.Inaccessible, []string{w.b, w.e}) {
		t.Errorf("answer %s", b)
	}
	b, _ = w.ts.srv.FedHierarchy("other.example", w.s, true)
	if json.Unmarshal(b, &ans) != nil || len(ans.Children) != 1 || ans.Children[0].Name != "A" || len(ans.Inaccessible) != 0 {
		t.Errorf("suggested only: %s", b)
	}
	for _, tt := range []struct{ name, origin, room string }{
		{"unknown room", "other.example", "!nope:test.local"},
		{"not a room ID", "other.example", "x"},
		{"invite-only room", "other.example", w.b},
	} {
		if b, status := w.ts.srv.FedHierarchy(tt.origin, tt.room, false); status != 404 || !strings.Contains(string(b), "M_NOT_FOUND") {
			t.Errorf("%s: %d %s", tt.name, status, b)
		}
	}
}

func TestParseChildContent(t *testing.T) {
	tests := []struct {
		in        string
		ok        bool
		order     string
		suggested bool
	}{
		{`{"via":["a"]}`, true, "", false},
		{`{"via":["a"],"order":"x","suggested":true}`, true, "x", true},
		{`{"via":["a"],"order":"` + strings.Repeat("x", 51) + `"}`, true, "", false},
		{`{"via":["a"],"order":"\u00e9"}`, true, "", false},
		{`{"via":["a"],"order":5,"suggested":"yes"}`, true, "", false},
		{`{"via":[]}`, false, "", false},
		{`{"via":"a"}`, false, "", false},
		{`{"via":[1]}`, false, "", false},
		{`{}`, false, "", false},
		{`[]`, false, "", false},
	}
	for _, tt := range tests {
		_, order, sugg, ok := parseChildContent(json.RawMessage(tt.in))
		if ok != tt.ok || order != tt.order || sugg != tt.suggested {
			t.Errorf("%s: %q %v %v", tt.in, order, sugg, ok)
		}
	}
}

func FuzzParseChildContent(f *testing.F) {
	f.Add(`{"via":["a"],"order":"x","suggested":true}`)
	f.Add(`{"via":null}`)
	f.Fuzz(func(t *testing.T, s string) { parseChildContent(json.RawMessage(s)) })
}

// The spec's ordering example ("Ordering of children within a space").
func TestChildOrdering(t *testing.T) {
	ev := func(id string, ts int64, order string) hierChild {
		c := `{"via":["example.org"]}`
		if order != "" {
			c = fmt.Sprintf(`{"via":["example.org"],"order":%q}`, order)
		}
		return hierChild{Type: "m.space.child", StateKey: id, OriginServerTS: ts, Content: json.RawMessage(c)}
	}
	in := []hierChild{
		ev("!b:example.org", 1640341000000, " "),
		ev("!a:example.org", 1640141000000, "aaaa"),
		ev("!c:example.org", 1640841000000, "first"),
		ev("!e:example.org", 1640641000000, ""),
		ev("!d:example.org", 1640741000000, ""),
		ev("!f:example.org", 1640741000000, ""), // same ts as d: by room ID
	}
	var got []string
	for _, c := range validChildren(in, false) {
		got = append(got, c.StateKey)
	}
	want := []string{"!b:example.org", "!a:example.org", "!c:example.org", "!e:example.org", "!d:example.org", "!f:example.org"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}
