package api

import "engram/projections"

// filterVisible returns the positions of seqs (events of one room) that
// user may see, in the same order. Every read path that returns events
// (/sync, /messages, /context, /event, /search, /relations) goes through it.
//
// For now: a member sees the room's events up to the position where their
// membership stopped being join. The full history-visibility rules
// (world_readable, shared, invited, joined; state at each event) replace
// this body.
func (s *Server) filterVisible(user, room string, seqs []uint64) ([]uint64, error) {
	m, err := s.store.MemberOf(room, user)
	if err != nil {
		return nil, err
	}
	var upto uint64
	switch m.Membership {
	case projections.MemberJoin:
		upto = ^uint64(0)
	case projections.MemberLeave, projections.MemberBan:
		upto = m.Seq
	default:
		return nil, nil
	}
	out := seqs[:0:0]
	for _, q := range seqs {
		if q <= upto {
			out = append(out, q)
		}
	}
	return out, nil
}
