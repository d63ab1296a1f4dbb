package api

import (
	"errors"
	"strings"

	"engram/dag/rooms"
	"engram/projections"
)

func (s *Server) redactRoutes() {
	s.rt.client("PUT", "/rooms/{roomId}/redact/{eventId}/{txnId}", authed, s.redact)
}

// domainOf returns the server name of a user ID.
func domainOf(id string) string {
	if i := strings.IndexByte(id, ':'); i >= 0 {
		return id[i+1:]
	}
	return ""
}

// redactionApplies decides whether an accepted redaction is applied to its
// target (rooms v3+, "Handling redactions"): "1. The power level of the
// redaction event's sender is greater than or equal to the redact level. 2.
// The domain of the redaction event's sender matches that of the original
// event's sender." The power level is read from the current state.
func (s *Server) redactionApplies(target, red *projections.EventRecord) bool {
	if red.RoomID != target.RoomID {
		return false
	}
	if domainOf(red.Sender) == domainOf(target.Sender) {
		return true
	}
	p, err := s.powerOf(target.RoomID)
	if err != nil {
		return false
	}
	return p.userLevel(red.Sender) >= p.redact
}

// redact serves PUT /rooms/{roomId}/redact/{eventId}/{txnId}. The checks
// beyond the authorization rules are Synapse's: create and server ACL
// events are never redacted, an event of another room cannot be redacted
// through this one, and a user below the redact level may redact only
// their own (known) events.
func (s *Server) redact(r *Req) error {
	content, e := r.eventBody()
	if e != nil {
		return e
	}
	room, target := r.Param("roomId"), r.Param("eventId")
	if err := s.checkRedaction(room, r.User, target); err != nil {
		return err
	}
	res, err := s.rooms.Send(rooms.Event{
		Room: room, Sender: r.User, Type: "m.room.redaction", Content: content, Redacts: target,
		// Redactions have their own transaction namespace: the same txnId
		// on /send is another request. txnFor still returns the bare txnId.
		Txn: txnKey(r.User, r.Device, room+"\x01redact", r.Param("txnId")),
	})
	if err != nil {
		return roomError(err)
	}
	return r.json(map[string]string{"event_id": res.EventID})
}

// checkRedaction decides whether user may redact target in room. Every
// client redaction goes through it (/redact and /send/m.room.redaction):
// from room version 3 the authorization rules accept any redaction, and a
// redaction between users of this server always "applies" (same domain),
// so this check is what keeps users from redacting others' events.
func (s *Server) checkRedaction(room, user, target string) error {
	if !strings.HasPrefix(target, "$") {
		return errNotFound("Event not found")
	}
	if _, err := s.store.RoomVersion(room); err != nil {
		if errors.Is(err, projections.ErrNotFound) {
			return errNotFound("Unknown room")
		}
		return err
	}
	orig, _, err := s.store.Event(target)
	if err != nil && !errors.Is(err, projections.ErrNotFound) {
		return err
	}
	if orig != nil && orig.Status != projections.Accepted && orig.Status != projections.SoftFailed {
		orig = nil
	}
	if orig != nil {
		if orig.RoomID != room {
			return errInvalid("Cannot redact an event of another room")
		}
		if orig.Type == "m.room.create" && orig.StateKey != nil {
			return errForbidden("Redacting create events is not permitted")
		}
		if orig.Type == "m.room.server_acl" && orig.StateKey != nil {
			return errForbidden("Redacting server ACL events is not permitted")
		}
	}
	p, err := s.powerOf(room)
	if err != nil {
		return err
	}
	if p.userLevel(user) < p.redact {
		if orig == nil {
			return errNotFound("Could not find event " + target)
		}
		if orig.Sender != user {
			return errForbidden("You don't have permission to redact events")
		}
	}
	return nil
}
