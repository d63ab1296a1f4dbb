package api

import (
	"time"

	"engram/projections"
)

// Typing notifications (client-server-api, "Typing Notifications"): in
// memory only, on the ephemeral stream, expiring after the timeout the
// client gave (at most maxTypingTimeout).

func (s *Server) typingRoutes() {
	s.rt.client("PUT", "/rooms/{roomId}/typing/{userId}", authed, s.putTyping)
}

func (s *Server) putTyping(r *Req) error {
	room, user := r.Param("roomId"), r.Param("userId")
	if user != r.User {
		return errForbidden("Cannot set typing state for another user")
	}
	var body struct {
		Typing  *bool  `json:"typing"`
		Timeout *int64 `json:"timeout"`
	}
	if e := r.decode(&body); e != nil {
		return e
	}
	if body.Typing == nil {
		return errMissing("Missing typing")
	}
	var timeout time.Duration
	if *body.Typing {
		if body.Timeout == nil {
			body.Timeout = new(int64)
			*body.Timeout = 30000 // Synapse's default
		}
		if *body.Timeout < 0 {
			return errInvalid("timeout must not be negative")
		}
		timeout = time.Duration(min(*body.Timeout, int64(maxTypingTimeout/time.Millisecond))) * time.Millisecond
	}
	m, err := s.store.MemberOf(room, r.User)
	if err != nil {
		return err
	}
	if m.Membership != projections.MemberJoin {
		return errForbidden("You are not in this room")
	}
	s.hub.setTyping(room, r.User, *body.Typing, timeout)
	if *body.Typing {
		s.presenceActive(r.User)
	}
	return r.json(struct{}{})
}
