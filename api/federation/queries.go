package federation

import (
	"encoding/json"
	"strconv"

	"engram/projections"
)

// handleTimestampToEvent is GET /timestamp_to_event/{roomId}?ts=&dir=: the
// room's event closest to ts in direction dir, from this server's
// timeline.
func (f *Federation) handleTimestampToEvent(r *req) error {
	room := r.param("roomId")
	if !f.canSee(r.origin, room) {
		return ferr(403, "M_FORBIDDEN", "Server is not in the room")
	}
	dir := r.query("dir")
	if dir != "f" && dir != "b" {
		return ferr(400, "M_INVALID_PARAM", "dir must be f or b")
	}
	ts, err := strconv.ParseInt(r.query("ts"), 10, 64)
	if err != nil {
		return ferr(400, "M_INVALID_PARAM", "ts must be an integer")
	}
	backwards := dir == "b"
	var after, before uint64 = 0, f.log.Last() + 1
	for {
		seqs, err := f.store.Timeline(room, after, before, backwards, 500)
		if err != nil {
			return err
		}
		for _, seq := range seqs {
			rec, err := f.store.Record(seq)
			if err != nil {
				continue
			}
			t := originTS(rec.PDU)
			if (!backwards && t >= ts) || (backwards && t <= ts) {
				return r.json(map[string]any{"event_id": rec.EventID, "origin_server_ts": t})
			}
		}
		if len(seqs) < 500 {
			return ferr(404, "M_NOT_FOUND", "No event found")
		}
		if backwards {
			before = seqs[len(seqs)-1]
		} else {
			after = seqs[len(seqs)-1]
		}
	}
}

func originTS(pdu []byte) int64 {
	var v struct {
		TS int64 `json:"origin_server_ts"`
	}
	_ = json.Unmarshal(pdu, &v)
	return v.TS
}

// profileFields are the fields /query/profile answers.
func (f *Federation) profile(user, field string) map[string]any {
	out := map[string]any{}
	fields, err := f.store.Profile(user)
	if err != nil {
		return out
	}
	for _, p := range fields {
		if field != "" && p.Key != field {
			continue
		}
		var v any
		if json.Unmarshal(p.Value, &v) == nil && v != nil {
			out[p.Key] = v
		}
	}
	return out
}

var _ = projections.Accepted
