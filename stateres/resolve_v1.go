package stateres

import (
	"crypto/sha1"
	"encoding/hex"
	"sort"

	"engram/dag"
)

// resolveV1 is the state resolution algorithm of room version 1 (rooms/v1,
// "State resolution"):
//
//   - "Start by setting R to the union of the states to be resolved,
//     excluding any conflicting events." A conflict is two states giving a
//     key different event IDs; a key some states lack is not a conflict.
//   - Resolve the m.room.power_levels conflict, then m.room.join_rules, then
//     m.room.member ones: sort by ascending depth then descending
//     sha1(event_id), take the first, and keep taking the next while it is
//     allowed by the authorisation rules in R.
//   - "for all other conflicts, just pick the event with the highest depth
//     and lowest sha1(event_id) that passes authentication in R".
//
// R for the authorisation checks holds, as in Synapse, the unconflicted
// events the conflicted events' auth events selection names, plus the
// events resolved by the earlier passes. If no event of an ordinary
// conflict passes, the last one in that order is kept (Synapse).
func (r *resolver) resolveV1(sets []StateMap) (StateMap, error) {
	unconflicted := make(StateMap, len(sets[0]))
	values := map[dag.StateKeyTuple][]string{}
	for _, s := range sets {
		for k, v := range s {
			vs := values[k]
			dup := false
			for _, w := range vs {
				if w == v {
					dup = true
					break
				}
			}
			if !dup {
				values[k] = append(vs, v)
			}
		}
	}
	conflicted := map[dag.StateKeyTuple][]*dag.Event{}
	for k, vs := range values {
		if len(vs) == 1 {
			unconflicted[k] = vs[0]
			continue
		}
		var evs []*dag.Event
		for _, id := range vs {
			if ev := r.load(r.intern(id)); ev != nil {
				evs = append(evs, ev)
			}
		}
		switch len(evs) {
		case 0:
		case 1:
			unconflicted[k] = evs[0].ID
		default:
			conflicted[k] = evs
		}
	}
	if err := r.missingErr(); err != nil {
		return nil, err
	}
	if len(conflicted) == 0 {
		return unconflicted, nil
	}

	auth := StateEvents{}
	var buf []dag.StateKeyTuple
	for _, evs := range conflicted {
		for _, ev := range evs {
			buf = eventNeededKeys(r.ver, ev, buf[:0])
			for _, k := range buf {
				if _, ok := auth[k]; ok {
					continue
				}
				if id, ok := unconflicted[k]; ok {
					if ae := r.load(r.intern(id)); ae != nil {
						auth[k] = ae
					}
				}
			}
		}
	}
	if err := r.missingErr(); err != nil {
		return nil, err
	}

	resolved := map[dag.StateKeyTuple]*dag.Event{}
	update := func() {
		for k, ev := range resolved {
			auth[k] = ev
		}
	}
	if evs, ok := conflicted[plKey]; ok {
		resolved[plKey] = r.v1AuthEvents(evs, auth)
	}
	update()
	for k, evs := range conflicted {
		if k.Type == typeJoinRules {
			resolved[k] = r.v1AuthEvents(evs, auth)
		}
	}
	update()
	for k, evs := range conflicted {
		if k.Type == typeMember {
			resolved[k] = r.v1AuthEvents(evs, auth)
		}
	}
	update()
	for k, evs := range conflicted {
		if _, done := resolved[k]; !done {
			resolved[k] = r.v1Normal(evs, auth)
		}
	}
	for k, ev := range resolved {
		unconflicted[k] = ev.ID
	}
	return unconflicted, nil
}

// v1Order sorts by descending depth, then ascending sha1(event_id) in hex.
func v1Order(evs []*dag.Event) []*dag.Event {
	type keyed struct {
		ev   *dag.Event
		hash string
	}
	ks := make([]keyed, len(evs))
	for i, ev := range evs {
		h := sha1.Sum([]byte(ev.ID))
		ks[i] = keyed{ev, hex.EncodeToString(h[:])}
	}
	sort.Slice(ks, func(a, b int) bool {
		if ks[a].ev.Depth != ks[b].ev.Depth {
			return ks[a].ev.Depth > ks[b].ev.Depth
		}
		return ks[a].hash < ks[b].hash
	})
	out := make([]*dag.Event, len(ks))
	for i := range ks {
		out[i] = ks[i].ev
	}
	return out
}

// v1AuthEvents resolves a conflict between auth events: ascending depth,
// descending sha1, the first taken as is and each next one while it passes.
func (r *resolver) v1AuthEvents(evs []*dag.Event, auth StateEvents) *dag.Event {
	ordered := v1Order(evs)
	for i, j := 0, len(ordered)-1; i < j; i, j = i+1, j-1 {
		ordered[i], ordered[j] = ordered[j], ordered[i]
	}
	local := StateEvents{}
	var buf []dag.StateKeyTuple
	for _, ev := range ordered {
		buf = eventNeededKeys(r.ver, ev, buf[:0])
		for _, k := range buf {
			if ae, ok := auth[k]; ok {
				local[k] = ae
			}
		}
	}
	prev := ordered[0]
	for _, ev := range ordered[1:] {
		local[prev.Key()] = prev
		if allowed(r.ver, ev, local) != nil {
			return prev
		}
		prev = ev
	}
	return prev
}

// v1Normal picks the first event, by descending depth and ascending sha1,
// that passes authentication in auth.
func (r *resolver) v1Normal(evs []*dag.Event, auth StateEvents) *dag.Event {
	ordered := v1Order(evs)
	for _, ev := range ordered {
		if allowed(r.ver, ev, auth) == nil {
			return ev
		}
	}
	return ordered[len(ordered)-1]
}
