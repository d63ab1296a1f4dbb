package rooms

// Federation reads and joins: event templates for make_join/make_leave, the
// state at an event, auth chains, and joining a room that lives on other
// servers.

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"engram/dag"
	"engram/log"
	"engram/projections"
	"engram/stateres"
)

type logRecord = log.Record

// MakeTemplate builds the unsigned template of a membership event another
// server's user wants to send (make_join, make_leave): prev_events, auth
// events and depth from the room's current state, checked against the
// authorization rules. It returns the template as canonical JSON and the
// room version.
func (s *Sequencer) MakeTemplate(room, sender, evType string, stateKey *string, content json.RawMessage) ([]byte, string, error) {
	r, err := s.load(room)
	if err != nil {
		return nil, "", err
	}
	defer r.mu.Unlock()
	prev, depth := r.prevEvents()
	needed := stateres.AuthEventsNeeded(r.version, evType, stateKey, sender, content)
	auth := make([]string, 0, len(needed))
	authState := stateres.StateEvents{}
	for _, k := range needed {
		if ev, ok := r.state[k]; ok {
			authState[k] = ev
			if k.Type == "m.room.create" && r.version.RoomIDFromCreate {
				continue
			}
			auth = append(auth, ev.ID)
		}
	}
	if c, ok := r.state[dag.StateKeyTuple{Type: "m.room.create"}]; ok {
		authState[c.Key()] = c
	}
	origin := dag.ServerName(sender)
	p := dag.ProtoEvent{RoomID: r.id, Sender: sender, Type: evType, StateKey: stateKey, Content: content,
		PrevEvents: prev, AuthEvents: auth, Depth: depth, OriginServerTS: s.now()}
	ev, err := dag.Prepare(p, r.version, origin)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrBadEvent, err)
	}
	if err := stateres.Allowed(ev, authState); err != nil {
		return nil, "", &ForbiddenError{Err: err}
	}
	tmpl, err := dag.EncodeProto(p, r.version, origin)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrBadEvent, err)
	}
	return tmpl, r.version.ID, nil
}

// StateBefore returns the state before an event (parsed, not yet held) of a
// known room: the resolution of the states after its prev_events.
func (s *Sequencer) StateBefore(ev *dag.Event) (stateres.StateMap, error) {
	r, err := s.load(ev.RoomID)
	if err != nil {
		return nil, err
	}
	defer r.mu.Unlock()
	c := s.cache(r.id)
	s.seedCurrent(r, c)
	if prevAreExtremities(r, ev.PrevEvents) {
		// The event builds on every forward extremity (a make_join
		// template does): the state before it is the resolution of their
		// states, which is the current state. Walking the DAG instead costs
		// a map per state event of the room's history.
		return currentMap(r), nil
	}
	var sets []stateres.StateMap
	for _, p := range ev.PrevEvents {
		if !s.Known(p) {
			if _, ok := c.after[p]; !ok {
				continue
			}
		}
		m, err := s.stateAfter(c, r.version, p)
		if err != nil {
			return nil, err
		}
		sets = append(sets, m)
	}
	if len(sets) == 0 {
		return currentMap(r), nil
	}
	return s.resolve(c, r.version, sets)
}

// StateAt returns the state after an event the server holds in a room's DAG.
func (s *Sequencer) StateAt(room, eventID string) (stateres.StateMap, error) {
	r, err := s.load(room)
	if err != nil {
		return nil, err
	}
	defer r.mu.Unlock()
	c := s.cache(r.id)
	s.seedCurrent(r, c)
	return s.stateAfter(c, r.version, eventID)
}

// prevAreExtremities reports whether prev names exactly the room's forward
// extremities.
func prevAreExtremities(r *room, prev []string) bool {
	if len(prev) == 0 || len(prev) != len(r.extremities) {
		return false
	}
	for i, p := range prev {
		if _, ok := r.extremities[p]; !ok || slices.Contains(prev[:i], p) {
			return false
		}
	}
	return true
}

// seedCurrent records the state after the room's only forward extremity,
// which is its current state, in the federation cache: without it the
// first stateAfter of a room whose history was sequenced here walks the
// whole DAG from the create event, copying the state map at every state
// event (quadratic in the number of members). Called with the room lock.
func (s *Sequencer) seedCurrent(r *room, c *fedCache) {
	if len(r.extremities) != 1 {
		return
	}
	for id := range r.extremities {
		if _, ok := c.after[id]; !ok {
			c.after[id] = currentMap(r)
		}
	}
}

// CurrentState returns the room's current state.
func (s *Sequencer) CurrentState(room string) (stateres.StateMap, string, error) {
	r, err := s.load(room)
	if err != nil {
		return nil, "", err
	}
	defer r.mu.Unlock()
	return currentMap(r), r.version.ID, nil
}

// AuthChain returns the IDs of the full auth chain of the given events
// (their auth events, recursively; not the events themselves), sorted. In
// v12 the create event, implied by the room ID, is included.
//
// For many events (the state of a room for send_join or /state) the auth
// events of those in the room's current state come from the sequencer's
// parsed copies, and the others are read and parsed in parallel.
func (s *Sequencer) AuthChain(ids []string) ([]string, error) {
	held := s.heldEvents(ids)
	auths := make([][]string, len(ids))
	Parallel(len(ids), func(i int) {
		if ev, ok := held[ids[i]]; ok {
			auths[i] = authOf(ev)
			return
		}
		rec, _, err := s.store.Event(ids[i])
		if err != nil {
			return
		}
		if ev, err := parseRecord(rec); err == nil {
			auths[i] = authOf(ev)
		}
	})
	var out, stack []string
	queued := map[string]bool{}
	push := func(ids []string) {
		for _, id := range ids {
			if !queued[id] {
				queued[id] = true
				stack = append(stack, id)
			}
		}
	}
	for _, a := range auths {
		push(a)
	}
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		rec, _, err := s.store.Event(id)
		if err != nil {
			continue
		}
		out = append(out, id)
		ev, ok := held[id]
		if !ok {
			if ev, err = parseRecord(rec); err != nil {
				continue
			}
		}
		push(authOf(ev))
	}
	sort.Strings(out)
	return out, nil
}

// heldEvents returns the room's current state events by ID when many events
// are asked about (nil otherwise): the room of the first event found, if
// loaded. Their auth events are those of the stored PDUs (the sequencer
// keeps local events unsigned, and signatures are not needed here).
func (s *Sequencer) heldEvents(ids []string) map[string]*dag.Event {
	if len(ids) < 64 {
		return nil
	}
	room := ""
	for _, id := range ids[:min(len(ids), 8)] {
		if rec, _, err := s.store.Event(id); err == nil {
			room = rec.RoomID
			break
		}
	}
	s.mu.Lock()
	r := s.rooms[room]
	s.mu.Unlock()
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.version == nil {
		return nil
	}
	m := make(map[string]*dag.Event, len(r.state))
	for _, ev := range r.state {
		m[ev.ID] = ev
	}
	return m
}

// Parallel runs fn(0..n-1) on every core; small n runs inline. The join
// paths of both sides use it (verifying and encoding thousands of events).
func Parallel(n int, fn func(i int)) {
	workers := runtime.GOMAXPROCS(0)
	if n < 256 || workers < 2 {
		for i := 0; i < n; i++ {
			fn(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				lo := int(next.Add(64)) - 64
				if lo >= n {
					return
				}
				for i := lo; i < min(lo+64, n); i++ {
					fn(i)
				}
			}
		}()
	}
	wg.Wait()
}

func authOf(ev *dag.Event) []string {
	a := append([]string(nil), ev.AuthEvents...)
	if ev.Version.RoomIDFromCreate && ev.Type != "m.room.create" && len(ev.RoomID) > 1 {
		a = append(a, "$"+ev.RoomID[1:])
	}
	return a
}

func parseRecord(rec *projections.EventRecord) (*dag.Event, error) {
	ver := dag.Version(rec.RoomVersion)
	if ver == nil {
		return nil, fmt.Errorf("rooms: unknown room version %q", rec.RoomVersion)
	}
	return dag.ParseEvent(rec.PDU, ver)
}

// JoinRemote records the join of a local user to a room that lives on other
// servers, from a send_join answer whose signatures and hashes the caller
// has checked: the auth chain and the state before the join are stored as
// outliers (each checked against its own auth events), then the join
// itself, checked against that state, becomes the room's first event in our
// DAG with the full state after it. If the room is known already the join
// is sequenced as an inbound event.
//
// The state must hold the room's m.room.create event, accepted, of the
// join's room version (and, in v12, the one the room ID names). Events of
// other rooms are dropped. Everything is appended in one log batch, and the
// room is loaded into memory from the events given, so its first use does
// not read and parse its state again.
func (s *Sequencer) JoinRemote(join *dag.Event, state, authChain []*dag.Event) (Received, error) {
	if join == nil || join.Version == nil {
		return Received{}, fmt.Errorf("%w: no event", ErrBadEvent)
	}
	if _, err := s.store.RoomVersion(join.RoomID); err == nil {
		if len(state) > 0 {
			if err := s.StoreOutliers(append(append([]*dag.Event(nil), authChain...), state...)); err != nil {
				return Received{}, err
			}
		}
		return s.Receive(join)
	} else if !errors.Is(err, projections.ErrNotFound) {
		return Received{}, err
	}
	byID := make(map[string]*dag.Event, len(state)+len(authChain))
	for _, evs := range [][]*dag.Event{authChain, state} {
		for _, ev := range evs {
			if ev != nil && ev.Version == join.Version && ev.RoomID == join.RoomID && ev.ID != join.ID {
				byID[ev.ID] = ev
			}
		}
	}
	levels := authLevels(byID)
	accepted := checkAuthLevels(levels, byID)
	st := make(stateres.StateEvents, len(state)+1)
	for _, ev := range state {
		if ev != nil && ev.StateKey != nil && byID[ev.ID] == ev && accepted[ev.ID] {
			st[ev.Key()] = ev
		}
	}
	create := st[dag.StateKeyTuple{Type: "m.room.create"}]
	if create == nil {
		return Received{}, fmt.Errorf("%w: the room state has no create event", ErrBadEvent)
	}
	if v := createRoomVersion(create.Content); v != join.Version.ID {
		return Received{}, fmt.Errorf("%w: the create event is of room version %q, the join of %q", ErrBadEvent, v, join.Version.ID)
	}
	// The join passes the rules on its own auth events (receipt check 4)
	// and on the state before it (check 5).
	as, err := stateres.CheckAuthEvents(join, fetchFrom(byID), func(id string) bool { return !accepted[id] })
	if errors.Is(err, stateres.ErrNotFound) {
		return Received{}, fmt.Errorf("%w: the answer lacks auth events of the join: %v", ErrBadEvent, err)
	}
	if err == nil {
		err = stateres.Allowed(join, as)
	}
	if err == nil {
		err = stateres.Allowed(join, st)
	}
	if err != nil {
		return Received{}, &ForbiddenError{Err: err}
	}
	recs := make([]*projections.EventRecord, 0, len(byID)+1)
	for _, level := range levels {
		for _, ev := range level {
			rec := outlierRecord(ev)
			if !accepted[ev.ID] {
				rec.Status = projections.Rejected
				rec.Reason = "auth check on send_join"
			}
			recs = append(recs, rec)
		}
	}
	st[join.Key()] = join
	rec := outlierRecord(join)
	rec.Status = projections.Accepted
	rec.State = make([]projections.StateEntry, 0, len(st))
	for k, ev := range st {
		e := projections.StateEntry{Type: k.Type, StateKey: k.StateKey, EventID: ev.ID}
		if k.Type == "m.room.member" {
			e.Membership = membershipOf(ev.Content)
		}
		rec.State = append(rec.State, e)
	}
	sort.Slice(rec.State, func(i, j int) bool {
		a, b := &rec.State[i], &rec.State[j]
		if a.Type != b.Type {
			return a.Type < b.Type
		}
		return a.StateKey < b.StateKey
	})
	recs = append(recs, rec)
	if err := s.appendJoin(recs); err != nil {
		return Received{}, err
	}
	s.installJoined(join, st)
	seq, st2, _ := s.store.EventPos(join.ID)
	return Received{EventID: join.ID, Status: st2, Seq: seq}, nil
}

// joinBatchBytes bounds one log batch of a join's records: a room's state
// can outgrow what one append may hold (log: maxRequestBytes). A variable
// for tests.
var joinBatchBytes = 32 << 20

// appendJoin appends the records of a remote join (the join's own record
// last) in as few log batches as joinBatchBytes allows, all submitted at
// once and waited for together. The create event goes into the last
// batch, with the join: the room is known (its version recorded) only once
// everything is durable, so a crash between batches leaves a join that is
// simply done again.
func (s *Sequencer) appendJoin(recs []*projections.EventRecord) error {
	for i, r := range recs[:len(recs)-1] {
		if r.Type == "m.room.create" && r.StateKey != nil && *r.StateKey == "" {
			recs = append(append(append(recs[:i:i], recs[i+1:len(recs)-1]...), r), recs[len(recs)-1])
			break
		}
	}
	out := make([]logRecord, len(recs))
	errs := make([]error, len(recs))
	Parallel(len(recs), func(i int) { out[i], errs[i] = projections.Encode(recs[i]) })
	if err := errors.Join(errs...); err != nil {
		return err
	}
	sizes := make([]int, len(out))
	for i := range out {
		sizes[i] = len(out[i].Body) + 64
	}
	var pending []*log.Pending
	for _, b := range splitBatches(sizes, joinBatchBytes, 2) {
		pending = append(pending, s.log.Submit(out[b[0]:b[1]]...))
	}
	var first error
	for _, p := range pending {
		if _, err := p.Wait(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// splitBatches cuts records of these sizes into consecutive batches
// [from, to) of at most limit bytes (a record larger than limit alone),
// keeping the last tail records together in the last batch.
func splitBatches(sizes []int, limit, tail int) [][2]int {
	var out [][2]int
	start, size := 0, 0
	for i, n := range sizes {
		if size > 0 && size+n > limit && i <= len(sizes)-tail {
			out = append(out, [2]int{start, i})
			start, size = i, 0
		}
		size += n
	}
	if start < len(sizes) {
		out = append(out, [2]int{start, len(sizes)})
	}
	return out
}

// authLevels orders events so that each comes after the auth events of it
// that are given: level 0 has none of its auth events among them, level n
// only auth events of levels below n. Within a level events are ordered by
// (depth, ID). An event on an auth cycle (possible only with the opaque
// IDs of v1 and v2) never gets a level and is dropped.
func authLevels(byID map[string]*dag.Event) [][]*dag.Event {
	const onPath = -2
	level := make(map[string]int, len(byID))
	type frame struct {
		ev   *dag.Event
		deps []string
		i    int
		max  int
	}
	var stack []frame
	for _, root := range byID {
		if _, ok := level[root.ID]; ok {
			continue
		}
		level[root.ID] = onPath
		stack = append(stack[:0], frame{ev: root, deps: authOf(root), max: -1})
		for len(stack) > 0 {
			f := &stack[len(stack)-1]
			if f.i < len(f.deps) {
				d := f.deps[f.i]
				f.i++
				dep, ok := byID[d]
				if !ok {
					continue
				}
				switch l, seen := level[d]; {
				case !seen:
					level[d] = onPath
					stack = append(stack, frame{ev: dep, deps: authOf(dep), max: -1})
				case l == onPath || l == -1:
					f.max = math.MaxInt // a cycle: no level
				default:
					f.max = max(f.max, l)
				}
				continue
			}
			l := f.max + 1
			if f.max == math.MaxInt {
				l = -1
			}
			level[f.ev.ID] = l
			stack = stack[:len(stack)-1]
			if len(stack) > 0 {
				p := &stack[len(stack)-1]
				if l < 0 {
					p.max = math.MaxInt
				} else if p.max != math.MaxInt {
					p.max = max(p.max, l)
				}
			}
		}
	}
	var out [][]*dag.Event
	for id, l := range level {
		if l < 0 {
			continue
		}
		for len(out) <= l {
			out = append(out, nil)
		}
		out[l] = append(out[l], byID[id])
	}
	for _, evs := range out {
		sort.Slice(evs, func(i, j int) bool {
			if evs[i].Depth != evs[j].Depth {
				return evs[i].Depth < evs[j].Depth
			}
			return evs[i].ID < evs[j].ID
		})
	}
	return out
}

// checkAuthLevels checks every event against its own auth events ("Checks
// performed on receipt of a PDU", 4: "Passes authorization rules based on
// the event's auth events, otherwise it is rejected"), level by level so an
// event's auth events are judged before it; the events of a level do not
// depend on each other and are checked in parallel. It returns the
// events that pass. An event whose auth events are not all among the
// events given fails: the resident server must send the whole auth chain.
func checkAuthLevels(levels [][]*dag.Event, byID map[string]*dag.Event) map[string]bool {
	accepted := make(map[string]bool, len(byID))
	rejected := func(id string) bool { return !accepted[id] }
	fetch := fetchFrom(byID)
	// accepted is only read while a level is checked (an event's auth
	// events are all of lower levels) and written between levels.
	for _, evs := range levels {
		ok := make([]bool, len(evs))
		Parallel(len(evs), func(i int) {
			as, err := stateres.CheckAuthEvents(evs[i], fetch, rejected)
			if err == nil {
				err = stateres.Allowed(evs[i], as)
			}
			ok[i] = err == nil
		})
		for i, ev := range evs {
			if ok[i] {
				accepted[ev.ID] = true
			}
		}
	}
	return accepted
}

// fetchFrom is a stateres fetcher over the given events.
func fetchFrom(byID map[string]*dag.Event) func(string) (*dag.Event, error) {
	return func(id string) (*dag.Event, error) {
		if ev, ok := byID[id]; ok {
			return ev, nil
		}
		return nil, fmt.Errorf("rooms: %s: %w", id, stateres.ErrNotFound)
	}
}

// createRoomVersion is content.room_version of a create event; "1" when
// absent ("If no room version is specified, 1 is assumed").
func createRoomVersion(content json.RawMessage) string {
	var c struct {
		V *string `json:"room_version"`
	}
	if json.Unmarshal(content, &c) != nil {
		return ""
	}
	if c.V == nil {
		return "1"
	}
	return *c.V
}

// installJoined loads a room just joined through JoinRemote into memory
// from the events it was joined with: what fill would read back from the
// projections (state and the join as the only extremity), without reading
// and parsing every state event again. It also records the state after the
// join for the federation walks. A room that was loaded meanwhile is left
// alone.
func (s *Sequencer) installJoined(join *dag.Event, st stateres.StateEvents) {
	s.mu.Lock()
	r, ok := s.rooms[join.RoomID]
	if !ok {
		r = &room{id: join.RoomID}
		s.rooms[join.RoomID] = r
	}
	s.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.version != nil {
		return
	}
	state := make(map[dag.StateKeyTuple]*dag.Event, len(st))
	after := make(stateres.StateMap, len(st))
	for k, ev := range st {
		state[k] = ev
		after[k] = ev.ID
	}
	r.version, r.state, r.extremities, r.pendingTxn, r.turn = join.Version, state, map[string]int64{join.ID: join.Depth}, map[string]string{}, closedTurn
	if c := s.cache(r.id); c.after[join.ID] == nil {
		c.after[join.ID] = after
	}
}

// RecordRemoteMembership records a membership event of a local user in a
// room this server does not take part in (no create event held): an
// invite received over federation, or the leave that rejects it. The
// event is accepted as it stands (the inviting server vouched for it; we
// cannot check it against a state we do not have) and changes only that
// user's membership, so the invite shows in /sync and a later join goes
// through JoinRemote. For a room the server knows, it is an error.
func (s *Sequencer) RecordRemoteMembership(ev *dag.Event) (Received, error) {
	if ev == nil || ev.Version == nil || ev.Type != "m.room.member" || ev.StateKey == nil {
		return Received{}, fmt.Errorf("%w: not a membership event", ErrBadEvent)
	}
	if _, err := s.store.RoomVersion(ev.RoomID); err == nil {
		return Received{}, fmt.Errorf("%w: the room is known here", ErrBadEvent)
	} else if !errors.Is(err, projections.ErrNotFound) {
		return Received{}, err
	}
	if seq, st, err := s.store.EventPos(ev.ID); err == nil {
		return Received{EventID: ev.ID, Status: st, Seq: seq}, nil
	}
	rec := outlierRecord(ev)
	rec.Status = projections.Accepted
	// Not part of a DAG we hold: no prev_events, so it never becomes a
	// forward extremity others must build on.
	rec.PrevEvents = nil
	rec.State = []projections.StateEntry{{Type: ev.Type, StateKey: *ev.StateKey, EventID: ev.ID, Membership: rec.Membership}}
	if err := s.appendRecords([]*projections.EventRecord{rec}); err != nil {
		return Received{}, err
	}
	seq, st, _ := s.store.EventPos(ev.ID)
	return Received{EventID: ev.ID, Status: st, Seq: seq}, nil
}
