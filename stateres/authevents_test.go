package stateres

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"engram/dag"
)

func keys(ks ...string) []dag.StateKeyTuple {
	var out []dag.StateKeyTuple
	for i := 0; i < len(ks); i += 2 {
		out = append(out, dag.StateKeyTuple{Type: ks[i], StateKey: ks[i+1]})
	}
	return out
}

func TestAuthEventsNeeded(t *testing.T) {
	cases := []struct {
		name     string
		ver      *dag.RoomVersion
		typ      string
		stateKey *string
		sender   string
		content  string
		want     []dag.StateKeyTuple
	}{
		{"create has none", &dag.RoomV10, typeCreate, sk(""), alice, `{}`, nil},
		{"message v1-v11", &dag.RoomV11, "m.room.message", nil, user, `{}`,
			keys(typeCreate, "", typePowerLevels, "", typeMember, user)},
		{"message v12 has no create", &dag.RoomV12, "m.room.message", nil, user, `{}`,
			keys(typePowerLevels, "", typeMember, user)},
		{"state event", &dag.RoomV6, "m.room.topic", sk(""), user, `{}`,
			keys(typeCreate, "", typePowerLevels, "", typeMember, user)},
		{"join", &dag.RoomV6, typeMember, sk(user), user, `{"membership":"join"}`,
			keys(typeCreate, "", typePowerLevels, "", typeMember, user, typeJoinRules, "")},
		{"invite", &dag.RoomV6, typeMember, sk(stranger), admin, `{"membership":"invite"}`,
			keys(typeCreate, "", typePowerLevels, "", typeMember, admin, typeMember, stranger, typeJoinRules, "")},
		{"knock", &dag.RoomV7, typeMember, sk(stranger), stranger, `{"membership":"knock"}`,
			keys(typeCreate, "", typePowerLevels, "", typeMember, stranger, typeJoinRules, "")},
		{"leave has no join rules", &dag.RoomV6, typeMember, sk(user), mod, `{"membership":"leave"}`,
			keys(typeCreate, "", typePowerLevels, "", typeMember, mod, typeMember, user)},
		{"ban", &dag.RoomV12, typeMember, sk(user), mod, `{"membership":"ban"}`,
			keys(typePowerLevels, "", typeMember, mod, typeMember, user)},
		{"invite with third party invite", &dag.RoomV6, typeMember, sk(stranger), admin,
			`{"membership":"invite","third_party_invite":{"signed":{"token":"tok","mxid":"@stranger:d.org"}}}`,
			keys(typeCreate, "", typePowerLevels, "", typeMember, admin, typeMember, stranger, typeJoinRules, "", typeThirdPartyInvite, "tok")},
		{"third party invite with a non-string token", &dag.RoomV6, typeMember, sk(stranger), admin,
			`{"membership":"invite","third_party_invite":{"signed":{"token":5}}}`,
			keys(typeCreate, "", typePowerLevels, "", typeMember, admin, typeMember, stranger, typeJoinRules, "")},
		{"restricted join v8", &dag.RoomV8, typeMember, sk(stranger), stranger,
			`{"membership":"join","join_authorised_via_users_server":"@mod:b.org"}`,
			keys(typeCreate, "", typePowerLevels, "", typeMember, stranger, typeJoinRules, "", typeMember, mod)},
		{"join_authorised_via_users_server ignored before v8", &dag.RoomV7, typeMember, sk(stranger), stranger,
			`{"membership":"join","join_authorised_via_users_server":"@mod:b.org"}`,
			keys(typeCreate, "", typePowerLevels, "", typeMember, stranger, typeJoinRules, "")},
		{"join_authorised_via_users_server only on joins", &dag.RoomV10, typeMember, sk(stranger), stranger,
			`{"membership":"knock","join_authorised_via_users_server":"@mod:b.org"}`,
			keys(typeCreate, "", typePowerLevels, "", typeMember, stranger, typeJoinRules, "")},
		{"self-targeted member event has no duplicate", &dag.RoomV12, typeMember, sk(user), user, `{"membership":"leave"}`,
			keys(typePowerLevels, "", typeMember, user)},
		{"garbage content", &dag.RoomV10, typeMember, sk(user), user, `nonsense`,
			keys(typeCreate, "", typePowerLevels, "", typeMember, user)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := AuthEventsNeeded(c.ver, c.typ, c.stateKey, c.sender, json.RawMessage(c.content))
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %v\nwant %v", got, c.want)
			}
		})
	}
}

// authEventsRoom is a small linear room; it returns the builder and a
// message event from user.
func authEventsRoom(t *testing.T, ver *dag.RoomVersion) *builder {
	b := newBuilder(t, ver, alice)
	b.add("$a-join", alice, typeMember, sk(alice), obj{"membership": "join"})
	users := obj{mod: 50}
	if !ver.RoomIDFromCreate {
		users[alice] = 100
	}
	b.add("$pl", alice, typePowerLevels, sk(""), obj{"users": users})
	b.add("$jr", alice, typeJoinRules, sk(""), obj{"join_rule": "public"})
	b.add("$u-join", user, typeMember, sk(user), obj{"membership": "join"})
	return b
}

func TestCheckAuthEvents(t *testing.T) {
	type tc struct {
		name     string
		mutate   func(b *builder, ev *dag.Event)
		rejected map[string]bool
		want     string // rule, "ok", or "missing"
		v12      string
		partial  bool // the list is valid but does not authorise the event
	}
	cases := []tc{
		{name: "valid", want: "ok", v12: "ok"},
		{name: "duplicate (type, state_key)", want: "2.1", v12: "3.1",
			mutate: func(b *builder, ev *dag.Event) { ev.AuthEvents = append(ev.AuthEvents, "$pl") }},
		{name: "two power levels events", want: "2.1", v12: "3.1",
			mutate: func(b *builder, ev *dag.Event) {
				pl2 := b.make("$pl2", alice, typePowerLevels, sk(""), obj{"users": obj{}})
				b.events.add(pl2)
				ev.AuthEvents = append(ev.AuthEvents, "$pl2")
			}},
		{name: "entry the selection does not pick", want: "2.2", v12: "3.2",
			mutate: func(b *builder, ev *dag.Event) { ev.AuthEvents = append(ev.AuthEvents, "$jr") }},
		{name: "another user's membership", want: "2.2", v12: "3.2",
			mutate: func(b *builder, ev *dag.Event) { ev.AuthEvents = append(ev.AuthEvents, "$a-join") }},
		{name: "message event as auth event", want: "2.2", v12: "3.2",
			mutate: func(b *builder, ev *dag.Event) {
				m := b.make("$msg", user, "m.room.message", nil, obj{})
				b.events.add(m)
				ev.AuthEvents = append(ev.AuthEvents, "$msg")
			}},
		{name: "create listed (required before v12, forbidden in v12)", want: "ok", v12: "3.2",
			mutate: func(b *builder, ev *dag.Event) {
				if b.ver.RoomIDFromCreate {
					ev.AuthEvents = append(ev.AuthEvents, b.state[createKey].ID)
				}
			}},
		{name: "rejected entry", want: "2.3", v12: "3.3", rejected: map[string]bool{"$pl": true}},
		{name: "no create", want: "2.4", v12: "ok",
			mutate: func(b *builder, ev *dag.Event) {
				var keep []string
				for _, id := range ev.AuthEvents {
					if id != b.state[createKey].ID {
						keep = append(keep, id)
					}
				}
				ev.AuthEvents = keep
			}},
		{name: "no auth events at all", want: "2.4", v12: "ok", partial: true,
			mutate: func(b *builder, ev *dag.Event) { ev.AuthEvents = nil }},
		{name: "entry from another room", want: "2.5", v12: "3.4",
			mutate: func(b *builder, ev *dag.Event) {
				other := *b.events["$pl"]
				other.ID = "$pl-elsewhere"
				other.RoomID = "!elsewhere:a.org"
				b.events.add(&other)
				for i, id := range ev.AuthEvents {
					if id == "$pl" {
						ev.AuthEvents[i] = other.ID
					}
				}
			}},
		{name: "missing auth event", want: "missing", v12: "missing",
			mutate: func(b *builder, ev *dag.Event) { ev.AuthEvents = append(ev.AuthEvents, "$nowhere") }},
		{name: "v12 room_id names a rejected create", want: "ok", v12: "2",
			rejected: map[string]bool{"$CreateHash": true}},
		{name: "v12 room_id names a non-create event", want: "ok", v12: "2",
			mutate: func(b *builder, ev *dag.Event) {
				if b.ver.RoomIDFromCreate {
					ev.RoomID = "!pl"
					b.events["$pl"].RoomID = "!pl"
				}
			}},
		{name: "v12 room_id names an unknown event", want: "ok", v12: "missing",
			mutate: func(b *builder, ev *dag.Event) {
				if b.ver.RoomIDFromCreate {
					ev.RoomID = "!unknown"
				}
			}},
	}
	for _, ver := range allVersions {
		for _, c := range cases {
			t.Run(c.name+"/v"+ver.ID, func(t *testing.T) {
				b := authEventsRoom(t, ver)
				ev := b.make("$msg-under-test", user, "m.room.message", nil, obj{"body": "x"})
				if c.mutate != nil {
					c.mutate(b, ev)
				}
				exp := c.want
				if ver.RoomIDFromCreate {
					exp = c.v12
				}
				st, err := CheckAuthEvents(ev, b.events.fetch, func(id string) bool { return c.rejected[id] })
				switch exp {
				case "missing":
					var m *MissingEventsError
					if !errors.As(err, &m) || !errors.Is(err, ErrNotFound) {
						t.Fatalf("want missing events, got %v", err)
					}
				case "ok":
					if err != nil {
						t.Fatalf("want ok, got %v", err)
					}
					if c.partial {
						if err := Allowed(ev, st); !IsDenied(err) {
							t.Fatalf("want denied by the rules, got %v", err)
						}
						return
					}
					if st.Get(createKey) == nil || st.Get(plKey) == nil || st.Get(dag.StateKeyTuple{Type: typeMember, StateKey: user}) == nil {
						t.Fatalf("auth state lacks create, power levels or membership: %v", st)
					}
					if err := Allowed(ev, st); err != nil {
						t.Fatalf("event not allowed by its own auth events: %v", err)
					}
				default:
					checkOutcome(t, err, exp)
				}
			})
		}
	}
}

func TestCheckAuthEventsFetchFailure(t *testing.T) {
	b := authEventsRoom(t, &dag.RoomV10)
	ev := b.make("$m", user, "m.room.message", nil, obj{})
	boom := errors.New("disk on fire")
	_, err := CheckAuthEvents(ev, func(string) (*dag.Event, error) { return nil, boom }, nil)
	if !errors.Is(err, boom) || IsDenied(err) || errors.Is(err, ErrNotFound) {
		t.Fatalf("got %v", err)
	}
	if _, err := CheckAuthEvents(ev, nil, nil); err == nil {
		t.Fatal("nil fetcher accepted")
	}
	ev.Version = nil
	if _, err := CheckAuthEvents(ev, b.events.fetch, nil); err != ErrNoVersion {
		t.Fatalf("got %v", err)
	}
}

func TestCheckAuthEventsCreate(t *testing.T) {
	for _, ver := range allVersions {
		b := newBuilder(t, ver, alice)
		create := b.state[createKey]
		st, err := CheckAuthEvents(create, b.events.fetch, nil)
		if err != nil || len(st) != 0 {
			t.Fatalf("v%s: %v %v", ver.ID, st, err)
		}
	}
}

func TestSelectAuthEvents(t *testing.T) {
	b := authEventsRoom(t, &dag.RoomV10)
	got := SelectAuthEvents(b.ver, typeMember, sk(stranger), user, json.RawMessage(`{"membership":"invite"}`), b.state)
	want := []string{"$create:a.org", "$pl", "$u-join", "$jr"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v want %v", got, want)
	}
}
