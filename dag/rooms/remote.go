package rooms

// Federation reads and joins: event templates for make_join/make_leave, the
// state at an event, auth chains, and joining a room that lives on other
// servers.

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"

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
	return s.stateAfter(s.cache(r.id), r.version, eventID)
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
func (s *Sequencer) AuthChain(ids []string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	stack := []string{}
	for _, id := range ids {
		rec, _, err := s.store.Event(id)
		if err != nil {
			continue
		}
		ev, err := parseRecord(rec)
		if err != nil {
			continue
		}
		stack = append(stack, authOf(ev)...)
	}
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[id] {
			continue
		}
		seen[id] = true
		rec, _, err := s.store.Event(id)
		if err != nil {
			continue
		}
		out = append(out, id)
		ev, err := parseRecord(rec)
		if err != nil {
			continue
		}
		stack = append(stack, authOf(ev)...)
	}
	sort.Strings(out)
	return out, nil
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
// servers, from a send_join answer: the auth chain and the state before the
// join are stored as outliers (each checked against its own auth events),
// then the join itself, checked against that state, becomes the room's first
// event in our DAG with the full state after it. If the room is known
// already the join is sequenced as an inbound event.
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
	byID := map[string]*dag.Event{}
	for _, ev := range authChain {
		byID[ev.ID] = ev
	}
	for _, ev := range state {
		byID[ev.ID] = ev
	}
	fetch := func(id string) (*dag.Event, error) {
		if ev, ok := byID[id]; ok {
			return ev, nil
		}
		return nil, fmt.Errorf("rooms: %s: %w", id, stateres.ErrNotFound)
	}
	rejected := map[string]bool{}
	isRejected := func(id string) bool { return rejected[id] }
	// Check every event on its own auth events, in depth order so auth
	// events are judged before the events they authorise.
	all := make([]*dag.Event, 0, len(byID))
	for _, ev := range byID {
		all = append(all, ev)
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].Depth != all[j].Depth {
			return all[i].Depth < all[j].Depth
		}
		return all[i].ID < all[j].ID
	})
	for _, ev := range all {
		as, err := stateres.CheckAuthEvents(ev, fetch, isRejected)
		if err == nil {
			err = stateres.Allowed(ev, as)
		}
		if err != nil {
			rejected[ev.ID] = true
		}
	}
	st := stateres.StateEvents{}
	for _, ev := range state {
		if ev.StateKey != nil && !rejected[ev.ID] && ev.RoomID == join.RoomID {
			st[ev.Key()] = ev
		}
	}
	if st[dag.StateKeyTuple{Type: "m.room.create"}] == nil {
		return Received{}, fmt.Errorf("%w: the room state has no create event", ErrBadEvent)
	}
	if err := stateres.Allowed(join, st); err != nil {
		return Received{}, &ForbiddenError{Err: err}
	}
	recs := make([]*projections.EventRecord, 0, len(all)+1)
	for _, ev := range all {
		if ev.ID == join.ID {
			continue
		}
		rec := outlierRecord(ev)
		if rejected[ev.ID] {
			rec.Status = projections.Rejected
			rec.Reason = "auth check on send_join"
		}
		recs = append(recs, rec)
	}
	st[join.Key()] = join
	rec := outlierRecord(join)
	rec.Status = projections.Accepted
	keys := make([]dag.StateKeyTuple, 0, len(st))
	for k := range st {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].Type != keys[j].Type {
			return keys[i].Type < keys[j].Type
		}
		return keys[i].StateKey < keys[j].StateKey
	})
	for _, k := range keys {
		e := projections.StateEntry{Type: k.Type, StateKey: k.StateKey, EventID: st[k].ID}
		if k.Type == "m.room.member" {
			e.Membership = membershipOf(st[k].Content)
		}
		rec.State = append(rec.State, e)
	}
	recs = append(recs, rec)
	if err := s.appendRecords(recs); err != nil {
		return Received{}, err
	}
	// Drop any half-loaded entry so the next use reads the new room.
	s.mu.Lock()
	if r, ok := s.rooms[join.RoomID]; ok && r.version == nil {
		delete(s.rooms, join.RoomID)
	}
	s.mu.Unlock()
	seq, st2, _ := s.store.EventPos(join.ID)
	return Received{EventID: join.ID, Status: st2, Seq: seq}, nil
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
