package stateres

import (
	"fmt"
	"testing"

	"engram/dag"
)

// dagSpec builds events with explicit auth_events, named by short node
// names, for scenarios where the state sets are given directly rather than
// derived from prev_events (as after a partial /state sync).
type dagSpec struct {
	t      testing.TB
	ver    *dag.RoomVersion
	roomID string
	events memFetcher
	ts     int64
}

func newDagSpec(t testing.TB, ver *dag.RoomVersion) *dagSpec {
	d := &dagSpec{t: t, ver: ver, events: memFetcher{}}
	if ver.RoomIDFromCreate {
		d.roomID = "!CREATE"
	} else {
		d.roomID = "!room:example.com"
	}
	return d
}

func (d *dagSpec) id(node string) string {
	if d.ver.RoomIDFromCreate {
		return "$" + node
	}
	return "$" + node + ":example.com"
}

// add makes an event; auth names its auth events, from which CREATE is
// dropped in v12 ("The m.room.create event MUST NOT be selected").
func (d *dagSpec) add(node, sender, typ string, stateKey *string, content any, auth ...string) *dag.Event {
	d.ts++
	var authIDs []string
	for _, a := range auth {
		if a == "CREATE" && d.ver.RoomIDFromCreate {
			continue
		}
		authIDs = append(authIDs, d.id(a))
	}
	ev := &dag.Event{
		ID: d.id(node), RoomID: d.roomID, Sender: sender, Type: typ, StateKey: stateKey,
		Content: js(content), AuthEvents: authIDs, Depth: d.ts, OriginServerTS: d.ts, Version: d.ver,
	}
	if _, dup := d.events[ev.ID]; dup {
		d.t.Fatalf("duplicate node %s", node)
	}
	d.events.add(ev)
	return ev
}

func (d *dagSpec) state(nodes ...string) StateMap {
	s := StateMap{}
	for _, n := range nodes {
		ev := d.events[d.id(n)]
		if ev == nil {
			d.t.Fatalf("unknown node %s", n)
		}
		s[ev.Key()] = ev.ID
	}
	return s
}

func (d *dagSpec) resolve(sets ...StateMap) StateMap {
	d.t.Helper()
	got, err := Resolve(d.ver, sets, d.events.fetch)
	if err != nil {
		d.t.Fatalf("resolve: %v", err)
	}
	return got
}

func (d *dagSpec) create(creator string) {
	d.add("CREATE", creator, typeCreate, sk(""), createContent(d.ver, creator, nil))
}

// MSC4297 problem A: "Conflicting events can be unauthorised by the
// unconflicted state". One state set holds an outdated join rules event
// (from a partial /state sync); both agree Alice, who set both join rules,
// has since left. Starting from the unconflicted state (v2), Alice's
// departure is already applied when her join rules are replayed, both fail,
// and the room loses its join rules. v2.1 starts from the empty state, so
// each event is checked against its auth events and the newer rule stays.
func TestV21EmptyStartState(t *testing.T) {
	for _, ver := range []*dag.RoomVersion{&dag.RoomV11, &dag.RoomV12} {
		t.Run("v"+ver.ID, func(t *testing.T) {
			d := newDagSpec(t, ver)
			d.create(sAlice)
			d.add("AJ", sAlice, typeMember, sk(sAlice), obj{"membership": "join"}, "CREATE")
			d.add("PL", sAlice, typePowerLevels, sk(""), obj{"users": creatorUsers(ver, obj{sAlice: 100})}, "CREATE", "AJ")
			d.add("JR1", sAlice, typeJoinRules, sk(""), obj{"join_rule": "public"}, "CREATE", "PL", "AJ")
			d.add("BJ", sBob, typeMember, sk(sBob), obj{"membership": "join"}, "CREATE", "PL", "JR1")
			d.add("JR2", sAlice, typeJoinRules, sk(""), obj{"join_rule": "invite"}, "CREATE", "PL", "AJ")
			d.add("AL", sAlice, typeMember, sk(sAlice), obj{"membership": "leave"}, "CREATE", "PL", "AJ")

			correct := d.state("CREATE", "AL", "PL", "JR2", "BJ")
			stale := d.state("CREATE", "AL", "PL", "JR1", "BJ")
			got := d.resolve(correct, stale)
			jr, ok := got[jrKey]
			if ver.StateRes == 2 {
				if ok {
					t.Fatalf("v2 was expected to lose the join rules (the state reset v2.1 fixes), got %s", jr)
				}
			} else if jr != d.id("JR2") {
				t.Fatalf("join rules: got %q want JR2; state %s", jr, fmtState(got))
			}
			if got[dag.StateKeyTuple{Type: typeMember, StateKey: sAlice}] != d.id("AL") {
				t.Fatalf("unconflicted leave lost: %s", fmtState(got))
			}
		})
	}
}

// MSC4297 problem B: "Conflicting events need extra unconflicted events in
// order to be authorised". Alice promotes Bob (PL1), Bob promotes Charlie
// (PL2), Charlie sets the topic. One state set claims the original power
// levels (PL0) while holding Charlie's topic, whose auth chain contains PL1
// and PL2, so PL1 is in no auth difference. v2 replays PL0 then PL2 without
// PL1, Bob has no power under PL0, PL2 fails and the room resets to PL0.
// v2.1 adds the conflicted state subgraph PL2 -> PL1 -> PL0 and keeps PL2.
func TestV21ConflictedSubgraph(t *testing.T) {
	for _, ver := range []*dag.RoomVersion{&dag.RoomV11, &dag.RoomV12} {
		t.Run("v"+ver.ID, func(t *testing.T) {
			d := newDagSpec(t, ver)
			d.create(sAlice)
			d.add("AJ", sAlice, typeMember, sk(sAlice), obj{"membership": "join"}, "CREATE")
			d.add("PL0", sAlice, typePowerLevels, sk(""), obj{"users": creatorUsers(ver, obj{sAlice: 100})}, "CREATE", "AJ")
			d.add("JR", sAlice, typeJoinRules, sk(""), obj{"join_rule": "public"}, "CREATE", "PL0", "AJ")
			d.add("BJ", sBob, typeMember, sk(sBob), obj{"membership": "join"}, "CREATE", "PL0", "JR")
			d.add("CJ", sCharlie, typeMember, sk(sCharlie), obj{"membership": "join"}, "CREATE", "PL0", "JR")
			d.add("PL1", sAlice, typePowerLevels, sk(""), obj{"users": creatorUsers(ver, obj{sAlice: 100, sBob: 50})}, "CREATE", "PL0", "AJ")
			d.add("PL2", sBob, typePowerLevels, sk(""), obj{"users": creatorUsers(ver, obj{sAlice: 100, sBob: 50, sCharlie: 50})}, "CREATE", "PL1", "BJ")
			d.add("T", sCharlie, "m.room.topic", sk(""), obj{"topic": "charlie's"}, "CREATE", "PL2", "CJ")

			correct := d.state("CREATE", "AJ", "PL2", "JR", "BJ", "CJ", "T")
			stale := d.state("CREATE", "AJ", "PL0", "JR", "BJ", "CJ", "T")
			got := d.resolve(correct, stale)
			want := "PL2"
			if ver.StateRes == 2 {
				want = "PL0" // the state reset
			}
			if got[plKey] != d.id(want) {
				t.Fatalf("power levels: got %s want %s", got[plKey], want)
			}
		})
	}
}

// The conflicted state subgraph is every event on an auth path between two
// conflicted events, endpoints included, and nothing else.
func TestConflictedSubgraph(t *testing.T) {
	d := newDagSpec(t, &dag.RoomV12)
	d.create(sAlice)
	// D <- C <- B <- A, E -> B (E is not reachable from a conflicted event),
	// A -> F (F reaches no conflicted event).
	d.add("D", sAlice, "x", sk("d"), obj{})
	d.add("C", sAlice, "x", sk("c"), obj{}, "D")
	d.add("B", sAlice, "x", sk("b"), obj{}, "C")
	d.add("F", sAlice, "x", sk("f"), obj{})
	d.add("A", sAlice, "x", sk("a"), obj{}, "B", "F")
	d.add("E", sAlice, "x", sk("e"), obj{}, "B")
	r := &resolver{ver: d.ver, fetch: d.events.fetch, ids: map[string]int32{}, createIdx: -1}
	var conflicted []int32
	for _, n := range []string{"A", "C"} {
		conflicted = append(conflicted, r.intern(d.id(n)))
	}
	got := map[string]bool{}
	for _, i := range r.conflictedSubgraph(conflicted) {
		got[r.nodes[i].id] = true
	}
	want := map[string]bool{d.id("A"): true, d.id("B"): true, d.id("C"): true}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v want %v", got, want)
	}
}

// branch is one line of a forked room, for the deep-fork scenarios.
type branch struct {
	b     *builder
	state StateEvents
	last  string
	depth int64
}

func (b *builder) branch() *branch {
	return &branch{b: b, state: copyEvents(b.state), last: b.last, depth: b.depth}
}

func copyEvents(s StateEvents) StateEvents {
	out := make(StateEvents, len(s))
	for k, v := range s {
		out[k] = v
	}
	return out
}

func (br *branch) add(id, sender, typ string, stateKey *string, content any) *dag.Event {
	br.b.t.Helper()
	b := br.b
	saveState, saveLast, saveDepth := b.state, b.last, b.depth
	b.state, b.last, b.depth = br.state, br.last, br.depth
	ev := b.add(id, sender, typ, stateKey, content)
	br.state, br.last, br.depth = b.state, b.last, b.depth
	b.state, b.last, b.depth = saveState, saveLast, saveDepth
	return ev
}

func (br *branch) stateMap() StateMap {
	m := StateMap{}
	for k, ev := range br.state {
		m[k] = ev.ID
	}
	return m
}

// baseRoom: alice creates; bob (50) and a few users join a public room.
func baseRoom(t testing.TB, ver *dag.RoomVersion) *builder {
	b := newBuilder(t, ver, sAlice)
	b.add("$aj", sAlice, typeMember, sk(sAlice), obj{"membership": "join"})
	b.add("$pl0", sAlice, typePowerLevels, sk(""), obj{"users": creatorUsers(ver, obj{sAlice: 100, sBob: 50})})
	b.add("$jr", sAlice, typeJoinRules, sk(""), obj{"join_rule": "public"})
	b.add("$bj", sBob, typeMember, sk(sBob), obj{"membership": "join"})
	b.add("$cj", sCharlie, typeMember, sk(sCharlie), obj{"membership": "join"})
	return b
}

var topicKey = dag.StateKeyTuple{Type: "m.room.topic"}

// A ban on one long fork beats a moderator's long run of topic changes on
// the other: the ban is a power event, applied first, and every one of
// Bob's changes then fails.
func TestDeepForkBanBeatsLongFork(t *testing.T) {
	for _, ver := range allVersions[1:] {
		t.Run("v"+ver.ID, func(t *testing.T) {
			b := baseRoom(t, ver)
			a, bb := b.branch(), b.branch()
			for i := 0; i < 50; i++ {
				a.add(fmt.Sprintf("$ta%d", i), sAlice, "m.room.topic", sk(""), obj{"topic": i})
			}
			a.add("$ban", sAlice, typeMember, sk(sBob), obj{"membership": "ban"})
			for i := 0; i < 60; i++ {
				bb.add(fmt.Sprintf("$tb%d", i), sBob, "m.room.topic", sk(""), obj{"topic": i})
			}
			got, err := Resolve(ver, []StateMap{a.stateMap(), bb.stateMap()}, b.events.fetch)
			if err != nil {
				t.Fatal(err)
			}
			if got[topicKey] != "$ta49" {
				t.Fatalf("topic: got %s want $ta49", got[topicKey])
			}
			if got[dag.StateKeyTuple{Type: typeMember, StateKey: sBob}] != "$ban" {
				t.Fatalf("bob: got %s want $ban", got[dag.StateKeyTuple{Type: typeMember, StateKey: sBob}])
			}
		})
	}
}

// Mainline ordering beats timestamps across a deep fork: twenty power level
// changes on one side, thirty later topics on the other that still point at
// the original power levels. The topic set after the last power levels
// event wins although every topic on the other side is newer.
func TestDeepForkMainlineBeatsTimestamps(t *testing.T) {
	for _, ver := range allVersions[1:] {
		t.Run("v"+ver.ID, func(t *testing.T) {
			b := baseRoom(t, ver)
			a, bb := b.branch(), b.branch()
			for i := 1; i <= 20; i++ {
				a.add(fmt.Sprintf("$pl%d", i), sAlice, typePowerLevels, sk(""),
					obj{"users": creatorUsers(ver, obj{sAlice: 100, sBob: 50, sCharlie: i})})
			}
			a.add("$topic-a", sAlice, "m.room.topic", sk(""), obj{"topic": "a"})
			for i := 0; i < 30; i++ {
				bb.add(fmt.Sprintf("$topic-b%d", i), sAlice, "m.room.topic", sk(""), obj{"topic": i})
			}
			got, err := Resolve(ver, []StateMap{a.stateMap(), bb.stateMap()}, b.events.fetch)
			if err != nil {
				t.Fatal(err)
			}
			if got[topicKey] != "$topic-a" || got[plKey] != "$pl20" {
				t.Fatalf("got topic %s, power levels %s", got[topicKey], got[plKey])
			}
		})
	}
}

// Three forks: each changes its own member's profile and the topic. Every
// profile change survives; the topic is the last one by timestamp (equal
// mainline positions); the result is the same for every order of the sets.
func TestDeepForkThreeWay(t *testing.T) {
	for _, ver := range allVersions[1:] {
		t.Run("v"+ver.ID, func(t *testing.T) {
			b := baseRoom(t, ver)
			forks := []*branch{b.branch(), b.branch(), b.branch()}
			users := []string{sAlice, sBob, sCharlie}
			for round := 0; round < 10; round++ {
				for i, f := range forks {
					f.add(fmt.Sprintf("$p%d-%d", i, round), users[i], typeMember, sk(users[i]),
						obj{"membership": "join", "displayname": fmt.Sprint(round)})
				}
			}
			for i, f := range forks {
				if i < 2 { // charlie has no power to set the topic
					f.add(fmt.Sprintf("$t%d", i), users[i], "m.room.topic", sk(""), obj{"topic": i})
				}
			}
			sets := []StateMap{forks[0].stateMap(), forks[1].stateMap(), forks[2].stateMap()}
			perms := [][]int{{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}}
			var first StateMap
			for _, p := range perms {
				got, err := Resolve(ver, []StateMap{sets[p[0]], sets[p[1]], sets[p[2]]}, b.events.fetch)
				if err != nil {
					t.Fatal(err)
				}
				if first == nil {
					first = got
				} else if !sameState(first, got) {
					t.Fatalf("order %v changed the result", p)
				}
			}
			for i, u := range users {
				if id := first[dag.StateKeyTuple{Type: typeMember, StateKey: u}]; id != fmt.Sprintf("$p%d-9", i) {
					t.Fatalf("%s: %s", u, id)
				}
			}
			if first[topicKey] != "$t1" {
				t.Fatalf("topic: %s", first[topicKey])
			}
		})
	}
}

// Room version 1: state resolution v1.
func TestV1Resolution(t *testing.T) {
	ver := &dag.RoomV1
	t.Run("power levels: later one kept only if allowed under the earlier", func(t *testing.T) {
		b := baseRoom(t, ver)
		a, bb := b.branch(), b.branch()
		// Alice demotes Bob at a lower depth; Bob's change at a higher depth
		// is then not allowed, and resolution stops at Alice's.
		a.add("$demote", sAlice, typePowerLevels, sk(""), obj{"users": obj{sAlice: 100, sBob: 0}})
		bb.add("$x1", sBob, "m.room.topic", sk(""), obj{"topic": 1})
		bb.add("$bobpl", sBob, typePowerLevels, sk(""), obj{"users": obj{sAlice: 100, sBob: 50, sCharlie: 10}})
		got, err := Resolve(ver, []StateMap{a.stateMap(), bb.stateMap()}, b.events.fetch)
		if err != nil {
			t.Fatal(err)
		}
		if got[plKey] != "$demote" {
			t.Fatalf("power levels: %s", got[plKey])
		}
		// The topic is only on Bob's side: not a conflict in v1, kept.
		if got[topicKey] != "$x1" {
			t.Fatalf("topic: %s", got[topicKey])
		}
	})
	t.Run("power levels: later one kept when allowed", func(t *testing.T) {
		b := baseRoom(t, ver)
		a, bb := b.branch(), b.branch()
		a.add("$alicepl", sAlice, typePowerLevels, sk(""), obj{"users": obj{sAlice: 100, sBob: 50, sZara: 1}})
		bb.add("$x1", sBob, "m.room.topic", sk(""), obj{"topic": 1})
		bb.add("$bobpl", sBob, typePowerLevels, sk(""), obj{"users": obj{sAlice: 100, sBob: 50, sCharlie: 10}})
		got, err := Resolve(ver, []StateMap{a.stateMap(), bb.stateMap()}, b.events.fetch)
		if err != nil {
			t.Fatal(err)
		}
		if got[plKey] != "$bobpl" {
			t.Fatalf("power levels: %s", got[plKey])
		}
	})
	t.Run("ordinary conflict: highest depth that passes", func(t *testing.T) {
		b := baseRoom(t, ver)
		a, bb := b.branch(), b.branch()
		a.add("$ta", sAlice, "m.room.topic", sk(""), obj{"topic": "a"})
		bb.add("$x", sCharlie, "m.room.message", nil, obj{})
		bb.add("$y", sCharlie, "m.room.message", nil, obj{})
		bb.add("$tb", sBob, "m.room.topic", sk(""), obj{"topic": "b"})
		got, err := Resolve(ver, []StateMap{a.stateMap(), bb.stateMap()}, b.events.fetch)
		if err != nil {
			t.Fatal(err)
		}
		if got[topicKey] != "$tb" {
			t.Fatalf("topic: %s", got[topicKey])
		}
		// Charlie (no power) cannot win even from the deeper side.
		c := b.branch()
		c.add("$m1", sCharlie, "m.room.message", nil, obj{})
		c.add("$m2", sCharlie, "m.room.message", nil, obj{})
		c.add("$m3", sCharlie, "m.room.message", nil, obj{})
		c.state[topicKey] = &dag.Event{ID: "$tc", RoomID: b.roomID, Sender: sCharlie, Type: "m.room.topic",
			StateKey: sk(""), Content: js(obj{}), Depth: 100, Version: ver,
			AuthEvents: []string{"$create:example.com", "$pl0", "$cj"}}
		b.events.add(c.state[topicKey])
		got, err = Resolve(ver, []StateMap{a.stateMap(), c.stateMap()}, b.events.fetch)
		if err != nil {
			t.Fatal(err)
		}
		if got[topicKey] != "$ta" {
			t.Fatalf("topic: %s", got[topicKey])
		}
	})
}
