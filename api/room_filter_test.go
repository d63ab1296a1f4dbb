package api

import (
	"testing"

	"engram/projections"
)

func TestGlobMatch(t *testing.T) {
	cases := []struct {
		pattern, s string
		want       bool
	}{
		{"m.room.message", "m.room.message", true},
		{"m.room.message", "m.room.messages", false},
		{"m.room.*", "m.room.message", true},
		{"m.room.*", "m.room.", true},
		{"m.*.message", "m.room.message", true},
		{"m.*.message", "m.message", false},
		{"*", "", true},
		{"*.call.*", "m.call.invite", true},
		{"a*a", "a", false},
		{"a*a", "aa", true},
		{"", "", true},
		{"", "x", false},
	}
	for _, c := range cases {
		if got := globMatch(c.pattern, c.s); got != c.want {
			t.Errorf("globMatch(%q, %q) = %v", c.pattern, c.s, got)
		}
	}
}

func TestValidAlias(t *testing.T) {
	cases := []struct {
		alias string
		want  bool
	}{
		{"#a:test.local", true},
		{"#room:example.org:8448", true},
		{"#héllo:[::1]:8448", true},
		{"#:test.local", false},
		{"a:test.local", false},
		{"#a", false},
		{"#a:", false},
		{"#a:bad host", false},
		{"#a\x00b:test.local", false},
		{"#" + string(make([]byte, 300)) + ":x", false},
	}
	for _, c := range cases {
		if got := validAlias(c.alias); got != c.want {
			t.Errorf("validAlias(%q) = %v", c.alias, got)
		}
	}
}

func TestRoomEventFilterMatch(t *testing.T) {
	rec := &projections.EventRecord{RoomID: "!r", Type: "m.room.message", Sender: "@a:x", PDU: []byte(`{"content":{"url":"mxc://x/y"}}`)}
	yes, no := true, false
	cases := []struct {
		f    roomEventFilter
		want bool
	}{
		{roomEventFilter{}, true},
		{roomEventFilter{Types: []string{"m.room.*"}, typesSet: true}, true},
		{roomEventFilter{Types: []string{}, typesSet: true}, false},
		{roomEventFilter{NotTypes: []string{"m.*"}}, false},
		{roomEventFilter{Senders: []string{"@b:x"}}, false},
		{roomEventFilter{NotSenders: []string{"@a:x"}}, false},
		{roomEventFilter{Rooms: []string{"!r"}}, true},
		{roomEventFilter{NotRooms: []string{"!r"}}, false},
		{roomEventFilter{ContainsURL: &yes}, true},
		{roomEventFilter{ContainsURL: &no}, false},
	}
	for i, c := range cases {
		if got := c.f.match(rec); got != c.want {
			t.Errorf("case %d (%+v): %v", i, c.f, got)
		}
	}
}

func FuzzGlobMatch(f *testing.F) {
	for _, s := range [][2]string{{"m.room.*", "m.room.message"}, {"*a*b*", "xaxbx"}, {"", ""}, {"**", "a"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, s string) {
		if globMatch(pattern, s) && !containsStar(pattern) && pattern != s {
			t.Fatalf("%q matched %q without a wildcard", pattern, s)
		}
		if globMatch(s, s) != true && !containsStar(s) {
			t.Fatalf("%q does not match itself", s)
		}
		validAlias(s)
	})
}

func containsStar(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '*' {
			return true
		}
	}
	return false
}

// BenchmarkFilterVisible measures the visibility check of a page of 50
// events: for a joined user in an always-shared room (two point reads) and
// in a room whose visibility changed (the per-event rules).
func BenchmarkFilterVisible(b *testing.B) {
	ts := newTestServer(b, Config{EnableRegistration: true})
	alice, bob := ts.register("alice"), ts.register("bob")
	shared := ts.rmCreate(alice, `{"preset":"public_chat"}`)
	joined := ts.rmCreate(alice, `{"preset":"public_chat","initial_state":[{"type":"m.room.history_visibility","content":{"history_visibility":"joined"}}]}`)
	for _, room := range []string{shared, joined} {
		for i := 0; i < 25; i++ {
			ts.rmSend(alice, room, "before")
		}
		ts.rmOK("POST", rmPath(room, "/join"), bob, `{}`)
		for i := 0; i < 25; i++ {
			ts.rmSend(alice, room, "after")
		}
	}
	for name, room := range map[string]string{"shared": shared, "joined": joined} {
		seqs, _ := ts.srv.store.Timeline(room, 0, ts.log.Last()+1, false, 1000)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := ts.srv.filterVisible("@bob:test.local", room, seqs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
