package stateres

import (
	"errors"
	"testing"

	"engram/dag"
)

func TestCheckReceipt(t *testing.T) {
	for _, ver := range allVersions {
		t.Run("v"+ver.ID, func(t *testing.T) {
			b := baseRoom(t, ver)
			atA := copyEvents(b.state)
			topic := b.add("$topic", sBob, "m.room.topic", sk(""), obj{"topic": "fine"})

			// Accepted.
			v, err := CheckReceipt(Receipt{Event: topic, Fetch: b.events.fetch, StateBefore: atA, CurrentState: b.state})
			if err != nil || v.Outcome != Accepted || v.Check != 0 {
				t.Fatalf("accepted: %+v %v", v, err)
			}

			// The create event: accepted with no auth events.
			create := b.events[b.state[createKey].ID]
			if v, err := CheckReceipt(Receipt{Event: create, Fetch: b.events.fetch}); err != nil || v.Outcome != Accepted {
				t.Fatalf("create: %+v %v", v, err)
			}

			// Rejected at check 4: the auth events do not allow it.
			low := b.make("$low", sCharlie, "m.room.topic", sk(""), obj{"topic": "no power"})
			v, err = CheckReceipt(Receipt{Event: low, Fetch: b.events.fetch, StateBefore: b.state})
			if err != nil || v.Outcome != Rejected || v.Check != 4 || !IsDenied(v.Reason) {
				t.Fatalf("check 4: %+v %v", v, err)
			}

			// Rejected at check 4: the auth events list is wrong.
			bad := b.make("$bad", sBob, "m.room.topic", sk(""), obj{"topic": "x"})
			bad.AuthEvents = append(bad.AuthEvents, "$jr")
			v, err = CheckReceipt(Receipt{Event: bad, Fetch: b.events.fetch})
			if err != nil || v.Outcome != Rejected || v.Check != 4 {
				t.Fatalf("check 4 (list): %+v %v", v, err)
			}

			// Rejected at check 5: cites power levels that let it through,
			// but the state before it has newer ones that do not.
			beforeDemotion := copyEvents(b.state)
			b.add("$demote", sAlice, typePowerLevels, sk(""), obj{"users": creatorUsers(ver, obj{sAlice: 100})})
			b.state, b.last = beforeDemotion, "$demote"
			stale := b.make("$stale", sBob, "m.room.topic", sk(""), obj{"topic": "stale auth"})
			after := copyEvents(beforeDemotion)
			after[plKey] = b.events["$demote"]
			v, err = CheckReceipt(Receipt{Event: stale, Fetch: b.events.fetch, StateBefore: after})
			if err != nil || v.Outcome != Rejected || v.Check != 5 {
				t.Fatalf("check 5: %+v %v", v, err)
			}

			// Soft failure, the spec's example: B bans X, X sets the topic
			// in C on top of A. C passes against its auth events and the
			// state at A, but not against the current state.
			b2 := baseRoom(t, ver)
			stateA := copyEvents(b2.state)
			lastA := b2.last
			b2.add("$ban", sAlice, typeMember, sk(sBob), obj{"membership": "ban"})
			current := copyEvents(b2.state)
			b2.state, b2.last = stateA, lastA
			c := b2.make("$c", sBob, "m.room.topic", sk(""), obj{"topic": "evading"})
			b2.events.add(c)
			v, err = CheckReceipt(Receipt{Event: c, Fetch: b2.events.fetch, StateBefore: stateA, CurrentState: current})
			if err != nil || v.Outcome != SoftFailed || v.Check != 6 {
				t.Fatalf("soft fail: %+v %v", v, err)
			}
			if v.Outcome.String() != "soft-failed" {
				t.Fatal(v.Outcome.String())
			}

			// Rejected auth event.
			v, err = CheckReceipt(Receipt{Event: topic, Fetch: b.events.fetch, Rejected: func(id string) bool { return id == "$pl0" }})
			if err != nil || v.Outcome != Rejected || v.Check != 4 {
				t.Fatalf("rejected auth event: %+v %v", v, err)
			}

			// Missing auth event: not a verdict.
			missing := b.make("$m", sBob, "m.room.topic", sk(""), obj{"topic": "x"})
			missing.AuthEvents = append(missing.AuthEvents, "$unknown")
			v, err = CheckReceipt(Receipt{Event: missing, Fetch: b.events.fetch})
			if !errors.Is(err, ErrNotFound) || v.Outcome != 0 {
				t.Fatalf("missing: %+v %v", v, err)
			}
		})
	}
}

func TestCheckReceiptBadInput(t *testing.T) {
	if _, err := CheckReceipt(Receipt{}); err == nil {
		t.Fatal("nil event accepted")
	}
	ev := &dag.Event{ID: "$x", Type: "m.room.message", Sender: sAlice}
	if _, err := CheckReceipt(Receipt{Event: ev, Fetch: memFetcher{}.fetch}); err != ErrNoVersion {
		t.Fatalf("got %v", err)
	}
	// An event with no auth events in a v10 room is rejected, not accepted.
	ev.Version = &dag.RoomV10
	ev.RoomID = "!r:example.com"
	v, err := CheckReceipt(Receipt{Event: ev, Fetch: memFetcher{}.fetch})
	if err != nil || v.Outcome != Rejected {
		t.Fatalf("got %+v %v", v, err)
	}
	// A malformed sender is rejected.
	ev.Sender = "nobody"
	v, err = CheckReceipt(Receipt{Event: ev, Fetch: memFetcher{}.fetch})
	if err != nil || v.Outcome != Rejected {
		t.Fatalf("got %+v %v", v, err)
	}
}
