package api

import (
	"sort"

	"engram/projections"
)

// filterVisible returns the positions of seqs (events of one room) that
// user may see, in the same order. Every read path that returns events
// (/sync, /messages, /context, /event, /search, /relations) goes through it.
//
// The rules are the spec's (client-server-api, "Room History Visibility",
// server behaviour), applied to "the state of the room at that event",
// which here is the room's state just after the event's log position
// (projections.RoomHistory keeps its history visibility and every
// membership by position):
//
//  1. If the history_visibility was set to world_readable, allow.
//  2. If the user's membership was join, allow.
//  3. If history_visibility was set to shared, and the user joined the
//     room at any point after the event was sent, allow.
//  4. If the user's membership was invite, and the history_visibility was
//     set to invited, allow.
//  5. Otherwise, deny.
//
// "For m.room.history_visibility events themselves, the user should be
// allowed to see the event if the history_visibility before or after the
// event would allow them to see it", and "likewise, for the user's own
// m.room.member events": so each event is checked against the state just
// before it and just after it, and allowed if either allows it (for any
// other event the two are the same).
//
// The common case costs two point reads: a user joined now, in a room whose
// visibility was never invited or joined, sees everything (each earlier
// event was shared or world_readable and the user joined after it; each
// later one was sent while they were joined).
//
// It also hides the non-state events of users the viewer ignores
// (m.ignored_user_list), on every read path alike.
func (s *Server) filterVisible(user, room string, seqs []uint64) ([]uint64, error) {
	out, err := s.historyVisible(user, room, seqs)
	if err != nil || len(out) == 0 || user == "" {
		return out, err
	}
	ignored := s.ignoredUsersCached(user)
	if len(ignored) == 0 {
		return out, nil
	}
	kept := make([]uint64, 0, len(out)) // out may share seqs' array: do not filter in place
	for _, q := range out {
		rec, err := s.store.Record(q)
		if err != nil {
			return nil, err
		}
		if ignored[rec.Sender] && rec.StateKey == nil {
			continue
		}
		kept = append(kept, q)
	}
	return kept, nil
}

// historyVisible applies the history visibility rules to seqs.
func (s *Server) historyVisible(user, room string, seqs []uint64) ([]uint64, error) {
	if len(seqs) == 0 {
		return seqs, nil
	}
	restricted, err := s.visibilityRestricted(room)
	if err != nil {
		return nil, err
	}
	if !restricted && user != "" {
		m, err := s.memberOf(room, user)
		if err != nil {
			return nil, err
		}
		if m.Membership == projections.MemberJoin {
			return seqs, nil
		}
	}
	v, err := s.visibilityOf(user, room)
	if err != nil {
		return nil, err
	}
	out := seqs[:0:0]
	for _, q := range seqs {
		if v.allowed(q) {
			out = append(out, q)
		}
	}
	return out, nil
}

// roomVisibility is what deciding visibility for one user in one room needs:
// the room's history visibility changes and the user's membership changes,
// by log position.
type roomVisibility struct {
	vis      []projections.VisChange
	mem      []projections.StateChange
	lastJoin uint64 // position of the user's latest join; 0 if never joined
}

func (s *Server) visibilityOf(user, room string) (*roomVisibility, error) {
	vis, err := s.store.VisibilityHistory(room)
	if err != nil {
		return nil, err
	}
	v := &roomVisibility{vis: vis}
	if user == "" {
		return v, nil
	}
	if v.mem, err = s.store.MembershipHistory(room, user); err != nil {
		return nil, err
	}
	for _, m := range v.mem {
		if m.Membership == projections.MemberJoin {
			v.lastJoin = m.Seq
		}
	}
	return v, nil
}

// visAt returns the history visibility just after position q (inclusive)
// or just before it.
func (v *roomVisibility) visAt(q uint64, inclusive bool) byte {
	i := sort.Search(len(v.vis), func(i int) bool {
		if inclusive {
			return v.vis[i].Seq > q
		}
		return v.vis[i].Seq >= q
	})
	if i == 0 {
		return projections.VisShared
	}
	return v.vis[i-1].Vis
}

// memAt returns the user's membership just after position q (inclusive) or
// just before it (0: none).
func (v *roomVisibility) memAt(q uint64, inclusive bool) byte {
	i := sort.Search(len(v.mem), func(i int) bool {
		if inclusive {
			return v.mem[i].Seq > q
		}
		return v.mem[i].Seq >= q
	})
	if i == 0 {
		return 0
	}
	return v.mem[i-1].Membership
}

// allowed decides one event at position q.
func (v *roomVisibility) allowed(q uint64) bool {
	return v.check(q, v.visAt(q, true), v.memAt(q, true)) || v.check(q, v.visAt(q, false), v.memAt(q, false))
}

func (v *roomVisibility) check(q uint64, vis, mem byte) bool {
	switch {
	case vis == projections.VisWorldReadable:
		return true
	case mem == projections.MemberJoin:
		return true
	case vis == projections.VisShared && v.lastJoin >= q && v.lastJoin != 0:
		return true
	case vis == projections.VisInvited && mem == projections.MemberInvite:
		return true
	}
	return false
}

// roomAccess is what a user may read of a room through the history
// endpoints (/messages, /state, /members, /context, /event).
type roomAccess struct {
	member projections.Member
	// upto is the last log position the user may read: now, or the
	// position of the event that made them leave.
	upto uint64
	// current: the user reads the room's current state (joined, or
	// peeking into a world_readable room); otherwise the state at upto.
	current bool
}

// readAccess decides whether user may read a room's history, as Synapse's
// check_user_in_room_or_world_readable does: a joined user may; a user who
// left (and did not forget the room) may, up to their leaving ("After a
// user has left a room, they may see any events which they were allowed to
// see before they left the room, but no events received after they left");
// anyone may read a room whose current history visibility is
// world_readable. departed=false refuses users who left.
func (s *Server) readAccess(room, user string, departed bool) (roomAccess, error) {
	m, err := s.memberOf(room, user)
	if err != nil {
		return roomAccess{}, err
	}
	a := roomAccess{member: m, upto: s.log.Last(), current: true}
	if m.Membership == projections.MemberJoin {
		return a, nil
	}
	if departed && m.Membership == projections.MemberLeave {
		forgot, err := s.store.Forgotten(user, room)
		if err != nil {
			return a, err
		}
		if !forgot {
			a.upto, a.current = m.Seq, false
			return a, nil
		}
	}
	vis, err := s.store.HistoryVisibility(room)
	if err != nil {
		return a, err
	}
	if vis == projections.VisWorldReadable {
		if _, err := s.store.RoomVersion(room); err == nil {
			return a, nil
		}
	}
	return a, errForbidden("You aren't a member of the room and weren't previously a member of the room")
}
