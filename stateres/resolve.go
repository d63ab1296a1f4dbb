package stateres

import (
	"errors"
	"fmt"
	"math"
	"sort"

	"engram/dag"
)

// StateMap is a room state: (type, state_key) to event ID.
type StateMap = map[dag.StateKeyTuple]string

// Options tune Resolve.
type Options struct {
	// Rejected reports events that were rejected on their own auth events
	// (receipt checks 1 to 4). They never enter the resolved state and are
	// never used to authorise another event: "Rejected auth events are
	// deliberately excluded from use in the iterative auth checks". Events
	// rejected only against the state before them (check 5) must not be
	// reported: the spec handles them "as usual by the algorithm".
	Rejected func(eventID string) bool
	// AllowMissing makes Resolve skip events the fetcher does not have, as
	// Synapse does, instead of failing with a *MissingEventsError. Servers
	// with different holes in their DAG can then disagree, so the default is
	// to fail and let the caller fetch the events.
	AllowMissing bool
}

// Resolve computes the resolution of a set of room states with the
// algorithm of the room version: state resolution v1 (room version 1), v2
// (versions 2 to 11) or v2.1 (version 12).
//
// fetch returns events by ID and ErrNotFound (or an error wrapping it) for
// events it does not have; events are fetched at most once per call. The
// result is a new map; the inputs are not modified. The result depends only
// on the events and the set of state maps, never on their order or on map
// iteration order.
func Resolve(ver *dag.RoomVersion, stateSets []StateMap, fetch func(eventID string) (*dag.Event, error)) (StateMap, error) {
	return ResolveWith(ver, stateSets, fetch, Options{})
}

// ResolveWith is Resolve with options.
func ResolveWith(ver *dag.RoomVersion, stateSets []StateMap, fetch func(eventID string) (*dag.Event, error), opts Options) (StateMap, error) {
	if ver == nil {
		return nil, ErrNoVersion
	}
	if fetch == nil {
		return nil, errors.New("stateres: nil fetcher")
	}
	switch len(stateSets) {
	case 0:
		return StateMap{}, nil
	case 1:
		out := make(StateMap, len(stateSets[0]))
		for k, v := range stateSets[0] {
			out[k] = v
		}
		return out, nil
	}
	r := newResolver(ver, fetch, opts, len(stateSets[0]))
	switch ver.StateRes {
	case 1:
		return r.resolveV1(stateSets)
	case 2, 21:
		return r.resolveV2(stateSets, ver.StateRes == 21)
	}
	return nil, fmt.Errorf("stateres: unknown state resolution algorithm %d (room version %s)", ver.StateRes, ver.ID)
}

// Events are interned: every event ID met gets a small integer, and the
// algorithm works on those. Nothing depends on which integer an event got
// (that follows map iteration order); every ordering ties break on event
// IDs.
type node struct {
	id        string
	ev        *dag.Event
	authStart int32 // auth events in resolver.arena, deduplicated; in v12
	authLen   int32 // plus the room's create event
	loaded    bool
	missing   bool
	edges     bool
	rejected  bool
}

type resolver struct {
	ver   *dag.RoomVersion
	fetch func(string) (*dag.Event, error)
	opts  Options

	ids   map[string]int32
	nodes []node
	arena []int32 // backing store of every node's auth events

	roomID    string
	haveRoom  bool
	createIdx int32 // v12: the create event the room ID names
	missing   []string
	err       error // first fetch failure or inconsistency
}

func newResolver(ver *dag.RoomVersion, fetch func(string) (*dag.Event, error), opts Options, sizeHint int) *resolver {
	n := sizeHint + sizeHint/4 + 16
	return &resolver{ver: ver, fetch: fetch, opts: opts, createIdx: -1,
		ids: make(map[string]int32, n), nodes: make([]node, 0, n), arena: make([]int32, 0, 4*n)}
}

func (r *resolver) intern(id string) int32 {
	if i, ok := r.ids[id]; ok {
		return i
	}
	i := int32(len(r.nodes))
	r.nodes = append(r.nodes, node{id: id})
	r.ids[id] = i
	return i
}

// load fetches node i; nil if it is missing (recorded) or on error (r.err).
func (r *resolver) load(i int32) *dag.Event {
	n := &r.nodes[i]
	if n.loaded {
		return n.ev
	}
	if n.missing || r.err != nil {
		return nil
	}
	ev, err := r.fetch(n.id)
	if err != nil || ev == nil {
		if err == nil || errors.Is(err, ErrNotFound) {
			n.missing = true
			r.missing = append(r.missing, n.id)
			return nil
		}
		r.err = fmt.Errorf("stateres: fetch %s: %w", n.id, err)
		return nil
	}
	if ev.ID != n.id {
		r.err = fmt.Errorf("stateres: fetch %s returned event %s", n.id, ev.ID)
		return nil
	}
	room := ev.RoomID
	if r.ver.RoomIDFromCreate && ev.Type == typeCreate && room == "" && len(ev.ID) > 1 {
		room = "!" + ev.ID[1:]
	}
	if !r.haveRoom {
		r.haveRoom, r.roomID = true, room
	} else if room != r.roomID {
		r.err = fmt.Errorf("stateres: event %s is in room %s, not %s", n.id, room, r.roomID)
		return nil
	}
	n.ev, n.loaded = ev, true
	n.rejected = r.opts.Rejected != nil && r.opts.Rejected(n.id)
	return ev
}

// edges returns the auth events of node i (which must be loaded, or it has
// none). In v12 the create event is not listed in auth_events ("The room_id
// (being the m.room.create event's ID) implies this instead"); it is added
// here so that auth chains, sender power levels and auth checks see it.
func (r *resolver) edges(i int32) []int32 {
	n := &r.nodes[i]
	if n.edges {
		end := n.authStart + n.authLen
		return r.arena[n.authStart:end:end]
	}
	n.edges = true
	ev := n.ev
	if ev == nil {
		return nil
	}
	start := int32(len(r.arena))
	add := func(j int32) {
		for _, k := range r.arena[start:] {
			if k == j {
				return
			}
		}
		r.arena = append(r.arena, j)
	}
	for _, id := range ev.AuthEvents {
		add(r.intern(id))
	}
	if r.ver.RoomIDFromCreate && ev.Type != typeCreate {
		if r.createIdx < 0 {
			if id := createIDOfRoom(r.roomID); id != "" {
				r.createIdx = r.intern(id)
			}
		}
		if r.createIdx >= 0 && r.createIdx != i {
			add(r.createIdx)
		}
	}
	// r.nodes may have grown: index again.
	r.nodes[i].authStart, r.nodes[i].authLen = start, int32(len(r.arena))-start
	return r.arena[start:len(r.arena):len(r.arena)]
}

func (r *resolver) missingErr() error {
	if r.err != nil {
		return r.err
	}
	if len(r.missing) > 0 && !r.opts.AllowMissing {
		return newMissing(r.missing)
	}
	return nil
}

// separate splits the state sets into the unconflicted state map and the
// keys of the conflicted state set: "If a given key K is present in every
// S_i with the same value V in each state map, then the pair (K, V) belongs
// to the unconflicted state map. Otherwise, V belongs to the conflicted
// state set." A key missing from some set is therefore conflicted.
func separate(sets []StateMap) (StateMap, []dag.StateKeyTuple) {
	unconflicted := make(StateMap, len(sets[0]))
	var conflicted []dag.StateKeyTuple
	found := make([]int, len(sets)) // keys of set j that set 0 also has
	for k, v := range sets[0] {
		same := true
		for j := 1; j < len(sets); j++ {
			w, ok := sets[j][k]
			if ok {
				found[j]++
			}
			if !ok || w != v {
				same = false
			}
		}
		if same {
			unconflicted[k] = v
		} else {
			conflicted = append(conflicted, k)
		}
	}
	var extra map[dag.StateKeyTuple]bool
	for j := 1; j < len(sets); j++ {
		if found[j] == len(sets[j]) {
			continue // every key of set j is in set 0: nothing new
		}
		for k := range sets[j] {
			if _, in0 := sets[0][k]; in0 || extra[k] {
				continue
			}
			if extra == nil {
				extra = map[dag.StateKeyTuple]bool{}
			}
			extra[k] = true
			conflicted = append(conflicted, k)
		}
	}
	return unconflicted, conflicted
}

// resolveV2 is state resolution v2 (rooms/v2) and, with v21, v2.1
// (rooms/v12).
func (r *resolver) resolveV2(sets []StateMap, v21 bool) (StateMap, error) {
	unconflicted, conflictedKeys := separate(sets)
	if len(conflictedKeys) == 0 {
		return unconflicted, nil
	}

	// Auth difference: "calculating the full auth chain for each state S_i,
	// that is the union of the auth chains for each event in S_i, and then
	// taking every event that doesn't appear in every auth chain". As in
	// Synapse and ruma, each state's chain includes the state's own events.
	//
	// Everything reachable from the unconflicted state is in every chain, so
	// that common part is walked once; each state then walks only from its
	// conflicted events and stops where it meets the common part.
	var common, isConf []bool
	var seen, count []int32
	grow := func() {
		for len(common) < len(r.nodes) {
			common = append(common, false)
			isConf = append(isConf, false)
			seen = append(seen, 0)
			count = append(count, 0)
		}
	}
	stack := make([]int32, 0, len(unconflicted))
	for _, id := range unconflicted {
		stack = append(stack, r.intern(id))
	}
	grow()
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if common[i] {
			continue
		}
		common[i] = true
		if r.load(i) == nil {
			continue
		}
		for _, a := range r.edges(i) {
			grow()
			if !common[a] {
				stack = append(stack, a)
			}
		}
	}
	var conflicted []int32
	for si, set := range sets {
		stamp := int32(si + 1)
		for _, k := range conflictedKeys {
			if id, ok := set[k]; ok {
				i := r.intern(id)
				grow()
				if !isConf[i] {
					isConf[i] = true
					conflicted = append(conflicted, i)
				}
				stack = append(stack, i)
			}
		}
		for len(stack) > 0 {
			i := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if common[i] || seen[i] == stamp {
				continue
			}
			seen[i] = stamp
			count[i]++
			if r.load(i) == nil {
				continue
			}
			for _, a := range r.edges(i) {
				grow()
				if !common[a] && seen[a] != stamp {
					stack = append(stack, a)
				}
			}
		}
	}
	if err := r.missingErr(); err != nil {
		return nil, err
	}

	inFCS := make([]bool, len(r.nodes))
	var fcs []int32
	addFCS := func(i int32) {
		for int(i) >= len(inFCS) {
			inFCS = append(inFCS, false)
		}
		if !inFCS[i] && r.load(i) != nil {
			inFCS[i] = true
			fcs = append(fcs, i)
		}
	}
	for _, i := range conflicted {
		addFCS(i)
	}
	nsets := int32(len(sets))
	for i := range count {
		if count[i] > 0 && count[i] < nsets {
			addFCS(int32(i))
		}
	}
	if v21 {
		// "The union of all such paths between any pair of events in the
		// conflicted state set (including endpoints) forms [...] the
		// conflicted state subgraph." The full conflicted set includes it.
		for _, i := range r.conflictedSubgraph(conflicted) {
			addFCS(i)
		}
	}
	if err := r.missingErr(); err != nil {
		return nil, err
	}
	for len(inFCS) < len(r.nodes) {
		inFCS = append(inFCS, false)
	}

	// Step 1: "Select the set X of all power events that appear in the full
	// conflicted set. For each such power event P, enlarge X by adding the
	// events in the auth chain of P which also belong to the full conflicted
	// set. Sort X into a list using the reverse topological power
	// ordering." Like Synapse and ruma, the auth chain is followed through
	// full-conflicted-set events only, and m.room.create counts as a power
	// event.
	inX := make([]bool, len(r.nodes))
	var xs []int32
	for _, i := range fcs {
		if !r.isPowerEvent(r.nodes[i].ev) || inX[i] {
			continue
		}
		inX[i] = true
		xs = append(xs, i)
		stack = append(stack[:0], i)
		for len(stack) > 0 {
			j := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			for _, a := range r.edges(j) {
				if int(a) < len(inFCS) && inFCS[a] && !inX[a] {
					inX[a] = true
					xs = append(xs, a)
					stack = append(stack, a)
				}
			}
		}
	}
	sortedX := r.reverseTopologicalPowerOrder(xs, inFCS)
	if r.err != nil {
		return nil, r.err
	}

	// Step 2: "Apply the iterative auth checks algorithm, starting from the
	// unconflicted state map [v2.1: an empty state map], to the list of
	// events from the previous step to get a partially resolved state."
	st := &stateView{delta: make(map[dag.StateKeyTuple]int32)}
	if !v21 {
		st.base = unconflicted
	}
	r.iterate(sortedX, st)

	// Step 3: "Take all remaining events that weren't picked in step 1 and
	// order them by the mainline ordering based on the power level in the
	// partially resolved state obtained in step 2."
	picked := make([]bool, len(r.nodes))
	for _, i := range sortedX {
		picked[i] = true
	}
	rest := make([]int32, 0, len(fcs))
	for _, i := range fcs {
		if !picked[i] {
			rest = append(rest, i)
		}
	}
	rest = r.mainlineOrder(rest, st)

	// Step 4: "Apply the iterative auth checks algorithm on the partial
	// resolved state and the list of events from the previous step."
	r.iterate(rest, st)
	if r.err != nil {
		return nil, r.err
	}

	// Step 5: "Update the result by replacing any event with the event with
	// the same key from the unconflicted state map, if such an event exists,
	// to get the final resolved state."
	for k, i := range st.delta {
		if _, ok := unconflicted[k]; !ok {
			unconflicted[k] = r.nodes[i].id
		}
	}
	return unconflicted, nil
}

// isPowerEvent: "A power event is a state event with type
// m.room.power_levels or m.room.join_rules, or a state event with type
// m.room.member where the membership is leave or ban and the sender does not
// match the state_key." m.room.create is included as Synapse and ruma do; in
// a well-formed room it is never conflicted.
func (r *resolver) isPowerEvent(ev *dag.Event) bool {
	if ev == nil || ev.StateKey == nil {
		return false
	}
	switch ev.Type {
	case typePowerLevels, typeJoinRules, typeCreate:
		return *ev.StateKey == ""
	case typeMember:
		m := parsed(ev).member.membership
		return (m == mLeave || m == mBan) && ev.Sender != *ev.StateKey
	}
	return false
}

// conflictedSubgraph returns the events that lie on an auth_events path
// from one conflicted event to another: those reachable from a conflicted
// event that can themselves reach a conflicted event. Both are plain
// reachability (a forward walk from the conflicted events, then a walk
// back from them over the reversed edges of what was reached), so the
// answer does not depend on the order of the conflicted events, even where
// a malformed DAG has cycles (v1/v2 event IDs are arbitrary; in v12 a
// create event listing auth events closes one with the implicit edge to it).
func (r *resolver) conflictedSubgraph(conflicted []int32) []int32 {
	// Everything reachable from the conflicted events, each once, and the
	// reversed edges among them.
	reached := make(map[int32]bool)
	from := make(map[int32][]int32) // a -> the reached events that list a
	stack := append([]int32(nil), conflicted...)
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if reached[i] {
			continue
		}
		reached[i] = true
		if r.load(i) == nil {
			continue
		}
		for _, a := range r.edges(i) {
			from[a] = append(from[a], i)
			stack = append(stack, a)
		}
	}
	// Of those, the ones that reach a conflicted event: walk back.
	back := make(map[int32]bool, len(reached))
	var out []int32
	stack = append(stack[:0], conflicted...)
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if back[i] {
			continue
		}
		back[i] = true
		out = append(out, i)
		stack = append(stack, from[i]...)
	}
	return out
}

// senderPower is the sender's power level "when looking at their respective
// auth_events", for the reverse topological power ordering.
func (r *resolver) senderPower(i int32) int64 {
	ev := r.nodes[i].ev
	var plEv, createEv *dag.Event
	for _, a := range r.edges(i) {
		ae := r.load(a)
		if ae == nil || ae.StateKey == nil || *ae.StateKey != "" {
			continue
		}
		switch ae.Type {
		case typePowerLevels:
			plEv = ae
		case typeCreate:
			if createEv == nil {
				createEv = ae
			}
		}
	}
	if createEv != nil && r.ver.RoomIDFromCreate && isCreator(createEv, &parsed(createEv).create, ev.Sender) {
		return levelInfinite
	}
	if plEv == nil {
		if createEv != nil && !r.ver.RoomIDFromCreate {
			creator := parsed(createEv).create.creator
			if r.ver.CreatorIsSender {
				creator = createEv.Sender
			}
			if creator == ev.Sender {
				return 100
			}
		}
		return 0
	}
	pl := parsed(plEv).pl
	if l, ok := pl.users.get(ev.Sender); ok && l.usable() {
		return l.v
	}
	return pl.fieldLevel(fUsersDefault)
}

// reverseTopologicalPowerOrder: "the lexicographically smallest topological
// ordering based on the DAG formed by auth events [...] ordered from
// earliest event to latest", where x < y if x's sender has the greater power
// level, then the smaller origin_server_ts, then the smaller event_id;
// found "using Kahn's algorithm for topological sorting, and at each step
// selecting, among all the candidate vertices, the smallest vertex". Events
// on a cycle (impossible with hash event IDs) are left out, as in Synapse.
func (r *resolver) reverseTopologicalPowerOrder(xs []int32, inFCS []bool) []int32 {
	if len(xs) == 0 {
		return nil
	}
	power := make(map[int32]int64, len(xs))
	out := make(map[int32]int, len(xs))
	parents := make(map[int32][]int32, len(xs))
	for _, i := range xs {
		power[i] = r.senderPower(i)
		for _, a := range r.edges(i) {
			if int(a) < len(inFCS) && inFCS[a] {
				out[i]++
				parents[a] = append(parents[a], i)
			}
		}
	}
	less := func(a, b int32) bool {
		pa, pb := power[a], power[b]
		if pa != pb {
			return pa > pb
		}
		ea, eb := r.nodes[a].ev, r.nodes[b].ev
		if ea.OriginServerTS != eb.OriginServerTS {
			return ea.OriginServerTS < eb.OriginServerTS
		}
		return r.nodes[a].id < r.nodes[b].id
	}
	h := &nodeHeap{less: less}
	for _, i := range xs {
		if out[i] == 0 {
			h.push(i)
		}
	}
	sorted := make([]int32, 0, len(xs))
	for h.len() > 0 {
		i := h.pop()
		sorted = append(sorted, i)
		for _, p := range parents[i] {
			out[p]--
			if out[p] == 0 {
				h.push(p)
			}
		}
	}
	return sorted
}

type nodeHeap struct {
	items []int32
	less  func(a, b int32) bool
}

func (h *nodeHeap) len() int { return len(h.items) }

func (h *nodeHeap) push(x int32) {
	h.items = append(h.items, x)
	i := len(h.items) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(h.items[i], h.items[p]) {
			break
		}
		h.items[i], h.items[p] = h.items[p], h.items[i]
		i = p
	}
}

func (h *nodeHeap) pop() int32 {
	top := h.items[0]
	last := len(h.items) - 1
	h.items[0] = h.items[last]
	h.items = h.items[:last]
	i := 0
	for {
		l, rr, m := 2*i+1, 2*i+2, i
		if l < last && h.less(h.items[l], h.items[m]) {
			m = l
		}
		if rr < last && h.less(h.items[rr], h.items[m]) {
			m = rr
		}
		if m == i {
			return top
		}
		h.items[i], h.items[m] = h.items[m], h.items[i]
		i = m
	}
}

// stateView is the state during the iterative auth checks: the events
// applied so far over a read-only base (the unconflicted state in v2,
// nothing in v2.1).
type stateView struct {
	base  StateMap
	delta map[dag.StateKeyTuple]int32
}

func (r *resolver) stateGet(st *stateView, k dag.StateKeyTuple) (int32, bool) {
	if i, ok := st.delta[k]; ok {
		return i, true
	}
	if id, ok := st.base[k]; ok {
		return r.intern(id), true
	}
	return -1, false
}

// authView is the state one event is checked against in the iterative
// auth checks: a handful of events, searched linearly.
type authView struct {
	keys []dag.StateKeyTuple
	evs  []*dag.Event
}

func (v *authView) reset() { v.keys, v.evs = v.keys[:0], v.evs[:0] }

func (v *authView) set(k dag.StateKeyTuple, ev *dag.Event) {
	for i := range v.keys {
		if v.keys[i] == k {
			v.evs[i] = ev
			return
		}
	}
	v.keys = append(v.keys, k)
	v.evs = append(v.evs, ev)
}

// Get implements AuthState.
func (v *authView) Get(k dag.StateKeyTuple) *dag.Event {
	for i := range v.keys {
		if v.keys[i] == k {
			return v.evs[i]
		}
	}
	return nil
}

// iterate is the iterative auth checks algorithm: "iterating through the
// event list and applying the state event to the room state if the state
// event is allowed by the authorisation rules. If the state event is not
// allowed by the authorisation rules, then the event is ignored. If a
// (event_type, state_key) key that is required for checking the
// authorisation rules is not present in the state, then the appropriate
// state event from the event's auth_events is used if the auth event is not
// rejected."
func (r *resolver) iterate(order []int32, st *stateView) {
	view := &authView{keys: make([]dag.StateKeyTuple, 0, 8), evs: make([]*dag.Event, 0, 8)}
	needed := make([]dag.StateKeyTuple, 0, 8)
	for _, i := range order {
		ev := r.nodes[i].ev
		if ev == nil || ev.StateKey == nil || r.nodes[i].rejected {
			continue
		}
		view.reset()
		for _, a := range r.edges(i) {
			ae := r.load(a)
			if ae == nil || ae.StateKey == nil || r.nodes[a].rejected {
				continue
			}
			view.set(ae.Key(), ae)
		}
		needed = eventNeededKeys(r.ver, ev, needed[:0])
		for _, k := range needed {
			if j, ok := r.stateGet(st, k); ok {
				if se := r.load(j); se != nil && !r.nodes[j].rejected {
					view.set(k, se)
				}
			}
		}
		if allowed(r.ver, ev, view) == nil {
			st.delta[ev.Key()] = i
		}
	}
}

// firstPL is the first m.room.power_levels event among i's auth events, or
// -1.
func (r *resolver) firstPL(i int32) int32 {
	if r.load(i) == nil {
		return -1
	}
	for _, a := range r.edges(i) {
		if ae := r.load(a); ae != nil && ae.Type == typePowerLevels && ae.StateKey != nil && *ae.StateKey == "" {
			return a
		}
	}
	return -1
}

// mainlineOrder sorts events by the mainline ordering based on the power
// levels event of st: "x < y if the mainline position of x is greater than
// the mainline position of y [...]; or the mainline positions of the events
// are the same, but x's origin_server_ts is less than y's [...]; or [...]
// x's event_id is less than y's event_id." An event whose power levels
// chain never meets the mainline has position infinity and sorts first.
func (r *resolver) mainlineOrder(events []int32, st *stateView) []int32 {
	if len(events) == 0 {
		return events
	}
	mainline := map[int32]int64{}
	if p, ok := r.stateGet(st, plKey); ok {
		for pos := int64(0); p >= 0; pos++ {
			if _, dup := mainline[p]; dup || r.load(p) == nil {
				break
			}
			mainline[p] = pos
			p = r.firstPL(p)
		}
	}
	const inf = math.MaxInt64
	memo := map[int32]int64{}
	position := func(e int32) int64 {
		var path []int32
		onPath := map[int32]bool{}
		res := int64(inf)
		for cur := r.firstPL(e); cur >= 0; cur = r.firstPL(cur) {
			if p, ok := mainline[cur]; ok {
				res = p
				break
			}
			if p, ok := memo[cur]; ok {
				res = p
				break
			}
			if onPath[cur] {
				break // a cycle: never meets the mainline
			}
			onPath[cur] = true
			path = append(path, cur)
		}
		for _, p := range path {
			memo[p] = res
		}
		return res
	}
	type keyed struct {
		i   int32
		pos int64
		ts  int64
		id  string
	}
	ks := make([]keyed, len(events))
	for n, e := range events {
		ks[n] = keyed{i: e, pos: position(e), ts: r.nodes[e].ev.OriginServerTS, id: r.nodes[e].id}
	}
	sort.Slice(ks, func(a, b int) bool {
		x, y := &ks[a], &ks[b]
		if x.pos != y.pos {
			return x.pos > y.pos
		}
		if x.ts != y.ts {
			return x.ts < y.ts
		}
		return x.id < y.id
	})
	out := make([]int32, len(ks))
	for n := range ks {
		out[n] = ks[n].i
	}
	return out
}
