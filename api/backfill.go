package api

// Backfilled history in the client API. A room this server joined over
// federation starts, here, at the join: the events before it live on other
// servers. When a client paginates /messages backwards past the start of
// the room's timeline, the server asks the servers in the room for the
// history (/backfill, api/federation/backfill.go), stores it
// (dag/rooms/backfill.go) and serves it from the room's backward order
// (projections/backfill.go): backfilled events are older than every event
// of the timeline, and among themselves ordered by an ordinal that grows as
// they get older.
//
// Tokens: "t<P>" names a gap of the timeline (tokens.go); "b<K>" names the
// gap of the backfilled history between ordinals K (newer side) and K+1
// (older side). Paginating backwards from "b<K>" returns ordinals > K,
// forwards ordinals <= K and then the timeline from its start. "b0" is the
// gap between the timeline's first event and the newest backfilled one.
//
// History visibility ("the state of the room at that event") for events
// the server never held in its DAG is taken from the backfilled history
// itself, by depth: the deepest backfilled m.room.history_visibility event
// below the event's depth, and likewise the user's membership; before any
// such event, the visibility the room had when the timeline starts (or
// "shared", the spec's default, once the history reaches the room's
// creation). The rules are those of visibility.go; "joined the room at any
// point after the event" holds for anyone who has joined at all, since the
// whole backfilled history is older than the timeline.

import (
	"encoding/json"
	"math"
	"strconv"
	"sync"
	"sync/atomic"

	"engram/projections"
)

// fedBackfiller is what the federation offers for backfill (optional: a
// nil or test federation has none).
type fedBackfiller interface {
	// Backfill fetches up to limit events of the room's history older
	// than what the server holds and returns how many it stored.
	Backfill(room string, limit int) (int, error)
}

// fedKnocker knocks on rooms this server does not take part in.
type fedKnocker interface {
	Knock(room, user string, via []string, extra json.RawMessage) (string, error)
}

func backfillToken(ord uint64) string { return "b" + strconv.FormatUint(ord, 10) }

// parseBackfillToken parses "b<K>".
func parseBackfillToken(t string) (uint64, bool) {
	if len(t) < 2 || t[0] != 'b' {
		return 0, false
	}
	n, err := strconv.ParseUint(t[1:], 10, 64)
	return n, err == nil
}

// canBackfill reports whether the server can fetch history from others.
func (s *Server) canBackfill() bool {
	_, ok := s.fed.(fedBackfiller)
	return ok
}

// bfFlight lets one request per room fetch history at a time; the others
// wait for it and then read what it stored.
type bfFlight struct {
	mu  sync.Mutex
	gen atomic.Uint64
}

type bfFlightKey struct {
	s    *Server
	room string
}

var bfFlights sync.Map // bfFlightKey -> *bfFlight

// fetchBackfill fetches up to want older events of a room from other
// servers; true if the room's backfilled history may have grown.
func (s *Server) fetchBackfill(room string, want int) bool {
	bf, ok := s.fed.(fedBackfiller)
	if !ok {
		return false
	}
	v, _ := bfFlights.LoadOrStore(bfFlightKey{s, room}, &bfFlight{})
	fl := v.(*bfFlight)
	gen := fl.gen.Load()
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.gen.Load() != gen {
		return true // another request fetched while this one waited
	}
	n, err := bf.Backfill(room, want)
	if err != nil {
		s.logger.Info("backfill failed", "room", room, "err", err)
	}
	if n > 0 {
		fl.gen.Add(1)
		return true
	}
	return false
}

// bfMore reports whether a room has backfilled history with ordinals in
// (after, before), or, when the walk is not bounded, history still to
// fetch.
func (s *Server) bfMore(room string, after, before uint64) (bool, error) {
	items, err := s.store.Backfilled(room, after, before, false, 1)
	if err != nil || len(items) > 0 {
		return len(items) > 0, err
	}
	if before != math.MaxUint64 || !s.canBackfill() {
		return false, nil
	}
	f, err := s.rooms.BackfillFrontier(room)
	return len(f) > 0, err
}

// bfViewer decides which backfilled events of a room a user may see.
type bfViewer struct {
	s          *Server
	room, user string
	everJoined bool
	baseVis    byte // the visibility when the timeline starts
	complete   bool // the backfilled history reaches the room's creation
	ignored    map[string]bool
}

func (s *Server) newBFViewer(room, user string) (*bfViewer, error) {
	v := &bfViewer{s: s, room: room, user: user, baseVis: projections.VisShared, ignored: s.ignoredUsers(user)}
	if user != "" {
		hist, err := s.store.MembershipHistory(room, user)
		if err != nil {
			return nil, err
		}
		for _, m := range hist {
			v.everJoined = v.everJoined || m.Membership == projections.MemberJoin
		}
	}
	vis, err := s.store.VisibilityHistory(room)
	if err != nil {
		return nil, err
	}
	if len(vis) > 0 {
		v.baseVis = vis[0].Vis
	}
	f, ok, err := s.store.BackfillFrontier(room)
	if err != nil {
		return nil, err
	}
	v.complete = ok && len(f) == 0
	return v, nil
}

// visible applies the history visibility rules to a backfilled event,
// against the state just before it and, for history_visibility events and
// the user's own membership events, just after it.
func (v *bfViewer) visible(rec *projections.EventRecord) (bool, error) {
	if rec.StateKey == nil && v.ignored[rec.Sender] {
		return false, nil
	}
	st := v.s.store
	visBefore, ok, err := st.BackfillVisAt(v.room, rec.Depth, false)
	if err != nil {
		return false, err
	}
	if !ok {
		visBefore = v.baseVis
		if v.complete {
			visBefore = projections.VisShared // before any history_visibility event
		}
	}
	var memBefore byte
	if v.user != "" {
		if memBefore, _, _, err = st.BackfillMemberAt(v.room, v.user, rec.Depth, false); err != nil {
			return false, err
		}
	}
	if v.check(visBefore, memBefore) {
		return true, nil
	}
	visAfter, memAfter := visBefore, memBefore
	if rec.StateKey != nil && *rec.StateKey == "" && rec.Type == "m.room.history_visibility" {
		if vis, ok, err := st.BackfillVisAt(v.room, rec.Depth, true); err != nil {
			return false, err
		} else if ok {
			visAfter = vis
		}
	}
	if rec.StateKey != nil && *rec.StateKey == v.user && rec.Type == "m.room.member" {
		memAfter = projections.MembershipCode(rec.Membership)
	}
	return v.check(visAfter, memAfter), nil
}

func (v *bfViewer) check(vis, mem byte) bool {
	switch {
	case vis == projections.VisWorldReadable:
		return true
	case mem == projections.MemberJoin:
		return true
	case vis == projections.VisShared && v.everJoined:
		return true
	case vis == projections.VisInvited && mem == projections.MemberInvite:
		return true
	}
	return false
}

// bfRecord returns the record of a backfilled event if it is still served
// from the backfilled history (an event later sequenced into the DAG is
// served from the timeline instead).
func (s *Server) bfRecord(it projections.BackfillItem) (*projections.EventRecord, uint64, bool, error) {
	seq, st, err := s.store.EventPos(it.EventID)
	if err != nil || st != projections.Outlier {
		return nil, 0, false, nil
	}
	rec, err := s.store.Record(seq)
	if err != nil {
		return nil, 0, false, err
	}
	return rec, seq, true, nil
}

// bfScan walks a room's backfilled history between ordinals lo and hi
// (both exclusive): towards older events from lo, or towards newer ones
// from hi. It returns up to limit positions (of the events' records) that
// pass the filter and the user's history visibility, in walk order, the
// last ordinal looked at, and whether more may follow. Walking older, when
// the stored history runs out and fetch is set, more is fetched from other
// servers (once per call).
func (s *Server) bfScan(room, user string, f *roomEventFilter, lo, hi uint64, older bool, limit int, fetch bool) (out []uint64, last uint64, more bool, err error) {
	if limit <= 0 {
		return nil, 0, false, nil
	}
	var v *bfViewer // made when there is something to look at
	scanned, fetched, grew := 0, false, false
	for len(out) < limit {
		n := min(max(2*(limit-len(out)), 20), 500)
		batch, err := s.store.Backfilled(room, lo, hi, !older, n)
		if err != nil {
			return nil, 0, false, err
		}
		if len(batch) == 0 {
			if !older || hi != math.MaxUint64 {
				return out, last, false, nil
			}
			if fetch && !fetched {
				fetched = true
				if s.fetchBackfill(room, min(max(2*(limit-len(out)), 20), 100)) {
					grew, v = true, nil // the viewer's "complete" may have changed
					continue
				}
				return out, last, false, nil
			}
			// Fetched once already: a client asks again for the rest.
			more, err := s.bfMore(room, lo, hi)
			return out, last, grew && more, err
		}
		if v == nil {
			if v, err = s.newBFViewer(room, user); err != nil {
				return nil, 0, false, err
			}
		}
		for _, it := range batch {
			last = it.Ord
			scanned++
			if older {
				lo = it.Ord
			} else {
				hi = it.Ord
			}
			rec, seq, ok, err := s.bfRecord(it)
			if err != nil {
				return nil, 0, false, err
			}
			if !ok || !f.match(rec) {
				continue
			}
			vis, err := v.visible(rec)
			if err != nil {
				return nil, 0, false, err
			}
			if !vis {
				continue
			}
			out = append(out, seq)
			if len(out) == limit {
				more, err := s.bfMore(room, lo, hi)
				return out, last, more, err
			}
		}
		if scanned >= pageScanBudget {
			return out, last, true, nil
		}
	}
	return out, last, true, nil
}

// isBackfilled reports whether a record is an event of a room's backfilled
// history.
func (s *Server) isBackfilled(rec *projections.EventRecord) bool {
	if rec.Status != projections.Outlier {
		return false
	}
	_, ok, err := s.store.BackfillOrd(rec.EventID)
	return err == nil && ok
}

// visibleAny is filterVisible for positions that may include backfilled
// events.
func (s *Server) visibleAny(user, room string, seqs []uint64) ([]uint64, error) {
	var tl []uint64
	bf := map[uint64]bool{}
	var v *bfViewer
	for _, q := range seqs {
		rec, err := s.store.Record(q)
		if err != nil {
			return nil, err
		}
		if !s.isBackfilled(rec) {
			tl = append(tl, q)
			continue
		}
		if v == nil {
			if v, err = s.newBFViewer(room, user); err != nil {
				return nil, err
			}
		}
		ok, err := v.visible(rec)
		if err != nil {
			return nil, err
		}
		bf[q] = ok
	}
	if len(bf) == 0 {
		return s.filterVisible(user, room, seqs)
	}
	tlVis, err := s.filterVisible(user, room, tl)
	if err != nil {
		return nil, err
	}
	keep := map[uint64]bool{}
	for _, q := range tlVis {
		keep[q] = true
	}
	out := make([]uint64, 0, len(seqs))
	for _, q := range seqs {
		if keep[q] || bf[q] {
			out = append(out, q)
		}
	}
	return out, nil
}

// firstTimelinePos is the position of a room's first timeline event (0 if
// none): the earliest point whose state the server knows.
func (s *Server) firstTimelinePos(room string) (uint64, error) {
	seqs, err := s.store.Timeline(room, 0, math.MaxUint64, false, 1)
	if err != nil || len(seqs) == 0 {
		return 0, err
	}
	return seqs[0], nil
}

// lazyMembers is senderMembers for positions that may include backfilled
// events: for those, the sender's membership event is the deepest
// backfilled one at most as deep as the event, else the one of the state
// where the timeline starts.
func (s *Server) lazyMembers(room string, seqs []uint64) ([]uint64, error) {
	var tl []uint64
	var bfRecs []*projections.EventRecord
	for _, q := range seqs {
		rec, err := s.store.Record(q)
		if err != nil {
			return nil, err
		}
		if s.isBackfilled(rec) {
			bfRecs = append(bfRecs, rec)
		} else {
			tl = append(tl, q)
		}
	}
	var out []uint64
	if len(tl) > 0 {
		var err error
		if out, err = s.senderMembers(room, tl, tl[0]); err != nil {
			return nil, err
		}
	}
	if len(bfRecs) == 0 {
		return out, nil
	}
	seen := map[string]bool{}
	for _, q := range out {
		if rec, err := s.store.Record(q); err == nil && rec.StateKey != nil {
			seen[*rec.StateKey] = true
		}
	}
	first, err := s.firstTimelinePos(room)
	if err != nil {
		return nil, err
	}
	for _, rec := range bfRecs {
		if seen[rec.Sender] {
			continue
		}
		seen[rec.Sender] = true
		_, id, ok, err := s.store.BackfillMemberAt(room, rec.Sender, rec.Depth, true)
		if err != nil {
			return nil, err
		}
		if !ok {
			if id, _, err = s.store.StateEventAt(room, "m.room.member", rec.Sender, first); err != nil {
				continue
			}
		}
		if pos, _, err := s.store.EventPos(id); err == nil {
			out = append(out, pos)
		}
	}
	return out, nil
}

// bfContext serves /context for a backfilled event (ord is its ordinal):
// the events around it in the backfilled history, continuing into the
// timeline after it, with tokens in the same orders.
func (s *Server) bfContext(r *Req, room string, rec *projections.EventRecord, seq, ord uint64, f *roomEventFilter, limit int) error {
	beforeLimit := limit / 2
	afterLimit := limit - beforeLimit
	before, lastBefore, _, err := s.bfScan(room, r.User, f, ord, math.MaxUint64, true, beforeLimit, false)
	if err != nil {
		return err
	}
	after, lastAfter, moreAfter, err := s.bfScan(room, r.User, f, 0, ord, false, afterLimit, false)
	if err != nil {
		return err
	}
	start := backfillToken(ord)
	if len(before) > 0 {
		start = backfillToken(lastBefore)
	}
	end := backfillToken(ord - 1)
	if len(after) > 0 {
		end = backfillToken(lastAfter - 1)
	}
	if len(after) < afterLimit && !moreAfter {
		tl, last, _, err := s.pageScan(room, r.User, f, 0, s.log.Last()+1, false, afterLimit-len(after))
		if err != nil {
			return err
		}
		// The backfilled history is behind: go on in the timeline.
		after = append(after, tl...)
		end = pageToken(0)
		if len(tl) > 0 {
			end = pageToken(last)
		}
	}
	all := append(append(append([]uint64(nil), before...), seq), after...)
	var state []uint64
	if f.LazyLoadMembers {
		if state, err = s.lazyMembers(room, all); err != nil {
			return err
		}
	} else {
		first, err := s.firstTimelinePos(room)
		if err != nil {
			return err
		}
		if state, err = s.stateMatching(room, first, f); err != nil {
			return err
		}
	}
	return s.writeContext(r, rec, seq, before, after, state, start, end)
}
