package api

import (
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"

	"engram/dag"
	"engram/projections"
)

// roomPower is a room's power levels as the API's own checks need them
// (who may delete an alias, publish a room, redact, upgrade). The
// sequencer's authorization rules stay the judge of every event; these
// checks only decide things outside the DAG, or answer early with a
// clearer error.
type roomPower struct {
	hasPL                                                                bool
	users                                                                map[string]int64
	events                                                               map[string]int64
	usersDefault, eventsDefault, stateDefault, ban, kick, redact, invite int64
	creators                                                             map[string]bool
	infiniteCreators                                                     bool // room version 12+
}

// infinitePower stands for a v12 creator's level, above any integer level.
const infinitePower = math.MaxInt64

// plValue reads a power level: an integer, or (before room version 10) a
// string holding one.
func plValue(raw json.RawMessage, def int64) int64 {
	if len(raw) == 0 {
		return def
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err == nil {
		if i, err := strconv.ParseInt(string(n), 10, 64); err == nil {
			return i
		}
		if f, err := strconv.ParseFloat(string(n), 64); err == nil {
			return int64(f)
		}
		return def
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if i, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64); err == nil {
			return i
		}
	}
	return def
}

// stateRecord returns the record of a room's current state event for (typ, sk).
func (s *Server) stateRecord(room, typ, sk string) (*projections.EventRecord, uint64, error) {
	id, err := s.store.StateEvent(room, typ, sk)
	if err != nil {
		return nil, 0, err
	}
	return s.store.Event(id)
}

// stateContent returns the content of a room's current state event for
// (typ, sk) as served (redacted when redacted), or ErrNotFound.
func (s *Server) stateContent(room, typ, sk string) (json.RawMessage, error) {
	rec, _, err := s.stateRecord(room, typ, sk)
	if err != nil {
		return nil, err
	}
	rec, _ = s.servedRecord(rec)
	var v pduView
	if err := json.Unmarshal(rec.PDU, &v); err != nil {
		return nil, err
	}
	return v.Content, nil
}

// powerOf reads a room's current power levels and creators.
func (s *Server) powerOf(room string) (*roomPower, error) {
	p := &roomPower{users: map[string]int64{}, events: map[string]int64{}, creators: map[string]bool{}}
	create, _, err := s.stateRecord(room, "m.room.create", "")
	if err != nil {
		return nil, err
	}
	ver := dag.Version(create.RoomVersion)
	var cc struct {
		Creator            string   `json:"creator"`
		AdditionalCreators []string `json:"additional_creators"`
	}
	var cv pduView
	if json.Unmarshal(create.PDU, &cv) == nil {
		json.Unmarshal(cv.Content, &cc)
	}
	switch {
	case ver != nil && ver.RoomIDFromCreate:
		p.infiniteCreators = true
		p.creators[create.Sender] = true
		for _, u := range cc.AdditionalCreators {
			p.creators[u] = true
		}
	case ver != nil && ver.CreatorIsSender:
		p.creators[create.Sender] = true
	default:
		p.creators[cc.Creator] = true
	}
	content, err := s.stateContent(room, "m.room.power_levels", "")
	if errors.Is(err, projections.ErrNotFound) {
		// "If there is no m.room.power_levels event in the room, the room
		// creator has a power level of 100, and all other users have a
		// power level of 0"; state_default is then 0.
		p.ban, p.kick, p.redact, p.invite = 50, 50, 50, 0
		return p, nil
	}
	if err != nil {
		return nil, err
	}
	p.hasPL = true
	var c map[string]json.RawMessage
	json.Unmarshal(content, &c)
	p.usersDefault = plValue(c["users_default"], 0)
	p.eventsDefault = plValue(c["events_default"], 0)
	p.stateDefault = plValue(c["state_default"], 50)
	p.ban = plValue(c["ban"], 50)
	p.kick = plValue(c["kick"], 50)
	p.redact = plValue(c["redact"], 50)
	p.invite = plValue(c["invite"], 0)
	var users, events map[string]json.RawMessage
	json.Unmarshal(c["users"], &users)
	json.Unmarshal(c["events"], &events)
	for k, v := range users {
		p.users[k] = plValue(v, p.usersDefault)
	}
	for k, v := range events {
		p.events[k] = plValue(v, 0)
	}
	return p, nil
}

// userLevel is a user's power level.
func (p *roomPower) userLevel(user string) int64 {
	if p.creators[user] && (p.infiniteCreators || !p.hasPL) {
		if p.infiniteCreators {
			return infinitePower
		}
		return 100
	}
	if l, ok := p.users[user]; ok {
		return l
	}
	return p.usersDefault
}

// eventLevel is the level needed to send an event of type typ.
func (p *roomPower) eventLevel(typ string, state bool) int64 {
	if l, ok := p.events[typ]; ok {
		return l
	}
	if state {
		return p.stateDefault
	}
	return p.eventsDefault
}

// canSend reports whether user may send an event of type typ by level.
func (p *roomPower) canSend(user, typ string, state bool) bool {
	return p.userLevel(user) >= p.eventLevel(typ, state)
}
