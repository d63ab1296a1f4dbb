package api

import (
	"errors"
	"strconv"
	"sync"
	"time"

	"engram/projections"
)

// /sync (client-server-api, "Syncing"). A sync token is a position in
// every stream /sync serves (tokens.go): the log (room events, receipts,
// account data, push rules, notification counts: all folded from log
// records) and the in-memory ephemeral streams (typing, presence). An
// incremental sync answers what changed between the since token and "now",
// found by scanning the change streams of that window, so its cost is
// proportional to what changed, not to how many rooms the user is in.
//
// A long-poll waits on the log's and the ephemeral streams' change
// channels, and on each wake looks only at the new part of the window; it
// answers as soon as something the user can see changed (an event, a
// receipt or typing in one of their rooms, their account data or push
// rules, presence of someone they share a room with), or at the timeout.

func (s *Server) syncRoutes() {
	s.hub = newSyncHub(s)
	s.hub.start()
	rt := &s.rt
	rt.client("GET", "/sync", authed, s.sync)
	rt.client("POST", "/user/{userId}/filter", authed, s.postFilter)
	rt.client("GET", "/user/{userId}/filter/{filterId}", authed, s.getFilter)
	s.typingRoutes()
	s.receiptRoutes()
	s.presenceRoutes()
	s.accountDataRoutes()
	s.pushRuleRoutes()
	s.pusherRoutes()
	s.notificationRoutes()
}

const maxSyncTimeout = 5 * time.Minute

// syncRequest is one /sync call, parsed.
type syncRequest struct {
	user, device string
	filter       *syncFilter
	since        syncPos
	hasSince     bool
	fullState    bool
}

// sync serves GET /sync: initial without since, incremental with it,
// long-polling up to timeout for something the user can see to happen.
func (s *Server) sync(r *Req) error {
	f, e := s.parseSyncFilter(r.User, r.Query("filter"))
	if e != nil {
		return e
	}
	var timeout time.Duration
	if t := r.Query("timeout"); t != "" {
		ms, err := strconv.ParseInt(t, 10, 64)
		if err != nil || ms < 0 {
			return errInvalid("Invalid timeout")
		}
		timeout = time.Duration(min(ms, maxSyncTimeout.Milliseconds())) * time.Millisecond
	}
	setPresence := r.Query("set_presence")
	switch setPresence {
	case "", "online", "offline", "unavailable":
	default:
		return errInvalid("set_presence must be online, offline or unavailable")
	}
	var fullState bool
	switch r.Query("full_state") {
	case "", "false":
	case "true":
		fullState = true
	default:
		return errInvalid("full_state must be true or false")
	}
	req := &syncRequest{user: r.User, device: r.Device, filter: f, fullState: fullState}
	if t := r.Query("since"); t != "" {
		p, ok := parseSyncToken(t)
		if !ok {
			return errInvalid("Invalid since token")
		}
		req.since, req.hasSince = p, true
	}
	s.presenceSyncing(r.User, setPresence)
	defer s.presenceSyncDone(r.User)
	body, err := s.runSync(r.ctx.Done(), req, timeout)
	if err != nil || body == nil {
		return err
	}
	r.raw(200, body) // copies
	releaseSyncBody(body)
	return nil
}

// runSync computes a /sync response, waiting up to timeout for news when
// the request is incremental. It returns nil, nil when done closes first.
func (s *Server) runSync(done <-chan struct{}, req *syncRequest, timeout time.Duration) ([]byte, error) {
	if !req.hasSince {
		st := newSyncState(s, req, syncPos{})
		st.initial = true
		s.hub.lazy.reset(req.user, req.device)
		return st.build(syncPos{log: s.log.Last(), eph: s.hub.ephPos()})
	}
	since := req.since
	s.hub.observe(since.eph)
	if last := s.log.Last(); since.log > last {
		since.log = last // a token from the future cannot happen with a durable log; clamp
	}
	if req.fullState {
		s.hub.lazy.reset(req.user, req.device)
	}
	st := newSyncState(s, req, since)
	deadline := time.Now().Add(timeout)
	checked := since
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		logCh, ephCh := s.log.Changed(), s.hub.changed() // before the positions: a change between them still wakes us
		upto := syncPos{log: s.log.Last(), eph: s.hub.ephPos()}
		if err := st.collect(checked, upto); err != nil {
			return nil, err
		}
		checked = upto
		expired := !time.Now().Before(deadline)
		if st.pending() || req.fullState || expired {
			body, err := st.build(upto)
			if err != nil {
				return nil, err
			}
			if st.nonEmpty || req.fullState || expired {
				return body, nil
			}
			// Everything found was filtered out: forget it, so the next
			// wake does not rebuild it (it would be filtered again).
			releaseSyncBody(body)
			st.resetCollected()
		}
		if timer == nil {
			timer = time.NewTimer(time.Until(deadline))
		}
		s.hub.waiting.Add(1)
		select {
		case <-logCh:
		case <-ephCh:
		case <-timer.C:
		case <-done:
			s.hub.waiting.Add(-1)
			return nil, nil
		}
		s.hub.waiting.Add(-1)
	}
}

// syncState gathers and builds one /sync response.
type syncState struct {
	s            *Server
	req          *syncRequest
	f            *syncFilter
	user, device string
	since, upto  syncPos
	initial      bool
	now          int64

	// What incremental collection found, in the order first seen.
	rooms       map[string]bool // rooms with news the user may see
	roomOrder   []string
	roomAD      map[string][]string // room -> account data types changed
	typingRooms map[string]bool
	globalAD    []string
	presence    []string
	seen        map[string]bool // dedup of globalAD/presence entries
	extChanged  bool

	shares         map[string]bool // presence visibility memo
	sharesComplete bool            // shares lists every co-member
	ignored        map[string]bool // m.ignored_user_list, loaded once

	nonEmpty bool
}

func newSyncState(s *Server, req *syncRequest, since syncPos) *syncState {
	st := &syncState{s: s, req: req, f: req.filter, user: req.user, device: req.device, since: since, shares: map[string]bool{}}
	st.resetCollected()
	return st
}

// resetCollected forgets what collection found. The maps are made on
// first write (most windows of a busy room fill only rooms, with one room).
func (st *syncState) resetCollected() {
	st.rooms, st.roomOrder, st.roomAD, st.typingRooms = nil, nil, nil, nil
	st.globalAD, st.presence, st.seen, st.extChanged = nil, nil, nil, false
}

// see marks a dedup key of globalAD/presence entries; false if it was seen.
func (st *syncState) see(k string) bool {
	if st.seen[k] {
		return false
	}
	if st.seen == nil {
		st.seen = map[string]bool{}
	}
	st.seen[k] = true
	return true
}

// pending reports whether collection found anything.
func (st *syncState) pending() bool {
	return len(st.rooms) > 0 || len(st.globalAD) > 0 || len(st.presence) > 0 || st.extChanged
}

// collect notes what changed in (from, to] that the user may see. Its
// cost is proportional to the activity in the window.
func (st *syncState) collect(from, to syncPos) error {
	s := st.s
	var ferr error
	touch := func(room string) bool {
		if st.rooms[room] {
			return true
		}
		ok, err := st.relevant(room)
		if err != nil {
			ferr = err
			return false
		}
		if ok {
			if st.rooms == nil {
				st.rooms = make(map[string]bool, 4)
			}
			st.rooms[room] = true
			st.roomOrder = append(st.roomOrder, room)
		}
		return true
	}
	if to.log > from.log {
		// A busy room's window is mostly runs of the same room: a run is
		// looked up once.
		last := ""
		err := s.changes(from.log, to.log, func(_ uint64, room string) bool {
			if room == last && last != "" {
				return true
			}
			last = room
			return touch(room)
		})
		if err != nil {
			return err
		}
		if ferr != nil {
			return ferr
		}
		// A window of room events only (the served tracker knows) has no
		// receipts, account data, key changes or to-device messages: those
		// streams are folded from other records.
		quiet := s.hub.served.onlyEvents(from.log)
		if !quiet {
			err := s.store.ReceiptStream(from.log, to.log, func(_ uint64, room, user, typ string) bool {
				if typ == projections.ReceiptReadPrivate && user != st.user {
					return true // others' private receipts are never shown
				}
				return touch(room)
			})
			if err != nil {
				return err
			}
			if ferr != nil {
				return ferr
			}
			err = s.store.AccountDataChanges(st.user, from.log, to.log, func(_ uint64, room, typ string) bool {
				if room == "" {
					if st.see("a" + typ) {
						st.globalAD = append(st.globalAD, typ)
					}
					return true
				}
				if !containsStr(st.roomAD[room], typ) {
					if st.roomAD == nil {
						st.roomAD = map[string][]string{}
					}
					st.roomAD[room] = append(st.roomAD[room], typ)
				}
				return touch(room)
			})
			if err != nil {
				return err
			}
			if ferr != nil {
				return ferr
			}
		}
		for _, ext := range activeSyncExtensions() {
			if ext.changed == nil || (quiet && ext.eventsOnlyQuiet) {
				continue
			}
			ch, err := ext.changed(st, from.log, to.log)
			if err != nil {
				return err
			}
			st.extChanged = st.extChanged || ch
		}
	}
	if to.eph > from.eph {
		for _, room := range s.hub.typingChanges(from.eph, to.eph) {
			m, err := s.memberOf(room, st.user)
			if err != nil {
				return err
			}
			if m.Membership == projections.MemberJoin {
				if st.typingRooms == nil {
					st.typingRooms = map[string]bool{}
				}
				st.typingRooms[room] = true
				touch(room)
			}
		}
		if ferr != nil {
			return ferr
		}
		users, err := st.presenceChanges(from.eph, to.eph)
		if err != nil {
			return err
		}
		for _, u := range users {
			if st.see("p" + u) {
				st.presence = append(st.presence, u)
			}
		}
	}
	return nil
}

// relevant reports whether news in a room concerns the user: they are
// joined, or their membership changed since the since token.
func (st *syncState) relevant(room string) (bool, error) {
	if !st.f.roomAllowed(room) {
		return false, nil
	}
	m, err := st.s.memberOf(room, st.user)
	if err != nil {
		return false, err
	}
	return m.Membership == projections.MemberJoin || (m.Membership != 0 && m.Seq > st.since.log), nil
}

// membership returns the user's membership in a room as of log position
// at: projection rows may run ahead of the durable position a sync answers
// for, and the membership then comes from the room's history.
func (st *syncState) membership(room string, at uint64) (projections.Member, error) {
	m, err := st.s.memberOf(room, st.user)
	if err != nil || m.Seq <= at {
		return m, err
	}
	id, pos, err := st.s.store.StateEventAt(room, "m.room.member", st.user, at)
	if errors.Is(err, projections.ErrNotFound) {
		return projections.Member{UserID: st.user}, nil
	}
	if err != nil {
		return m, err
	}
	rec, _, err := st.s.store.Event(id)
	if err != nil {
		return m, err
	}
	return projections.Member{UserID: st.user, Membership: projections.MembershipCode(rec.Membership), Seq: pos, EventID: id}, nil
}

// build writes the response for (since, upto]. The joined rooms, the bulk
// of it, are written straight into the response buffer, which comes from a
// pool (releaseSyncBody gives it back).
func (st *syncState) build(upto syncPos) ([]byte, error) {
	st.upto = upto
	st.now = nowMS()
	st.nonEmpty = false
	var invite, leave, knock []byte
	add := func(dst *[]byte, part []byte) {
		if part == nil {
			return
		}
		if len(*dst) > 0 {
			*dst = append(*dst, ',')
		}
		*dst = append(*dst, part...)
		st.nonEmpty = true
	}
	rooms, err := st.roomsToSend()
	if err != nil {
		return nil, err
	}
	b := getSyncBuf()
	b = append(b, `{"next_batch":`...)
	b = appendJSONString(b, upto.token())
	b = append(b, `,"rooms":{"join":{`...)
	joinStart := len(b)
	for _, rm := range rooms {
		var part []byte
		var dst *[]byte
		switch rm.m.Membership {
		case projections.MemberJoin:
			mark := len(b)
			if mark > joinStart {
				b = append(b, ',')
			}
			var wrote bool
			if b, wrote, err = st.joinedRoom(b, rm.room, rm.m, rm.full, rm.newlyJoined); err != nil {
				return nil, err
			}
			if !wrote {
				b = b[:mark]
			}
			st.nonEmpty = st.nonEmpty || wrote
			continue
		case projections.MemberInvite:
			if st.s.inviteBlocked(st.user) {
				continue // invites to a user who blocks them are not served
			}
			part, err = st.strippedRoom(rm.room, rm.m, "invite_state")
			dst = &invite
		case projections.MemberKnock:
			part, err = st.strippedRoom(rm.room, rm.m, "knock_state")
			dst = &knock
		case projections.MemberLeave, projections.MemberBan:
			part, err = st.leftRoom(rm.room, rm.m)
			dst = &leave
		default:
			continue
		}
		if err != nil {
			return nil, err
		}
		add(dst, part)
	}

	b = append(b, `},"invite":{`...)
	b = append(b, invite...)
	b = append(b, `},"leave":{`...)
	b = append(b, leave...)
	b = append(b, `},"knock":{`...)
	b = append(b, knock...)
	b = append(b, `}},"presence":{"events":`...)
	var any bool
	if b, any, err = st.appendPresence(b); err != nil {
		return nil, err
	}
	st.nonEmpty = st.nonEmpty || any
	b = append(b, `},"account_data":{"events":`...)
	if b, any, err = st.appendGlobalAccountData(b); err != nil {
		return nil, err
	}
	st.nonEmpty = st.nonEmpty || any
	b = append(b, '}')
	for _, ext := range activeSyncExtensions() {
		b = append(b, ',')
		b = appendJSONString(b, ext.key)
		b = append(b, ':')
		if b, any, err = ext.build(st, b); err != nil {
			return nil, err
		}
		st.nonEmpty = st.nonEmpty || any
	}
	return append(b, '}'), nil
}

// syncBufs recycles response buffers: a busy room's listeners each build
// a response of tens of kilobytes on every wake.
var syncBufs sync.Pool

func getSyncBuf() []byte {
	if b, ok := syncBufs.Get().([]byte); ok {
		return b[:0]
	}
	return make([]byte, 0, 4096)
}

// releaseSyncBody returns a response buffer once nothing refers to it.
func releaseSyncBody(b []byte) {
	if cap(b) == 0 || cap(b) > 1<<20 {
		return // huge ones (initial syncs) are left to the collector
	}
	syncBufs.Put(b[:0]) //nolint:staticcheck // the slice header allocation is small beside the buffer
}

// roomToSend is a room of the response with the user's membership.
type roomToSend struct {
	room        string
	m           projections.Member
	full        bool // send the full state (initial sync, full_state, new join)
	newlyJoined bool
}

// roomsToSend lists the rooms of the response: every room the user is in
// for an initial or full_state sync, the collected ones otherwise.
func (st *syncState) roomsToSend() ([]roomToSend, error) {
	var out []roomToSend
	seen := map[string]bool{}
	if st.initial || st.req.fullState {
		urs, err := st.s.store.UserRooms(st.user)
		if err != nil {
			return nil, err
		}
		for _, u := range urs {
			if !st.f.roomAllowed(u.RoomID) {
				continue
			}
			m, err := st.membership(u.RoomID, st.upto.log)
			if err != nil {
				return nil, err
			}
			switch m.Membership {
			case projections.MemberJoin:
			case projections.MemberLeave, projections.MemberBan:
				if st.initial {
					if !st.f.Room.IncludeLeave {
						continue
					}
					if forgot, err := st.s.store.Forgotten(st.user, u.RoomID); err != nil || forgot {
						if err != nil {
							return nil, err
						}
						continue
					}
				} else if m.Seq <= st.since.log {
					continue
				}
			case projections.MemberInvite, projections.MemberKnock:
				if !st.initial && m.Seq <= st.since.log {
					continue
				}
			default:
				continue
			}
			newly := st.initial
			if !newly && m.Membership == projections.MemberJoin && m.Seq > st.since.log {
				before, err := st.membership(u.RoomID, st.since.log)
				if err != nil {
					return nil, err
				}
				newly = before.Membership != projections.MemberJoin
			}
			seen[u.RoomID] = true
			out = append(out, roomToSend{room: u.RoomID, m: m, full: true, newlyJoined: newly})
		}
		if st.initial {
			return out, nil
		}
	}
	for _, room := range st.roomOrder {
		if seen[room] {
			continue
		}
		m, err := st.membership(room, st.upto.log)
		if err != nil {
			return nil, err
		}
		rs := roomToSend{room: room, m: m}
		switch m.Membership {
		case projections.MemberJoin:
			if m.Seq > st.since.log {
				before, err := st.membership(room, st.since.log)
				if err != nil {
					return nil, err
				}
				rs.newlyJoined = before.Membership != projections.MemberJoin
				rs.full = rs.newlyJoined
			}
		case projections.MemberInvite, projections.MemberKnock, projections.MemberLeave, projections.MemberBan:
			if m.Seq <= st.since.log {
				continue
			}
		default:
			continue
		}
		out = append(out, rs)
	}
	return out, nil
}

// ignoredUsers returns the user's m.ignored_user_list ("the server ...
// MUST NOT send events from ignored users to the client").
func (st *syncState) ignoredUsers() map[string]bool {
	if st.ignored == nil {
		st.ignored = st.s.ignoredUsersCached(st.user)
	}
	return st.ignored
}

func containsStr(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
