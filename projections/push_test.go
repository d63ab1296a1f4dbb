package projections

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/cockroachdb/pebble"

	"engram/log"
)

// evalOne compiles one rule and evaluates it against an event for user.
func evalOne(t *testing.T, kind string, rule PushRule, event string, members, power int64, user, dn string) bool {
	t.Helper()
	var ev map[string]any
	dec := json.NewDecoder(strings.NewReader(event))
	dec.UseNumber()
	if err := dec.Decode(&ev); err != nil {
		t.Fatalf("event %s: %v", event, err)
	}
	rules := compiledRules{compileRule(kind, rule)}
	pe := &pushEvent{ev: ev, memberCount: members, senderPower: power, notifLevel: func(k string) int64 {
		if k == "room" {
			return 50
		}
		return 75
	}}
	return pe.match(rules, user, dn) != nil
}

func cond(kind, key, pattern string) PushCondition {
	c := PushCondition{Kind: kind, Key: key}
	if pattern != "" || kind == "event_match" {
		c.Pattern = &pattern
	}
	return c
}

func valCond(kind, key, value string) PushCondition {
	return PushCondition{Kind: kind, Key: key, Value: json.RawMessage(value)}
}

func override(conds ...PushCondition) PushRule {
	return PushRule{RuleID: "r", Enabled: true, Conditions: &conds, Actions: []json.RawMessage{json.RawMessage(`"notify"`)}}
}

// TestPushConditions covers each condition kind with the spec's examples.
func TestPushConditions(t *testing.T) {
	topic := func(v string) string { return `{"type":"m.room.topic","content":{"topic":` + v + `}}` }
	body := func(v string) string { return `{"type":"m.room.message","content":{"body":` + v + `}}` }
	cases := []struct {
		name    string
		rule    PushRule
		event   string
		members int64
		power   int64
		dn      string
		want    bool
	}{
		{"type exact", override(cond("event_match", "type", "m.room.message")), body(`"x"`), 3, 0, "", true},
		{"type case-insensitive", override(cond("event_match", "type", "M.ROOM.MESSAGE")), body(`"x"`), 3, 0, "", true},
		{"glob lunch", override(cond("event_match", "content.topic", "lunc?*")), topic(`"Lunch plans"`), 3, 0, "", true},
		{"glob LUNCH", override(cond("event_match", "content.topic", "lunc?*")), topic(`"LUNCH"`), 3, 0, "", true},
		{"glob leading space", override(cond("event_match", "content.topic", "lunc?*")), topic(`" lunch"`), 3, 0, "", false},
		{"glob ? needs a char", override(cond("event_match", "content.topic", "lunc?*")), topic(`"lunc"`), 3, 0, "", false},
		{"glob null", override(cond("event_match", "content.topic", "lunc?*")), topic(`null`), 3, 0, "", false},
		{"star on absent", override(cond("event_match", "content.nope", "*")), topic(`"x"`), 3, 0, "", false},
		{"star on number", override(cond("event_match", "content.topic", "*")), topic(`5`), 3, 0, "", false},
		{"body word", override(cond("event_match", "content.body", "ex*ple")), body(`"An example event."`), 3, 0, "", true},
		{"body exple", override(cond("event_match", "content.body", "ex*ple")), body(`"exple"`), 3, 0, "", true},
		{"body spans words", override(cond("event_match", "content.body", "ex*ple")), body(`"An exciting triple-whammy"`), 3, 0, "", true},
		{"body inside word", override(cond("event_match", "content.body", "ex*ple")), body(`"examples"`), 3, 0, "", false},
		{"body regexp chars literal", override(cond("event_match", "content.body", "a.b")), body(`"axb"`), 3, 0, "", false},
		{"property_is bool", override(valCond("event_property_is", `content.m\.federate`, `true`)), `{"content":{"m.federate":true}}`, 3, 0, "", true},
		{"property_is string not bool", override(valCond("event_property_is", `content.m\.federate`, `true`)), `{"content":{"m.federate":"true"}}`, 3, 0, "", false},
		{"property_is no cast", override(valCond("event_property_is", `content.m\.federate`, `true`)), `{"content":{"m.federate":1}}`, 3, 0, "", false},
		{"property_is int", override(valCond("event_property_is", `content.n`, `42`)), `{"content":{"n":42}}`, 3, 0, "", true},
		{"property_is null", override(valCond("event_property_is", `content.n`, `null`)), `{"content":{"n":null}}`, 3, 0, "", true},
		{"property_is absent", override(valCond("event_property_is", `content.n`, `null`)), `{"content":{}}`, 3, 0, "", false},
		{"property_is object value unsupported", override(valCond("event_property_is", `content.n`, `{}`)), `{"content":{"n":{}}}`, 3, 0, "", false},
		{"contains", override(valCond("event_property_contains", "content.alt_aliases", `"#myroom:example.com"`)), `{"content":{"alt_aliases":["#somewhere:example.org","#myroom:example.com"]}}`, 3, 0, "", true},
		{"contains partial", override(valCond("event_property_contains", "content.alt_aliases", `":example.com"`)), `{"content":{"alt_aliases":["#myroom:example.com"]}}`, 3, 0, "", false},
		{"contains not array", override(valCond("event_property_contains", "content.alt_aliases", `"x"`)), `{"content":{"alt_aliases":"x"}}`, 3, 0, "", false},
		{"display name", override(PushCondition{Kind: "contains_display_name"}), body(`"hey Alice!"`), 3, 0, "alice", true},
		{"display name inside word", override(PushCondition{Kind: "contains_display_name"}), body(`"malice"`), 3, 0, "alice", false},
		{"display name empty", override(PushCondition{Kind: "contains_display_name"}), body(`"hey"`), 3, 0, "", false},
		{"display name is literal", override(PushCondition{Kind: "contains_display_name"}), body(`"hey a-b"`), 3, 0, "a*b", false},
		{"members ==", override(PushCondition{Kind: "room_member_count", Is: "2"}), body(`"x"`), 2, 0, "", true},
		{"members == other", override(PushCondition{Kind: "room_member_count", Is: "==2"}), body(`"x"`), 3, 0, "", false},
		{"members <", override(PushCondition{Kind: "room_member_count", Is: "<3"}), body(`"x"`), 2, 0, "", true},
		{"members >=", override(PushCondition{Kind: "room_member_count", Is: ">=3"}), body(`"x"`), 2, 0, "", false},
		{"members <=", override(PushCondition{Kind: "room_member_count", Is: "<=2"}), body(`"x"`), 2, 0, "", true},
		{"members >", override(PushCondition{Kind: "room_member_count", Is: ">1"}), body(`"x"`), 2, 0, "", true},
		{"members garbage", override(PushCondition{Kind: "room_member_count", Is: "x"}), body(`"x"`), 2, 0, "", false},
		{"sender power enough", override(PushCondition{Kind: "sender_notification_permission", Key: "room"}), body(`"x"`), 2, 50, "", true},
		{"sender power low", override(PushCondition{Kind: "sender_notification_permission", Key: "room"}), body(`"x"`), 2, 49, "", false},
		{"sender power other key", override(PushCondition{Kind: "sender_notification_permission", Key: "custom"}), body(`"x"`), 2, 60, "", false},
		{"unknown condition", override(PushCondition{Kind: "org.example.magic"}), body(`"x"`), 2, 0, "", false},
		{"no conditions", override(), body(`"x"`), 2, 0, "", true},
	}
	if rules := compileRuleset(PushRuleset{Override: []PushRule{override()}}); len(rules) != 1 {
		t.Fatal("enabled rule not compiled")
	}
	disabled := override()
	disabled.Enabled = false
	if rules := compileRuleset(PushRuleset{Override: []PushRule{disabled}}); len(rules) != 0 {
		t.Fatal("a disabled rule must never match")
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := evalOne(t, "override", c.rule, c.event, c.members, c.power, "@me:x", c.dn); got != c.want {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
}

// TestPushRulesetOrder: the master rule first, user rules before the
// server defaults of their kind, changes to defaults applied, @USER@
// substituted.
func TestPushRulesetOrder(t *testing.T) {
	off := false
	acts := []json.RawMessage{json.RawMessage(`"notify"`)}
	u := &UserPushRules{
		Rules:    PushRuleset{Override: []PushRule{{RuleID: "mine", Enabled: true, Actions: acts}}, Content: []PushRule{{RuleID: "cake", Enabled: true, Pattern: sk("cake"), Actions: acts}}},
		Defaults: map[string]DefaultRuleChange{"underride/.m.rule.message": {Enabled: &off}},
	}
	rs := u.Ruleset("@me:x")
	var ids []string
	for _, r := range rs.Override[:3] {
		ids = append(ids, r.RuleID)
	}
	if fmt.Sprint(ids) != "[.m.rule.master mine .m.rule.suppress_notices]" {
		t.Fatalf("override order: %v", ids)
	}
	if len(rs.Content) != 1 || rs.Content[0].Conditions != nil || *rs.Content[0].Pattern != "cake" {
		t.Fatalf("content: %+v", rs.Content)
	}
	for _, r := range rs.Underride {
		if r.RuleID == ".m.rule.message" && r.Enabled {
			t.Fatal("disabled default still enabled")
		}
	}
	b, _ := json.Marshal(rs)
	if !json.Valid(b) || !strings.Contains(string(b), `"@me:x"`) || strings.Contains(string(b), UserPlaceholder) {
		t.Fatalf("placeholder not substituted: %s", b)
	}
	if rs.Room == nil || rs.Sender == nil {
		t.Fatal("empty kinds must be [] not null")
	}
}

// pushFixture is a room of three local users with mentions, a thread,
// receipts (threaded and not), push rule changes and a user's own message.
func pushFixture(n int) []any {
	room := "!p:x"
	pdu := func(id, sender, content string) []byte {
		return []byte(`{"type":"m.room.message","sender":"` + sender + `","origin_server_ts":7,"content":` + content + `}`)
	}
	ev := func(id, sender, content string) *EventRecord {
		return &EventRecord{RoomID: room, EventID: id, RoomVersion: "12", Type: "m.room.message", Sender: sender, Status: Accepted, PDU: pdu(id, sender, content)}
	}
	member := func(id, user, name string) *EventRecord {
		return &EventRecord{RoomID: room, EventID: id, RoomVersion: "12", Type: "m.room.member", StateKey: sk(user), Membership: "join", Sender: user, Status: Accepted,
			PDU: []byte(`{"type":"m.room.member","content":{"membership":"join","displayname":"` + name + `"}}`)}
	}
	recs := []any{
		&AccountRecord{UserID: "@a:x"}, &AccountRecord{UserID: "@b:x"}, &AccountRecord{UserID: "@c:x"},
		&EventRecord{RoomID: room, EventID: "$create", RoomVersion: "12", Type: "m.room.create", StateKey: sk(""), Sender: "@a:x", Status: Accepted, PDU: []byte(`{"type":"m.room.create","content":{"room_version":"12"}}`)},
		member("$ja", "@a:x", "Alice"), member("$jb", "@b:x", "Bob"), member("$jc", "@c:x", "Carol"),
		&PushRulesRecord{UserID: "@c:x", Rules: []byte(`{"rules":{"override":[],"content":[{"rule_id":"cake","enabled":true,"pattern":"cake","actions":["notify",{"set_tweak":"highlight"}]}],"room":[],"sender":[],"underride":[]}}`)},
	}
	for i := 0; i < n; i++ {
		switch i % 5 {
		case 0:
			recs = append(recs, ev(fmt.Sprintf("$m%d", i), "@a:x", `{"msgtype":"m.text","body":"hello"}`))
		case 1:
			recs = append(recs, ev(fmt.Sprintf("$m%d", i), "@a:x", `{"msgtype":"m.text","body":"cake for @b","m.mentions":{"user_ids":["@b:x"]}}`))
		case 2:
			recs = append(recs, ev(fmt.Sprintf("$m%d", i), "@a:x", `{"msgtype":"m.text","body":"in thread","m.relates_to":{"rel_type":"m.thread","event_id":"$m0"}}`))
		case 3:
			recs = append(recs, &ReceiptRecord{RoomID: room, UserID: "@b:x", Type: ReceiptRead, EventID: "$x", EventSeq: uint64(8 + i - 2), TS: 1})
		case 4:
			recs = append(recs, &ReceiptRecord{RoomID: room, UserID: "@c:x", Type: ReceiptReadPrivate, ThreadID: "$m0", EventID: "$x", EventSeq: uint64(8 + i - 2), TS: 1},
				ev(fmt.Sprintf("$c%d", i), "@c:x", `{"msgtype":"m.text","body":"me"}`))
		}
	}
	return recs
}

// TestPushRebuildMatchesLive: the push projection (and the other views
// of the sync area) rebuilt from the log equal the live ones, with records
// appended both alone and many to a group commit.
func TestPushRebuildMatchesLive(t *testing.T) {
	set, _ := All()
	dir := t.TempDir()
	l := openLog(t, filepath.Join(dir, "db"), set)
	defer l.Close()
	recs := pushFixture(400)
	appendAll(t, l, recs[:200])
	var wg sync.WaitGroup
	for _, chunk := range [][]any{recs[200:300], recs[300:]} {
		wg.Add(1)
		go func(chunk []any) {
			defer wg.Done()
			var ps []interface{ Wait() (uint64, error) }
			for _, v := range chunk {
				rec, err := Encode(v)
				if err != nil {
					t.Error(err)
					return
				}
				ps = append(ps, l.Submit(rec))
			}
			for _, p := range ps {
				if _, err := p.Wait(); err != nil {
					t.Error(err)
				}
			}
		}(chunk)
	}
	wg.Wait()
	rebuildMatches(t, set, l, filepath.Join(dir, "scratch"))
}

// TestUnreadCounts follows counts through notifications and receipts.
func TestUnreadCounts(t *testing.T) {
	set, _ := All()
	l := openLog(t, t.TempDir(), set)
	defer l.Close()
	store, err := NewStore(l, l.DB(), 0)
	if err != nil {
		t.Fatal(err)
	}
	recs := pushFixture(0)
	appendAll(t, l, recs)
	room := "!p:x"
	msg := func(id, body string) uint64 {
		rec, _ := Encode(&EventRecord{RoomID: room, EventID: id, RoomVersion: "12", Type: "m.room.message", Sender: "@a:x", Status: Accepted,
			PDU: []byte(`{"type":"m.room.message","content":` + body + `}`)})
		seq, err := l.Append(rec)
		if err != nil {
			t.Fatal(err)
		}
		return seq
	}
	total := func(user string) Counts {
		c, err := store.UnreadCounts(user, room)
		if err != nil {
			t.Fatal(err)
		}
		var out Counts
		for _, x := range c {
			out.Notify += x.Notify
			out.Highlight += x.Highlight
		}
		return out
	}
	s1 := msg("$1", `{"msgtype":"m.text","body":"one"}`)
	msg("$2", `{"msgtype":"m.text","body":"cake","m.mentions":{"user_ids":["@b:x"]}}`)
	msg("$3", `{"msgtype":"m.notice","body":"notice"}`)
	msg("$4", `{"msgtype":"m.text","body":"t","m.relates_to":{"rel_type":"m.thread","event_id":"$1"}}`)
	if got := total("@b:x"); got != (Counts{3, 1}) {
		t.Fatalf("b: %+v", got)
	}
	if got := total("@c:x"); got != (Counts{3, 1}) { // the cake content rule highlights
		t.Fatalf("c: %+v", got)
	}
	if got := total("@a:x"); got != (Counts{}) {
		t.Fatalf("sender counted: %+v", got)
	}
	// A threaded receipt for the thread clears only the thread.
	rec, _ := Encode(&ReceiptRecord{RoomID: room, UserID: "@b:x", Type: ReceiptRead, ThreadID: "$1", EventID: "$4", EventSeq: s1 + 3, TS: 1})
	l.Append(rec)
	c, _ := store.UnreadCounts("@b:x", room)
	if c["$1"] != (Counts{}) || c["main"] != (Counts{2, 1}) {
		t.Fatalf("after thread receipt: %+v", c)
	}
	// An unthreaded receipt on $1 clears $1 only.
	rec, _ = Encode(&ReceiptRecord{RoomID: room, UserID: "@b:x", Type: ReceiptReadPrivate, EventID: "$1", EventSeq: s1, TS: 1})
	l.Append(rec)
	if got := total("@b:x"); got != (Counts{1, 1}) {
		t.Fatalf("after receipt: %+v", got)
	}
	// An older receipt changes nothing.
	rec, _ = Encode(&ReceiptRecord{RoomID: room, UserID: "@b:x", Type: ReceiptRead, EventID: "$0", EventSeq: s1 - 1, TS: 1})
	l.Append(rec)
	if got := total("@b:x"); got != (Counts{1, 1}) {
		t.Fatalf("older receipt: %+v", got)
	}
	// The user's own message marks the main timeline read.
	own, _ := Encode(&EventRecord{RoomID: room, EventID: "$own", RoomVersion: "12", Type: "m.room.message", Sender: "@b:x", Status: Accepted, PDU: []byte(`{"content":{"body":"hi"}}`)})
	l.Append(own)
	if got := total("@b:x"); got != (Counts{}) {
		t.Fatalf("after own message: %+v", got)
	}
	var n int
	store.Notifications("@b:x", 0, l.Last(), true, func(_ uint64, x *Notification) bool { n++; return true })
	if n != 3 {
		t.Fatalf("notifications listed: %d", n)
	}
	if th, _ := store.ThreadOf("$4"); th != "$1" {
		t.Fatalf("thread of $4: %q", th)
	}
}

// FuzzPushGlob: any pattern compiles (or fails cleanly) and a pattern
// without wildcards matches itself, ignoring case.
func FuzzPushGlob(f *testing.F) {
	for _, s := range []string{"lunc?*", "ex*ple", "[a-z]", `\`, "(", "ß", ""} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, glob string, words bool) {
		re, err := globRegexp(glob, words)
		if err != nil {
			return
		}
		if !strings.ContainsAny(glob, "*?") && utf8.ValidString(glob) && !re.MatchString(glob) {
			t.Fatalf("%q does not match itself (words %v)", glob, words)
		}
		splitPath(glob)
	})
}

// TestUnreadCountsModel drives a room through random messages, mentions,
// notices, thread replies, receipts, leaves and re-joins, and checks after
// every step that the counts (kept incrementally per user and room, and
// folded afresh by a new Store) equal a direct model of the spec's rules.
//
// A third Store is read as /sync reads it (UnreadCountsAt), told when the
// user's positions cannot have changed, so it reuses them; it runs once
// with the default tail size and once with tails so short that windows
// often start before them.
func TestUnreadCountsModel(t *testing.T) {
	for _, n := range []int{tailMax, 8} {
		t.Run(fmt.Sprintf("tail=%d", n), func(t *testing.T) {
			defer func(old int) { tailMax = old }(tailMax)
			tailMax = n
			unreadCountsModel(t)
		})
	}
}

func unreadCountsModel(t *testing.T) {
	set, _ := All()
	l := openLog(t, t.TempDir(), set)
	defer l.Close()
	store, err := NewStore(l, l.DB(), 0)
	if err != nil {
		t.Fatal(err)
	}
	hinted, _ := NewStore(l, l.DB(), 0)
	appendAll(t, l, pushFixture(0))
	const room = "!p:x"
	users := []string{"@a:x", "@b:x", "@c:x"}
	// changed: the position of the latest change of a user's join or
	// read positions (their messages, receipts, membership).
	changed := map[string]uint64{}
	type msg struct {
		seq            uint64
		sender, thread string
		notify, hl     map[string]bool
	}
	var msgs []msg
	join := map[string]uint64{}
	pos := map[string]map[string]uint64{}
	for _, u := range users {
		pos[u] = map[string]uint64{}
		join[u] = 1 // joined in the fixture, before any message
	}
	app := func(v any) uint64 {
		rec, err := Encode(v)
		if err != nil {
			t.Fatal(err)
		}
		seq, err := l.Append(rec)
		if err != nil {
			t.Fatal(err)
		}
		return seq
	}
	root := ""
	rnd := rand.New(rand.NewPCG(7, 9))
	for step := 0; step < 400; step++ {
		u := users[rnd.IntN(len(users))]
		switch op := rnd.IntN(10); {
		case op < 6 && join[u] != 0:
			kind := rnd.IntN(4)
			m := msg{sender: u, notify: map[string]bool{}, hl: map[string]bool{}}
			body := `{"msgtype":"m.text","body":"hello"}`
			target := users[rnd.IntN(len(users))]
			switch {
			case kind == 1:
				body = `{"msgtype":"m.text","body":"hi","m.mentions":{"user_ids":["` + strings.ToUpper(target[:2]) + target[2:] + `"]}}`
			case kind == 2:
				body = `{"msgtype":"m.notice","body":"beep"}`
			case kind == 3 && root != "":
				body = `{"msgtype":"m.text","body":"in thread","m.relates_to":{"rel_type":"m.thread","event_id":"` + root + `"}}`
				m.thread = root
			}
			id := fmt.Sprintf("$e%d", step)
			m.seq = app(&EventRecord{RoomID: room, EventID: id, RoomVersion: "12", Type: "m.room.message", Sender: u, Status: Accepted,
				PDU: []byte(`{"type":"m.room.message","origin_server_ts":5,"content":` + body + `}`)})
			if root == "" {
				root = id
			}
			for _, o := range users {
				// Mentions match the exact user ID only (event_property_contains).
				mentioned := kind == 1 && target == o && strings.ToUpper(target[:2])+target[2:] == o
				m.notify[o] = kind != 2 || mentioned
				m.hl[o] = mentioned
			}
			msgs = append(msgs, m)
			tk := m.thread
			if tk == "" {
				tk = "main"
			}
			pos[u][tk] = m.seq
			changed[u] = m.seq
		case op < 8:
			thread := []string{"", "main", root}[rnd.IntN(3)]
			last := l.Last()
			at := uint64(1 + rnd.IntN(int(last)))
			changed[u] = app(&ReceiptRecord{RoomID: room, UserID: u, Type: ReceiptRead, ThreadID: thread, EventID: "$x", EventSeq: at, TS: 1})
			pos[u][thread] = max(pos[u][thread], at)
		case u != "@a:x":
			membership := "leave"
			if join[u] == 0 {
				membership = "join"
			}
			seq := app(&EventRecord{RoomID: room, EventID: fmt.Sprintf("$mem%d", step), RoomVersion: "12", Type: "m.room.member", StateKey: sk(u),
				Membership: membership, Sender: u, Status: Accepted, PDU: []byte(`{"type":"m.room.member","content":{"membership":"` + membership + `"}}`)})
			join[u] = 0
			if membership == "join" {
				join[u] = seq
			}
			pos[u]["main"] = seq
			changed[u] = seq
		}
		fresh, _ := NewStore(l, l.DB(), 0)
		for _, o := range users {
			want := map[string]Counts{}
			if join[o] != 0 {
				for _, m := range msgs {
					tk := m.thread
					if tk == "" {
						tk = "main"
					}
					if m.seq <= join[o] || m.sender == o || m.seq <= max(pos[o][""], pos[o][tk]) || !m.notify[o] {
						continue
					}
					c := want[tk]
					c.Notify++
					if m.hl[o] {
						c.Highlight++
					}
					want[tk] = c
				}
			}
			for name, s := range map[string]*Store{"cached": store, "fresh": fresh} {
				got, err := s.UnreadCounts(o, room)
				if err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("step %d, %s, %s: got %v, want %v", step, o, name, got, want)
				}
			}
			got, err := hinted.UnreadCountsAt(o, room, l.Last(), func(at uint64) bool { return changed[o] <= at })
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("step %d, %s, hinted: got %v, want %v", step, o, got, want)
			}
		}
	}
}

// TestNotificationsMerge: notifications of several rooms come out in log
// order both ways, and a user is listed for an invite before joining.
func TestNotificationsMerge(t *testing.T) {
	set, _ := All()
	l := openLog(t, t.TempDir(), set)
	defer l.Close()
	store, _ := NewStore(l, l.DB(), 0)
	appendAll(t, l, pushFixture(0))
	app := func(v any) uint64 {
		rec, _ := Encode(v)
		seq, err := l.Append(rec)
		if err != nil {
			t.Fatal(err)
		}
		return seq
	}
	rooms := []string{"!p:x", "!q:x"}
	app(&EventRecord{RoomID: "!q:x", EventID: "$qc", RoomVersion: "12", Type: "m.room.create", StateKey: sk(""), Sender: "@a:x", Status: Accepted, PDU: []byte(`{"type":"m.room.create","content":{}}`)})
	app(&EventRecord{RoomID: "!q:x", EventID: "$qa", RoomVersion: "12", Type: "m.room.member", StateKey: sk("@a:x"), Membership: "join", Sender: "@a:x", Status: Accepted, PDU: []byte(`{"content":{"membership":"join"}}`)})
	inv := app(&EventRecord{RoomID: "!q:x", EventID: "$qi", RoomVersion: "12", Type: "m.room.member", StateKey: sk("@b:x"), Membership: "invite", Sender: "@a:x", Status: Accepted, PDU: []byte(`{"type":"m.room.member","state_key":"@b:x","content":{"membership":"invite"}}`)})
	want := []uint64{inv}
	app(&EventRecord{RoomID: "!q:x", EventID: "$qj", RoomVersion: "12", Type: "m.room.member", StateKey: sk("@b:x"), Membership: "join", Sender: "@b:x", Status: Accepted, PDU: []byte(`{"content":{"membership":"join"}}`)})
	for i := 0; i < 150; i++ {
		want = append(want, app(&EventRecord{RoomID: rooms[i%3%2], EventID: fmt.Sprintf("$n%d", i), RoomVersion: "12", Type: "m.room.message", Sender: "@a:x", Status: Accepted,
			PDU: []byte(`{"type":"m.room.message","content":{"body":"x"}}`)}))
	}
	for _, back := range []bool{false, true} {
		var got []uint64
		store.Notifications("@b:x", 0, l.Last(), back, func(seq uint64, n *Notification) bool {
			got = append(got, seq)
			return true
		})
		exp := append([]uint64(nil), want...)
		if back {
			slices.Reverse(exp)
		}
		if fmt.Sprint(got) != fmt.Sprint(exp) {
			t.Fatalf("backwards %v: got %v, want %v", back, got, exp)
		}
	}
	// Stopping early stops.
	n := 0
	store.Notifications("@b:x", 0, l.Last(), true, func(uint64, *Notification) bool { n++; return n < 10 })
	if n != 10 {
		t.Fatalf("did not stop: %d", n)
	}
}

func TestEntryCodec(t *testing.T) {
	e := notifEntry{EventID: "$e", Sender: "@s:x", Thread: "$r", TS: -5, Flags: entryNotify, Actions: []byte(`["notify"]`),
		Except: []notifExcept{{User: "@a:x", Flags: 3, Actions: []byte(`["notify",{"set_tweak":"highlight"}]`)}, {User: "@b:x"}}}
	b := e.encode(nil)
	got, err := decodeEntry(b)
	if err != nil || fmt.Sprintf("%+v", *got) != fmt.Sprintf("%+v", e) {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	h, _ := readHead(b)
	for _, c := range []struct {
		user string
		join uint64
		want byte
		idx  int
	}{{"@a:x", 0, 3, 0}, {"@b:x", 1, 0, 1}, {"@c:x", 1, entryNotify, -1}, {"@c:x", 0, 0, -1}, {"@c:x", 9, 0, -1}, {"@s:x", 1, 0, -1}} {
		f, i, err := h.outcome(9, c.user, c.join)
		if err != nil || f != c.want || i != c.idx {
			t.Errorf("%+v: %d %d %v", c, f, i, err)
		}
	}
}

func FuzzEntry(f *testing.F) {
	e := notifEntry{EventID: "$e", Sender: "@s:x", Flags: 1, Except: []notifExcept{{User: "@a:x", Flags: 3}}}
	f.Add(e.encode(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		if h, err := readHead(b); err == nil {
			h.outcome(5, "@a:x", 1)
		}
		if e, err := decodeEntry(b); err == nil {
			if _, err := decodeEntry(e.encode(nil)); err != nil {
				t.Fatalf("re-encoded entry unreadable: %v", err)
			}
		}
	})
}

// BenchmarkReplayPush replays the message-heavy log through the push
// projection alone.
func BenchmarkReplayPush(b *testing.B) {
	set, err := NewSet(Push{rules: &ruleCache{m: map[string]cachedRules{}}})
	if err != nil {
		b.Fatal(err)
	}
	benchReplay(b, set)
}

// TestMigrateFormat: rows of an older format are dropped and folded again
// from the log on open, and a current format is left alone.
func TestMigrateFormat(t *testing.T) {
	set, _ := All()
	l := openLog(t, t.TempDir(), set)
	defer l.Close()
	if err := set.CatchUp(l, l.DB()); err != nil {
		t.Fatal(err)
	}
	appendAll(t, l, pushFixture(50))
	want, _ := Digest(l.DB(), PushID)
	stale := []byte{'p', PushID, 'k', 'o', 'l', 'd'}
	l.DB().Set(stale, []byte("x"), pebble.Sync)
	if err := set.CatchUp(l, l.DB()); err != nil {
		t.Fatal(err)
	}
	if got, _ := Digest(l.DB(), PushID); got == want {
		t.Fatal("current format rebuilt (stale row gone)")
	}
	l.DB().Delete([]byte{versionPrefix, PushID}, pebble.Sync) // as written before versions
	if err := set.CatchUp(l, l.DB()); err != nil {
		t.Fatal(err)
	}
	if got, _ := Digest(l.DB(), PushID); got != want {
		t.Fatal("old format not rebuilt")
	}
}

// plainOutcome evaluates the default rules for user on an event, from its
// whole PDU or, with plain, from its record alone.
func plainOutcome(r *EventRecord, plain bool, user string, members int64) (string, bool) {
	pe := &pushEvent{ev: eventView(r), pdu: r.PDU, memberCount: members, senderPower: 50, notifLevel: func(string) int64 { return 50 }}
	if plain {
		pe.ev, pe.pdu, pe.rec = nil, nil, r
	}
	pe.anon = user == ""
	hit := pe.match(defaultCompiled, user, "")
	if hit == nil {
		return "", false
	}
	return string(hit.actions), hit.notify
}

// FuzzPlainPDU: whenever plainPDU says the default rules can do without an
// event's content, they answer the same without it as with it, for a
// member the event does not name and for one it might.
func FuzzPlainPDU(f *testing.F) {
	for _, c := range []string{
		`{"msgtype":"m.text","body":"hello"}`, `{"msgtype":"m.notice","body":"x"}`, `{"msgtype":"M.NOTICE"}`,
		`{"body":"hi","m.mentions":{"user_ids":["@b:x"]}}`, `{"m.mentions":{"room":true},"body":"@room"}`,
		`{"m.relates_to":{"rel_type":"m.replace","event_id":"$x"}}`, `{"msgtype":"m.\u006eotice"}`, `{"msgtype":"m.noti\u017fe"}`,
		`{"body":"m.notice"}`, `{}`, `[`, `{"msgtype":"m.noti` + "\u212a" + `e"}`,
	} {
		f.Add("m.room.message", c, int64(3))
		f.Add("m.room.encrypted", c, int64(2))
	}
	for _, typ := range []string{"m.room.member", "M.Room.Member", "m.reaction", "m.room.tombstone", "m.room.ſerver_acl", "x.custom"} {
		f.Add(typ, `{"membership":"invite"}`, int64(2))
		f.Add(typ, `{"m.relates_to":{"rel_type":"m.annotation"}}`, int64(2))
	}
	f.Fuzz(func(t *testing.T, typ, content string, members int64) {
		pdu := []byte(`{"type":` + strconv.Quote(typ) + `,"origin_server_ts":1,"content":` + content + `}`)
		if !plainPDU(typ, pdu) {
			return
		}
		r := &EventRecord{RoomID: "!r:x", EventID: "$e", Type: typ, Sender: "@a:x", PDU: pdu}
		for _, user := range []string{"", "@b:x"} {
			a1, n1 := plainOutcome(r, false, user, members)
			a2, n2 := plainOutcome(r, true, user, members)
			if a1 != a2 || n1 != n2 {
				t.Fatalf("user %q, %s: with content %s %v, without %s %v", user, pdu, a1, n1, a2, n2)
			}
		}
	})
}

func TestPlainNeedles(t *testing.T) {
	for pdu, want := range map[string]bool{
		`{"content":{"msgtype":"m.text","body":"hi"}}`:           true,
		`{"content":{"msgtype":"M.Notice"}}`:                     false,
		`{"content":{"body":"a\"b"}}`:                            false,
		`{"content":{"m.mentions":{}}}`:                          false,
		`{"content":{"m.relates_to":{}}}`:                        false,
		`{"content":{"msgtype":"m.text","body":"über"}}`:         true,
		`{"content":{"msgtype":"m.text","body":"m.noticeable"}}`: false, // conservative
	} {
		if got := plainPDU("m.room.message", []byte(pdu)); got != want {
			t.Errorf("%s: %v", pdu, got)
		}
	}
}

// busyRoomFixture is a room of members local members (@u0:x...) who all
// joined, as the busy-room load test has it.
func busyRoomFixture(members int) []any {
	room := "!busy:x"
	recs := []any{}
	for i := 0; i < members; i++ {
		recs = append(recs, &AccountRecord{UserID: fmt.Sprintf("@u%d:x", i), TS: 1})
	}
	recs = append(recs, &EventRecord{RoomID: room, EventID: "$bcreate", RoomVersion: "12", Type: "m.room.create", StateKey: sk(""),
		Sender: "@u0:x", Depth: 1, Status: Accepted, PDU: []byte(`{"content":{}}`)})
	for i := 0; i < members; i++ {
		u := fmt.Sprintf("@u%d:x", i)
		recs = append(recs, &EventRecord{RoomID: room, EventID: "$bj" + u, RoomVersion: "12", Type: "m.room.member", StateKey: sk(u),
			Membership: "join", Sender: u, Depth: int64(2 + i), Status: Accepted,
			PDU: []byte(`{"content":{"membership":"join","displayname":"user ` + strconv.Itoa(i) + `"}}`)})
	}
	return recs
}

// busyMessage is the i-th message of the busy room, from one of 64 senders.
func busyMessage(i int) log.Record {
	id := fmt.Sprintf("$bm%d", i)
	rec, _ := Encode(&EventRecord{RoomID: "!busy:x", EventID: id, RoomVersion: "12", Type: "m.room.message",
		Sender: fmt.Sprintf("@u%d:x", i%64), Depth: int64(1000 + i), Status: Accepted, Txn: "t" + id,
		PDU: []byte(`{"auth_events":["$a","$b","$c"],"content":{"body":"message ` + strconv.Itoa(i) + `","msgtype":"m.text"},` +
			`"depth":12,"hashes":{"sha256":"abc"},"origin_server_ts":1700000000000,"prev_events":["$p"],"room_id":"!busy:x",` +
			`"sender":"@u1:x","signatures":{"x":{"ed25519:a":"sig"}},"type":"m.room.message"}`)})
	return rec
}

// BenchmarkApplyBusyRoom measures the live fold of a message in a room of
// 200 local members (every projection), committed in batches of 8 records
// as the log's group commit does under load. ns/op is per message.
func BenchmarkApplyBusyRoom(b *testing.B) {
	set, _ := All()
	l := openLog(b, b.TempDir(), set)
	defer l.Close()
	appendAll(b, l, busyRoomFixture(200))
	const group = 8
	msgs := make([]log.Record, 4096)
	for i := range msgs {
		msgs[i] = busyMessage(i)
	}
	pos := l.Last() + 1
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += group {
		recs := msgs[i%len(msgs) : i%len(msgs)+group]
		b.StopTimer()
		batch := l.DB().NewIndexedBatch()
		b.StartTimer()
		if err := set.Apply(batch, pos, recs); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := batch.Commit(pebble.NoSync); err != nil {
			b.Fatal(err)
		}
		batch.Close()
		pos += group
		b.StartTimer()
	}
}

// TestPushKeepCommittedOnly: the push fold's cache across batches (pushKeep)
// never holds rows of a batch that did not commit. Batches that change
// members, display names and push rules are built and thrown away, the
// next batch continuing at the next position as if they had committed;
// the push rows must be those of a fold that never saw them.
func TestPushKeepCommittedOnly(t *testing.T) {
	room := "!busy:x"
	msg := func(i int, sender, body string) *EventRecord {
		return &EventRecord{RoomID: room, EventID: fmt.Sprintf("$k%d", i), RoomVersion: "12", Type: "m.room.message", Sender: sender,
			Status: Accepted, PDU: []byte(`{"origin_server_ts":5,"content":{"msgtype":"m.text","body":"` + body + `"}}`)}
	}
	member := func(i int, user, membership, name string) *EventRecord {
		return &EventRecord{RoomID: room, EventID: fmt.Sprintf("$km%d", i), RoomVersion: "12", Type: "m.room.member", StateKey: sk(user),
			Membership: membership, Sender: user, Status: Accepted,
			PDU: []byte(`{"content":{"membership":"` + membership + `","displayname":"` + name + `"}}`)}
	}
	rules := &PushRulesRecord{UserID: "@u3:x", Rules: []byte(`{"rules":{"override":[],"content":[{"rule_id":"cake","enabled":true,` +
		`"pattern":"cake","actions":["notify",{"set_tweak":"highlight"}]}],"room":[],"sender":[],"underride":[]}}`)}
	type batch struct {
		recs   []any
		commit bool
	}
	var batches []batch
	for r := 0; r < 6; r++ {
		i := r * 10
		batches = append(batches,
			batch{[]any{msg(i, "@u1:x", "hello"), msg(i+1, "@u2:x", "cake")}, true},
			// Thrown away: a leave, a rename, rules of one's own, then messages.
			batch{[]any{member(i+2, "@u4:x", "leave", ""), msg(i+3, "@u1:x", "cake"), member(i+4, "@u5:x", "join", "cake"),
				rules, msg(i+5, "@u1:x", "cake for all")}, false},
			batch{[]any{msg(i+6, "@u2:x", "cake again"), msg(i+7, "@u1:x", "hi")}, true},
		)
		if r == 3 {
			// Committed changes too.
			batches = append(batches, batch{[]any{member(i+8, "@u6:x", "leave", ""), msg(i+9, "@u1:x", "cake")}, true})
		}
	}
	encode := func(vs []any) []log.Record {
		out := make([]log.Record, len(vs))
		for i, v := range vs {
			out[i], _ = Encode(v)
		}
		return out
	}
	fold := func(fresh bool) [32]byte {
		set, _ := All()
		l := openLog(t, t.TempDir(), set)
		defer l.Close()
		appendAll(t, l, busyRoomFixture(8))
		pos := l.Last() + 1
		for _, bt := range batches {
			recs := encode(bt.recs)
			if fresh {
				if !bt.commit {
					pos += uint64(len(recs))
					continue
				}
				set, _ = All() // no cache from earlier batches
			}
			b := l.DB().NewIndexedBatch()
			if err := set.Apply(b, pos, recs); err != nil {
				t.Fatal(err)
			}
			if bt.commit {
				if err := b.Commit(pebble.NoSync); err != nil {
					t.Fatal(err)
				}
			}
			b.Close()
			pos += uint64(len(recs))
		}
		d, err := Digest(l.DB(), PushID)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if got, want := fold(false), fold(true); got != want {
		t.Fatal("push rows differ from a fold without the thrown-away batches")
	}
}
