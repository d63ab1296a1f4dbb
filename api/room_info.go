package api

import (
	"encoding/json"
	"errors"
	"strconv"

	"engram/projections"
)

func (s *Server) roomInfoRoutes() {
	rt := &s.rt
	rt.handle("GET", "/_matrix/client/v1/room_summary/{roomIdOrAlias}", public, s.roomSummary)
	rt.handle("GET", "/_matrix/client/unstable/im.nheko.summary/rooms/{roomIdOrAlias}/summary", public, s.roomSummary)
	rt.handle("GET", "/_matrix/client/v1/rooms/{roomId}/timestamp_to_event", authed, s.timestampToEvent)
	rt.client("POST", "/rooms/{roomId}/report/{eventId}", authed, s.reportEvent)
	rt.client("POST", "/rooms/{roomId}/report", authed, s.reportRoom)
	rt.client("POST", "/users/{userId}/report", authed, s.reportUser)
}

// roomSummary serves GET /v1/room_summary/{roomIdOrAlias}. The access
// token is optional. As in Synapse, a room is summarised for anyone when
// its join rule is public, knock or knock_restricted or its history is
// world_readable; for a user who is joined, invited or knocking; and for a
// member of a room a restricted join rule allows. Otherwise it is not
// found.
func (s *Server) roomSummary(r *Req) error {
	if len(accessToken(r.ctx)) > 0 {
		if e := s.authenticate(r); e != nil {
			return e
		}
	}
	room, err := s.resolveRoom(r.Param("roomIdOrAlias"))
	if err != nil {
		return err
	}
	c, err := s.roomInfo(room)
	if errors.Is(err, projections.ErrNotFound) {
		return errNotFound("Room not found")
	}
	if err != nil {
		return err
	}
	var membership byte
	if r.User != "" {
		m, err := s.store.MemberOf(room, r.User)
		if err != nil {
			return err
		}
		membership = m.Membership
		c.Membership = "leave"
		if membership != 0 {
			c.Membership = projections.MembershipName(membership)
		}
	}
	ok := c.WorldReadable
	switch c.JoinRule {
	case "public", "knock", "knock_restricted":
		ok = true
	}
	switch membership {
	case projections.MemberJoin, projections.MemberInvite, projections.MemberKnock:
		ok = true
	}
	if !ok && r.User != "" {
		for _, allowed := range c.AllowedRoomIDs {
			if m, err := s.store.MemberOf(allowed, r.User); err == nil && m.Membership == projections.MemberJoin {
				ok = true
				break
			}
		}
	}
	if !ok {
		return errNotFound("Room not found or is not accessible")
	}
	return r.json(c)
}

// originTS reads an event's origin_server_ts.
func originTS(rec *projections.EventRecord) int64 {
	var v struct {
		TS int64 `json:"origin_server_ts"`
	}
	json.Unmarshal(rec.PDU, &v)
	return v.TS
}

// firstAtOrAfter returns the room's first event whose origin_server_ts is
// at least ts, by bisection over log positions: timestamps of a room's
// events follow their log order (they are stamped as they are sequenced),
// so this costs O(log n) seeks.
func (s *Server) firstAtOrAfter(room string, ts int64) (uint64, *projections.EventRecord, error) {
	var best uint64
	var bestRec *projections.EventRecord
	lo, hi := uint64(0), s.log.Last()+1
	for lo+1 < hi {
		mid := lo + (hi-lo)/2
		evs, err := s.store.Timeline(room, mid-1, hi, false, 1)
		if err != nil {
			return 0, nil, err
		}
		if len(evs) == 0 {
			hi = mid
			continue
		}
		rec, err := s.store.Record(evs[0])
		if err != nil {
			return 0, nil, err
		}
		if originTS(rec) >= ts {
			best, bestRec, hi = evs[0], rec, mid
		} else {
			lo = evs[0]
		}
	}
	return best, bestRec, nil
}

// timestampToEvent serves GET /v1/rooms/{roomId}/timestamp_to_event: the
// event closest to ts in direction dir (f: the first at or after ts; b: the
// last at or before it).
func (s *Server) timestampToEvent(r *Req) error {
	room := r.Param("roomId")
	dir := r.Query("dir")
	if dir != "f" && dir != "b" {
		return errInvalid("dir must be f or b")
	}
	raw := r.Query("ts")
	if raw == "" {
		return errMissing("Missing ts")
	}
	ts, err := strconv.ParseInt(raw, 10, 64)
	if err != nil {
		return errInvalid("ts must be an integer")
	}
	if _, err := s.readAccess(room, r.User, false); err != nil {
		return err
	}
	var rec *projections.EventRecord
	if dir == "f" {
		_, rec, err = s.firstAtOrAfter(room, ts)
	} else {
		var after uint64
		hi := s.log.Last() + 1
		if ts < 1<<62 {
			if after, _, err = s.firstAtOrAfter(room, ts+1); err == nil && after > 0 {
				hi = after
			}
		}
		if err == nil {
			var evs []uint64
			if evs, err = s.store.Timeline(room, 0, hi, true, 1); err == nil && len(evs) > 0 {
				rec, err = s.store.Record(evs[0])
				if err == nil && originTS(rec) > ts {
					rec = nil
				}
			}
		}
	}
	if err != nil {
		return err
	}
	if rec == nil {
		dirName := "forward"
		if dir == "b" {
			dirName = "backward"
		}
		return errNotFound("Unable to find event from " + raw + " in " + dirName + " direction")
	}
	return r.json(map[string]any{"event_id": rec.EventID, "origin_server_ts": originTS(rec)})
}

type reportBody struct {
	Reason *string          `json:"reason"`
	Score  *json.RawMessage `json:"score"`
}

// reportEvent serves POST /rooms/{roomId}/report/{eventId}: "The caller
// must be joined to the room to report it"; otherwise, like an unknown
// event, 404.
func (s *Server) reportEvent(r *Req) error {
	var b reportBody
	if e := r.decode(&b); e != nil {
		return e
	}
	var score *int
	if b.Score != nil && string(*b.Score) != "null" {
		var n int
		if err := json.Unmarshal(*b.Score, &n); err != nil || n < -100 || n > 0 {
			return errInvalid("score must be an integer in [-100, 0]")
		}
		score = &n
	}
	room, id := r.Param("roomId"), r.Param("eventId")
	m, err := s.store.MemberOf(room, r.User)
	if err != nil {
		return err
	}
	if m.Membership != projections.MemberJoin {
		return errNotFound("The event was not found or you are not joined to the room.")
	}
	if _, _, err := s.roomEvent(room, id); err != nil {
		if errors.Is(err, projections.ErrNotFound) {
			return errNotFound("The event was not found or you are not joined to the room.")
		}
		return err
	}
	rec := &projections.ReportRecord{Reporter: r.User, RoomID: room, EventID: id, Score: score, TS: nowMS()}
	if b.Reason != nil {
		rec.Reason = *b.Reason
	}
	if err := s.appendRecord(rec); err != nil {
		return err
	}
	return r.json(struct{}{})
}

// reportRoom serves POST /rooms/{roomId}/report; the caller need not be in
// the room.
func (s *Server) reportRoom(r *Req) error {
	var b reportBody
	if e := r.decode(&b); e != nil {
		return e
	}
	if b.Reason == nil {
		return errBadJSON("Missing reason")
	}
	room := r.Param("roomId")
	if err := s.knownRoom(room); err != nil {
		return errNotFound("The room was not found.")
	}
	if err := s.appendRecord(&projections.ReportRecord{Reporter: r.User, RoomID: room, Reason: *b.Reason, TS: nowMS()}); err != nil {
		return err
	}
	return r.json(struct{}{})
}

// reportUser serves POST /users/{userId}/report. Users of other servers
// cannot be checked and are recorded as reported.
func (s *Server) reportUser(r *Req) error {
	var b reportBody
	if e := r.decode(&b); e != nil {
		return e
	}
	if b.Reason == nil {
		return errBadJSON("Missing reason")
	}
	user := r.Param("userId")
	if !validUserID(user) {
		return errInvalid("Invalid user ID")
	}
	if domainOf(user) == s.cfg.ServerName {
		if _, err := s.store.Account(user); err != nil {
			if errors.Is(err, projections.ErrNotFound) {
				return errNotFound("The user was not found.")
			}
			return err
		}
	}
	if err := s.appendRecord(&projections.ReportRecord{Reporter: r.User, UserID: user, Reason: *b.Reason, TS: nowMS()}); err != nil {
		return err
	}
	return r.json(struct{}{})
}
