package api

import (
	"encoding/json"
	"errors"
	"strings"

	"engram/projections"
)

// Receipts and read markers (client-server-api, "Receipts", "Fully read
// markers"). Receipts are log records (projections.Receipts keeps the
// current ones and serves /sync; projections.Push moves read positions and
// clears notification counts). m.fully_read is the room account data of
// the same name.

func (s *Server) receiptRoutes() {
	rt := &s.rt
	rt.client("POST", "/rooms/{roomId}/receipt/{receiptType}/{eventId}", authed, s.postReceipt)
	rt.client("POST", "/rooms/{roomId}/read_markers", authed, s.postReadMarkers)
}

const typeFullyRead = "m.fully_read"

func (s *Server) postReceipt(r *Req) error {
	room, typ, eventID := r.Param("roomId"), r.Param("receiptType"), r.Param("eventId")
	var body struct {
		ThreadID *string `json:"thread_id"`
	}
	if e := r.decode(&body); e != nil {
		return e
	}
	switch typ {
	case projections.ReceiptRead, projections.ReceiptReadPrivate, typeFullyRead:
	default:
		return errInvalid("Receipt type not recognised: " + typ)
	}
	thread := ""
	if body.ThreadID != nil {
		thread = *body.ThreadID
		switch {
		case thread == "":
			return errInvalid("thread_id field must be a non-empty string")
		case typ == typeFullyRead:
			return errInvalid("thread_id is not allowed for m.fully_read")
		case thread != "main" && !strings.HasPrefix(thread, "$"):
			return errInvalid("thread_id must be main or an event ID")
		}
	}
	if e := s.mustBeJoined(room, r.User); e != nil {
		return e
	}
	seq, e := s.receiptTarget(room, eventID)
	if e != nil {
		return e
	}
	if strings.HasPrefix(thread, "$") && eventID != thread {
		root, err := s.store.ThreadOf(eventID)
		if err != nil {
			return err
		}
		if root != thread {
			return errInvalid("event_id is not related to thread_id")
		}
	}
	if typ == typeFullyRead {
		err := s.setFullyRead(r.User, room, eventID, seq)
		if err != nil {
			return err
		}
	} else if err := s.putReceipt(r.User, room, typ, thread, eventID, seq); err != nil {
		return err
	}
	s.presenceActive(r.User)
	return r.json(struct{}{})
}

func (s *Server) postReadMarkers(r *Req) error {
	room := r.Param("roomId")
	var body map[string]json.RawMessage
	if e := r.decode(&body); e != nil {
		return e
	}
	if e := s.mustBeJoined(room, r.User); e != nil {
		return e
	}
	type marker struct {
		typ, id string
		seq     uint64
	}
	var markers []marker
	for _, typ := range []string{typeFullyRead, projections.ReceiptRead, projections.ReceiptReadPrivate} {
		raw, ok := body[typ]
		if !ok || string(raw) == "null" {
			continue
		}
		var id string
		if json.Unmarshal(raw, &id) != nil || id == "" {
			return errBadJSON(typ + " must be an event ID")
		}
		seq, e := s.receiptTarget(room, id)
		if e != nil {
			return e
		}
		markers = append(markers, marker{typ, id, seq})
	}
	for _, m := range markers {
		var err error
		if m.typ == typeFullyRead {
			err = s.setFullyRead(r.User, room, m.id, m.seq)
		} else {
			err = s.putReceipt(r.User, room, m.typ, "", m.id, m.seq)
		}
		if err != nil {
			return err
		}
	}
	s.presenceActive(r.User)
	return r.json(struct{}{})
}

// mustBeJoined is M_FORBIDDEN unless user is joined to room.
func (s *Server) mustBeJoined(room, user string) *Error {
	m, err := s.store.MemberOf(room, user)
	if err != nil || m.Membership != projections.MemberJoin {
		return errForbidden("You are not in this room")
	}
	return nil
}

// receiptTarget returns the position of an accepted event of the room.
func (s *Server) receiptTarget(room, eventID string) (uint64, *Error) {
	rec, seq, err := s.store.Event(eventID)
	if err != nil || rec.RoomID != room || rec.Status != projections.Accepted || seq > s.log.Last() {
		return 0, errNotFound("Unknown event " + eventID)
	}
	return seq, nil
}

// putReceipt appends a receipt unless the current one is already at or past
// the event (receipts never move backwards).
func (s *Server) putReceipt(user, room, typ, thread, eventID string, seq uint64) error {
	cur, err := s.store.Receipt(room, user, typ, thread)
	if err == nil && cur.EventSeq >= seq {
		return nil
	}
	if err != nil && !errors.Is(err, projections.ErrNotFound) {
		return err
	}
	rec, err := projections.Encode(&projections.ReceiptRecord{RoomID: room, UserID: user, Type: typ, ThreadID: thread,
		EventID: eventID, EventSeq: seq, TS: nowMS()})
	if err != nil {
		return err
	}
	_, err = s.log.Append(rec)
	return err
}

// setFullyRead moves the m.fully_read marker forward (as Synapse, never
// back).
func (s *Server) setFullyRead(user, room, eventID string, seq uint64) error {
	if cur, err := s.store.AccountData(user, room, typeFullyRead); err == nil {
		var c struct {
			EventID string `json:"event_id"`
		}
		if json.Unmarshal(cur.Content, &c) == nil && c.EventID != "" {
			if pos, _, err := s.store.EventPos(c.EventID); err == nil && pos >= seq {
				return nil
			}
		}
	}
	content, _ := json.Marshal(map[string]string{"event_id": eventID})
	return s.appendAccountData(user, room, typeFullyRead, content)
}
