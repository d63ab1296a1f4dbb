package api

import (
	"strconv"

	"engram/projections"
)

// GET /notifications (client-server-api, "Listing Notifications"): the
// events the user was notified about, newest first, from the push
// projection's per-user list. A token is the log position of the last
// notification returned.

func (s *Server) notificationRoutes() {
	s.rt.client("GET", "/notifications", authed, s.notifications)
}

func (s *Server) notifications(r *Req) error {
	limit := 50
	if l := r.Query("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			return errInvalid("Invalid limit")
		}
		limit = min(n, 1000)
	}
	upto := s.log.Last()
	if f := r.Query("from"); f != "" {
		p, err := strconv.ParseUint(f, 10, 64)
		if err != nil || p == 0 {
			return errInvalid("Invalid from token")
		}
		upto = min(upto, p-1)
	}
	only := r.Query("only")
	if only != "" && only != "highlight" {
		return errInvalid("only must be highlight")
	}
	type item struct {
		seq uint64
		n   projections.Notification
	}
	var items []item
	more := false
	err := s.store.Notifications(r.User, 0, upto, true, func(seq uint64, n *projections.Notification) bool {
		if only == "highlight" && !n.Highlight {
			return true
		}
		if len(items) == limit {
			more = true
			return false
		}
		items = append(items, item{seq, *n})
		return true
	})
	if err != nil {
		return err
	}
	readPos := map[string]uint64{}
	read := func(room, thread string) (uint64, error) {
		k := room + "\x00" + thread
		if p, ok := readPos[k]; ok {
			return p, nil
		}
		p, err := s.store.ReadPosition(r.User, room, thread)
		readPos[k] = p
		return p, err
	}
	now := nowMS()
	b := append(make([]byte, 0, 1024), `{"notifications":[`...)
	n := 0
	for _, it := range items {
		rec, err := s.store.Record(it.seq)
		if err != nil {
			continue
		}
		thread := it.n.Thread
		if thread == "" {
			thread = "main"
		}
		p1, err := read(it.n.RoomID, "")
		if err != nil {
			return err
		}
		p2, err := read(it.n.RoomID, thread)
		if err != nil {
			return err
		}
		if n > 0 {
			b = append(b, ',')
		}
		n++
		b = append(b, `{"actions":`...)
		if len(it.n.Actions) > 0 {
			b = append(b, it.n.Actions...)
		} else {
			b = append(b, "[]"...)
		}
		b = append(b, `,"event":`...)
		b = s.appendServedEvent(b, rec, it.seq, r.User, r.Device, now)
		b = append(b, `,"read":`...)
		b = strconv.AppendBool(b, it.seq <= max(p1, p2))
		b = append(b, `,"room_id":`...)
		b = appendJSONString(b, it.n.RoomID)
		b = append(b, `,"ts":`...)
		b = strconv.AppendInt(b, it.n.TS, 10)
		b = append(b, '}')
	}
	b = append(b, ']')
	if more && len(items) > 0 {
		b = append(b, `,"next_token":`...)
		b = appendJSONString(b, strconv.FormatUint(items[len(items)-1].seq, 10))
	}
	r.raw(200, append(b, '}'))
	return nil
}
