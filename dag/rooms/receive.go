package rooms

// Inbound PDUs: events other servers made, sequenced into the room's DAG
// with the checks of server-server-api, "Checks performed on receipt of a
// PDU" (4 to 6; the caller has done 1 to 3: format, signatures, hashes).
// The verdict is captured in the EventRecord (Status, Reason) so replay
// never re-runs it; when the room has several forward extremities the
// resolved current state goes into EventRecord.State.

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"engram/dag"
	"engram/projections"
	"engram/stateres"
)

// fedCache is a room's federation working set, guarded by the room's lock:
// the state after each event it has needed (immutable maps, shared between
// events that do not change state), parsed events, and the verdicts of
// events received but possibly not yet durable.
type fedCache struct {
	after  map[string]stateres.StateMap
	events map[string]*dag.Event
	seen   map[string]projections.Status
}

type cacheKey struct {
	s    *Sequencer
	room string
}

// fedCaches holds every room's fedCache. It lives beside the Sequencer
// rather than in it so that federation needs no field in rooms.go.
var fedCaches sync.Map

func (s *Sequencer) cache(room string) *fedCache {
	k := cacheKey{s, room}
	if c, ok := fedCaches.Load(k); ok {
		return c.(*fedCache)
	}
	c, _ := fedCaches.LoadOrStore(k, &fedCache{after: map[string]stateres.StateMap{}, events: map[string]*dag.Event{}, seen: map[string]projections.Status{}})
	return c.(*fedCache)
}

// Received is the sequencer's verdict on an inbound event.
type Received struct {
	EventID string
	Status  projections.Status
	Reason  string
	Seq     uint64
	// Known: the event was already held; nothing was appended.
	Known bool
}

// Known reports whether the server holds an event in a room's DAG (not as
// an outlier).
func (s *Sequencer) Known(id string) bool {
	_, st, err := s.store.EventPos(id)
	return err == nil && st != projections.Outlier
}

// fetch returns an event the server holds, parsed. Called with the room lock.
func (s *Sequencer) fetch(c *fedCache, id string) (*dag.Event, error) {
	if ev, ok := c.events[id]; ok {
		return ev, nil
	}
	rec, _, err := s.store.Event(id)
	if err != nil {
		if errors.Is(err, projections.ErrNotFound) {
			return nil, fmt.Errorf("rooms: event %s: %w", id, stateres.ErrNotFound)
		}
		return nil, err
	}
	ver := dag.Version(rec.RoomVersion)
	if ver == nil {
		return nil, fmt.Errorf("rooms: event %s has unknown room version %q", id, rec.RoomVersion)
	}
	ev, err := dag.ParseEvent(rec.PDU, ver)
	if err != nil {
		return nil, err
	}
	c.events[id] = ev
	return ev, nil
}

func (s *Sequencer) status(c *fedCache, id string) (projections.Status, bool) {
	if st, ok := c.seen[id]; ok {
		return st, true
	}
	_, st, err := s.store.EventPos(id)
	if err != nil {
		return 0, false
	}
	return st, true
}

func (s *Sequencer) rejectedFn(c *fedCache) func(string) bool {
	return func(id string) bool {
		st, ok := s.status(c, id)
		return ok && st == projections.Rejected
	}
}

// stateAfter returns the state after an event of the room's DAG: the
// resolution of the states after its prev_events plus the event itself if
// it is an accepted (or soft-failed) state event. An event whose
// prev_events the server does not hold (the join of a remote room) is a
// base: its state is the full state its record carries. Called with the
// room lock; iterative, so deep DAGs cannot overflow the stack.
func (s *Sequencer) stateAfter(c *fedCache, ver *dag.RoomVersion, id string) (stateres.StateMap, error) {
	if m, ok := c.after[id]; ok {
		return m, nil
	}
	stack := []string{id}
	for len(stack) > 0 {
		if len(stack) > 1_000_000 {
			return nil, errors.New("rooms: DAG walk too deep")
		}
		top := stack[len(stack)-1]
		if _, ok := c.after[top]; ok {
			stack = stack[:len(stack)-1]
			continue
		}
		rec, err := s.record(top)
		if err != nil {
			return nil, fmt.Errorf("rooms: state after %s: %w", top, err)
		}
		var pending, known []string
		base := len(rec.PrevEvents) == 0
		for _, p := range rec.PrevEvents {
			if _, ok := c.after[p]; ok {
				known = append(known, p)
				continue
			}
			st, ok := s.status(c, p)
			if !ok || st == projections.Outlier {
				continue // not in our DAG: use what we have
			}
			pending = append(pending, p)
		}
		if len(pending) > 0 {
			stack = append(stack, pending...)
			continue
		}
		if len(known) == 0 && !base {
			base = true
		}
		var before stateres.StateMap
		if base {
			before = stateres.StateMap{}
			for _, e := range rec.State {
				if e.EventID != "" {
					before[dag.StateKeyTuple{Type: e.Type, StateKey: e.StateKey}] = e.EventID
				}
			}
		} else {
			sets := make([]stateres.StateMap, 0, len(known))
			for _, p := range known {
				sets = append(sets, c.after[p])
			}
			if before, err = s.resolve(c, ver, sets); err != nil {
				return nil, err
			}
		}
		c.after[top] = withEvent(before, rec)
		stack = stack[:len(stack)-1]
	}
	return c.after[id], nil
}

// withEvent is the state after rec given the state before it.
func withEvent(before stateres.StateMap, rec *projections.EventRecord) stateres.StateMap {
	if rec.StateKey == nil || rec.Status == projections.Rejected || rec.Status == projections.Outlier {
		return before
	}
	k := dag.StateKeyTuple{Type: rec.Type, StateKey: *rec.StateKey}
	if before[k] == rec.EventID {
		return before
	}
	out := make(stateres.StateMap, len(before)+1)
	for kk, v := range before {
		out[kk] = v
	}
	out[k] = rec.EventID
	return out
}

// resolve resolves state sets, skipping the work when they agree.
func (s *Sequencer) resolve(c *fedCache, ver *dag.RoomVersion, sets []stateres.StateMap) (stateres.StateMap, error) {
	uniq := sets[:0:0]
outer:
	for _, m := range sets {
		for _, u := range uniq {
			if sameState(m, u) {
				continue outer
			}
		}
		uniq = append(uniq, m)
	}
	switch len(uniq) {
	case 0:
		return stateres.StateMap{}, nil
	case 1:
		return uniq[0], nil
	}
	return stateres.ResolveWith(ver, uniq, func(id string) (*dag.Event, error) { return s.fetch(c, id) },
		stateres.Options{Rejected: s.rejectedFn(c), AllowMissing: true})
}

func sameState(a, b stateres.StateMap) bool {
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

// mapState adapts a StateMap to the auth rules.
func (s *Sequencer) mapState(c *fedCache, m stateres.StateMap) stateres.AuthState {
	return stateres.AuthStateFunc(func(k dag.StateKeyTuple) *dag.Event {
		id, ok := m[k]
		if !ok {
			return nil
		}
		ev, err := s.fetch(c, id)
		if err != nil {
			return nil
		}
		return ev
	})
}

// Receive sequences one inbound event of a known room whose format,
// signatures and hashes the caller has checked. Its prev_events should be
// held already (the caller fetches missing ones first); those still missing
// are left out of the state before it. An error means nothing was recorded:
// a *stateres.MissingEventsError names auth events to fetch first.
func (s *Sequencer) Receive(ev *dag.Event) (Received, error) {
	if ev == nil || ev.Version == nil {
		return Received{}, fmt.Errorf("%w: no event", ErrBadEvent)
	}
	r, err := s.load(ev.RoomID)
	if err != nil {
		return Received{}, err
	}
	c := s.cache(r.id)
	if ev.Version != r.version {
		r.mu.Unlock()
		return Received{}, fmt.Errorf("%w: event of room version %s in a room of version %s", ErrBadEvent, ev.Version.ID, r.version.ID)
	}
	if st, ok := c.seen[ev.ID]; ok {
		r.mu.Unlock()
		return Received{EventID: ev.ID, Status: st, Known: true}, nil
	}
	if _, st, err := s.store.EventPos(ev.ID); err == nil && st != projections.Outlier {
		r.mu.Unlock()
		return Received{EventID: ev.ID, Status: st, Known: true}, nil
	}
	rec, err := s.judge(r, c, ev)
	if err != nil {
		r.mu.Unlock()
		return Received{}, err
	}
	return s.commit(r, c, ev, rec)
}

// judge runs the receipt checks and builds the event's record, moving the
// room's memory on. Called with the room lock.
func (s *Sequencer) judge(r *room, c *fedCache, ev *dag.Event) (*projections.EventRecord, error) {
	s.seedCurrent(r, c) // remote.go: no walk from the create event
	var sets []stateres.StateMap
	for _, p := range ev.PrevEvents {
		if st, ok := s.status(c, p); !ok || st == projections.Outlier {
			continue
		}
		m, err := s.stateAfter(c, r.version, p)
		if err != nil {
			return nil, err
		}
		sets = append(sets, m)
	}
	var before stateres.StateMap
	var stateBefore stateres.AuthState
	if len(sets) > 0 {
		var err error
		if before, err = s.resolve(c, r.version, sets); err != nil {
			return nil, err
		}
		stateBefore = s.mapState(c, before)
	} else {
		// No prev event held: the best view of the state before it is the
		// current state; check 5 is skipped.
		before = currentMap(r)
	}
	c.events[ev.ID] = ev
	v, err := stateres.CheckReceipt(stateres.Receipt{
		Event:        ev,
		Fetch:        func(id string) (*dag.Event, error) { return s.fetch(c, id) },
		Rejected:     s.rejectedFn(c),
		StateBefore:  stateBefore,
		CurrentState: stateres.StateEvents(r.state),
	})
	if err != nil {
		delete(c.events, ev.ID)
		return nil, err
	}
	rec := &projections.EventRecord{
		RoomID: ev.RoomID, EventID: ev.ID, RoomVersion: ev.Version.ID, Type: ev.Type, StateKey: ev.StateKey,
		Sender: ev.Sender, Redacts: ev.Redacts, PrevEvents: ev.PrevEvents, Depth: ev.Depth, PDU: ev.Raw,
	}
	if ev.Type == "m.room.member" {
		rec.Membership = membershipOf(ev.Content)
	}
	switch v.Outcome {
	case stateres.Accepted:
		rec.Status = projections.Accepted
	case stateres.SoftFailed:
		rec.Status = projections.SoftFailed
	default:
		rec.Status = projections.Rejected
	}
	if v.Reason != nil {
		rec.Reason = fmt.Sprintf("check %d: %v", v.Check, v.Reason)
	}
	c.after[ev.ID] = withEvent(before, rec)
	c.seen[ev.ID] = rec.Status
	if rec.Status != projections.Accepted {
		return rec, nil
	}
	// The new forward extremities and the current state across them.
	for _, p := range ev.PrevEvents {
		delete(r.extremities, p)
	}
	r.extremities[ev.ID] = ev.Depth
	cur := c.after[ev.ID]
	if len(r.extremities) > 1 {
		sets := make([]stateres.StateMap, 0, len(r.extremities))
		for _, id := range sortedIDs(r.extremities) {
			m, err := s.stateAfter(c, r.version, id)
			if err != nil {
				return nil, err
			}
			sets = append(sets, m)
		}
		if cur, err = s.resolve(c, r.version, sets); err != nil {
			return nil, err
		}
	}
	delta, err := s.setState(r, c, cur)
	if err != nil {
		return nil, err
	}
	simple := ev.IsState() && len(delta) == 1 && delta[0].EventID == ev.ID
	if !ev.IsState() && len(delta) == 0 {
		simple = true
	}
	if !simple {
		if len(delta) == 0 {
			// The event lost resolution: say "nothing changes" explicitly
			// (a nil State would make it current).
			create := r.state[dag.StateKeyTuple{Type: "m.room.create"}]
			if create != nil {
				delta = []projections.StateEntry{{Type: "m.room.create", EventID: create.ID}}
			}
		}
		rec.State = delta
	}
	return rec, nil
}

func sortedIDs(m map[string]int64) []string {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

func currentMap(r *room) stateres.StateMap {
	m := make(stateres.StateMap, len(r.state))
	for k, ev := range r.state {
		m[k] = ev.ID
	}
	return m
}

// setState makes cur the room's current state and returns the changes,
// sorted by (type, state key).
func (s *Sequencer) setState(r *room, c *fedCache, cur stateres.StateMap) ([]projections.StateEntry, error) {
	var delta []projections.StateEntry
	for k, id := range cur {
		if old, ok := r.state[k]; ok && old.ID == id {
			continue
		}
		ev, err := s.fetch(c, id)
		if err != nil {
			return nil, err
		}
		e := projections.StateEntry{Type: k.Type, StateKey: k.StateKey, EventID: id}
		if k.Type == "m.room.member" {
			e.Membership = membershipOf(ev.Content)
		}
		delta = append(delta, e)
		r.state[k] = ev
	}
	for k := range r.state {
		if _, ok := cur[k]; !ok {
			delta = append(delta, projections.StateEntry{Type: k.Type, StateKey: k.StateKey})
			delete(r.state, k)
		}
	}
	sort.Slice(delta, func(i, j int) bool {
		if delta[i].Type != delta[j].Type {
			return delta[i].Type < delta[j].Type
		}
		return delta[i].StateKey < delta[j].StateKey
	})
	return delta, nil
}

// commit submits a judged record in the room's turn, releases the room lock
// and waits until it is durable.
func (s *Sequencer) commit(r *room, c *fedCache, ev *dag.Event, rec *projections.EventRecord) (Received, error) {
	lrec, err := projections.Encode(rec)
	if err != nil {
		r.mu.Unlock()
		s.forget(r)
		return Received{}, err
	}
	prevTurn, myTurn := r.turn, make(chan struct{})
	r.turn = myTurn
	r.mu.Unlock()
	<-prevTurn
	p := s.log.Submit(lrec)
	close(myTurn)
	seq, err := p.Wait()
	if err != nil {
		return Received{}, err
	}
	return Received{EventID: ev.ID, Status: rec.Status, Reason: rec.Reason, Seq: seq}, nil
}

// StoreOutliers records events the server needs to hold outside the room's
// DAG (auth events fetched to check another event). Events already held
// are skipped.
func (s *Sequencer) StoreOutliers(evs []*dag.Event) error {
	var recs []*projections.EventRecord
	seen := map[string]bool{}
	for _, ev := range evs {
		if ev == nil || ev.Version == nil || seen[ev.ID] {
			continue
		}
		seen[ev.ID] = true
		if _, _, err := s.store.EventPos(ev.ID); err == nil {
			continue
		}
		recs = append(recs, outlierRecord(ev))
	}
	if len(recs) == 0 {
		return nil
	}
	return s.appendRecords(recs)
}

func outlierRecord(ev *dag.Event) *projections.EventRecord {
	rec := &projections.EventRecord{
		RoomID: ev.RoomID, EventID: ev.ID, RoomVersion: ev.Version.ID, Type: ev.Type, StateKey: ev.StateKey,
		Sender: ev.Sender, Redacts: ev.Redacts, PrevEvents: ev.PrevEvents, Depth: ev.Depth,
		Status: projections.Outlier, PDU: ev.Raw,
	}
	if ev.Type == "m.room.member" {
		rec.Membership = membershipOf(ev.Content)
	}
	return rec
}

func (s *Sequencer) appendRecords(recs []*projections.EventRecord) error {
	out := make([]logRecord, 0, len(recs))
	for _, r := range recs {
		lr, err := projections.Encode(r)
		if err != nil {
			return err
		}
		out = append(out, lr)
	}
	_, err := s.log.Submit(out...).Wait()
	return err
}

// record reads an event's record. The walks only ask for events that are
// held or in flight: a local event is an extremity from the moment it is
// sequenced, before it is durable, and projection rows become visible a
// moment before the log's last position moves on; so a missing event is
// waited for, briefly.
func (s *Sequencer) record(id string) (*projections.EventRecord, error) {
	seq, _, err := s.store.EventPos(id)
	for i := 0; i < 300 && errors.Is(err, projections.ErrNotFound); i++ {
		select {
		case <-s.log.Changed():
		case <-time.After(10 * time.Millisecond):
		}
		seq, _, err = s.store.EventPos(id)
	}
	if err != nil {
		return nil, err
	}
	for i := 0; i < 200 && seq > s.log.Last(); i++ {
		select {
		case <-s.log.Changed():
		case <-time.After(10 * time.Millisecond):
		}
	}
	rec, err := s.store.Record(seq)
	if err != nil {
		return nil, fmt.Errorf("record %d (last %d): %w", seq, s.log.Last(), err)
	}
	return rec, nil
}
