package api

import (
	"strconv"

	"engram/projections"
)

// visibleRange returns the log positions of a room's history the user may
// read: (0, upto] while joined, up to the leaving event after leaving.
// History visibility settings refine this in a later change.
func (s *Server) visibleRange(room, user string) (uint64, bool, error) {
	m, err := s.store.MemberOf(room, user)
	if err != nil {
		return 0, false, err
	}
	switch m.Membership {
	case projections.MemberJoin:
		return s.log.Last(), true, nil
	case projections.MemberLeave, projections.MemberBan:
		return m.Seq, true, nil
	}
	return 0, false, nil
}

// messages serves GET /rooms/{roomId}/messages.
func (s *Server) messages(r *Req) error {
	room := r.Param("roomId")
	upto, ok, err := s.visibleRange(room, r.User)
	if err != nil {
		return err
	}
	if !ok {
		return errForbidden("You are not in this room")
	}
	dir := r.Query("dir")
	if dir != "b" && dir != "f" {
		return errInvalid("dir must be b or f")
	}
	limit := 10
	if l := r.Query("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			return errInvalid("Invalid limit")
		}
		limit = min(n, 1000)
	}
	var from uint64
	if f := r.Query("from"); f != "" {
		p, ok := parseToken(f)
		if !ok {
			return errInvalid("Invalid from token")
		}
		from = p
	} else if dir == "b" {
		from = upto
	}
	var to uint64
	hasTo := false
	if t := r.Query("to"); t != "" {
		p, ok := parseToken(t)
		if !ok {
			return errInvalid("Invalid to token")
		}
		to, hasTo = p, true
	}

	var seqs []uint64
	if limit > 0 {
		if dir == "b" {
			lo := uint64(0)
			if hasTo {
				lo = to
			}
			seqs, err = s.store.Timeline(room, lo, min(from, upto)+1, true, limit)
		} else {
			hi := upto + 1
			if hasTo {
				hi = min(hi, to+1)
			}
			seqs, err = s.store.Timeline(room, from, hi, false, limit)
		}
		if err != nil {
			return err
		}
	}
	// end is computed from what was scanned, before visibility filtering,
	// so pagination moves past hidden events instead of stopping at them.
	scanned := seqs
	if seqs, err = s.filterVisible(r.User, room, seqs); err != nil {
		return err
	}
	b := append(make([]byte, 0, 1024), `{"chunk":`...)
	b, err = s.appendEventList(b, seqs, r.User, r.Device, nowMS())
	if err != nil {
		return err
	}
	b = append(b, `,"start":`...)
	b = appendJSONString(b, pageToken(from))
	if len(scanned) == limit && limit > 0 {
		last := scanned[len(scanned)-1]
		end := last
		if dir == "b" {
			end = last - 1
		}
		b = append(b, `,"end":`...)
		b = appendJSONString(b, pageToken(end))
	}
	r.raw(200, append(b, '}'))
	return nil
}
