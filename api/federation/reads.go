package federation

import (
	"encoding/json"
	"sort"
	"strconv"
	"time"

	"engram/dag"
	"engram/projections"
)

// canSee is the gate of the room reads: a server may read a room if one of
// its users is joined to it now, or the room is world_readable. Which
// events it then sees is serverVisibility's to say.
func (f *Federation) canSee(origin, room string) bool {
	ms, err := f.store.Members(room)
	if err == nil {
		for _, m := range ms {
			if m.Membership == projections.MemberJoin && dag.ServerName(m.UserID) == origin {
				return true
			}
		}
	}
	if id, err := f.store.StateEvent(room, "m.room.history_visibility", ""); err == nil {
		if rec, _, err := f.store.Event(id); err == nil {
			var c struct {
				Content struct {
					V string `json:"history_visibility"`
				} `json:"content"`
			}
			if json.Unmarshal(rec.PDU, &c) == nil && c.Content.V == "world_readable" {
				return true
			}
		}
	}
	return false
}

func (f *Federation) txnJSON(r *req, pdus []json.RawMessage) error {
	return r.json(map[string]any{"origin": f.cfg.ServerName, "origin_server_ts": time.Now().UnixMilli(), "pdus": pdus})
}

// handleEvent is GET /event/{eventId}.
func (f *Federation) handleEvent(r *req) error {
	rec, seq, err := f.store.Event(r.param("eventId"))
	if err != nil || rec.Status == projections.Rejected || !f.canSee(r.origin, rec.RoomID) {
		return ferr(404, "M_NOT_FOUND", "Event not found")
	}
	v, err := f.serverVisibility(r.origin, rec.RoomID)
	if err != nil {
		return err
	}
	if !v.allowed(seq) {
		return ferr(404, "M_NOT_FOUND", "Event not found")
	}
	return f.txnJSON(r, []json.RawMessage{rec.PDU})
}

// handleState serves /state and /state_ids: the state at event_id and its
// auth chain.
func (f *Federation) handleState(idsOnly bool) func(*req) error {
	return func(r *req) error {
		room, at := r.param("roomId"), r.query("event_id")
		if !f.canSee(r.origin, room) {
			return ferr(403, "M_FORBIDDEN", "Server is not in the room")
		}
		rec, _, err := f.store.Event(at)
		if err != nil || rec.RoomID != room {
			return ferr(404, "M_NOT_FOUND", "Event not found")
		}
		st, err := f.rooms.StateAt(room, at)
		if err != nil {
			return roomErr(err)
		}
		ids := make([]string, 0, len(st))
		for _, id := range st {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		chain, err := f.rooms.AuthChain(ids)
		if err != nil {
			return err
		}
		if idsOnly {
			return r.json(map[string]any{"pdu_ids": ids, "auth_chain_ids": chain})
		}
		pdus, err := f.pdus(ids)
		if err != nil {
			return err
		}
		ac, err := f.pdus(chain)
		if err != nil {
			return err
		}
		return r.json(map[string]any{"pdus": pdus, "auth_chain": ac})
	}
}

func (f *Federation) handleEventAuth(r *req) error {
	room := r.param("roomId")
	if !f.canSee(r.origin, room) {
		return ferr(403, "M_FORBIDDEN", "Server is not in the room")
	}
	rec, _, err := f.store.Event(r.param("eventId"))
	if err != nil || rec.RoomID != room {
		return ferr(404, "M_NOT_FOUND", "Event not found")
	}
	chain, err := f.rooms.AuthChain([]string{rec.EventID})
	if err != nil {
		return err
	}
	pdus, err := f.pdus(chain)
	if err != nil {
		return err
	}
	return r.json(map[string]any{"auth_chain": pdus})
}

// walkBack collects up to limit accepted events reachable backwards through
// prev_events from start, not going past stop, deepest first, as the
// requesting server may see them (v).
func (f *Federation) walkBack(v *serverVisibility, room string, start []string, stop map[string]bool, limit int, includeStart bool) []json.RawMessage {
	type item struct {
		depth int64
		id    string
		pdu   []byte
	}
	seen := map[string]bool{}
	var out []item
	queue := append([]string(nil), start...)
	for len(queue) > 0 && len(out) < limit {
		id := queue[0]
		queue = queue[1:]
		if seen[id] || stop[id] {
			continue
		}
		seen[id] = true
		rec, seq, err := f.store.Event(id)
		if err != nil || rec.RoomID != room || rec.Status == projections.Rejected || rec.Status == projections.Outlier {
			continue
		}
		pdu := servedPDU(v, seq, rec)
		if pdu == nil {
			continue
		}
		isStart := false
		for _, s := range start {
			isStart = isStart || s == id
		}
		if !isStart || includeStart {
			out = append(out, item{rec.Depth, id, pdu})
		}
		queue = append(queue, rec.PrevEvents...)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].depth != out[j].depth {
			return out[i].depth > out[j].depth
		}
		return out[i].id < out[j].id
	})
	pdus := make([]json.RawMessage, len(out))
	for i, it := range out {
		pdus[i] = it.pdu
	}
	return pdus
}

func (f *Federation) handleBackfill(r *req) error {
	room := r.param("roomId")
	if !f.canSee(r.origin, room) {
		return ferr(403, "M_FORBIDDEN", "Server is not in the room")
	}
	limit, _ := strconv.Atoi(r.query("limit"))
	if limit <= 0 || limit > 100 {
		limit = 100
	}
	var start []string
	for _, v := range r.ctx.QueryArgs().PeekMulti("v") {
		start = append(start, string(v))
	}
	v, err := f.serverVisibility(r.origin, room)
	if err != nil {
		return err
	}
	return f.txnJSON(r, f.walkBack(v, room, start, nil, limit, true))
}

// handleMissingEvents is POST /get_missing_events/{roomId}: events between
// earliest_events and latest_events, oldest first.
func (f *Federation) handleMissingEvents(r *req) error {
	room := r.param("roomId")
	if !f.canSee(r.origin, room) {
		return ferr(403, "M_FORBIDDEN", "Server is not in the room")
	}
	var body struct {
		Earliest []string `json:"earliest_events"`
		Latest   []string `json:"latest_events"`
		Limit    int      `json:"limit"`
		MinDepth int64    `json:"min_depth"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil {
		return ferr(400, "M_BAD_JSON", "Invalid body")
	}
	if body.Limit <= 0 || body.Limit > 100 {
		body.Limit = 10
	}
	stop := map[string]bool{}
	for _, id := range body.Earliest {
		stop[id] = true
	}
	v, err := f.serverVisibility(r.origin, room)
	if err != nil {
		return err
	}
	evs := f.walkBack(v, room, body.Latest, stop, body.Limit, false)
	// oldest first
	for i, j := 0, len(evs)-1; i < j; i, j = i+1, j-1 {
		evs[i], evs[j] = evs[j], evs[i]
	}
	return r.json(map[string]any{"events": evs})
}

// handleQueryDirectory is GET /query/directory: a local alias's room and
// the servers in it.
func (f *Federation) handleQueryDirectory(r *req) error {
	alias := r.query("room_alias")
	if dag.ServerName(alias) != f.cfg.ServerName {
		return ferr(404, "M_NOT_FOUND", "Room alias not found")
	}
	room, _, err := f.store.Alias(alias)
	if err != nil {
		return ferr(404, "M_NOT_FOUND", "Room alias not found")
	}
	servers := []string{f.cfg.ServerName}
	seen := map[string]bool{f.cfg.ServerName: true}
	if ms, err := f.store.Members(room); err == nil {
		for _, m := range ms {
			if s := dag.ServerName(m.UserID); m.Membership == projections.MemberJoin && !seen[s] {
				seen[s] = true
				servers = append(servers, s)
			}
		}
	}
	return r.json(map[string]any{"room_id": room, "servers": servers})
}

func (f *Federation) handleQueryProfile(r *req) error {
	user := r.query("user_id")
	if dag.ServerName(user) != f.cfg.ServerName {
		return ferr(403, "M_FORBIDDEN", "User is not local")
	}
	if _, err := f.store.Account(user); err != nil {
		return ferr(404, "M_NOT_FOUND", "User not found")
	}
	out := f.profile(user, r.query("field"))
	if field := r.query("field"); field != "" && len(out) == 0 {
		return ferr(404, "M_NOT_FOUND", "Profile field not found")
	}
	return r.json(out)
}
