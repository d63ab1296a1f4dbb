package api

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestSyncTokens(t *testing.T) {
	cases := []struct {
		in       string
		log, eph uint64
		ok       bool
	}{
		{"s12", 12, 0, true},
		{"s12_34", 12, 34, true},
		{"s12_34_56", 12, 34, true}, // later streams are ignored
		{"t12", 12, 0, true},
		{"t12_34", 12, 0, true},
		{"s", 0, 0, false},
		{"x12", 0, 0, false},
		{"s12_x", 0, 0, false},
		{"s-1", 0, 0, false},
		{"", 0, 0, false},
	}
	for _, c := range cases {
		p, ok := parseSyncToken(c.in)
		if ok != c.ok || (ok && (p.log != c.log || p.eph != c.eph)) {
			t.Errorf("%q: got %+v %v", c.in, p, ok)
		}
	}
	if p, ok := parseSyncToken(syncPos{7, 9}.token()); !ok || p != (syncPos{7, 9}) {
		t.Errorf("round trip: %+v", p)
	}
}

// TestSyncTokenFromBeforeRestart: a token whose ephemeral position is
// ahead of the in-memory counter (as after a restart) works, and later
// typing changes are still seen after it.
func TestSyncTokenFromBeforeRestart(t *testing.T) {
	ts, alice, bob, room := syRoomPair(t, Config{EnableRegistration: true})
	s := ts.sySync(bob, "")
	p, _ := parseSyncToken(s.NextBatch)
	future := syncPos{p.log, p.eph + 1_000_000}.token()
	r := ts.syAfter(bob, future)
	if len(r.Rooms.Join) != 0 {
		t.Fatalf("future token: %s", r.raw)
	}
	if np, _ := parseSyncToken(r.NextBatch); np.eph < p.eph+1_000_000 {
		t.Fatalf("counter not raised: %s", r.NextBatch)
	}
	ts.syOK("PUT", syPath(room, "/typing/", url.PathEscape("@alice:test.local")), alice, `{"typing":true,"timeout":10000}`)
	r2 := ts.syAfter(bob, r.NextBatch)
	if got := r2.types(room, "ephemeral"); !syHas(got, "m.typing") {
		t.Fatalf("typing after future token: %s", r2.raw)
	}
}

// TestSyncStateDelta: a limited incremental timeline carries the state
// that changed in the gap, as of the timeline start (the last value of each
// key, not the intermediate ones), and not the state inside the timeline.
func TestSyncStateDelta(t *testing.T) {
	ts, alice, bob, room := syRoomPair(t, Config{EnableRegistration: true})
	ts.syState(alice, room, "m.room.topic", "", `{"topic":"T0"}`)
	since := ts.sySync(bob, "").NextBatch
	ts.syState(alice, room, "m.room.name", "", `{"name":"first"}`)
	ts.syState(alice, room, "m.room.topic", "", `{"topic":"T1"}`)
	ts.syState(alice, room, "m.room.topic", "", `{"topic":"T0"}`) // back to what bob has
	for i := 0; i < 5; i++ {
		ts.syMsg(alice, room, fmt.Sprint("gap", i))
	}
	nameInTimeline := ts.syState(alice, room, "m.room.name", "", `{"name":"second"}`)
	ts.syMsg(alice, room, "last")
	filter := url.QueryEscape(`{"room":{"timeline":{"limit":2}}}`)
	s := ts.syAfter(bob, since, "&filter="+filter)
	j := s.Rooms.Join[room]
	if !j.Timeline.Limited || len(j.Timeline.Events) != 2 || j.Timeline.Events[0].EventID != nameInTimeline {
		t.Fatalf("timeline: %s", s.raw)
	}
	var names []string
	for _, e := range j.State.Events {
		names = append(names, fmt.Sprintf("%s=%v%v", e.Type, e.field("name"), e.field("topic")))
	}
	// The topic went T0 -> T1 -> T0: a new T0 event, which bob has not seen.
	if fmt.Sprint(names) != "[m.room.name=first<nil> m.room.topic=<nil>T0]" {
		t.Fatalf("state delta: %v", names)
	}
	// prev_batch pages back into the gap.
	page := ts.syOK("GET", syPath(room, "/messages?dir=b&limit=1&from="+j.Timeline.PrevBatch), bob, "")
	if !strings.Contains(string(page.body), "gap4") {
		t.Fatalf("prev_batch: %s", page.body)
	}
}

// TestSyncFullStateAndJoin: full_state sends all state; a room joined
// since the token comes with its full state and summary.
func TestSyncFullStateAndJoin(t *testing.T) {
	ts, alice, bob, room := syRoomPair(t, Config{EnableRegistration: true})
	since := ts.sySync(bob, "").NextBatch
	other := ts.syCreate(alice, `{"preset":"public_chat","name":"Other"}`)
	for i := 0; i < 12; i++ {
		ts.syMsg(alice, other, fmt.Sprint("m", i))
	}
	ts.syJoin(bob, other)
	s := ts.syAfter(bob, since)
	j, ok := s.Rooms.Join[other]
	if !ok || !syHas(s.types(other, "state"), "m.room.create") || !syHas(s.types(other, "state"), "m.room.name") {
		t.Fatalf("new join: %s", s.raw)
	}
	if string(j.Summary["m.joined_member_count"]) != "2" {
		t.Fatalf("summary: %s", s.raw)
	}
	full := ts.syAfter(bob, s.NextBatch, "&full_state=true")
	if _, ok := full.Rooms.Join[room]; !ok || !syHas(full.types(room, "state"), "m.room.power_levels") {
		t.Fatalf("full_state: %s", full.raw)
	}
}

func TestSyncFilters(t *testing.T) {
	ts, alice, bob, room := syRoomPair(t, Config{EnableRegistration: true})
	carol := ts.register("carol")
	ts.syJoin(carol, room)
	other := ts.syCreate(alice, `{"preset":"public_chat"}`)
	ts.syJoin(bob, other)
	since := ts.sySync(bob, "").NextBatch
	ts.syMsg(alice, room, "from alice")
	ts.syMsg(carol, room, "from carol")
	ts.sySend(alice, room, "org.example.custom", `{"url":"mxc://x/y"}`)
	ts.syMsg(alice, other, "elsewhere")
	stored := ts.syOK("POST", "/user/@bob:test.local/filter", bob, `{"room":{"timeline":{"types":["m.room.message"]}}}`).field("filter_id")

	cases := []struct {
		name   string
		filter string
		room   string
		want   []string // timeline bodies/types in the room
	}{
		{"none", ``, room, []string{"from alice", "from carol", "org.example.custom"}},
		{"types", `{"room":{"timeline":{"types":["m.room.*"]}}}`, room, []string{"from alice", "from carol"}},
		{"not_types", `{"room":{"timeline":{"not_types":["m.room.message"]}}}`, room, []string{"org.example.custom"}},
		{"senders", `{"room":{"timeline":{"senders":["@carol:test.local"]}}}`, room, []string{"from carol"}},
		{"not_senders", `{"room":{"timeline":{"not_senders":["@carol:test.local"]}}}`, room, []string{"from alice", "org.example.custom"}},
		{"contains_url", `{"room":{"timeline":{"contains_url":true}}}`, room, []string{"org.example.custom"}},
		{"limit", `{"room":{"timeline":{"limit":1}}}`, room, []string{"org.example.custom"}},
		{"not_rooms", `{"room":{"not_rooms":["` + room + `"]}}`, room, nil},
		{"rooms", `{"room":{"rooms":["` + other + `"]}}`, other, []string{"elsewhere"}},
		{"stored", stored, room, []string{"from alice", "from carol"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			q := ""
			if c.filter != "" {
				q = "&filter=" + url.QueryEscape(c.filter)
			}
			s := ts.syAfter(bob, since, q)
			var got []string
			for _, e := range s.Rooms.Join[c.room].Timeline.Events {
				if b, ok := e.field("body").(string); ok {
					got = append(got, b)
				} else {
					got = append(got, e.Type)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Errorf("got %v, want %v", got, c.want)
			}
			if c.name == "rooms" {
				if _, ok := s.Rooms.Join[room]; ok {
					t.Errorf("excluded room sent")
				}
			}
		})
	}
	errs := []struct {
		name, filter, code string
		status             int
	}{
		{"not json", `{"room":`, "M_NOT_JSON", 400},
		{"wrong shape", `{"room":{"timeline":{"limit":"x"}}}`, "M_BAD_JSON", 400},
		{"negative limit", `{"room":{"timeline":{"limit":-1}}}`, "M_BAD_JSON", 400},
		{"bad format", `{"event_format":"xml"}`, "M_BAD_JSON", 400},
		{"unknown id", `nope`, "M_NOT_FOUND", 404},
	}
	for _, c := range errs {
		r := ts.do("GET", syV3+"/sync?filter="+url.QueryEscape(c.filter), bob, "")
		if r.status != c.status || r.errcode() != c.code {
			t.Errorf("%s: %d %s", c.name, r.status, r.body)
		}
	}
	for _, q := range []string{"timeout=x", "since=garbage", "set_presence=away", "full_state=maybe"} {
		if r := ts.do("GET", syV3+"/sync?"+q, bob, ""); r.status != 400 || r.errcode() != "M_INVALID_PARAM" {
			t.Errorf("%s: %d %s", q, r.status, r.body)
		}
	}
	// event_fields keeps only the listed fields.
	s := ts.syAfter(bob, since, "&filter="+url.QueryEscape(`{"event_fields":["type","content.body"],"room":{"timeline":{"limit":1,"types":["m.room.message"]}}}`))
	evs := s.Rooms.Join[room].Timeline.Events
	if len(evs) != 1 || evs[0].EventID != "" || evs[0].Type != "m.room.message" || string(evs[0].Content) != `{"body":"from carol"}` {
		t.Errorf("event_fields: %s", s.raw)
	}
	// include_leave shows left rooms on an initial sync.
	ts.syOK("POST", syPath(other, "/leave"), bob, `{}`)
	if s := ts.sySync(bob, ""); len(s.Rooms.Leave) != 0 {
		t.Errorf("left room without include_leave: %s", s.raw)
	}
	if s := ts.sySync(bob, "filter="+url.QueryEscape(`{"room":{"include_leave":true}}`)); len(s.Rooms.Leave) != 1 {
		t.Errorf("include_leave: %s", s.raw)
	}
}

// TestSyncLazyLoadMembers: with lazy loading, the state has only the
// timeline senders' (and the user's own) membership, redundant ones are
// not resent, and include_redundant_members resends them.
func TestSyncLazyLoadMembers(t *testing.T) {
	ts, alice, bob, room := syRoomPair(t, Config{EnableRegistration: true})
	ts.syState(alice, room, "m.room.name", "", `{"name":"named"}`) // no heroes
	var users []string
	for i := 0; i < 4; i++ {
		tok := ts.register(fmt.Sprint("u", i))
		ts.syJoin(tok, room)
		users = append(users, tok)
	}
	for i := 0; i < 12; i++ {
		ts.syMsg(alice, room, fmt.Sprint("m", i))
	}
	lazy := url.QueryEscape(`{"room":{"timeline":{"limit":3},"state":{"lazy_load_members":true}}}`)
	members := func(s *sySync) []string {
		var out []string
		for _, e := range s.Rooms.Join[room].State.Events {
			if e.Type == "m.room.member" {
				out = append(out, *e.StateKey)
			}
		}
		return out
	}
	s := ts.sySync(bob, "filter="+lazy)
	if got := members(s); fmt.Sprint(got) != "[@alice:test.local @bob:test.local]" {
		t.Fatalf("initial lazy members: %v", got)
	}
	ts.syMsg(alice, room, "again")
	ts.syMsg(users[2], room, "u2 speaks")
	s2 := ts.syAfter(bob, s.NextBatch, "&filter="+lazy)
	if got := members(s2); fmt.Sprint(got) != "[@u2:test.local]" {
		t.Fatalf("incremental lazy members: %v (%s)", got, s2.raw)
	}
	ts.syMsg(alice, room, "more")
	redundant := url.QueryEscape(`{"room":{"state":{"lazy_load_members":true,"include_redundant_members":true}}}`)
	s3 := ts.syAfter(bob, s2.NextBatch, "&filter="+redundant)
	if got := members(s3); fmt.Sprint(got) != "[@alice:test.local]" {
		t.Fatalf("include_redundant_members: %v", got)
	}
	if s4 := ts.syAfter(bob, s2.NextBatch, "&filter="+lazy); len(members(s4)) != 0 {
		t.Fatalf("redundant member resent: %v", members(s4))
	}
}

// TestSyncLongPollWakes: a parked sync wakes for each kind of news and
// not for news the user cannot see.
func TestSyncLongPollWakes(t *testing.T) {
	ts, alice, bob, room := syRoomPair(t, Config{EnableRegistration: true})
	carol := ts.register("carol")
	elsewhere := ts.syCreate(carol, `{}`)
	seed := ts.syMsg(alice, room, "seed")
	since := ts.sySync(bob, "").NextBatch
	cases := []struct {
		name  string
		act   func()
		check func(s *sySync) bool
	}{
		{"event", func() { ts.syMsg(alice, room, "wake") }, func(s *sySync) bool { return len(s.Rooms.Join[room].Timeline.Events) == 1 }},
		{"typing", func() {
			ts.syOK("PUT", syPath(room, "/typing/@alice:test.local"), alice, `{"typing":true,"timeout":30000}`)
		}, func(s *sySync) bool { return syHas(s.types(room, "ephemeral"), "m.typing") }},
		{"receipt", func() {
			ts.syOK("POST", syPath(room, "/receipt/m.read/", url.PathEscape(seed)), alice, `{}`)
		}, func(s *sySync) bool { return syHas(s.types(room, "ephemeral"), "m.receipt") }},
		{"account data", func() {
			ts.syOK("PUT", "/user/@bob:test.local/account_data/org.example.x", bob, `{"a":1}`)
		}, func(s *sySync) bool {
			return len(s.AccountData.Events) == 1 && s.AccountData.Events[0].Type == "org.example.x"
		}},
		{"room account data", func() {
			ts.syOK("PUT", "/user/@bob:test.local/rooms/"+url.PathEscape(room)+"/account_data/org.example.y", bob, `{"b":2}`)
		}, func(s *sySync) bool { return syHas(s.types(room, "account_data"), "org.example.y") }},
		{"presence", func() {
			ts.syOK("PUT", "/presence/@alice:test.local/status", alice, `{"presence":"unavailable","status_msg":"lunch"}`)
		}, func(s *sySync) bool {
			return len(s.Presence.Events) == 1 && s.Presence.Events[0].Sender == "@alice:test.local"
		}},
		{"push rules", func() {
			ts.syOK("PUT", "/pushrules/global/room/"+url.PathEscape(room), bob, `{"actions":[]}`)
		}, func(s *sySync) bool {
			return len(s.AccountData.Events) == 1 && s.AccountData.Events[0].Type == "m.push_rules"
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ch := ts.syPoll(bob, since, "")
			c.act()
			s := syWait(t, ch)
			if !c.check(s) {
				t.Fatalf("woke with: %s", s.raw)
			}
			since = s.NextBatch
		})
	}
	// Invisible news (a room bob is not in, typing there) does not answer
	// a long-poll; the visible event after it does, alone.
	ch := ts.syPoll(bob, since, "")
	ts.syMsg(carol, elsewhere, "not for bob")
	ts.syOK("PUT", syPath(elsewhere, "/typing/@carol:test.local"), carol, `{"typing":true,"timeout":30000}`)
	time.Sleep(20 * time.Millisecond)
	id := ts.syMsg(alice, room, "for bob")
	s := syWait(t, ch)
	if _, ok := s.Rooms.Join[elsewhere]; ok || len(s.Rooms.Join[room].Timeline.Events) != 1 || s.Rooms.Join[room].Timeline.Events[0].EventID != id {
		t.Fatalf("long-poll: %s", s.raw)
	}
}

func TestTyping(t *testing.T) {
	ts, alice, bob, room := syRoomPair(t, Config{EnableRegistration: true})
	carol := ts.register("carol")
	path := syV3 + syPath(room, "/typing/")
	cases := []struct {
		name, user, tok, body, code string
		status                      int
	}{
		{"other user", "@bob:test.local", alice, `{"typing":true,"timeout":1000}`, "M_FORBIDDEN", 403},
		{"not joined", "@carol:test.local", carol, `{"typing":true,"timeout":1000}`, "M_FORBIDDEN", 403},
		{"not json", "@alice:test.local", alice, `{"typing":`, "M_NOT_JSON", 400},
		{"wrong type", "@alice:test.local", alice, `{"typing":"yes"}`, "M_BAD_JSON", 400},
		{"missing typing", "@alice:test.local", alice, `{}`, "M_MISSING_PARAM", 400},
		{"negative timeout", "@alice:test.local", alice, `{"typing":true,"timeout":-5}`, "M_INVALID_PARAM", 400},
	}
	for _, c := range cases {
		if r := ts.do("PUT", path+url.PathEscape(c.user), c.tok, c.body); r.status != c.status || r.errcode() != c.code {
			t.Errorf("%s: %d %s", c.name, r.status, r.body)
		}
	}
	since := ts.sySync(bob, "").NextBatch
	ts.syOK("PUT", syPath(room, "/typing/@alice:test.local"), alice, `{"typing":true,"timeout":30000}`)
	s := ts.syAfter(bob, since)
	typing := func(s *sySync) []any {
		for _, e := range s.Rooms.Join[room].Ephemeral.Events {
			if e.Type == "m.typing" {
				ids, _ := e.field("user_ids").([]any)
				if ids == nil {
					return []any{}
				}
				return ids
			}
		}
		return nil
	}
	if got := typing(s); len(got) != 1 || got[0] != "@alice:test.local" {
		t.Fatalf("typing: %s", s.raw)
	}
	// The initial sync of another device shows who types too.
	if got := typing(ts.sySync(bob, "")); len(got) != 1 {
		t.Fatalf("initial typing: %v", got)
	}
	ts.syOK("PUT", syPath(room, "/typing/@alice:test.local"), alice, `{"typing":false}`)
	s2 := ts.syAfter(bob, s.NextBatch)
	if got := typing(s2); got == nil || len(got) != 0 {
		t.Fatalf("stopped typing: %s", s2.raw)
	}
	// Expiry: a short timeout ends by itself and wakes a long-poll.
	ts.syOK("PUT", syPath(room, "/typing/@alice:test.local"), alice, `{"typing":true,"timeout":30}`)
	s3 := ts.syAfter(bob, s2.NextBatch)
	ch := ts.syPoll(bob, s3.NextBatch, "")
	if got := typing(syWait(t, ch)); got == nil || len(got) != 0 {
		t.Fatal("typing did not expire")
	}
}

func TestReceipts(t *testing.T) {
	ts, alice, bob, room := syRoomPair(t, Config{EnableRegistration: true})
	carol := ts.register("carol")
	m1 := ts.syMsg(alice, room, "one")
	m2 := ts.syMsg(alice, room, "two")
	threaded := ts.sySend(alice, room, "m.room.message", `{"msgtype":"m.text","body":"t","m.relates_to":{"rel_type":"m.thread","event_id":"`+m1+`"}}`)
	rp := func(typ, id string) string { return syPath(room, "/receipt/", typ, "/", url.PathEscape(id)) }
	cases := []struct {
		name, path, tok, body, code string
		status                      int
	}{
		{"unknown type", rp("m.seen", m1), bob, `{}`, "M_INVALID_PARAM", 400},
		{"empty thread", rp("m.read", m1), bob, `{"thread_id":""}`, "M_INVALID_PARAM", 400},
		{"bad thread", rp("m.read", m1), bob, `{"thread_id":"elsewhere"}`, "M_INVALID_PARAM", 400},
		{"fully_read threaded", rp("m.fully_read", m1), bob, `{"thread_id":"main"}`, "M_INVALID_PARAM", 400},
		{"unrelated thread", rp("m.read", m2), bob, `{"thread_id":"` + m1 + `"}`, "M_INVALID_PARAM", 400},
		{"unknown event", rp("m.read", "$nope"), bob, `{}`, "M_NOT_FOUND", 404},
		{"not joined", rp("m.read", m1), carol, `{}`, "M_FORBIDDEN", 403},
		{"not json", rp("m.read", m1), bob, `{`, "M_NOT_JSON", 400},
		{"markers bad", syPath(room, "/read_markers"), bob, `{"m.read":5}`, "M_BAD_JSON", 400},
		{"markers unknown", syPath(room, "/read_markers"), bob, `{"m.fully_read":"$nope"}`, "M_NOT_FOUND", 404},
	}
	for _, c := range cases {
		if r := ts.do("POST", syV3+c.path, c.tok, c.body); r.status != c.status || r.errcode() != c.code {
			t.Errorf("%s: %d %s", c.name, r.status, r.body)
		}
	}
	aliceSince := ts.sySync(alice, "").NextBatch
	bobSince := ts.sySync(bob, "").NextBatch
	ts.syOK("POST", rp("m.read", m1), bob, `{}`)
	ts.syOK("POST", rp("m.read.private", m2), bob, `{}`)
	ts.syOK("POST", rp("m.read", threaded), bob, `{"thread_id":"`+m1+`"}`)
	ts.syOK("POST", rp("m.read", m1), bob, `{}`) // not newer: no change
	receipts := func(s *sySync) map[string]map[string]map[string]map[string]any {
		for _, e := range s.Rooms.Join[room].Ephemeral.Events {
			if e.Type == "m.receipt" {
				var c map[string]map[string]map[string]map[string]any
				json.Unmarshal(e.Content, &c)
				return c
			}
		}
		return nil
	}
	sa := ts.syAfter(alice, aliceSince)
	ra := receipts(sa)
	if ra[m1]["m.read"]["@bob:test.local"] == nil || ra[m2] != nil || ra[threaded]["m.read"]["@bob:test.local"]["thread_id"] != m1 {
		t.Fatalf("alice sees: %s", sa.raw)
	}
	sb := ts.syAfter(bob, bobSince)
	if rb := receipts(sb); rb[m2]["m.read.private"]["@bob:test.local"] == nil {
		t.Fatalf("bob's own private receipt: %s", sb.raw)
	}
	// Read markers set m.fully_read and the receipts.
	ts.syOK("POST", syPath(room, "/read_markers"), bob, `{"m.fully_read":"`+m2+`","m.read":"`+m2+`"}`)
	sb2 := ts.syAfter(bob, sb.NextBatch)
	if !syHas(sb2.types(room, "account_data"), "m.fully_read") || receipts(sb2)[m2]["m.read"] == nil {
		t.Fatalf("read markers: %s", sb2.raw)
	}
	if got := ts.syOK("GET", "/user/@bob:test.local/rooms/"+url.PathEscape(room)+"/account_data/m.fully_read", bob, ""); !strings.Contains(string(got.body), m2) {
		t.Fatalf("m.fully_read: %s", got.body)
	}
	// Receipts of an initial sync.
	if r := receipts(ts.sySync(alice, "")); r[m2]["m.read"]["@bob:test.local"] == nil || r[m2]["m.read.private"] != nil {
		t.Fatalf("initial receipts: %v", r)
	}
}

// TestUnreadNotifications: counts from push rules, highlights from
// mentions, cleared by receipts and by the user's own messages, per thread
// with unread_thread_notifications.
func TestUnreadNotifications(t *testing.T) {
	ts, alice, bob, room := syRoomPair(t, Config{EnableRegistration: true})
	carol := ts.register("carol")
	ts.syJoin(carol, room) // three members: .m.rule.message, not one-to-one
	counts := func(extra string) (*syCounts, map[string]syCounts) {
		s := ts.sySync(bob, extra)
		j := s.Rooms.Join[room]
		return j.Unread, j.ThreadCount
	}
	m1 := ts.syMsg(alice, room, "one")
	ts.sySend(alice, room, "m.room.message", `{"msgtype":"m.text","body":"hey bob","m.mentions":{"user_ids":["@bob:test.local"]}}`)
	ts.sySend(alice, room, "m.room.message", `{"msgtype":"m.notice","body":"bot"}`)
	ts.sySend(alice, room, "m.reaction", `{"m.relates_to":{"rel_type":"m.annotation","event_id":"`+m1+`","key":"x"}}`)
	t1 := ts.sySend(alice, room, "m.room.message", `{"msgtype":"m.text","body":"in thread","m.relates_to":{"rel_type":"m.thread","event_id":"`+m1+`"}}`)
	if c, _ := counts(""); c == nil || *c != (syCounts{Highlight: 1, Notify: 3}) {
		t.Fatalf("counts: %+v", c)
	}
	threads := "filter=" + url.QueryEscape(`{"room":{"timeline":{"unread_thread_notifications":true}}}`)
	if c, th := counts(threads); *c != (syCounts{Highlight: 1, Notify: 2}) || th[m1] != (syCounts{Notify: 1}) {
		t.Fatalf("thread counts: %+v %+v", c, th)
	}
	ts.syOK("POST", syPath(room, "/receipt/m.read/", url.PathEscape(t1)), bob, `{"thread_id":"`+m1+`"}`)
	if c, th := counts(threads); *c != (syCounts{Highlight: 1, Notify: 2}) || len(th) != 0 {
		t.Fatalf("after thread receipt: %+v %+v", c, th)
	}
	ts.syOK("POST", syPath(room, "/receipt/m.read.private/", url.PathEscape(m1)), bob, `{}`)
	if c, _ := counts(""); *c != (syCounts{Highlight: 1, Notify: 1}) {
		t.Fatalf("after private receipt: %+v", c)
	}
	ts.syMsg(bob, room, "I read it all")
	if c, _ := counts(""); *c != (syCounts{}) {
		t.Fatalf("after own message: %+v", c)
	}
	// The count and the event arrive in the same incremental sync.
	since := ts.sySync(bob, "").NextBatch
	ts.syMsg(alice, room, "new")
	s := ts.syAfter(bob, since)
	if j := s.Rooms.Join[room]; len(j.Timeline.Events) != 1 || *j.Unread != (syCounts{Notify: 1}) {
		t.Fatalf("same response: %s", s.raw)
	}
	// @room highlights when the sender may notify the room: the creator
	// (infinite power in v12) may, carol (power 0 < 50) may not.
	ts.sySend(alice, room, "m.room.message", `{"msgtype":"m.text","body":"all","m.mentions":{"room":true}}`)
	ts.sySend(carol, room, "m.room.message", `{"msgtype":"m.text","body":"all?","m.mentions":{"room":true}}`)
	if c, _ := counts(""); *c != (syCounts{Notify: 3, Highlight: 1}) {
		t.Fatalf("room mentions: %+v", c)
	}
}

func TestNotificationsEndpoint(t *testing.T) {
	ts, alice, bob, room := syRoomPair(t, Config{EnableRegistration: true})
	var ids []string
	for i := 0; i < 5; i++ {
		content := fmt.Sprintf(`{"msgtype":"m.text","body":"n%d"}`, i)
		if i%2 == 1 {
			content = fmt.Sprintf(`{"msgtype":"m.text","body":"n%d","m.mentions":{"user_ids":["@bob:test.local"]}}`, i)
		}
		ids = append(ids, ts.sySend(alice, room, "m.room.message", content))
	}
	ts.syOK("POST", syPath(room, "/receipt/m.read/", url.PathEscape(ids[1])), bob, `{}`)
	type notif struct {
		Actions []any   `json:"actions"`
		Event   syEvent `json:"event"`
		Read    bool    `json:"read"`
		RoomID  string  `json:"room_id"`
		TS      int64   `json:"ts"`
	}
	var page struct {
		Notifications []notif `json:"notifications"`
		NextToken     string  `json:"next_token"`
	}
	json.Unmarshal(ts.syOK("GET", "/notifications?limit=3", bob, "").body, &page)
	if len(page.Notifications) != 3 || page.Notifications[0].Event.EventID != ids[4] || page.NextToken == "" || page.Notifications[0].Read {
		t.Fatalf("page 1: %+v", page)
	}
	next := page.NextToken
	page.NextToken = ""
	json.Unmarshal(ts.syOK("GET", "/notifications?limit=3&from="+next, bob, "").body, &page)
	if len(page.Notifications) != 2 || page.Notifications[1].Event.EventID != ids[0] || !page.Notifications[1].Read || page.NextToken != "" {
		t.Fatalf("page 2: %+v", page)
	}
	json.Unmarshal(ts.syOK("GET", "/notifications?only=highlight", bob, "").body, &page)
	if len(page.Notifications) != 2 || page.Notifications[0].RoomID != room {
		t.Fatalf("highlights: %+v", page)
	}
	for _, q := range []string{"limit=-1", "from=x", "only=all"} {
		if r := ts.do("GET", syV3+"/notifications?"+q, bob, ""); r.status != 400 || r.errcode() != "M_INVALID_PARAM" {
			t.Errorf("%s: %d %s", q, r.status, r.body)
		}
	}
}

func TestSyncInviteLeave(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	alice, bob := ts.register("alice"), ts.register("bob")
	since := ts.sySync(bob, "").NextBatch
	room := ts.syCreate(alice, `{"preset":"private_chat","name":"Secret","invite":["@bob:test.local"]}`)
	s := ts.syAfter(bob, since)
	inv, ok := s.Rooms.Invite[room]
	if !ok {
		t.Fatalf("invite: %s", s.raw)
	}
	var types []string
	for _, e := range inv.InviteState.Events {
		types = append(types, e.Type)
	}
	if !syHas(types, "m.room.name") || !syHas(types, "m.room.member") {
		t.Fatalf("invite_state: %v", types)
	}
	ts.syJoin(bob, room)
	s2 := ts.syAfter(bob, s.NextBatch)
	if _, ok := s2.Rooms.Join[room]; !ok || len(s2.Rooms.Invite) != 0 {
		t.Fatalf("join: %s", s2.raw)
	}
	ts.syMsg(alice, room, "bye")
	ts.syOK("POST", syPath(room, "/kick"), alice, `{"user_id":"@bob:test.local"}`)
	ts.syMsg(alice, room, "after")
	s3 := ts.syAfter(bob, s2.NextBatch)
	l, ok := s3.Rooms.Leave[room]
	if !ok || len(s3.Rooms.Join) != 0 {
		t.Fatalf("leave: %s", s3.raw)
	}
	last := l.Timeline.Events[len(l.Timeline.Events)-1]
	if last.Type != "m.room.member" || last.field("membership") != "leave" {
		t.Fatalf("leave timeline: %s", s3.raw)
	}
	if s4 := ts.syAfter(bob, s3.NextBatch); len(s4.Rooms.Leave) != 0 || len(s4.Rooms.Join) != 0 {
		t.Fatalf("after leave: %s", s4.raw)
	}
}

func TestSyncKnock(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	alice, bob := ts.register("alice"), ts.register("bob")
	room := ts.syCreate(alice, `{"preset":"private_chat","name":"Door"}`)
	ts.syState(alice, room, "m.room.join_rules", "", `{"join_rule":"knock"}`)
	since := ts.sySync(bob, "").NextBatch
	ts.syOK("POST", "/knock/"+url.PathEscape(room), bob, `{"reason":"let me in"}`)
	s := ts.syAfter(bob, since)
	k, ok := s.Rooms.Knock[room]
	if !ok {
		t.Fatalf("knock: %s", s.raw)
	}
	var types []string
	for _, e := range k.KnockState.Events {
		types = append(types, e.Type)
	}
	if !syHas(types, "m.room.name") || !syHas(types, "m.room.member") {
		t.Fatalf("knock_state: %v", types)
	}
}

func TestAccountData(t *testing.T) {
	ts, alice, bob, room := syRoomPair(t, Config{EnableRegistration: true})
	ad := "/user/@bob:test.local/account_data/"
	rad := "/user/@bob:test.local/rooms/" + url.PathEscape(room) + "/account_data/"
	cases := []struct {
		name, method, path, tok, body, code string
		status                              int
	}{
		{"other user put", "PUT", ad + "x", alice, `{}`, "M_FORBIDDEN", 403},
		{"other user get", "GET", ad + "x", alice, ``, "M_FORBIDDEN", 403},
		{"push rules", "PUT", ad + "m.push_rules", bob, `{}`, "M_BAD_JSON", 405},
		{"fully read", "PUT", rad + "m.fully_read", bob, `{"event_id":"$x"}`, "M_BAD_JSON", 405},
		{"not json", "PUT", ad + "x", bob, `{`, "M_NOT_JSON", 400},
		{"not object", "PUT", ad + "x", bob, `[1]`, "M_BAD_JSON", 400},
		{"bad room", "PUT", "/user/@bob:test.local/rooms/nope/account_data/x", bob, `{}`, "M_INVALID_PARAM", 400},
		{"missing", "GET", ad + "nothing", bob, ``, "M_NOT_FOUND", 404},
		{"missing room", "GET", rad + "nothing", bob, ``, "M_NOT_FOUND", 404},
		{"ignored list shape", "PUT", ad + "m.ignored_user_list", bob, `{"ignored_users":[]}`, "M_BAD_JSON", 400},
		{"tag order", "PUT", "/user/@bob:test.local/rooms/" + url.PathEscape(room) + "/tags/u.x", bob, `{"order":"first"}`, "M_BAD_JSON", 400},
		{"tag other", "PUT", "/user/@alice:test.local/rooms/" + url.PathEscape(room) + "/tags/u.x", bob, `{}`, "M_FORBIDDEN", 403},
	}
	for _, c := range cases {
		if r := ts.do(c.method, syV3+c.path, c.tok, c.body); r.status != c.status || r.errcode() != c.code {
			t.Errorf("%s: %d %s", c.name, r.status, r.body)
		}
	}
	since := ts.sySync(bob, "").NextBatch
	ts.syOK("PUT", ad+"org.example.a", bob, `{ "x" : 1 }`)
	ts.syOK("PUT", rad+"org.example.b", bob, `{"y":2}`)
	if got := ts.syOK("GET", ad+"org.example.a", bob, ""); string(got.body) != `{"x":1}` {
		t.Fatalf("get: %s", got.body)
	}
	tags := "/user/@bob:test.local/rooms/" + url.PathEscape(room) + "/tags"
	ts.syOK("PUT", tags+"/m.favourite", bob, `{"order":0.5}`)
	ts.syOK("PUT", tags+"/u.work", bob, `{}`)
	ts.syOK("DELETE", tags+"/u.work", bob, ``)
	if got := ts.syOK("GET", tags, bob, ""); string(got.body) != `{"tags":{"m.favourite":{"order":0.5}}}` {
		t.Fatalf("tags: %s", got.body)
	}
	s := ts.syAfter(bob, since)
	if len(s.AccountData.Events) != 1 || s.AccountData.Events[0].Type != "org.example.a" {
		t.Fatalf("global: %s", s.raw)
	}
	if got := s.types(room, "account_data"); fmt.Sprint(got) != "[org.example.b m.tag]" {
		t.Fatalf("room account data: %v", got)
	}
	// Initial sync: everything, with m.push_rules.
	init := ts.sySync(bob, "")
	var global []string
	for _, e := range init.AccountData.Events {
		global = append(global, e.Type)
	}
	if !syHas(global, "org.example.a") || !syHas(global, "m.push_rules") || len(init.types(room, "account_data")) != 2 {
		t.Fatalf("initial account data: %s", init.raw)
	}
	// Ignoring alice hides her messages from bob's sync.
	ts.syOK("PUT", ad+"m.ignored_user_list", bob, `{"ignored_users":{"@alice:test.local":{}}}`)
	next := ts.sySync(bob, "").NextBatch
	ts.syMsg(alice, room, "you can't see me")
	if s := ts.syAfter(bob, next); len(s.Rooms.Join[room].Timeline.Events) != 0 {
		t.Fatalf("ignored user's message: %s", s.raw)
	}
	if page := ts.syOK("GET", syPath(room, "/messages?dir=b&limit=5"), bob, ""); strings.Contains(string(page.body), "you can't see me") {
		t.Fatalf("ignored user's message in /messages: %s", page.body)
	}
}

func TestPresence(t *testing.T) {
	ts, alice, bob, _ := syRoomPair(t, Config{EnableRegistration: true})
	stranger := ts.register("stranger")
	cases := []struct {
		name, method, path, tok, body, code string
		status                              int
	}{
		{"set other", "PUT", "/presence/@bob:test.local/status", alice, `{"presence":"online"}`, "M_FORBIDDEN", 403},
		{"bad state", "PUT", "/presence/@alice:test.local/status", alice, `{"presence":"away"}`, "M_INVALID_PARAM", 400},
		{"missing state", "PUT", "/presence/@alice:test.local/status", alice, `{}`, "M_MISSING_PARAM", 400},
		{"not json", "PUT", "/presence/@alice:test.local/status", alice, `{`, "M_NOT_JSON", 400},
		{"wrong type", "PUT", "/presence/@alice:test.local/status", alice, `{"presence":1}`, "M_BAD_JSON", 400},
		{"stranger", "GET", "/presence/@alice:test.local/status", stranger, ``, "M_FORBIDDEN", 403},
		{"bad user", "GET", "/presence/nobody/status", alice, ``, "M_INVALID_PARAM", 400},
	}
	for _, c := range cases {
		if r := ts.do(c.method, syV3+c.path, c.tok, c.body); r.status != c.status || r.errcode() != c.code {
			t.Errorf("%s: %d %s", c.name, r.status, r.body)
		}
	}
	since := ts.sySync(bob, "set_presence=offline").NextBatch
	ts.syOK("PUT", "/presence/@alice:test.local/status", alice, `{"presence":"unavailable","status_msg":"out"}`)
	var p map[string]any
	json.Unmarshal(ts.syOK("GET", "/presence/@alice:test.local/status", bob, "").body, &p)
	if p["presence"] != "unavailable" || p["status_msg"] != "out" {
		t.Fatalf("get: %v", p)
	}
	s := ts.syAfter(bob, since, "&set_presence=offline")
	if len(s.Presence.Events) != 1 || s.Presence.Events[0].field("status_msg") != "out" {
		t.Fatalf("sync presence: %s", s.raw)
	}
	// A stranger's presence is not shown.
	ts.syOK("PUT", "/presence/@stranger:test.local/status", stranger, `{"presence":"online"}`)
	if s2 := ts.syAfter(bob, s.NextBatch, "&set_presence=offline"); len(s2.Presence.Events) != 0 {
		t.Fatalf("stranger's presence: %s", s2.raw)
	}
	// A presence filter that excludes m.presence.
	ts.syOK("PUT", "/presence/@alice:test.local/status", alice, `{"presence":"online"}`)
	if s3 := ts.syAfter(bob, s.NextBatch, "&set_presence=offline&filter="+url.QueryEscape(`{"presence":{"types":[]}}`)); len(s3.Presence.Events) != 0 {
		t.Fatalf("filtered presence: %s", s3.raw)
	}
	// Presence turned off.
	off, a2, b2, _ := syRoomPair(t, Config{EnableRegistration: true, DisablePresence: true})
	off.syOK("PUT", "/presence/@alice:test.local/status", a2, `{"presence":"online"}`)
	if s := off.sySync(b2, ""); len(s.Presence.Events) != 0 {
		t.Fatalf("presence disabled: %s", s.raw)
	}
}

// TestPresenceTimeouts: a user who stops syncing goes offline.
func TestPresenceTimeouts(t *testing.T) {
	ts, alice, bob, _ := syRoomPair(t, Config{EnableRegistration: true})
	h := ts.srv.hub
	since := ts.sySync(bob, "set_presence=offline").NextBatch
	ts.sySync(alice, "") // alice online
	s := ts.syAfter(bob, since, "&set_presence=offline")
	if len(s.Presence.Events) != 1 || s.Presence.Events[0].field("presence") != "online" {
		t.Fatalf("online: %s", s.raw)
	}
	h.presenceSweep(nowMS() + 60_000) // past the sync timeout
	s2 := ts.syAfter(bob, s.NextBatch, "&set_presence=offline")
	if len(s2.Presence.Events) != 1 || s2.Presence.Events[0].field("presence") != "offline" {
		t.Fatalf("offline: %s", s2.raw)
	}
}

func FuzzParseSyncToken(f *testing.F) {
	for _, s := range []string{"s1", "s12_34", "t5", "s1_2_3", "s_", "", "s99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, ok := parseSyncToken(s)
		if !ok {
			return
		}
		if q, ok := parseSyncToken(p.token()); !ok || q != p {
			t.Fatalf("%q -> %+v -> %q -> %+v", s, p, p.token(), q)
		}
	})
}

func FuzzSyncFilter(f *testing.F) {
	for _, s := range []string{`{}`, `{"room":{"timeline":{"limit":3,"types":["m.*"]}}}`, `{"event_fields":["content.body","a\\.b"]}`, `{"room":{"rooms":null}}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var fl syncFilter
		if decodeJSON([]byte(s), &fl) != nil || fl.validate() != nil {
			return
		}
		fl.timelineLimit()
		fl.roomAllowed("!r:x")
		fl.Room.Timeline.allows("m.room.message", "@u:x")
		if len(fl.EventFields) > 0 {
			out := applyEventFields([]byte(`{"content":{"body":"x","a.b":1},"type":"t"}`), fl.EventFields)
			if !json.Valid(out) {
				t.Fatalf("event_fields output: %s", out)
			}
		}
	})
}
