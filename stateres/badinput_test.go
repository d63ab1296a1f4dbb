package stateres

import (
	"bytes"
	"encoding/json"
	"testing"

	"engram/dag"
)

// Events with missing or malformed fields the rules read are rejected with
// a reason: never accepted by default, and never an unexplained error.
func TestBadInputRejected(t *testing.T) {
	type tc struct {
		name   string
		mutate func(b *builder, ev *dag.Event)
	}
	cases := []tc{
		{"no auth_events", func(b *builder, ev *dag.Event) { ev.AuthEvents = nil }},
		{"empty sender", func(b *builder, ev *dag.Event) { ev.Sender = "" }},
		{"sender without server", func(b *builder, ev *dag.Event) { ev.Sender = "@bob" }},
		{"member without state_key", func(b *builder, ev *dag.Event) { ev.StateKey = nil }},
		{"member content not JSON", func(b *builder, ev *dag.Event) { ev.Content = json.RawMessage("{") }},
		{"member content an array", func(b *builder, ev *dag.Event) { ev.Content = json.RawMessage(`["join"]`) }},
		{"membership null", func(b *builder, ev *dag.Event) { ev.Content = json.RawMessage(`{"membership":null}`) }},
		{"membership unknown", func(b *builder, ev *dag.Event) { ev.Content = json.RawMessage(`{"membership":"JOIN"}`) }},
		{"room_id empty", func(b *builder, ev *dag.Event) { ev.RoomID = "" }},
		{"room_id of another room", func(b *builder, ev *dag.Event) { ev.RoomID = "!other:example.com" }},
		{"third party invite garbage", func(b *builder, ev *dag.Event) {
			ev.Content = json.RawMessage(`{"membership":"invite","third_party_invite":"x"}`)
			ev.StateKey = sk(sZara)
		}},
		{"join authorised by garbage", func(b *builder, ev *dag.Event) {
			ev.Content = json.RawMessage(`{"membership":"join","join_authorised_via_users_server":7}`)
		}},
	}
	for _, ver := range allVersions {
		for _, c := range cases {
			t.Run(c.name+"/v"+ver.ID, func(t *testing.T) {
				b := baseRoom(t, ver)
				b.add("$jr-invite", sAlice, typeJoinRules, sk(""), obj{"join_rule": "invite"})
				ev := b.make("$bad", sZara, typeMember, sk(sZara), obj{"membership": "join"})
				c.mutate(b, ev)
				v, err := CheckReceipt(Receipt{Event: ev, Fetch: b.events.fetch, StateBefore: b.state, CurrentState: b.state})
				if err != nil {
					if c.name == "room_id of another room" && ver.RoomIDFromCreate {
						return // v12: the room ID names an unknown create event: fetch it first
					}
					t.Fatalf("error instead of a verdict: %v", err)
				}
				if v.Outcome != Rejected {
					t.Fatalf("not rejected: %+v", v)
				}
				var d *DeniedError
				if !asDenied(v.Reason, &d) || d.Reason == "" || d.Rule == "" {
					t.Fatalf("no reason: %+v", v)
				}
			})
		}
	}
}

// Malformed state the rules read from is treated conservatively.
func TestMalformedStateEvents(t *testing.T) {
	for _, ver := range allVersions {
		f := newFixture(t, ver)
		// Join rules that are not a string admit nobody.
		f.put(f.event(admin, typeJoinRules, sk(""), `{"join_rule":["public"]}`))
		if err := Allowed(memberEv(f, stranger, stranger, mJoin), f.state); !IsDenied(err) {
			t.Fatalf("v%s: join under garbage join rules: %v", ver.ID, err)
		}
		// Power levels that are not an object count as absent fields: the
		// defaults apply (state_default 50), they are not "no power levels".
		f.put(f.event(admin, typePowerLevels, sk(""), `"junk"`))
		if err := Allowed(f.event(user, "m.room.topic", sk(""), obj{}), f.state); !IsDenied(err) {
			t.Fatalf("v%s: topic under garbage power levels: %v", ver.ID, err)
		}
		// Unreadable level values fall back to the defaults.
		f.put(f.event(admin, typePowerLevels, sk(""), `{"users":{"@user:c.org":"lots"},"state_default":{"x":1}}`))
		if err := Allowed(f.event(user, "m.room.topic", sk(""), obj{}), f.state); !IsDenied(err) {
			t.Fatalf("v%s: unreadable levels: %v", ver.ID, err)
		}
	}
}

// v1 and v2 event IDs are chosen by the sender, so two different events can
// share one; the parse cache must never hand one event's content to the
// other.
func TestParseCacheIDReuse(t *testing.T) {
	a := &dag.Event{ID: "$same:x.org", Type: typeMember, Content: json.RawMessage(`{"membership":"join"}`)}
	b := &dag.Event{ID: "$same:x.org", Type: typeMember, Content: json.RawMessage(`{"membership":"ban"}`)}
	c := &dag.Event{ID: "$same:x.org", Type: typeJoinRules, Content: json.RawMessage(`{"join_rule":"public"}`)}
	for i := 0; i < 3; i++ {
		if parsed(a).member.membership != mJoin || parsed(b).member.membership != mBan || parsed(c).joinRule != jrPublic {
			t.Fatal("cache confused events sharing an ID")
		}
	}
}

// Canonical JSON vectors from the appendices ("Canonical JSON" examples).
func TestCanonicalJSON(t *testing.T) {
	cases := []struct{ in, want string }{
		{`{}`, `{}`},
		{`{"one": 1, "two": "Two"}`, `{"one":1,"two":"Two"}`},
		{`{"b": "2", "a": "1"}`, `{"a":"1","b":"2"}`},
		{`{"auth":{"success":true,"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"medium":"email","address":"john.doe@example.org"},{"medium":"msisdn","address":"123456789"}]}}}`,
			`{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}`},
		{`{"a": "日本語"}`, `{"a":"日本語"}`},
		{`{"本": 2, "日": 1}`, `{"日":1,"本":2}`},
		{`{"a": "\u65E5"}`, `{"a":"日"}`},
		{`{"a": null}`, `{"a":null}`},
		{`{"a": "\u0000\u001f\"\\\/"}`, `{"a":"\u0000\u001f\"\\/"}`},
		{`{"a": "\n\t\b\f\r"}`, `{"a":"\n\t\b\f\r"}`},
	}
	for _, c := range cases {
		o, ok := object([]byte(c.in))
		if !ok {
			t.Fatalf("%s: not an object", c.in)
		}
		var buf bytes.Buffer
		if !canonicalObject(&buf, o) || buf.String() != c.want {
			t.Fatalf("%s:\n got %s\nwant %s", c.in, buf.String(), c.want)
		}
	}
}

func TestUserIDValidation(t *testing.T) {
	for s, want := range map[string][2]bool{ // loose, strict
		"@alice:example.org":      {true, true},
		"@alice:example.org:8448": {true, true},
		"@a:[::1]:8448":           {true, true},
		"@a:1.2.3.4":              {true, true},
		"@a:exa_mple.org":         {true, false},
		"@:example.org":           {false, false},
		"alice:example.org":       {false, false},
		"@alice":                  {false, false},
		"@alice:":                 {false, false},
		"@a:[zz]":                 {true, false},
		"@a:host:99999999":        {true, false},
	} {
		if looseUserID(s) != want[0] || validUserID(s) != want[1] {
			t.Errorf("%s: loose %v strict %v", s, looseUserID(s), validUserID(s))
		}
	}
}

// Concurrent checks and resolutions share the parse cache; run with -race.
func TestConcurrentUse(t *testing.T) {
	ver := &dag.RoomV12
	b, sets := randomForks(t, ver, 5, 3, 80)
	want, err := Resolve(ver, sets, b.events.fetch)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 8)
	for g := 0; g < 8; g++ {
		go func() {
			for i := 0; i < 20; i++ {
				got, err := Resolve(ver, sets, b.events.fetch)
				if err == nil && !sameState(got, want) {
					err = errDiffers
				}
				if err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for g := 0; g < 8; g++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

var errDiffers = &DeniedError{Rule: "test", Reason: "concurrent resolution differs"}

// Emptying a full cache changes no answer.
func TestParseCacheBound(t *testing.T) {
	old := maxCached
	maxCached = 8
	defer func() { maxCached = old }()
	for _, ver := range []*dag.RoomVersion{&dag.RoomV6, &dag.RoomV12} {
		b, sets := randomForks(t, ver, 9, 2, 60)
		maxCached = 1 << 20
		want, err := Resolve(ver, sets, b.events.fetch)
		if err != nil {
			t.Fatal(err)
		}
		maxCached = 8
		got, err := Resolve(ver, sets, b.events.fetch)
		if err != nil || !sameState(got, want) {
			t.Fatalf("v%s: %v", ver.ID, err)
		}
	}
}
