package stateres

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"engram/dag"
)

// The classic scenarios are written as in Synapse's tests/state/test_v2.py:
// a list of events and chains of prev_events edges, newest to oldest
// ({"END", "MB", "MA", "PA", "START"} means END -> MB -> MA -> PA -> START).
// The DAG is walked in lexicographic topological order (ties by node name);
// each event gets origin_server_ts in that order, its state before is the
// resolution of its prev events' states, and its auth_events are picked from
// that state by the auth events selection. The expected state at END lists
// the keys that changed since START.

const (
	sAlice   = "@alice:example.com"
	sBob     = "@bob:example.com"
	sCharlie = "@charlie:example.com"
	sEvelyn  = "@evelyn:example.com"
	sZara    = "@zara:example.com"
)

type fakeEvent struct {
	node     string
	sender   string
	typ      string
	stateKey *string
	content  obj
}

func fev(node, sender, typ string, stateKey *string, content obj) fakeEvent {
	return fakeEvent{node, sender, typ, stateKey, content}
}

func fjoin(node, user string) fakeEvent {
	return fev(node, user, typeMember, sk(user), obj{"membership": "join"})
}

// creatorUsers is users for power levels: the creator (alice) is listed in
// v1-v11 and must not be in v12, where creators have infinite power.
func creatorUsers(ver *dag.RoomVersion, users obj) obj {
	out := obj{}
	for k, v := range users {
		if k == sAlice && ver.RoomIDFromCreate {
			continue
		}
		out[k] = v
	}
	return out
}

func initialEvents(ver *dag.RoomVersion) []fakeEvent {
	return []fakeEvent{
		fev("CREATE", sAlice, typeCreate, sk(""), createContent(ver, sAlice, nil)),
		fjoin("IMA", sAlice),
		fev("IPOWER", sAlice, typePowerLevels, sk(""), obj{"users": creatorUsers(ver, obj{sAlice: 100})}),
		fev("IJR", sAlice, typeJoinRules, sk(""), obj{"join_rule": "public"}),
		fjoin("IMB", sBob),
		fjoin("IMC", sCharlie),
		fjoin("IMZ", sZara),
		fev("START", sZara, "m.room.message", nil, obj{}),
		fev("END", sZara, "m.room.message", nil, obj{}),
	}
}

var initialEdges = []string{"START", "IMZ", "IMC", "IMB", "IJR", "IPOWER", "IMA", "CREATE"}

type graphResult struct {
	events  memFetcher
	stateAt map[string]StateMap
	ids     map[string]string // node -> event ID
}

func nodeID(ver *dag.RoomVersion, node string) string {
	if ver.RoomIDFromCreate {
		return "$" + node // v12 room IDs are derived from the create event ID
	}
	return "$" + node + ":example.com"
}

func buildGraph(t testing.TB, ver *dag.RoomVersion, extra []fakeEvent, edges [][]string) graphResult {
	t.Helper()
	evs := map[string]fakeEvent{}
	graph := map[string]map[string]bool{}
	for _, e := range append(initialEvents(ver), extra...) {
		evs[e.node] = e
		graph[e.node] = map[string]bool{}
	}
	addChain := func(chain []string) {
		for i := 0; i+1 < len(chain); i++ {
			graph[chain[i]][chain[i+1]] = true
		}
	}
	addChain(initialEdges)
	for _, c := range edges {
		addChain(c)
	}
	roomID := "!test:example.com"
	if ver.RoomIDFromCreate {
		roomID = "!" + nodeID(ver, "CREATE")[1:]
	}
	res := graphResult{events: memFetcher{}, stateAt: map[string]StateMap{}, ids: map[string]string{}}
	done := map[string]bool{}
	depth := map[string]int64{}
	var ts int64
	for len(done) < len(graph) {
		// the smallest node whose prev events are all done
		var next string
		for n, prevs := range graph {
			if done[n] {
				continue
			}
			ready := true
			for p := range prevs {
				if !done[p] {
					ready = false
				}
			}
			if ready && (next == "" || n < next) {
				next = n
			}
		}
		if next == "" {
			t.Fatal("cycle in test graph")
		}
		done[next] = true
		fe := evs[next]
		var prevs []string
		for p := range graph[next] {
			prevs = append(prevs, p)
		}
		sort.Strings(prevs)
		var before StateMap
		switch len(prevs) {
		case 0:
			before = StateMap{}
		case 1:
			before = copyState(res.stateAt[prevs[0]])
		default:
			var sets []StateMap
			for _, p := range prevs {
				sets = append(sets, res.stateAt[p])
			}
			var err error
			if before, err = Resolve(ver, sets, res.events.fetch); err != nil {
				t.Fatalf("resolving state before %s: %v", next, err)
			}
		}
		c := js(fe.content)
		var auth []string
		for _, k := range AuthEventsNeeded(ver, fe.typ, fe.stateKey, fe.sender, c) {
			if id, ok := before[k]; ok {
				auth = append(auth, id)
			}
		}
		var prevIDs []string
		d := int64(0)
		for _, p := range prevs {
			prevIDs = append(prevIDs, res.ids[p])
			if depth[p] > d {
				d = depth[p]
			}
		}
		depth[next] = d + 1
		id := nodeID(ver, next)
		ev := &dag.Event{
			ID: id, RoomID: roomID, Sender: fe.sender, Type: fe.typ, StateKey: fe.stateKey,
			Content: c, PrevEvents: prevIDs, AuthEvents: auth, Depth: d + 1, OriginServerTS: ts, Version: ver,
		}
		ts++
		res.events.add(ev)
		res.ids[next] = id
		after := copyState(before)
		if fe.stateKey != nil {
			after[ev.Key()] = id
		}
		res.stateAt[next] = after
	}
	return res
}

func copyState(s StateMap) StateMap {
	out := make(StateMap, len(s))
	for k, v := range s {
		out[k] = v
	}
	return out
}

// checkScenario builds the graph and compares the state at END, restricted
// to keys that differ from START plus the expected keys, with expected.
func checkScenario(t *testing.T, ver *dag.RoomVersion, extra []fakeEvent, edges [][]string, expected []string) {
	t.Helper()
	g := buildGraph(t, ver, extra, edges)
	want := StateMap{}
	for _, node := range expected {
		ev := g.events[g.ids[node]]
		want[ev.Key()] = ev.ID
	}
	start, end := g.stateAt["START"], g.stateAt["END"]
	got := StateMap{}
	for k, v := range end {
		if _, ok := want[k]; ok || start[k] != v {
			got[k] = v
		}
	}
	for k := range start {
		if _, ok := end[k]; !ok {
			got[k] = "<removed>"
		}
	}
	if !sameState(got, want) {
		t.Fatalf("state at END:\n got %s\nwant %s", fmtState(got), fmtState(want))
	}
}

func sameState(a, b StateMap) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func fmtState(s StateMap) string {
	var parts []string
	for k, v := range s {
		parts = append(parts, fmt.Sprintf("(%s,%s)=%s", k.Type, k.StateKey, v))
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, " ") + "}"
}

type scenario struct {
	name     string
	events   func(ver *dag.RoomVersion) []fakeEvent
	edges    [][]string
	expected []string
}

var classicScenarios = []scenario{
	{
		name: "ban vs power levels",
		events: func(v *dag.RoomVersion) []fakeEvent {
			return []fakeEvent{
				fev("PA", sAlice, typePowerLevels, sk(""), obj{"users": creatorUsers(v, obj{sAlice: 100, sBob: 50})}),
				fjoin("MA", sAlice),
				fev("MB", sAlice, typeMember, sk(sBob), obj{"membership": "ban"}),
				fev("PB", sBob, typePowerLevels, sk(""), obj{"users": creatorUsers(v, obj{sAlice: 100, sBob: 50})}),
			}
		},
		edges:    [][]string{{"END", "MB", "MA", "PA", "START"}, {"END", "PB", "PA"}},
		expected: []string{"PA", "MA", "MB"},
	},
	{
		name: "join rule evasion",
		events: func(v *dag.RoomVersion) []fakeEvent {
			return []fakeEvent{
				fev("JR", sAlice, typeJoinRules, sk(""), obj{"join_rules": "private"}),
				fjoin("ME", sEvelyn),
			}
		},
		edges:    [][]string{{"END", "JR", "START"}, {"END", "ME", "START"}},
		expected: []string{"JR"},
	},
	{
		name: "offtopic power levels",
		events: func(v *dag.RoomVersion) []fakeEvent {
			return []fakeEvent{
				fev("PA", sAlice, typePowerLevels, sk(""), obj{"users": creatorUsers(v, obj{sAlice: 100, sBob: 50})}),
				fev("PB", sBob, typePowerLevels, sk(""), obj{"users": creatorUsers(v, obj{sAlice: 100, sBob: 50, sCharlie: 50})}),
				fev("PC", sCharlie, typePowerLevels, sk(""), obj{"users": creatorUsers(v, obj{sAlice: 100, sBob: 50, sCharlie: 0})}),
			}
		},
		edges:    [][]string{{"END", "PC", "PB", "PA", "START"}, {"END", "PA"}},
		expected: []string{"PC"},
	},
	{
		name: "topic basic",
		events: func(v *dag.RoomVersion) []fakeEvent {
			return []fakeEvent{
				fev("T1", sAlice, "m.room.topic", sk(""), obj{}),
				fev("PA1", sAlice, typePowerLevels, sk(""), obj{"users": creatorUsers(v, obj{sAlice: 100, sBob: 50})}),
				fev("T2", sAlice, "m.room.topic", sk(""), obj{}),
				fev("PA2", sAlice, typePowerLevels, sk(""), obj{"users": creatorUsers(v, obj{sAlice: 100, sBob: 0})}),
				fev("PB", sBob, typePowerLevels, sk(""), obj{"users": creatorUsers(v, obj{sAlice: 100, sBob: 50})}),
				fev("T3", sBob, "m.room.topic", sk(""), obj{}),
			}
		},
		edges:    [][]string{{"END", "PA2", "T2", "PA1", "T1", "START"}, {"END", "T3", "PB", "PA1"}},
		expected: []string{"PA2", "T2"},
	},
	{
		name: "topic reset",
		events: func(v *dag.RoomVersion) []fakeEvent {
			return []fakeEvent{
				fev("T1", sAlice, "m.room.topic", sk(""), obj{}),
				fev("PA", sAlice, typePowerLevels, sk(""), obj{"users": creatorUsers(v, obj{sAlice: 100, sBob: 50})}),
				fev("T2", sBob, "m.room.topic", sk(""), obj{}),
				fev("MB", sAlice, typeMember, sk(sBob), obj{"membership": "ban"}),
			}
		},
		edges:    [][]string{{"END", "MB", "T2", "PA", "T1", "START"}, {"END", "T1"}},
		expected: []string{"T1", "MB", "PA"},
	},
	{
		name: "topic",
		events: func(v *dag.RoomVersion) []fakeEvent {
			return []fakeEvent{
				fev("T1", sAlice, "m.room.topic", sk(""), obj{}),
				fev("PA1", sAlice, typePowerLevels, sk(""), obj{"users": creatorUsers(v, obj{sAlice: 100, sBob: 50})}),
				fev("T2", sAlice, "m.room.topic", sk(""), obj{}),
				fev("PA2", sAlice, typePowerLevels, sk(""), obj{"users": creatorUsers(v, obj{sAlice: 100, sBob: 0})}),
				fev("PB", sBob, typePowerLevels, sk(""), obj{"users": creatorUsers(v, obj{sAlice: 100, sBob: 50})}),
				fev("T3", sBob, "m.room.topic", sk(""), obj{}),
				fev("MZ1", sZara, "m.room.message", nil, obj{}),
				fev("T4", sAlice, "m.room.topic", sk(""), obj{}),
			}
		},
		edges: [][]string{
			{"END", "T4", "MZ1", "PA2", "T2", "PA1", "T1", "START"},
			{"END", "MZ1", "T3", "PB", "PA1"},
		},
		expected: []string{"T4", "PA2"},
	},
	{
		name: "mainline sort",
		events: func(v *dag.RoomVersion) []fakeEvent {
			return []fakeEvent{
				fev("T1", sAlice, "m.room.topic", sk(""), obj{}),
				fev("PA1", sAlice, typePowerLevels, sk(""), obj{"users": creatorUsers(v, obj{sAlice: 100, sBob: 50})}),
				fev("T2", sAlice, "m.room.topic", sk(""), obj{}),
				fev("PA2", sAlice, typePowerLevels, sk(""), obj{
					"users":  creatorUsers(v, obj{sAlice: 100, sBob: 50}),
					"events": obj{typePowerLevels: 100},
				}),
				fev("PB", sBob, typePowerLevels, sk(""), obj{"users": creatorUsers(v, obj{sAlice: 100, sBob: 50})}),
				fev("T3", sBob, "m.room.topic", sk(""), obj{}),
				fev("T4", sAlice, "m.room.topic", sk(""), obj{}),
			}
		},
		edges: [][]string{
			{"END", "T3", "PA2", "T2", "PA1", "T1", "START"},
			{"END", "T4", "PB", "PA1"},
		},
		// T3 wins: T4 points at an older power levels event in the mainline,
		// though it was sent after T3.
		expected: []string{"T3", "PA2"},
	},
	{
		// Synapse's SimpleParamStateTestCase: two members join at once.
		name: "concurrent joins",
		events: func(v *dag.RoomVersion) []fakeEvent {
			return []fakeEvent{fjoin("JE", sEvelyn), fjoin("JX", "@xavier:example.com")}
		},
		edges:    [][]string{{"END", "JE", "START"}, {"END", "JX", "START"}},
		expected: []string{"JE", "JX"},
	},
}

// The classic scenarios hold for every state resolution v2 room version,
// and (with the creator left out of power levels, where it may not appear)
// for v2.1.
func TestClassicScenarios(t *testing.T) {
	for _, sc := range classicScenarios {
		for _, ver := range allVersions[1:] {
			t.Run(sc.name+"/v"+ver.ID, func(t *testing.T) {
				checkScenario(t, ver, sc.events(ver), sc.edges, sc.expected)
			})
		}
	}
}

// "Lexicographic tie break": Synapse's LexicographicalTestCase. With equal
// power and timestamps, Kahn's algorithm takes the smallest event ID among
// the candidates: l -> o, m -> n, o, n -> o, p -> o sorts o, l, n, m, p.
func TestLexicographicTieBreak(t *testing.T) {
	ver := &dag.RoomV10
	mk := func(id string, auth ...string) *dag.Event {
		return &dag.Event{ID: id, RoomID: "!r:x.org", Sender: "@s:x.org", Type: typePowerLevels, StateKey: sk(""),
			Content: js(obj{}), AuthEvents: auth, Version: ver}
	}
	events := memFetcher{}
	events.add(mk("o"), mk("l", "o"), mk("m", "n", "o"), mk("n", "o"), mk("p", "o"))
	r := &resolver{ver: ver, fetch: events.fetch, ids: map[string]int32{}, createIdx: -1}
	var xs []int32
	for _, id := range []string{"p", "m", "o", "l", "n"} {
		i := r.intern(id)
		r.load(i)
		xs = append(xs, i)
	}
	inFCS := make([]bool, len(r.nodes))
	for i := range inFCS {
		inFCS[i] = true
	}
	var got []string
	for _, i := range r.reverseTopologicalPowerOrder(xs, inFCS) {
		got = append(got, r.nodes[i].id)
	}
	if strings.Join(got, ",") != "o,l,n,m,p" {
		t.Fatalf("got %v", got)
	}
}

// The power ordering puts the more powerful sender first, then the earlier
// timestamp, and only then the event ID.
func TestReverseTopologicalPowerOrdering(t *testing.T) {
	ver := &dag.RoomV10
	events := memFetcher{}
	create := &dag.Event{ID: "$c", RoomID: "!r:x.org", Sender: "@boss:x.org", Type: typeCreate, StateKey: sk(""),
		Content: js(obj{"creator": "@boss:x.org"}), Version: ver}
	pl := &dag.Event{ID: "$pl", RoomID: "!r:x.org", Sender: "@boss:x.org", Type: typePowerLevels, StateKey: sk(""),
		Content: js(obj{"users": obj{"@boss:x.org": 100, "@mid:x.org": 50}}), AuthEvents: []string{"$c"}, Version: ver}
	mk := func(id, sender string, ts int64) *dag.Event {
		return &dag.Event{ID: id, RoomID: "!r:x.org", Sender: sender, Type: typeJoinRules, StateKey: sk(""),
			Content: js(obj{}), AuthEvents: []string{"$c", "$pl"}, OriginServerTS: ts, Version: ver}
	}
	events.add(create, pl, mk("$a", "@low:x.org", 1), mk("$b", "@mid:x.org", 5), mk("$z", "@boss:x.org", 9),
		mk("$y", "@boss:x.org", 9), mk("$x", "@mid:x.org", 2))
	r := &resolver{ver: ver, fetch: events.fetch, ids: map[string]int32{}, createIdx: -1}
	var xs []int32
	for _, id := range []string{"$a", "$b", "$z", "$y", "$x"} {
		i := r.intern(id)
		r.load(i)
		xs = append(xs, i)
	}
	inFCS := make([]bool, len(r.nodes)+2)
	for _, i := range xs {
		inFCS[i] = true
	}
	var got []string
	for _, i := range r.reverseTopologicalPowerOrder(xs, inFCS) {
		got = append(got, r.nodes[i].id)
	}
	if strings.Join(got, ",") != "$y,$z,$x,$b,$a" {
		t.Fatalf("got %v", got)
	}
}
