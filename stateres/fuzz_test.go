package stateres

import (
	"encoding/json"
	"fmt"
	"testing"

	"engram/dag"
)

// byteReader turns fuzz input into small choices; past the end it yields
// zeros, so every input is a complete program.
type byteReader struct {
	data []byte
	pos  int
}

func (r *byteReader) byte() byte {
	if r.pos >= len(r.data) {
		return 0
	}
	b := r.data[r.pos]
	r.pos++
	return b
}

func (r *byteReader) n(max int) int { return int(r.byte()) % max }

// fuzzDAG builds an arbitrary small room from the input: any types,
// senders, contents (well-formed or not), auth_events pointing anywhere
// (forwards, at themselves, at events that do not exist, into other rooms),
// and arbitrary state sets over them.
func fuzzDAG(data []byte) (*dag.RoomVersion, memFetcher, []StateMap, Options, []*dag.Event) {
	r := &byteReader{data: data}
	ver := allVersions[r.n(len(allVersions))]
	roomID := "!r:x.org"
	if ver.RoomIDFromCreate {
		roomID = "!e0"
	}
	senders := []string{"@a:x.org", "@b:x.org", "@c:y.org", "@d:z.org", "nobody", ""}
	types := []string{typeCreate, typeMember, typeMember, typePowerLevels, typeJoinRules, "m.room.topic",
		typeThirdPartyInvite, typeAliases, typeRedaction, "m.room.message"}
	memberships := []string{"join", "invite", "leave", "ban", "knock", "dance"}
	levels := []any{0, 50, 100, -1, "50", " +7 ", 12.5, "x", nil, 9007199254740991, []int{1}, 1e300}
	nEvents := 1 + r.n(20)
	events := memFetcher{}
	var list []*dag.Event
	for i := 0; i < nEvents; i++ {
		typ := types[r.n(len(types))]
		sender := senders[r.n(len(senders))]
		var stateKey *string
		switch r.n(5) {
		case 0:
		case 1:
			stateKey = sk(sender)
		case 2:
			stateKey = sk(senders[r.n(len(senders))])
		default:
			stateKey = sk("")
		}
		var content any
		switch typ {
		case typeCreate:
			c := obj{"creator": senders[r.n(len(senders))], "room_version": allVersions[r.n(len(allVersions))].ID}
			if r.n(3) == 0 {
				c["m.federate"] = false
			}
			if r.n(3) == 0 {
				c["additional_creators"] = []any{senders[r.n(len(senders))], r.n(3)}
			}
			content = c
		case typeMember:
			c := obj{"membership": memberships[r.n(len(memberships))]}
			if r.n(4) == 0 {
				c["join_authorised_via_users_server"] = senders[r.n(len(senders))]
			}
			if r.n(5) == 0 {
				c["third_party_invite"] = obj{"signed": obj{"mxid": senders[r.n(len(senders))], "token": "t", "signatures": obj{"s": obj{"ed25519:0": "AAAA"}}}}
			}
			content = c
		case typePowerLevels:
			users := obj{}
			for j := r.n(4); j > 0; j-- {
				users[senders[r.n(len(senders))]] = levels[r.n(len(levels))]
			}
			c := obj{"users": users}
			for _, f := range []string{"ban", "kick", "state_default", "events_default", "users_default", "invite"} {
				if r.n(4) == 0 {
					c[f] = levels[r.n(len(levels))]
				}
			}
			if r.n(3) == 0 {
				c["events"] = obj{"m.room.topic": levels[r.n(len(levels))]}
			}
			content = c
		case typeJoinRules:
			content = obj{"join_rule": []string{"public", "invite", "knock", "restricted", "knock_restricted", "private"}[r.n(6)]}
		default:
			content = obj{"x": r.n(10)}
		}
		raw := js(content)
		if r.n(12) == 0 {
			raw = json.RawMessage(`{"truncated":`)
		}
		ev := &dag.Event{
			ID: fmt.Sprintf("$e%d", i), RoomID: roomID, Sender: sender, Type: typ, StateKey: stateKey,
			Content: raw, Depth: int64(r.n(8)), OriginServerTS: int64(r.n(4)), Version: ver,
		}
		if r.n(16) == 0 {
			ev.RoomID = "!elsewhere:x.org"
		}
		for j := r.n(6); j > 0; j-- {
			switch k := r.n(nEvents + 1); k {
			case nEvents:
				ev.AuthEvents = append(ev.AuthEvents, "$missing")
			default:
				ev.AuthEvents = append(ev.AuthEvents, fmt.Sprintf("$e%d", k))
			}
		}
		if r.n(2) == 0 && i > 0 {
			ev.PrevEvents = []string{fmt.Sprintf("$e%d", r.n(i))}
		}
		ev.Redacts = fmt.Sprintf("$e%d:x.org", r.n(nEvents))
		events.add(ev)
		list = append(list, ev)
	}
	var sets []StateMap
	for s := 1 + r.n(4); s > 0; s-- {
		m := StateMap{}
		for j := r.n(8); j > 0; j-- {
			ev := list[r.n(len(list))]
			m[ev.Key()] = ev.ID
		}
		if r.n(10) == 0 {
			m[dag.StateKeyTuple{Type: "m.room.name"}] = "$missing"
		}
		sets = append(sets, m)
	}
	rejected := map[string]bool{}
	for j := r.n(3); j > 0; j-- {
		rejected[list[r.n(len(list))].ID] = true
	}
	opts := Options{AllowMissing: r.n(2) == 0, Rejected: func(id string) bool { return rejected[id] }}
	return ver, events, sets, opts, list
}

// FuzzResolve feeds arbitrary small DAGs to Resolve and the auth checks.
// Nothing may panic, everything must terminate, and the resolution must not
// depend on the order of the state sets.
func FuzzResolve(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{11, 8, 0, 0, 3, 1, 1, 0, 2, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3})
	f.Add([]byte{1, 19, 1, 2, 2, 0, 0, 1, 4, 5, 200, 13, 7, 7, 7, 3, 2, 1, 0, 9, 9, 9, 4, 4, 4})
	f.Add([]byte("state resolution v2.1 with a conflicted subgraph and cycles"))
	f.Add([]byte{0, 15, 2, 1, 3, 0, 5, 9, 1, 2, 3, 1, 1, 1, 0, 5, 4, 3, 2, 1, 0, 7, 7, 7, 7, 7, 7, 7, 7, 7, 2, 2})
	for v := byte(0); v < 12; v++ {
		seed := make([]byte, 64)
		for i := range seed {
			seed[i] = byte(int(v)*31 + i*17)
		}
		seed[0] = v
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ver, events, sets, opts, list := fuzzDAG(data)
		res1, err1 := ResolveWith(ver, sets, events.fetch, opts)
		rev := make([]StateMap, len(sets))
		for i := range sets {
			rev[len(sets)-1-i] = sets[i]
		}
		res2, err2 := ResolveWith(ver, rev, events.fetch, opts)
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("order changed the error: %v / %v", err1, err2)
		}
		if err1 == nil && !sameState(res1, res2) {
			t.Fatalf("order changed the result:\n%s\n%s", fmtState(res1), fmtState(res2))
		}
		all := NewStateEvents(list...)
		for _, ev := range list {
			_ = Allowed(ev, all)
			_, _ = CheckAuthEvents(ev, events.fetch, opts.Rejected)
			_, _ = CheckReceipt(Receipt{Event: ev, Fetch: events.fetch, Rejected: opts.Rejected, StateBefore: all, CurrentState: all})
			_ = AuthEventsNeeded(ver, ev.Type, ev.StateKey, ev.Sender, ev.Content)
		}
	})
}
