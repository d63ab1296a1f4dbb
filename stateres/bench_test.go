package stateres

import (
	"fmt"
	"testing"

	"engram/dag"
)

// bigRoom is a room with `members` joined users (plus the creator's create,
// join, power levels and join rules), forked into two branches that
// disagree on `conflicts` member keys: on branch A each of those users
// changes their display name; on branch B the first 90% change it too and
// the rest are kicked by the creator (power events).
type bigRoom struct {
	ver    *dag.RoomVersion
	events memFetcher
	a, b   StateMap
	state  StateEvents // the state before the fork
	msg    *dag.Event  // a message from a member, for the auth benchmark
}

func newBigRoom(ver *dag.RoomVersion, members, conflicts int) *bigRoom {
	br := &bigRoom{ver: ver, events: memFetcher{}, state: StateEvents{}}
	roomID := "!big:a.org"
	createID := "$create"
	if ver.RoomIDFromCreate {
		roomID = "!create"
	}
	var ts int64
	mk := func(id, sender, typ string, stateKey *string, content any, auth ...string) *dag.Event {
		ts++
		if ver.RoomIDFromCreate && len(auth) > 0 && auth[0] == createID {
			auth = auth[1:]
		}
		ev := &dag.Event{ID: id, RoomID: roomID, Sender: sender, Type: typ, StateKey: stateKey, Content: js(content),
			AuthEvents: auth, Depth: ts, OriginServerTS: ts, Version: ver}
		br.events.add(ev)
		return ev
	}
	put := func(ev *dag.Event) { br.state[ev.Key()] = ev }
	put(mk(createID, sAlice, typeCreate, sk(""), createContent(ver, sAlice, nil)))
	put(mk("$aj", sAlice, typeMember, sk(sAlice), obj{"membership": "join"}, createID))
	put(mk("$pl", sAlice, typePowerLevels, sk(""), obj{"users": creatorUsers(ver, obj{sAlice: 100})}, createID, "$aj"))
	put(mk("$jr", sAlice, typeJoinRules, sk(""), obj{"join_rule": "public"}, createID, "$pl", "$aj"))
	users := make([]string, members)
	for i := range users {
		users[i] = fmt.Sprintf("@u%d:s%d.org", i, i%50)
		put(mk("$j"+fmt.Sprint(i), users[i], typeMember, sk(users[i]), obj{"membership": "join"}, createID, "$pl", "$jr"))
	}
	br.a, br.b = StateMap{}, StateMap{}
	for k, ev := range br.state {
		br.a[k], br.b[k] = ev.ID, ev.ID
	}
	kicks := conflicts / 10
	for i := 0; i < conflicts; i++ {
		u := users[i]
		j := "$j" + fmt.Sprint(i)
		ea := mk(fmt.Sprintf("$pa%d", i), u, typeMember, sk(u), obj{"membership": "join", "displayname": "A"}, createID, "$pl", j, "$jr")
		br.a[ea.Key()] = ea.ID
		var eb *dag.Event
		if i < conflicts-kicks {
			eb = mk(fmt.Sprintf("$pb%d", i), u, typeMember, sk(u), obj{"membership": "join", "displayname": "B"}, createID, "$pl", j, "$jr")
		} else {
			eb = mk(fmt.Sprintf("$kick%d", i), sAlice, typeMember, sk(u), obj{"membership": "leave"}, createID, "$pl", "$aj", j)
		}
		br.b[eb.Key()] = eb.ID
	}
	br.msg = &dag.Event{ID: "$msg", RoomID: roomID, Sender: users[members/2], Type: "m.room.message",
		Content: js(obj{"body": "hello", "msgtype": "m.text"}), PrevEvents: []string{"$x"}, Version: ver}
	return br
}

// Resolve two forks of a room with 10,000 state events that conflict on
// 1,000 keys (100 of them kicks, so the power ordering runs too).
func BenchmarkResolve10kState1kConflicts(b *testing.B) {
	for _, ver := range []*dag.RoomVersion{&dag.RoomV10, &dag.RoomV12} {
		b.Run("v"+ver.ID, func(b *testing.B) {
			room := newBigRoom(ver, 9996, 1000)
			if n := len(room.a); n != 10000 {
				b.Fatalf("%d state events", n)
			}
			sets := []StateMap{room.a, room.b}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				got, err := Resolve(ver, sets, room.events.fetch)
				if err != nil || len(got) != 10000 {
					b.Fatalf("%v %d", err, len(got))
				}
			}
		})
	}
}

// Auth-check one message event against cached current state: the parsed
// power levels, memberships and create event come from the parse cache.
func BenchmarkAllowedMessage(b *testing.B) {
	for _, ver := range []*dag.RoomVersion{&dag.RoomV10, &dag.RoomV12} {
		b.Run("v"+ver.ID, func(b *testing.B) {
			room := newBigRoom(ver, 9996, 0)
			if err := Allowed(room.msg, room.state); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := Allowed(room.msg, room.state); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// The power levels event of a big room has thousands of users; checking a
// change to it walks them once, in order.
func BenchmarkAllowedPowerLevelsChange(b *testing.B) {
	ver := &dag.RoomV10
	room := newBigRoom(ver, 1000, 0)
	users := obj{sAlice: 100}
	for i := 0; i < 5000; i++ {
		users[fmt.Sprintf("@p%d:x.org", i)] = i % 100
	}
	old := &dag.Event{ID: "$pl-big", RoomID: room.msg.RoomID, Sender: sAlice, Type: typePowerLevels, StateKey: sk(""),
		Content: js(obj{"users": users}), Version: ver}
	room.state[plKey] = old
	users["@p1:x.org"] = 99
	nw := &dag.Event{ID: "$pl-big2", RoomID: room.msg.RoomID, Sender: sAlice, Type: typePowerLevels, StateKey: sk(""),
		Content: js(obj{"users": users}), Version: ver}
	if err := Allowed(nw, room.state); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := Allowed(nw, room.state); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckReceiptMessage(b *testing.B) {
	ver := &dag.RoomV10
	room := newBigRoom(ver, 1000, 0)
	m := *room.msg
	m.AuthEvents = SelectAuthEvents(ver, m.Type, m.StateKey, m.Sender, m.Content, room.state)
	r := Receipt{Event: &m, Fetch: room.events.fetch, StateBefore: room.state, CurrentState: room.state}
	if v, err := CheckReceipt(r); err != nil || v.Outcome != Accepted {
		b.Fatal(v, err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := CheckReceipt(r); err != nil {
			b.Fatal(err)
		}
	}
}
