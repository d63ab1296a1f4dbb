package api

import (
	"errors"
	"math"
	"strconv"

	"engram/projections"
)

// Pagination tokens are log positions (tokens.go): paginating backwards
// from P returns events at or before P, forwards from P events after P.

const (
	defaultPageLimit = 10
	maxPageLimit     = 1000
	// pageScanBudget bounds the events one request looks at beyond its
	// limit, so paging through history the user may not see (or that the
	// filter drops) costs bounded work per request: the answer then has a
	// short chunk and an end token to continue from.
	pageScanBudget = 2000
)

// pageScan walks a room's timeline between positions lo and hi (both
// exclusive), backwards from hi or forwards from lo, and returns up to
// limit positions that pass the filter and the user's history visibility,
// in walk order. last is the last position looked at (0 if none) and more
// whether the walk stopped before the end of the range.
func (s *Server) pageScan(room, user string, f *roomEventFilter, lo, hi uint64, backwards bool, limit int) (out []uint64, last uint64, more bool, err error) {
	scanned := 0
	ignored := s.ignoredUsers(user) // m.ignored_user_list: their (non-state) events are hidden (api/accountdata.go)
	for len(out) < limit && lo+1 < hi {
		n := min(max(2*(limit-len(out)), 20), 500)
		batch, err := s.store.Timeline(room, lo, hi, backwards, n)
		if err != nil {
			return nil, 0, false, err
		}
		if len(batch) == 0 {
			return out, last, false, nil
		}
		exhausted := len(batch) < n
		visible, err := s.filterVisible(user, room, append([]uint64(nil), batch...))
		if err != nil {
			return nil, 0, false, err
		}
		vi := 0
		for _, q := range batch {
			last = q
			scanned++
			if backwards {
				hi = q
			} else {
				lo = q
			}
			if vi < len(visible) && visible[vi] == q {
				vi++
				rec, err := s.store.Record(q)
				if err != nil {
					return nil, 0, false, err
				}
				if f.match(rec) && (rec.IsState() || !ignored[rec.Sender]) {
					out = append(out, q)
					if len(out) == limit {
						return out, last, !(exhausted && q == batch[len(batch)-1]), nil
					}
				}
			}
		}
		if exhausted {
			return out, last, false, nil
		}
		if scanned >= pageScanBudget {
			return out, last, true, nil
		}
	}
	return out, last, lo+1 < hi, nil
}

func parseLimit(r *Req, def int) (int, *Error) {
	l := r.Query("limit")
	if l == "" {
		return def, nil
	}
	n, err := strconv.Atoi(l)
	if err != nil || n < 0 {
		return 0, errInvalid("Invalid limit")
	}
	return min(n, maxPageLimit), nil
}

// messages serves GET /rooms/{roomId}/messages.
func (s *Server) messages(r *Req) error {
	room := r.Param("roomId")
	dir := r.Query("dir")
	if dir != "b" && dir != "f" {
		return errInvalid("dir must be b or f")
	}
	limit, e := parseLimit(r, defaultPageLimit)
	if e != nil {
		return e
	}
	f, e := parseRoomEventFilter(r)
	if e != nil {
		return e
	}
	if f.Limit != nil && *f.Limit > 0 && r.Query("limit") == "" {
		limit = min(*f.Limit, maxPageLimit)
	}
	// Tokens are timeline positions ("t<P>", "s<P>...") or positions in
	// the backfilled history ("b<K>", api/backfill.go).
	var from, to pagePos
	hasFrom, hasTo := false, false
	if t := r.Query("from"); t != "" {
		p, ok := parsePagePos(t)
		if !ok {
			return errInvalid("Invalid from token")
		}
		from, hasFrom = p, true
	}
	if t := r.Query("to"); t != "" {
		p, ok := parsePagePos(t)
		if !ok {
			return errInvalid("Invalid to token")
		}
		to, hasTo = p, true
	}
	acc, err := s.readAccess(room, r.User, true)
	if err != nil {
		return err
	}
	upto := acc.upto
	if !hasFrom && dir == "b" {
		from = pagePos{pos: upto}
	}

	var seqs []uint64
	end := ""
	if limit > 0 {
		if dir == "b" {
			seqs, end, err = s.pageBackwards(room, r.User, f, from, to, hasTo, upto, limit)
		} else {
			seqs, end, err = s.pageForwards(room, r.User, f, from, to, hasTo, upto, limit)
		}
		if err != nil {
			return err
		}
	}
	now := nowMS()
	b := append(make([]byte, 0, 1024), `{"chunk":`...)
	if b, err = s.appendEventList(b, seqs, r.User, r.Device, now); err != nil {
		return err
	}
	b = append(b, `,"start":`...)
	b = appendJSONString(b, from.token())
	if end != "" {
		b = append(b, `,"end":`...)
		b = appendJSONString(b, end)
	}
	if f.LazyLoadMembers && len(seqs) > 0 {
		state, err := s.lazyMembers(room, seqs)
		if err != nil {
			return err
		}
		b = append(b, `,"state":`...)
		if b, err = s.appendEventList(b, state, r.User, r.Device, now); err != nil {
			return err
		}
	}
	r.raw(200, append(b, '}'))
	return nil
}

// pagePos is a pagination position: a gap of the timeline, or (bf) of
// the backfilled history, which is older than the whole timeline.
type pagePos struct {
	pos uint64
	bf  bool
}

func parsePagePos(t string) (pagePos, bool) {
	if k, ok := parseBackfillToken(t); ok {
		return pagePos{pos: k, bf: true}, true
	}
	p, ok := parseToken(t)
	return pagePos{pos: p}, ok
}

func (p pagePos) token() string {
	if p.bf {
		return backfillToken(p.pos)
	}
	return pageToken(p.pos)
}

// pageBackwards pages towards older events from `from`: through the
// timeline, then, once it runs out, through the backfilled history,
// fetching more of it from other servers when that runs out too. It
// returns the positions and the end token ("" when nothing is left).
func (s *Server) pageBackwards(room, user string, f *roomEventFilter, from, to pagePos, hasTo bool, upto uint64, limit int) ([]uint64, string, error) {
	var seqs []uint64
	bfFrom := from.pos
	if !from.bf {
		lo := uint64(0)
		if hasTo && !to.bf {
			lo = to.pos
		}
		tl, last, more, err := s.pageScan(room, user, f, lo, min(from.pos, upto)+1, true, limit)
		if err != nil {
			return nil, "", err
		}
		if more && last > 0 {
			return tl, pageToken(last - 1), nil
		}
		if hasTo && !to.bf {
			return tl, "", nil // stopped at `to`
		}
		// The timeline ran out: go on with the backfilled history.
		seqs, bfFrom = tl, 0
	}
	hi := uint64(math.MaxUint64)
	if hasTo && to.bf {
		if to.pos <= bfFrom {
			return seqs, "", nil
		}
		hi = to.pos + 1
	}
	if len(seqs) == limit {
		more, err := s.bfMore(room, bfFrom, hi)
		if err != nil || !more {
			return seqs, "", err
		}
		return seqs, backfillToken(bfFrom), nil
	}
	bf, last, more, err := s.bfScan(room, user, f, bfFrom, hi, true, limit-len(seqs), true)
	if err != nil {
		return nil, "", err
	}
	seqs = append(seqs, bf...)
	if more && last > 0 {
		return seqs, backfillToken(last), nil
	}
	return seqs, "", nil
}

// pageForwards pages towards newer events from `from`: from a position in
// the backfilled history through it and on into the timeline.
func (s *Server) pageForwards(room, user string, f *roomEventFilter, from, to pagePos, hasTo bool, upto uint64, limit int) ([]uint64, string, error) {
	var seqs []uint64
	tlFrom := from.pos
	if from.bf {
		lo := uint64(0)
		if hasTo && to.bf {
			lo = to.pos
		}
		bf, last, more, err := s.bfScan(room, user, f, lo, from.pos+1, false, limit, false)
		if err != nil {
			return nil, "", err
		}
		if more && last > 0 {
			return bf, backfillToken(last - 1), nil
		}
		if hasTo && to.bf {
			return bf, "", nil
		}
		seqs, tlFrom = bf, 0
		if len(seqs) == limit {
			return seqs, pageToken(0), nil
		}
	}
	hi := upto + 1
	if hasTo && !to.bf {
		hi = min(hi, to.pos+1)
	}
	tl, last, more, err := s.pageScan(room, user, f, tlFrom, hi, false, limit-len(seqs))
	if err != nil {
		return nil, "", err
	}
	seqs = append(seqs, tl...)
	if more && last > 0 {
		return seqs, pageToken(last), nil
	}
	return seqs, "", nil
}

// senderMembers returns the positions of the membership events, as of
// position at, of the senders of the events at seqs: what lazy-loading
// clients need to render them.
func (s *Server) senderMembers(room string, seqs []uint64, at uint64) ([]uint64, error) {
	seen := map[string]bool{}
	var out []uint64
	for _, q := range seqs {
		rec, err := s.store.Record(q)
		if err != nil {
			return nil, err
		}
		if seen[rec.Sender] {
			continue
		}
		seen[rec.Sender] = true
		id, _, err := s.store.StateEventAt(room, "m.room.member", rec.Sender, at)
		if errors.Is(err, projections.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		pos, _, err := s.store.EventPos(id)
		if err != nil {
			return nil, err
		}
		out = append(out, pos)
	}
	return out, nil
}

// roomEvent loads an accepted (or backfilled) event of a room by ID
// (ErrNotFound otherwise).
func (s *Server) roomEvent(room, id string) (*projections.EventRecord, uint64, error) {
	rec, seq, err := s.store.Event(id)
	if err != nil {
		return nil, 0, err
	}
	if rec.RoomID != room || (rec.Status != projections.Accepted && !s.isBackfilled(rec)) {
		return nil, 0, projections.ErrNotFound
	}
	return rec, seq, nil
}

// readableEvent finds an event of a room (projections.ErrNotFound if the
// room has none with that ID) and whether user may see it.
func (s *Server) readableEvent(user, room, id string) (*projections.EventRecord, uint64, bool, error) {
	rec, seq, err := s.roomEvent(room, id)
	if err != nil {
		return nil, 0, false, err
	}
	vis, err := s.visibleAny(user, room, []uint64{seq})
	return rec, seq, len(vis) > 0, err
}

// getEvent serves GET /rooms/{roomId}/event/{eventId}: "404: The event was
// not found or you do not have permission to read this event."
func (s *Server) getEvent(r *Req) error {
	room := r.Param("roomId")
	rec, seq, visible, err := s.readableEvent(r.User, room, r.Param("eventId"))
	if errors.Is(err, projections.ErrNotFound) || (err == nil && !visible) {
		return errNotFound("Event not found")
	}
	if err != nil {
		return err
	}
	r.raw(200, s.appendServedEvent(nil, rec, seq, r.User, r.Device, nowMS()))
	return nil
}

// eventContext serves GET /rooms/{roomId}/context/{eventId}: the event,
// up to limit events around it (half before, half after, as Synapse
// splits it), the state at the last event returned, and tokens to page on
// from either end.
func (s *Server) eventContext(r *Req) error {
	room := r.Param("roomId")
	limit, e := parseLimit(r, defaultPageLimit)
	if e != nil {
		return e
	}
	f, e := parseRoomEventFilter(r)
	if e != nil {
		return e
	}
	rec, seq, visible, err := s.readableEvent(r.User, room, r.Param("eventId"))
	if errors.Is(err, projections.ErrNotFound) {
		return errNotFound("Event not found")
	}
	if err != nil {
		return err
	}
	if !visible {
		return errForbidden("You don't have permission to access that event.")
	}
	if ord, ok, err := s.store.BackfillOrd(rec.EventID); err != nil {
		return err
	} else if ok && rec.Status == projections.Outlier {
		return s.bfContext(r, room, rec, seq, ord, f, limit)
	}
	beforeLimit := limit / 2
	afterLimit := limit - beforeLimit
	var before, after []uint64
	if beforeLimit > 0 {
		if before, _, _, err = s.pageScan(room, r.User, f, 0, seq, true, beforeLimit); err != nil {
			return err
		}
	}
	if afterLimit > 0 {
		if after, _, _, err = s.pageScan(room, r.User, f, seq, s.log.Last()+1, false, afterLimit); err != nil {
			return err
		}
	}
	start, end, lastSeq := seq-1, seq, seq
	if len(before) > 0 {
		start = before[len(before)-1] - 1
	}
	if len(after) > 0 {
		end = after[len(after)-1]
		lastSeq = end
	}
	var state []uint64
	if f.LazyLoadMembers {
		all := append(append(append([]uint64(nil), before...), seq), after...)
		if state, err = s.senderMembers(room, all, lastSeq); err != nil {
			return err
		}
	} else {
		if state, err = s.stateMatching(room, lastSeq, f); err != nil {
			return err
		}
	}
	return s.writeContext(r, rec, seq, before, after, state, pageToken(start), pageToken(end))
}

// stateMatching returns the positions of a room's state events at position
// at that filter f lets through.
func (s *Server) stateMatching(room string, at uint64, f *roomEventFilter) ([]uint64, error) {
	entries, err := s.store.StateAt(room, "", at)
	if err != nil {
		return nil, err
	}
	var state []uint64
	for _, e := range entries {
		pos, _, err := s.store.EventPos(e.EventID)
		if err != nil {
			return nil, err
		}
		srec, err := s.store.Record(pos)
		if err != nil {
			return nil, err
		}
		if f.match(srec) {
			state = append(state, pos)
		}
	}
	return state, nil
}

// writeContext answers /context: the event, the events before and after it,
// the state, and the pagination tokens.
func (s *Server) writeContext(r *Req, rec *projections.EventRecord, seq uint64, before, after, state []uint64, start, end string) error {
	now := nowMS()
	b := append(make([]byte, 0, 2048), `{"event":`...)
	b = s.appendServedEvent(b, rec, seq, r.User, r.Device, now)
	b = append(b, `,"events_before":`...)
	b, err := s.appendEventList(b, before, r.User, r.Device, now)
	if err != nil {
		return err
	}
	b = append(b, `,"events_after":`...)
	if b, err = s.appendEventList(b, after, r.User, r.Device, now); err != nil {
		return err
	}
	b = append(b, `,"state":`...)
	if b, err = s.appendEventList(b, state, r.User, r.Device, now); err != nil {
		return err
	}
	b = append(b, `,"start":`...)
	b = appendJSONString(b, start)
	b = append(b, `,"end":`...)
	b = appendJSONString(b, end)
	r.raw(200, append(b, '}'))
	return nil
}
