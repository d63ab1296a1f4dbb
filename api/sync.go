package api

import (
	"encoding/json"
	"strconv"
	"time"

	"engram/projections"
)

func (s *Server) syncRoutes() {
	rt := &s.rt
	rt.client("GET", "/sync", authed, s.sync)
	rt.client("POST", "/user/{userId}/filter", authed, s.postFilter)
	rt.client("GET", "/user/{userId}/filter/{filterId}", authed, s.getFilter)
	rt.client("GET", "/pushrules/", authed, s.pushRules)
}

// syncFilter is the part of a filter /sync honours so far.
type syncFilter struct {
	Room struct {
		Timeline struct {
			Limit *int `json:"limit"`
		} `json:"timeline"`
		IncludeLeave bool `json:"include_leave"`
	} `json:"room"`
}

const (
	defaultTimelineLimit = 10
	maxSyncTimeout       = 5 * time.Minute
)

func (s *Server) syncFilter(r *Req) (*syncFilter, *Error) {
	f := &syncFilter{}
	raw := r.Query("filter")
	if raw == "" {
		return f, nil
	}
	var body []byte
	if raw[0] == '{' {
		body = []byte(raw)
	} else {
		stored, err := s.store.Filter(r.User, raw)
		if err != nil {
			return nil, errNotFound("No such filter")
		}
		body = stored
	}
	if e := decodeJSON(body, f); e != nil {
		return nil, e
	}
	return f, nil
}

// sync serves GET /sync: initial without since, incremental with it,
// long-polling up to timeout for something the user can see to happen.
func (s *Server) sync(r *Req) error {
	f, e := s.syncFilter(r)
	if e != nil {
		return e
	}
	limit := defaultTimelineLimit
	if l := f.Room.Timeline.Limit; l != nil {
		limit = max(1, min(*l, 500))
	}
	var timeout time.Duration
	if t := r.Query("timeout"); t != "" {
		ms, err := strconv.ParseInt(t, 10, 64)
		if err != nil || ms < 0 {
			return errInvalid("Invalid timeout")
		}
		timeout = min(time.Duration(ms)*time.Millisecond, maxSyncTimeout)
	}
	fullState := r.Query("full_state") == "true"
	st := &syncState{s: s, user: r.User, device: r.Device, limit: limit, now: nowMS()}

	since := r.Query("since")
	if since == "" {
		st.upto = s.log.Last()
		if err := st.initial(); err != nil {
			return err
		}
		r.raw(200, st.encode())
		return nil
	}
	sincePos, ok := parseToken(since)
	if !ok {
		return errInvalid("Invalid since token")
	}
	deadline := time.Now().Add(timeout)
	checked := sincePos
	for {
		changed := s.log.Changed() // before Last(): a commit between them still wakes us
		upto := s.log.Last()
		if sincePos > upto {
			sincePos = upto // a token from the future cannot happen with a durable log; clamp
		}
		if err := st.collect(checked, upto); err != nil {
			return err
		}
		checked = upto
		st.upto = upto
		if len(st.rooms) > 0 || fullState || !time.Now().Before(deadline) {
			break
		}
		select {
		case <-changed:
		case <-time.After(time.Until(deadline)):
		case <-r.ctx.Done():
			return nil
		}
	}
	st.since = sincePos
	if err := st.incremental(fullState); err != nil {
		return err
	}
	r.raw(200, st.encode())
	return nil
}

// syncState builds one /sync response.
type syncState struct {
	s            *Server
	user, device string
	limit        int
	now          int64
	since, upto  uint64

	rooms   map[string]projections.Member // changed rooms the user has a membership in
	order   []string
	join    []byte // "roomid":{...} members, comma separated
	invite  []byte
	leave   []byte
	checked map[string]bool
}

// collect notes the rooms with activity in (after, upto] that the user has a
// membership in. Its cost is proportional to the activity, not to the number
// of rooms the user is in.
func (st *syncState) collect(after, upto uint64) error {
	if st.rooms == nil {
		st.rooms, st.checked = map[string]projections.Member{}, map[string]bool{}
	}
	var ferr error
	err := st.s.store.Changes(after, upto, func(_ uint64, room string) bool {
		if st.checked[room] {
			return true
		}
		st.checked[room] = true
		m, err := st.s.store.MemberOf(room, st.user)
		if err != nil {
			ferr = err
			return false
		}
		if m.Membership != 0 {
			st.rooms[room] = m
			st.order = append(st.order, room)
		}
		return true
	})
	if err == nil {
		err = ferr
	}
	return err
}

func (st *syncState) initial() error {
	urs, err := st.s.store.UserRooms(st.user)
	if err != nil {
		return err
	}
	for _, u := range urs {
		m := projections.Member{UserID: st.user, Membership: u.Membership, Seq: u.Seq}
		switch u.Membership {
		case projections.MemberJoin:
			if err := st.joined(u.RoomID, m, true); err != nil {
				return err
			}
		case projections.MemberInvite:
			if err := st.invited(u.RoomID, m); err != nil {
				return err
			}
		}
	}
	return nil
}

func (st *syncState) incremental(fullState bool) error {
	if fullState {
		urs, err := st.s.store.UserRooms(st.user)
		if err != nil {
			return err
		}
		for _, u := range urs {
			if _, ok := st.rooms[u.RoomID]; !ok && u.Membership == projections.MemberJoin {
				st.rooms[u.RoomID] = projections.Member{UserID: st.user, Membership: u.Membership, Seq: u.Seq}
				st.order = append(st.order, u.RoomID)
			}
		}
	}
	for _, room := range st.order {
		m := st.rooms[room]
		var err error
		switch m.Membership {
		case projections.MemberJoin:
			err = st.joined(room, m, fullState || m.Seq > st.since)
		case projections.MemberInvite:
			if m.Seq > st.since {
				err = st.invited(room, m)
			}
		case projections.MemberLeave, projections.MemberBan:
			if m.Seq > st.since {
				err = st.left(room, m)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// timeline returns the newest positions of a room in (after, upto], oldest
// first, and whether older ones were left out.
func (st *syncState) timeline(room string, after, upto uint64) ([]uint64, bool, error) {
	seqs, err := st.s.store.Timeline(room, after, upto+1, true, st.limit+1)
	if err != nil {
		return nil, false, err
	}
	limited := len(seqs) > st.limit
	if limited {
		seqs = seqs[:st.limit]
	}
	if seqs, err = st.s.filterVisible(st.user, room, seqs); err != nil {
		return nil, false, err
	}
	for i, j := 0, len(seqs)-1; i < j; i, j = i+1, j-1 {
		seqs[i], seqs[j] = seqs[j], seqs[i]
	}
	return seqs, limited, nil
}

// joined adds a room to the join section. full sends the whole current state
// (initial sync, a new join, full_state); otherwise state carries the state
// events skipped by a limited timeline.
func (st *syncState) joined(room string, m projections.Member, full bool) error {
	after := st.since
	if full {
		after = 0
	}
	seqs, limited, err := st.timeline(room, after, st.upto)
	if err != nil {
		return err
	}
	inTimeline := map[uint64]bool{}
	for _, q := range seqs {
		inTimeline[q] = true
	}
	var state []uint64
	if full {
		entries, err := st.s.store.CurrentState(room, "")
		if err != nil {
			return err
		}
		for _, e := range entries {
			pos, _, err := st.s.store.EventPos(e.EventID)
			if err != nil {
				return err
			}
			if !inTimeline[pos] && pos <= st.upto {
				state = append(state, pos)
			}
		}
	} else if limited && len(seqs) > 0 {
		skipped, err := st.s.store.Timeline(room, st.since, seqs[0], false, 10000)
		if err != nil {
			return err
		}
		for _, q := range skipped {
			rec, err := st.s.store.Record(q)
			if err != nil {
				return err
			}
			if rec.IsState() {
				state = append(state, q)
			}
		}
	}
	b := st.join
	if len(b) > 0 {
		b = append(b, ',')
	}
	b = appendJSONString(b, room)
	b = append(b, `:{"timeline":{"events":`...)
	if b, err = st.s.appendEventList(b, seqs, st.user, st.device, st.now); err != nil {
		return err
	}
	b = append(b, `,"limited":`...)
	b = strconv.AppendBool(b, limited)
	prev := st.since
	if len(seqs) > 0 {
		prev = seqs[0] - 1
	}
	b = append(b, `,"prev_batch":`...)
	b = appendJSONString(b, pageToken(prev))
	b = append(b, `},"state":{"events":`...)
	if b, err = st.s.appendEventList(b, state, st.user, st.device, st.now); err != nil {
		return err
	}
	b = append(b, `},"ephemeral":{"events":[]},"account_data":{"events":[]},"unread_notifications":{"notification_count":0,"highlight_count":0}}`...)
	st.join = b
	return nil
}

// strippedTypes are the state events an invitee sees (the spec's
// recommended stripped state).
var strippedTypes = []string{"m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar",
	"m.room.canonical_alias", "m.room.encryption", "m.room.topic"}

func (st *syncState) invited(room string, m projections.Member) error {
	var ids []string
	for _, t := range strippedTypes {
		if id, err := st.s.store.StateEvent(room, t, ""); err == nil {
			ids = append(ids, id)
		}
	}
	if m.EventID == "" {
		mm, err := st.s.store.MemberOf(room, st.user)
		if err != nil {
			return err
		}
		m = mm
	}
	ids = append(ids, m.EventID)
	b := st.invite
	if len(b) > 0 {
		b = append(b, ',')
	}
	b = appendJSONString(b, room)
	b = append(b, `:{"invite_state":{"events":[`...)
	for i, id := range ids {
		rec, _, err := st.s.store.Event(id)
		if err != nil {
			return err
		}
		var v pduView
		if err := json.Unmarshal(rec.PDU, &v); err != nil {
			return err
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"content":`...)
		b = append(b, v.Content...)
		b = append(b, `,"sender":`...)
		b = appendJSONString(b, v.Sender)
		b = append(b, `,"state_key":`...)
		sk := ""
		if v.StateKey != nil {
			sk = *v.StateKey
		}
		b = appendJSONString(b, sk)
		b = append(b, `,"type":`...)
		b = appendJSONString(b, v.Type)
		b = append(b, '}')
	}
	st.invite = append(b, "]}}"...)
	return nil
}

func (st *syncState) left(room string, m projections.Member) error {
	seqs, limited, err := st.timeline(room, st.since, m.Seq)
	if err != nil {
		return err
	}
	b := st.leave
	if len(b) > 0 {
		b = append(b, ',')
	}
	b = appendJSONString(b, room)
	b = append(b, `:{"timeline":{"events":`...)
	if b, err = st.s.appendEventList(b, seqs, st.user, st.device, st.now); err != nil {
		return err
	}
	b = append(b, `,"limited":`...)
	b = strconv.AppendBool(b, limited)
	b = append(b, `},"state":{"events":[]},"account_data":{"events":[]}}`...)
	st.leave = b
	return nil
}

func (st *syncState) encode() []byte {
	b := make([]byte, 0, 256+len(st.join)+len(st.invite)+len(st.leave))
	b = append(b, `{"next_batch":`...)
	b = appendJSONString(b, syncToken(st.upto))
	b = append(b, `,"rooms":{"join":{`...)
	b = append(b, st.join...)
	b = append(b, `},"invite":{`...)
	b = append(b, st.invite...)
	b = append(b, `},"leave":{`...)
	b = append(b, st.leave...)
	b = append(b, `},"knock":{}},"presence":{"events":[]},"account_data":{"events":[]},"to_device":{"events":[]},"device_lists":{"changed":[],"left":[]},"device_one_time_keys_count":{"signed_curve25519":0},"device_unused_fallback_key_types":[]}`...)
	return b
}
