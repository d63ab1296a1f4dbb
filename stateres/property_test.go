package stateres

import (
	"fmt"
	"math/rand"
	"testing"

	"engram/dag"
)

var (
	sDave = "@dave:other.org"
	sErin = "@erin:other.org"
)

// randomForks grows a room from baseRoom along several branches with random
// actions that the auth rules allow, merging branches now and then by
// resolving their states, and returns the states of the branches.
func randomForks(t testing.TB, ver *dag.RoomVersion, seed int64, forks, steps int) (*builder, []StateMap) {
	rng := rand.New(rand.NewSource(seed))
	b := baseRoom(t, ver)
	b.add("$dj", sDave, typeMember, sk(sDave), obj{"membership": "join"})
	users := []string{sAlice, sBob, sCharlie, sDave, sErin}
	var brs []*branch
	for i := 0; i < forks; i++ {
		brs = append(brs, b.branch())
	}
	n := 0
	for step := 0; step < steps; step++ {
		br := brs[rng.Intn(len(brs))]
		if rng.Intn(15) == 0 && len(brs) > 1 {
			other := brs[rng.Intn(len(brs))]
			if other != br {
				merged, err := Resolve(ver, []StateMap{br.stateMap(), other.stateMap()}, b.events.fetch)
				if err != nil {
					t.Fatal(err)
				}
				br.state = StateEvents{}
				for k, id := range merged {
					br.state[k] = b.events[id]
				}
			}
			continue
		}
		sender := users[rng.Intn(len(users))]
		target := users[rng.Intn(len(users))]
		var typ string
		var stateKey *string
		var content obj
		switch rng.Intn(7) {
		case 0:
			typ, stateKey, content = "m.room.topic", sk(""), obj{"topic": rng.Intn(100)}
		case 1:
			typ, stateKey, content = typeMember, sk(sender), obj{"membership": "join", "displayname": rng.Intn(100)}
		case 2:
			ms := []string{"invite", "leave", "ban", "join"}
			typ, stateKey, content = typeMember, sk(target), obj{"membership": ms[rng.Intn(len(ms))]}
		case 3:
			lv := obj{}
			for _, u := range users {
				if rng.Intn(2) == 0 && !(ver.RoomIDFromCreate && u == sAlice) {
					lv[u] = rng.Intn(101)
				}
			}
			typ, stateKey, content = typePowerLevels, sk(""), obj{"users": lv, "ban": 50 + rng.Intn(2)*10}
		case 4:
			jr := []string{"public", "invite"}
			typ, stateKey, content = typeJoinRules, sk(""), obj{"join_rule": jr[rng.Intn(2)]}
		case 5:
			typ, stateKey, content = "m.room.name", sk(""), obj{"name": rng.Intn(100)}
		default:
			typ, content = "m.room.message", obj{"body": rng.Intn(100)}
		}
		saveState, saveLast := b.state, b.last
		b.state, b.last = br.state, br.last
		n++
		ev := b.make(fmt.Sprintf("$r%d", n), sender, typ, stateKey, content)
		b.state, b.last = saveState, saveLast
		if Allowed(ev, br.state) != nil {
			continue
		}
		b.events.add(ev)
		if ev.StateKey != nil {
			br.state[ev.Key()] = ev
		}
		br.last = ev.ID
	}
	var sets []StateMap
	for _, br := range brs {
		sets = append(sets, br.stateMap())
	}
	return b, sets
}

// Resolution depends on the set of states only: not their order, not map
// iteration order (each run iterates differently), not which integers the
// events were interned as.
func TestPropertyOrderIndependence(t *testing.T) {
	for _, ver := range allVersions {
		for seed := int64(0); seed < 6; seed++ {
			t.Run(fmt.Sprintf("v%s/seed%d", ver.ID, seed), func(t *testing.T) {
				b, sets := randomForks(t, ver, seed, 3, 150)
				want, err := Resolve(ver, sets, b.events.fetch)
				if err != nil {
					t.Fatal(err)
				}
				rng := rand.New(rand.NewSource(seed))
				for i := 0; i < 8; i++ {
					perm := rng.Perm(len(sets))
					shuffled := make([]StateMap, len(sets))
					for j, p := range perm {
						shuffled[j] = copyState(sets[p]) // fresh maps: fresh iteration order
					}
					got, err := Resolve(ver, shuffled, b.events.fetch)
					if err != nil {
						t.Fatal(err)
					}
					if !sameState(got, want) {
						t.Fatalf("order %v: got %s\nwant %s", perm, fmtState(got), fmtState(want))
					}
				}
			})
		}
	}
}

// Resolving a single state, or several copies of one state, returns it.
func TestPropertySingleSet(t *testing.T) {
	for _, ver := range allVersions {
		b, sets := randomForks(t, ver, 42, 2, 80)
		for _, s := range sets {
			got, err := Resolve(ver, []StateMap{s}, b.events.fetch)
			if err != nil || !sameState(got, s) {
				t.Fatalf("v%s single: %v", ver.ID, err)
			}
			got[dag.StateKeyTuple{Type: "x"}] = "$mutated"
			if _, ok := s[dag.StateKeyTuple{Type: "x"}]; ok {
				t.Fatal("result aliases the input")
			}
			got, err = Resolve(ver, []StateMap{s, copyState(s), copyState(s)}, b.events.fetch)
			if err != nil || !sameState(got, s) {
				t.Fatalf("v%s copies: %v", ver.ID, err)
			}
		}
	}
	if got, err := Resolve(&dag.RoomV10, nil, memFetcher{}.fetch); err != nil || len(got) != 0 {
		t.Fatal("no sets")
	}
}

// Adding an event to every state, whose key is new and whose auth chain is
// already common to all of them, adds exactly that entry to the result.
func TestPropertyUnconflictedAddition(t *testing.T) {
	for _, ver := range allVersions {
		for seed := int64(0); seed < 4; seed++ {
			b, sets := randomForks(t, ver, 100+seed, 3, 120)
			before, err := Resolve(ver, sets, b.events.fetch)
			if err != nil {
				t.Fatal(err)
			}
			create := b.events[sets[0][createKey]]
			extra := &dag.Event{
				ID: fmt.Sprintf("$extra%d", seed), RoomID: b.roomID, Sender: sAlice, Type: "com.example.extra",
				StateKey: sk(""), Content: js(obj{}), Version: ver, Depth: 1000, OriginServerTS: 1000,
			}
			if !ver.RoomIDFromCreate {
				extra.AuthEvents = []string{create.ID}
			}
			b.events.add(extra)
			var with []StateMap
			for _, s := range sets {
				c := copyState(s)
				c[extra.Key()] = extra.ID
				with = append(with, c)
			}
			after, err := Resolve(ver, with, b.events.fetch)
			if err != nil {
				t.Fatal(err)
			}
			before[extra.Key()] = extra.ID
			if !sameState(before, after) {
				t.Fatalf("v%s seed %d: adding an unconflicted event changed the result:\n%s\n%s", ver.ID, seed, fmtState(before), fmtState(after))
			}
		}
	}
}

// Resolving the result with a copy of itself changes nothing.
func TestPropertyResolvedStateIsStable(t *testing.T) {
	for _, ver := range allVersions {
		b, sets := randomForks(t, ver, 7, 3, 100)
		got, err := Resolve(ver, sets, b.events.fetch)
		if err != nil {
			t.Fatal(err)
		}
		again, err := Resolve(ver, []StateMap{got, copyState(got)}, b.events.fetch)
		if err != nil || !sameState(got, again) {
			t.Fatalf("v%s: %v", ver.ID, err)
		}
	}
}

func TestResolveMissingEvents(t *testing.T) {
	for _, ver := range allVersions {
		b, sets := randomForks(t, ver, 3, 2, 60)
		sets[0][dag.StateKeyTuple{Type: "m.room.name"}] = "$not-stored"
		_, err := Resolve(ver, sets, b.events.fetch)
		var m *MissingEventsError
		if !asMissing(err, &m) || len(m.IDs) != 1 || m.IDs[0] != "$not-stored" {
			t.Fatalf("v%s: got %v", ver.ID, err)
		}
		if _, err := ResolveWith(ver, sets, b.events.fetch, Options{AllowMissing: true}); err != nil {
			t.Fatalf("v%s AllowMissing: %v", ver.ID, err)
		}
	}
}

func asMissing(err error, m **MissingEventsError) bool {
	x, ok := err.(*MissingEventsError)
	if ok {
		*m = x
	}
	return ok
}

func TestResolveBadInput(t *testing.T) {
	f := memFetcher{}
	sets := []StateMap{{createKey: "$a"}, {createKey: "$b"}}
	if _, err := Resolve(nil, sets, f.fetch); err != ErrNoVersion {
		t.Fatal(err)
	}
	if _, err := Resolve(&dag.RoomV10, sets, nil); err == nil {
		t.Fatal("nil fetcher")
	}
	bogus := dag.RoomV10
	bogus.StateRes = 3
	if _, err := Resolve(&bogus, sets, f.fetch); err == nil {
		t.Fatal("unknown algorithm accepted")
	}
	// Events from two rooms.
	f.add(&dag.Event{ID: "$a", RoomID: "!one:x.org", Type: typeCreate, StateKey: sk(""), Sender: "@a:x.org", Content: js(obj{}), Version: &dag.RoomV10},
		&dag.Event{ID: "$b", RoomID: "!two:x.org", Type: typeCreate, StateKey: sk(""), Sender: "@a:x.org", Content: js(obj{}), Version: &dag.RoomV10})
	if _, err := Resolve(&dag.RoomV10, sets, f.fetch); err == nil {
		t.Fatal("events of two rooms resolved together")
	}
	// A fetch failure that is not "not found" is returned as is.
	boom := fmt.Errorf("disk on fire")
	_, err := Resolve(&dag.RoomV10, sets, func(string) (*dag.Event, error) { return nil, boom })
	if err == nil || IsDenied(err) {
		t.Fatal(err)
	}
}

// Rejected events never enter the resolved state nor authorise others.
func TestResolveRejected(t *testing.T) {
	ver := &dag.RoomV10
	b := baseRoom(t, ver)
	a, bb := b.branch(), b.branch()
	a.add("$ta", sAlice, "m.room.topic", sk(""), obj{"topic": "a"})
	bb.add("$tb", sBob, "m.room.topic", sk(""), obj{"topic": "b"})
	sets := []StateMap{a.stateMap(), bb.stateMap()}
	got, err := Resolve(ver, sets, b.events.fetch)
	if err != nil || got[topicKey] != "$tb" {
		t.Fatalf("%v %v", got[topicKey], err)
	}
	got, err = ResolveWith(ver, sets, b.events.fetch, Options{Rejected: func(id string) bool { return id == "$tb" }})
	if err != nil || got[topicKey] != "$ta" {
		t.Fatalf("%v %v", got[topicKey], err)
	}
}
