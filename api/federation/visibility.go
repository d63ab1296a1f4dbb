package federation

import (
	"sort"

	"engram/dag"
	"engram/projections"
)

// History visibility for servers. The client rules (client-server-api,
// "Room History Visibility") decide for a user; a server asks for events on
// behalf of all its users, so it may see an event if the room's history
// was world_readable or shared at the event, or if one of its users was
// joined then (or invited, when the visibility was invited). This is what
// Synapse does (filter_events_for_server). As for users, an
// m.room.history_visibility event or a member event of one of its users
// counts as visible if the state just before or just after it allows it.
//
// Events a server may not see are not served by /event; in /backfill and
// /get_missing_events they are served redacted, so the requesting server
// can still link the DAG through them.

// serverVisibility is what deciding for one server in one room needs.
type serverVisibility struct {
	vis []projections.VisChange
	mem [][]projections.StateChange // membership changes of each of the server's users
}

func (f *Federation) serverVisibility(origin, room string) (*serverVisibility, error) {
	vis, err := f.store.VisibilityHistory(room)
	if err != nil {
		return nil, err
	}
	v := &serverVisibility{vis: vis}
	restricted := false
	for _, c := range vis {
		restricted = restricted || c.Vis == projections.VisInvited || c.Vis == projections.VisJoined
	}
	if !restricted {
		return v, nil // every event was shared or world_readable
	}
	members, err := f.store.Members(room)
	if err != nil {
		return nil, err
	}
	for _, m := range members {
		if dag.ServerName(m.UserID) != origin {
			continue
		}
		h, err := f.store.MembershipHistory(room, m.UserID)
		if err != nil {
			return nil, err
		}
		v.mem = append(v.mem, h)
	}
	return v, nil
}

// at returns the last change at or before position q (inclusive), or
// before it; ok false if none.
func at[T any](list []T, seq func(T) uint64, q uint64, inclusive bool) (T, bool) {
	i := sort.Search(len(list), func(i int) bool {
		if inclusive {
			return seq(list[i]) > q
		}
		return seq(list[i]) >= q
	})
	var zero T
	if i == 0 {
		return zero, false
	}
	return list[i-1], true
}

func (v *serverVisibility) allowed(q uint64) bool {
	return v.check(q, true) || v.check(q, false)
}

func (v *serverVisibility) check(q uint64, inclusive bool) bool {
	vis := projections.VisShared
	if c, ok := at(v.vis, func(c projections.VisChange) uint64 { return c.Seq }, q, inclusive); ok {
		vis = c.Vis
	}
	if vis == projections.VisWorldReadable || vis == projections.VisShared {
		return true
	}
	for _, h := range v.mem {
		m, ok := at(h, func(c projections.StateChange) uint64 { return c.Seq }, q, inclusive)
		if !ok {
			continue
		}
		if m.Membership == projections.MemberJoin || (vis == projections.VisInvited && m.Membership == projections.MemberInvite) {
			return true
		}
	}
	return false
}

// servedPDU is the PDU of the event at position seq as origin may see it:
// whole, or redacted by the room version's algorithm.
func servedPDU(v *serverVisibility, seq uint64, rec *projections.EventRecord) []byte {
	if v.allowed(seq) {
		return rec.PDU
	}
	red, err := dag.Redact(rec.PDU, dag.Version(rec.RoomVersion))
	if err != nil {
		return nil
	}
	return red
}
