package rooms

// Backfill: history older than anything the server holds, fetched from
// other servers when a client paginates past the start of a room joined
// over federation. Backfilled events are historical: they are stored as
// outliers (never in the forward timeline, the current state or the
// forward extremities, and outside the DAG the sequencer walks), and a
// projections.BackfillRecord gives them their place in the room's backward
// order (see projections/backfill.go).
//
// Checks, as server-server-api "Checks performed on receipt of a PDU" asks
// of every PDU: the caller checks format, signatures and hashes (1-3);
// here each event is checked against its auth events (4). Check 5 needs
// the state before the event, which the server does not have for history
// it never held; check 6 (soft failure) is about current state and does
// not apply to history.

import (
	"encoding/json"
	"errors"
	"math"
	"sort"
	"sync"

	"engram/dag"
	"engram/projections"
	"engram/stateres"
)

// maxBackfill bounds the events one Backfill call stores.
const maxBackfill = 1000

// frontierScan is how many of a room's first timeline events are looked at
// for prev_events the server does not hold, before anything was backfilled.
const frontierScan = 100

// BackfillResult is what a Backfill call did.
type BackfillResult struct {
	// Added is how many events joined the room's backfilled history.
	Added int
	// Rejected is how many failed the auth checks (stored as rejected).
	Rejected int
	// Missing are auth events the server does not hold: the events that
	// need them were left out. Fetch them (StoreOutliers) and call again.
	Missing []string
	// Frontier is the room's backward extremities afterwards.
	Frontier []string
}

// backfillLocks serialises backfills of a room (an event must not be
// added twice by two concurrent calls; the room lock is not held while the
// batch is made durable).
var backfillLocks sync.Map // cacheKey -> *sync.Mutex

func (s *Sequencer) backfillLock(room string) *sync.Mutex {
	m, _ := backfillLocks.LoadOrStore(cacheKey{s, room}, &sync.Mutex{})
	return m.(*sync.Mutex)
}

// InHistory reports whether an event is in a room's history as this server
// serves it: sequenced into the DAG (whatever the verdict), or backfilled.
// An event held only as an outlier (an auth event, the state of a join) is
// not: backfill may still bring it into the history.
func (s *Sequencer) InHistory(id string) (bool, error) {
	_, st, err := s.store.EventPos(id)
	if errors.Is(err, projections.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if st != projections.Outlier {
		return true, nil
	}
	_, ok, err := s.store.BackfillOrd(id)
	return ok, err
}

// BackfillFrontier returns a room's backward extremities: the events named
// in prev_events of the room's earliest held events that are not in its
// history. Empty for a room whose history starts with its create event
// here, or once backfill reached it.
func (s *Sequencer) BackfillFrontier(room string) ([]string, error) {
	f, ok, err := s.store.BackfillFrontier(room)
	if err != nil || ok {
		return f, err
	}
	seqs, err := s.store.Timeline(room, 0, math.MaxUint64, false, frontierScan)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	for i, q := range seqs {
		rec, err := s.store.Record(q)
		if err != nil {
			return nil, err
		}
		if i == 0 && rec.Type == "m.room.create" {
			return nil, nil // created here, or history already complete
		}
		for _, p := range rec.PrevEvents {
			if seen[p] {
				continue
			}
			seen[p] = true
			in, err := s.InHistory(p)
			if err != nil {
				return nil, err
			}
			if !in {
				out = append(out, p)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// Backfill adds events of a room's history (signatures and hashes checked
// by the caller) that the server does not hold yet: each is checked
// against its auth events, and the batch is appended in one go, newest
// first, as outliers plus a BackfillRecord. Events of other rooms and
// events already in the history are skipped, so a repeated call adds
// nothing twice.
func (s *Sequencer) Backfill(room string, evs []*dag.Event) (BackfillResult, error) {
	bl := s.backfillLock(room)
	bl.Lock()
	defer bl.Unlock()
	r, err := s.load(room)
	if err != nil {
		return BackfillResult{}, err
	}
	c := s.cache(r.id)
	res, recs, err := s.judgeBackfill(r, c, evs)
	if err != nil || len(recs) == 0 {
		r.mu.Unlock()
		return res, err
	}
	// Take the room's turn so these records land after any event of the
	// room already sequenced (a concurrent Receive of one of them then
	// wins: its record comes later and the events index follows it).
	prevTurn, myTurn := r.turn, make(chan struct{})
	r.turn = myTurn
	r.mu.Unlock()
	<-prevTurn
	p := s.log.Submit(recs...)
	close(myTurn)
	if _, err := p.Wait(); err != nil {
		return BackfillResult{}, err
	}
	return res, nil
}

// judgeBackfill checks a batch and builds its records. Called with the
// room lock.
func (s *Sequencer) judgeBackfill(r *room, c *fedCache, evs []*dag.Event) (BackfillResult, []logRecord, error) {
	var res BackfillResult
	frontier, err := s.BackfillFrontier(r.id)
	if err != nil {
		return res, nil, err
	}
	// The candidates: new events of this room, at most maxBackfill.
	var cands []*dag.Event
	seenIDs := map[string]bool{}
	for _, ev := range evs {
		if len(cands) >= maxBackfill {
			break
		}
		if ev == nil || ev.Version != r.version || ev.RoomID != r.id || seenIDs[ev.ID] {
			continue
		}
		seenIDs[ev.ID] = true
		if _, ok := c.seen[ev.ID]; ok {
			continue // being sequenced into the DAG right now
		}
		in, err := s.InHistory(ev.ID)
		if err != nil {
			return res, nil, err
		}
		if !in {
			cands = append(cands, ev)
		}
	}
	// Only history is taken: events the frontier names, and, recursively,
	// their prev_events. Anything else a server sent (newer events, junk)
	// has no place in the backward order and is dropped.
	sort.Slice(cands, func(i, j int) bool {
		if cands[i].Depth != cands[j].Depth {
			return cands[i].Depth > cands[j].Depth
		}
		return cands[i].ID < cands[j].ID
	})
	wanted := map[string]bool{}
	for _, id := range frontier {
		wanted[id] = true
	}
	batch := map[string]*dag.Event{}
	var pending []*dag.Event
	for _, ev := range cands {
		if !wanted[ev.ID] {
			continue
		}
		for _, p := range ev.PrevEvents {
			wanted[p] = true
		}
		batch[ev.ID] = ev
		pending = append(pending, ev)
	}
	sort.Slice(pending, func(i, j int) bool {
		if pending[i].Depth != pending[j].Depth {
			return pending[i].Depth < pending[j].Depth
		}
		return pending[i].ID < pending[j].ID
	})

	// Judge in passes, so an event whose auth events are in the batch is
	// judged after them whatever the depths say; what is left when a pass
	// makes no progress lacks auth events nobody has given us.
	judged := map[string]*dag.Event{}
	rejected := map[string]string{}
	isRejected := func(id string) bool {
		if _, ok := rejected[id]; ok {
			return true
		}
		st, ok := s.status(c, id)
		return ok && st == projections.Rejected
	}
	var missing map[string]bool
	for len(pending) > 0 {
		var next []*dag.Event
		missing = map[string]bool{}
		for _, ev := range pending {
			fetch := func(id string) (*dag.Event, error) {
				if e, ok := judged[id]; ok {
					return e, nil
				}
				if batch[id] != nil {
					return nil, stateres.ErrNotFound // not judged yet
				}
				return s.fetch(c, id)
			}
			as, err := stateres.CheckAuthEvents(ev, fetch, isRejected)
			var me *stateres.MissingEventsError
			if errors.As(err, &me) {
				for _, id := range me.IDs {
					if batch[id] == nil {
						missing[id] = true
					}
				}
				next = append(next, ev)
				continue
			}
			if err == nil {
				err = stateres.Allowed(ev, as)
			}
			if err != nil {
				if !stateres.IsDenied(err) {
					return res, nil, err // could not read what the rules need
				}
				rejected[ev.ID] = err.Error()
			}
			judged[ev.ID] = ev
		}
		if len(next) == len(pending) {
			break
		}
		pending = next
	}
	for id := range missing {
		res.Missing = append(res.Missing, id)
	}
	sort.Strings(res.Missing)

	// The new frontier: what was missing before and still is, and the
	// prev_events of the accepted events that are not in the history.
	var accepted []*dag.Event
	for _, ev := range judged {
		if _, bad := rejected[ev.ID]; !bad {
			accepted = append(accepted, ev)
		}
	}
	// Newest first: the backward order of the batch.
	sort.Slice(accepted, func(i, j int) bool {
		if accepted[i].Depth != accepted[j].Depth {
			return accepted[i].Depth > accepted[j].Depth
		}
		return accepted[i].ID < accepted[j].ID
	})
	fset := map[string]bool{}
	for _, id := range frontier {
		fset[id] = true
	}
	for _, ev := range accepted {
		for _, p := range ev.PrevEvents {
			fset[p] = true
		}
	}
	var newFrontier []string
	for id := range fset {
		if judged[id] != nil {
			continue
		}
		in, err := s.InHistory(id)
		if err != nil {
			return res, nil, err
		}
		if !in {
			newFrontier = append(newFrontier, id)
		}
	}
	sort.Strings(newFrontier)
	res.Frontier = newFrontier
	if len(judged) == 0 {
		return res, nil, nil
	}

	var recs []logRecord
	// Rejected events are recorded (so they are not fetched again), unless
	// the server holds them as outliers already.
	var rejIDs []string
	for id := range rejected {
		rejIDs = append(rejIDs, id)
	}
	sort.Strings(rejIDs)
	for _, id := range rejIDs {
		res.Rejected++
		if _, _, err := s.store.EventPos(id); err == nil {
			continue
		}
		rec := outlierRecord(judged[id])
		rec.Status = projections.Rejected
		rec.Reason = "backfill: " + rejected[id]
		lr, err := projections.Encode(rec)
		if err != nil {
			return res, nil, err
		}
		recs = append(recs, lr)
	}
	bf := &projections.BackfillRecord{RoomID: r.id, Frontier: newFrontier}
	for _, ev := range accepted {
		lr, err := projections.Encode(outlierRecord(ev))
		if err != nil {
			return res, nil, err
		}
		recs = append(recs, lr)
		bf.Events = append(bf.Events, backfillEvent(ev))
	}
	res.Added = len(accepted)
	lr, err := projections.Encode(bf)
	if err != nil {
		return res, nil, err
	}
	return res, append(recs, lr), nil
}

// backfillEvent derives what the backfill projection keeps of an event.
func backfillEvent(ev *dag.Event) projections.BackfillEvent {
	e := projections.BackfillEvent{EventID: ev.ID, Depth: ev.Depth}
	if ev.StateKey == nil {
		return e
	}
	switch ev.Type {
	case "m.room.history_visibility":
		if *ev.StateKey == "" {
			var c struct {
				V any `json:"history_visibility"`
			}
			_ = json.Unmarshal(ev.Content, &c)
			s, _ := c.V.(string)
			e.Vis = projections.VisibilityCode(s)
		}
	case "m.room.member":
		if code := projections.MembershipCode(membershipOf(ev.Content)); code != 0 {
			e.Member, e.Membership = *ev.StateKey, code
		}
	}
	return e
}
