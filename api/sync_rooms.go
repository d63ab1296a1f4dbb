package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"sync"

	"engram/projections"
)

// syncScanBudget bounds the events a timeline looks at per room beyond its
// limit when a filter drops events (the timeline is then limited).
const syncScanBudget = 5000

// joinedRoom appends a room of rooms.join ("roomid":{...}) to b, or
// nothing (wrote false) when an incremental sync has nothing to say about
// it.
func (st *syncState) joinedRoom(b []byte, room string, m projections.Member, full, newlyJoined bool) (_ []byte, wrote bool, _ error) {
	s := st.s
	after := st.since.log
	if st.initial || newlyJoined {
		after = 0
	}
	tl, limited, err := st.timeline(room, after, st.upto.log)
	if err != nil {
		return b, false, err
	}
	t0 := st.upto.log + 1
	if len(tl) > 0 {
		t0 = tl[0]
	}
	var stateEntries []projections.StateEntry
	memberChanged := full
	if full {
		if stateEntries, err = st.fullStateAt(room, t0-1); err != nil {
			return b, false, err
		}
	} else {
		if stateEntries, memberChanged, err = st.stateDelta(room, st.since.log, t0, st.upto.log); err != nil {
			return b, false, err
		}
	}
	var heroes []string
	var summary []byte
	if memberChanged {
		if summary, heroes, err = st.summary(room); err != nil {
			return b, false, err
		}
	}
	stateSeqs, err := st.selectState(room, stateEntries, tl, t0-1, full, heroes)
	if err != nil {
		return b, false, err
	}
	eph, err := st.ephemeral(room, full)
	if err != nil {
		return b, false, err
	}
	ad, err := st.roomAccountData(room, full)
	if err != nil {
		return b, false, err
	}
	if !full && len(tl) == 0 && len(stateSeqs) == 0 && eph == nil && ad == nil && summary == nil {
		return b, false, nil
	}

	start := len(b)
	b, err = st.appendRoomStart(b, room, tl, limited, t0, stateSeqs)
	if err != nil {
		return b[:start], false, err
	}
	b = append(b, `},"ephemeral":{"events":`...)
	b = appendRawList(b, eph)
	b = append(b, `},"account_data":{"events":`...)
	b = appendRawList(b, ad)
	b = append(b, '}')
	if summary != nil {
		b = append(b, `,"summary":`...)
		b = append(b, summary...)
	}
	// The served tracker vouches for the user's read positions between
	// syncs (it has seen every receipt and event of theirs), so they are
	// read again only after they may have moved.
	t := &s.hub.served
	t.advance(s, st.upto.log)
	counts, err := s.store.UnreadCountsAt(st.user, room, st.upto.log, func(at uint64) bool {
		return t.positionsFresh(room, st.user, at)
	})
	if err != nil {
		return b[:start], false, err
	}
	var total projections.Counts
	threads := st.f.Room.Timeline.UnreadThreadNotifications
	for t, c := range counts {
		if !threads || t == "main" {
			total.Notify += c.Notify
			total.Highlight += c.Highlight
		}
	}
	b = append(b, `,"unread_notifications":`...)
	b = appendCounts(b, total)
	if threads {
		keys := make([]string, 0, len(counts))
		for t := range counts {
			if t != "main" {
				keys = append(keys, t)
			}
		}
		if len(keys) > 0 {
			sort.Strings(keys)
			b = append(b, `,"unread_thread_notifications":{`...)
			for i, t := range keys {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendJSONString(b, t)
				b = append(b, ':')
				b = appendCounts(b, counts[t])
			}
			b = append(b, '}')
		}
	}
	return append(b, '}'), true, nil
}

func appendCounts(b []byte, c projections.Counts) []byte {
	b = append(b, `{"highlight_count":`...)
	b = strconv.AppendInt(b, c.Highlight, 10)
	b = append(b, `,"notification_count":`...)
	b = strconv.AppendInt(b, c.Notify, 10)
	return append(b, '}')
}

func appendRawList(b []byte, items [][]byte) []byte {
	b = append(b, '[')
	for i, it := range items {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, it...)
	}
	return append(b, ']')
}

// leftRoom builds a room of rooms.leave: the timeline up to the user's
// leave (or ban), the state, and the room's account data.
func (st *syncState) leftRoom(room string, m projections.Member) ([]byte, error) {
	after := st.since.log
	if st.initial {
		after = 0
	}
	upto := min(m.Seq, st.upto.log)
	tl, limited, err := st.timeline(room, after, upto)
	if err != nil {
		return nil, err
	}
	t0 := upto + 1
	if len(tl) > 0 {
		t0 = tl[0]
	}
	var entries []projections.StateEntry
	if st.initial || st.req.fullState {
		entries, err = st.fullStateAt(room, t0-1)
	} else {
		entries, _, err = st.stateDelta(room, st.since.log, t0, upto)
	}
	if err != nil {
		return nil, err
	}
	stateSeqs, err := st.selectState(room, entries, tl, t0-1, st.initial, nil)
	if err != nil {
		return nil, err
	}
	ad, err := st.roomAccountData(room, st.initial)
	if err != nil {
		return nil, err
	}
	b, err := st.appendRoomStart(make([]byte, 0, 512), room, tl, limited, t0, stateSeqs)
	if err != nil {
		return nil, err
	}
	b = append(b, `},"account_data":{"events":`...)
	b = appendRawList(b, ad)
	return append(b, "}}"...), nil
}

// strippedTypes are the state events an invitee or knocker sees (the
// spec's recommended stripped state).
var strippedTypes = []string{"m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar",
	"m.room.canonical_alias", "m.room.encryption", "m.room.topic"}

// strippedRoom builds a room of rooms.invite or rooms.knock: stripped
// state and the user's own membership event. An invite from an ignored
// user is not shown.
func (st *syncState) strippedRoom(room string, m projections.Member, key string) ([]byte, error) {
	s := st.s
	if m.EventID == "" {
		return nil, nil
	}
	own, _, err := s.store.Event(m.EventID)
	if err != nil {
		return nil, err
	}
	if key == "invite_state" && st.ignoredUsers()[own.Sender] {
		return nil, nil
	}
	// The stripped state: the room's, when this server takes part in it;
	// otherwise what the inviting or knocked-at server sent with the
	// membership (kept in its unsigned).
	var pdus [][]byte
	if _, err := s.store.RoomVersion(room); err == nil {
		for _, t := range strippedTypes {
			id, err := s.store.StateEvent(room, t, "")
			if err != nil {
				continue
			}
			if rec, _, err := s.store.Event(id); err == nil {
				pdus = append(pdus, rec.PDU)
			}
		}
	} else {
		var u struct {
			Unsigned struct {
				Invite []json.RawMessage `json:"invite_room_state"`
				Knock  []json.RawMessage `json:"knock_room_state"`
			} `json:"unsigned"`
		}
		if json.Unmarshal(own.PDU, &u) == nil {
			for _, e := range append(u.Unsigned.Invite, u.Unsigned.Knock...) {
				pdus = append(pdus, e)
			}
		}
	}
	pdus = append(pdus, own.PDU)
	b := appendJSONString(make([]byte, 0, 512), room)
	b = append(b, `:{"`...)
	b = append(b, key...)
	b = append(b, `":{"events":[`...)
	n := 0
	for i, pdu := range pdus {
		var v pduView
		if err := json.Unmarshal(pdu, &v); err != nil || v.Type == "" {
			if i < len(pdus)-1 {
				continue // a stripped event another server sent us
			}
			return nil, fmt.Errorf("api: membership event %s: %v", own.EventID, err)
		}
		if n > 0 {
			b = append(b, ',')
		}
		n++
		if len(v.Content) == 0 {
			v.Content = json.RawMessage("{}")
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
		if i == len(pdus)-1 {
			b = append(b, `,"event_id":`...)
			b = appendJSONString(b, own.EventID)
			b = append(b, `,"origin_server_ts":`...)
			b = strconv.AppendInt(b, v.OriginServerTS, 10)
		}
		b = append(b, '}')
	}
	return append(b, "]}}"...), nil
}

// timeline returns the newest positions of a room's events in (after,
// upto] that the user may see and the timeline filter lets through, oldest
// first, and whether older ones were left out.
func (st *syncState) timeline(room string, after, upto uint64) ([]uint64, bool, error) {
	s := st.s
	tf := &st.f.Room.Timeline
	if !tf.roomAllowed(room) || upto <= after {
		return nil, false, nil
	}
	limit := st.f.timelineLimit()
	ignored := st.ignoredUsers()
	needRec := !tf.passAll() || len(ignored) > 0
	var out []uint64
	limited := false
	hi := upto + 1
	scanned := 0
scan:
	for {
		want := limit + 1 - len(out)
		n := min(max(2*want, 20), 500)
		if !needRec {
			n = min(max(want, 1), 500)
		}
		batch, err := s.timeline(room, after, hi, n)
		if err != nil {
			return nil, false, err
		}
		if len(batch) == 0 {
			break
		}
		vis, err := s.filterVisible(st.user, room, append([]uint64(nil), batch...))
		if err != nil {
			return nil, false, err
		}
		vi := 0
		for _, q := range batch {
			hi = q
			if vi >= len(vis) || vis[vi] != q {
				continue
			}
			vi++
			if needRec {
				rec, err := s.store.Record(q)
				if err != nil {
					return nil, false, err
				}
				if (ignored[rec.Sender] && !rec.IsState()) || !tf.match(rec) {
					continue
				}
			}
			if len(out) == limit {
				limited = true
				break scan
			}
			out = append(out, q)
		}
		scanned += len(batch)
		if len(batch) < n {
			break
		}
		if scanned >= syncScanBudget+limit {
			limited = true
			break
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, limited, nil
}

// fullStateAt returns a room's state just after log position at: the
// current state, corrected for the keys that changed after at (few, for a
// timeline's window; this also hides rows that run ahead of the durable
// position). Ordered by (type, state key).
func (st *syncState) fullStateAt(room string, at uint64) ([]projections.StateEntry, error) {
	s := st.s
	cur, err := s.store.CurrentState(room, "")
	if err != nil {
		return nil, err
	}
	type key struct{ t, k string }
	changed := map[key]bool{}
	var order []key
	// The entries the record just after at carries for other events than
	// its own: a remote join records the whole state it joined into with
	// the join, and a resolved fork the state it settled on. They were the
	// room's state before that record's event, which is where a timeline
	// starting at it needs them.
	var carried map[key]projections.StateEntry
	err = s.store.RoomStateChanges(room, at, math.MaxUint64, func(seq uint64, ch []projections.StateEntry) bool {
		for _, c := range ch {
			k := key{c.Type, c.StateKey}
			if seq == at+1 {
				if carried == nil {
					carried = map[key]projections.StateEntry{}
				}
				carried[k] = c
			}
			if !changed[k] {
				changed[k] = true
				order = append(order, k)
			}
		}
		return true
	})
	if len(carried) > 0 {
		if rec, err := s.store.Record(at + 1); err == nil {
			for k, c := range carried {
				if c.EventID == rec.EventID || c.EventID == "" {
					delete(carried, k)
				}
			}
		}
	}
	if err != nil || len(changed) == 0 {
		return cur, err
	}
	out := cur[:0:0]
	for _, e := range cur {
		if !changed[key{e.Type, e.StateKey}] {
			out = append(out, e)
		}
	}
	for _, k := range order {
		id, _, err := s.store.StateEventAt(room, k.t, k.k, at)
		if errors.Is(err, projections.ErrNotFound) {
			if c, ok := carried[k]; ok {
				out = append(out, projections.StateEntry{Type: k.t, StateKey: k.k, EventID: c.EventID})
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, projections.StateEntry{Type: k.t, StateKey: k.k, EventID: id})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Type != out[j].Type {
			return out[i].Type < out[j].Type
		}
		return out[i].StateKey < out[j].StateKey
	})
	return out, nil
}

// stateDelta returns the state that changed between the since position
// and the start of the timeline (positions in (since, t0)): for each key
// changed in that gap, its value at t0-1, unless that is what it was at
// since. memberChanged reports a membership change anywhere in (since,
// upto], which is when the room summary is sent again.
func (st *syncState) stateDelta(room string, since, t0, upto uint64) ([]projections.StateEntry, bool, error) {
	s := st.s
	if t := &s.hub.served; upto > since {
		t.advance(s, upto)
		if t.noStateChange(room, since) {
			return nil, false, nil // the common case of a busy room: skip the scan
		}
	}
	type key struct{ t, k string }
	last := map[key]projections.StateEntry{}
	var order []key
	memberChanged := false
	err := s.store.RoomStateChanges(room, since, upto, func(seq uint64, ch []projections.StateEntry) bool {
		for _, c := range ch {
			if c.Type == "m.room.member" {
				memberChanged = true
			}
			if seq >= t0 {
				continue
			}
			k := key{c.Type, c.StateKey}
			if _, ok := last[k]; !ok {
				order = append(order, k)
			}
			last[k] = c
		}
		return true
	})
	if err != nil {
		return nil, false, err
	}
	var out []projections.StateEntry
	for _, k := range order {
		e := last[k]
		if e.EventID == "" {
			continue // removed by resolution: a sync cannot say so
		}
		if prev, _, err := s.store.StateEventAt(room, k.t, k.k, since); err == nil && prev == e.EventID {
			continue // changed and changed back: the client has it
		}
		out = append(out, e)
	}
	return out, memberChanged, nil
}

// selectState turns state entries into the positions of the events to send,
// applying the state filter and lazy-loading of members: with
// lazy_load_members, only the membership events of the timeline's senders
// (as of the timeline start, at), of the user on a full state, and of the
// heroes, plus every membership change of the gap ("the server MUST return
// membership events for events in the gap ... regardless as to whether or
// not they are redundant"). Redundant ones (already sent to this device)
// are left out unless include_redundant_members.
func (st *syncState) selectState(room string, entries []projections.StateEntry, tl []uint64, at uint64, full bool, heroes []string) ([]uint64, error) {
	s := st.s
	sf := &st.f.Room.State
	if !sf.roomAllowed(room) {
		return nil, nil
	}
	lazy := sf.LazyLoadMembers
	// A lazy-loading incremental sync needs the membership events of the
	// timeline's senders; every listener of the room asks for the same
	// ones, so they are shared (timelineMembers). Otherwise, wanted lists
	// the members whose membership the client needs, in first-seen order
	// (the output is sorted by position).
	shared := lazy && !full && len(heroes) == 0
	var wanted []string
	var wantedSet map[string]bool
	want := func(u string) {
		if len(wanted) < 16 && wantedSet == nil {
			if slices.Contains(wanted, u) {
				return
			}
			wanted = append(wanted, u)
			return
		}
		if wantedSet == nil {
			wantedSet = make(map[string]bool, 2*len(wanted))
			for _, w := range wanted {
				wantedSet[w] = true
			}
		}
		if !wantedSet[u] {
			wantedSet[u] = true
			wanted = append(wanted, u)
		}
	}
	if lazy && !shared {
		for _, q := range tl {
			rec, err := s.store.Record(q)
			if err != nil {
				return nil, err
			}
			want(rec.Sender)
		}
		for _, h := range heroes {
			want(h)
		}
		if full {
			want(st.user)
		}
	}
	isWanted := func(u string) bool {
		if wantedSet != nil {
			return wantedSet[u]
		}
		return slices.Contains(wanted, u)
	}
	var have map[string]bool
	var ids []string
	for _, e := range entries {
		if e.EventID == "" {
			continue
		}
		if lazy && e.Type == "m.room.member" {
			if full && !isWanted(e.StateKey) {
				continue
			}
			if have == nil {
				have = map[string]bool{}
			}
			have[e.StateKey] = true
		}
		ids = append(ids, e.EventID)
	}
	if lazy {
		var members []lazyMember
		if shared {
			tm, err := st.timelineMembers(room, tl, at)
			if err != nil {
				return nil, err
			}
			members = tm // shared: read only
			if len(have) > 0 {
				members = nil
				for _, m := range tm {
					if !have[m.user] {
						members = append(members, m)
					}
				}
			}
		} else {
			for _, u := range wanted {
				if have[u] {
					continue
				}
				id, err := st.memberEventAt(room, u, at)
				if errors.Is(err, projections.ErrNotFound) {
					continue
				}
				if err != nil {
					return nil, err
				}
				members = append(members, lazyMember{u, id})
			}
		}
		if !sf.IncludeRedundantMembers && len(members) > 0 {
			// One lock for all: every listener checks every sender.
			sent := s.hub.lazy.room(st.user, st.device, room)
			var kept []lazyMember
			for _, m := range members {
				if sent == nil || sent[m.user] != m.id {
					kept = append(kept, m)
				}
			}
			s.hub.lazy.mu.Unlock()
			members = kept
		}
		for _, m := range members {
			ids = append(ids, m.id)
		}
	}
	out := make([]uint64, 0, len(ids))
	for _, id := range ids {
		pos, _, err := s.store.EventPos(id)
		if errors.Is(err, projections.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if !sf.passAll() {
			rec, err := s.store.Record(pos)
			if err != nil {
				return nil, err
			}
			if !sf.match(rec) {
				continue
			}
		}
		out = append(out, pos)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	if lazy {
		for _, q := range out {
			if rec, err := s.store.Record(q); err == nil && rec.Type == "m.room.member" && rec.StateKey != nil {
				s.hub.lazy.add(st.user, st.device, room, *rec.StateKey, rec.EventID)
			}
		}
	}
	return out, nil
}

// lazyMember is a member and the ID of their membership event.
type lazyMember struct{ user, id string }

// timelineMembers returns the membership events, as of position at, of the
// senders of the timeline tl of room, in first-seen order. The answer never
// changes (positions and the state at a position are history), and every
// listener of a busy room asks for the same timeline on a wake: it is
// computed once and shared (a small cache keyed by the timeline).
func (st *syncState) timelineMembers(room string, tl []uint64, at uint64) ([]lazyMember, error) {
	if len(tl) == 0 {
		return nil, nil
	}
	c := &st.s.hub.tlMembers
	k := tlKey{room: room, at: at, first: tl[0], last: tl[len(tl)-1], n: len(tl)}
	c.mu.Lock()
	e := c.m[k]
	c.mu.Unlock()
	if e != nil && slices.Equal(e.tl, tl) {
		return e.members, nil
	}
	var out []lazyMember
	seen := make(map[string]bool, 16)
	for _, q := range tl {
		rec, err := st.s.store.Record(q)
		if err != nil {
			return nil, err
		}
		if seen[rec.Sender] {
			continue
		}
		seen[rec.Sender] = true
		id, err := st.memberEventAt(room, rec.Sender, at)
		if errors.Is(err, projections.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, lazyMember{rec.Sender, id})
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= tlMembersMax {
		c.m = map[tlKey]*tlMembersEntry{} // bounded: forgetting costs a recomputation
	}
	c.m[k] = &tlMembersEntry{tl: slices.Clone(tl), members: out}
	c.mu.Unlock()
	return out, nil
}

// tlMembersCache holds timelineMembers answers.
type tlMembersCache struct {
	mu sync.Mutex
	m  map[tlKey]*tlMembersEntry
}

type tlKey struct {
	room            string
	at, first, last uint64
	n               int
}

type tlMembersEntry struct {
	tl      []uint64
	members []lazyMember
}

const tlMembersMax = 1024

// memberEventAt returns the ID of the membership event of user in room
// current just after position at (ErrNotFound if none). The membership row
// answers it with one point read when its last change is at or before at,
// which it is for nearly every timeline sender; the room's state history
// answers otherwise.
func (st *syncState) memberEventAt(room, user string, at uint64) (string, error) {
	m, err := st.s.memberOf(room, user)
	if err != nil {
		return "", err
	}
	if m.Membership != 0 && m.Seq <= at && m.EventID != "" {
		return m.EventID, nil
	}
	id, _, err := st.s.store.StateEventAt(room, "m.room.member", user, at)
	return id, err
}

// appendEvents appends a JSON array of the events at seqs, in the filter's
// event format and with its event_fields.
func (st *syncState) appendEvents(b []byte, seqs []uint64) ([]byte, error) {
	if len(seqs) > 1 && st.f.EventFormat != "federation" && len(st.f.EventFields) == 0 {
		// Grow once: the events' shared client forms say how much.
		n := 0
		for _, q := range seqs {
			if rec, err := st.s.store.Record(q); err == nil {
				n += len(clientBaseOf(rec).json) + 64
			}
		}
		b = slices.Grow(b, n)
	}
	b = append(b, '[')
	for i, q := range seqs {
		rec, err := st.s.store.Record(q)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			b = append(b, ',')
		}
		switch {
		case st.f.EventFormat == "federation":
			b = append(b, rec.PDU...)
		case len(st.f.EventFields) > 0:
			ev := st.s.appendServedEvent(nil, rec, q, st.user, st.device, st.now)
			b = append(b, applyEventFields(ev, st.f.EventFields)...)
		default:
			b = st.s.appendServedEvent(b, rec, q, st.user, st.device, st.now)
		}
	}
	return append(b, ']'), nil
}

// ephemeral returns a joined room's ephemeral events: m.typing when who
// types changed in the window (or on a full sync when someone types), and
// m.receipt with the receipts that moved (all of them on a full sync).
func (st *syncState) ephemeral(room string, full bool) ([][]byte, error) {
	ef := &st.f.Room.Ephemeral
	if !ef.roomAllowed(room) {
		return nil, nil
	}
	var out [][]byte
	ignored := st.ignoredUsers()
	if listAllows(ef.Types, ef.NotTypes, "m.typing", true) {
		users, pos := st.s.hub.typingIn(room)
		changed := st.typingRooms[room] || (pos > st.since.eph && pos <= st.upto.eph)
		if (full && len(users) > 0) || (!full && changed) {
			shown := make([]string, 0, len(users))
			for _, u := range users {
				if !ignored[u] {
					shown = append(shown, u)
				}
			}
			b, _ := json.Marshal(map[string]any{"type": "m.typing", "content": map[string]any{"user_ids": shown}})
			out = append(out, b)
		}
	}
	if listAllows(ef.Types, ef.NotTypes, "m.receipt", true) {
		type receipt struct {
			TS       int64  `json:"ts"`
			ThreadID string `json:"thread_id,omitempty"`
		}
		content := map[string]map[string]map[string]receipt{}
		add := func(user, typ, thread, event string, ts int64) {
			if ignored[user] || (typ == projections.ReceiptReadPrivate && user != st.user) {
				return
			}
			if !listAllows(ef.Senders, ef.NotSenders, user, false) {
				return
			}
			byType := content[event]
			if byType == nil {
				byType = map[string]map[string]receipt{}
				content[event] = byType
			}
			if byType[typ] == nil {
				byType[typ] = map[string]receipt{}
			}
			byType[typ][user] = receipt{TS: ts, ThreadID: thread}
		}
		var err error
		if full {
			err = st.s.store.RoomReceipts(room, func(r projections.RoomReceipt) bool {
				if r.Seq <= st.upto.log {
					add(r.UserID, r.Type, r.ThreadID, r.EventID, r.TS)
				}
				return true
			})
		} else {
			err = st.s.store.ReceiptChanges(room, st.since.log, st.upto.log, func(_ uint64, r *projections.ReceiptRecord) bool {
				add(r.UserID, r.Type, r.ThreadID, r.EventID, r.TS)
				return true
			})
		}
		if err != nil {
			return nil, err
		}
		if len(content) > 0 {
			b, _ := json.Marshal(map[string]any{"type": "m.receipt", "content": content})
			out = append(out, b)
		}
	}
	if l := ef.limit(-1); l >= 0 && len(out) > l {
		out = out[:l]
	}
	return out, nil
}

// roomAccountData returns the user's account data events of a room: all of
// it on a full sync, what changed otherwise.
func (st *syncState) roomAccountData(room string, full bool) ([][]byte, error) {
	af := &st.f.Room.AccountData
	if !af.roomAllowed(room) {
		return nil, nil
	}
	var items []projections.AccountDataItem
	if full {
		var err error
		if items, err = st.s.store.AccountDataList(st.user, room, st.upto.log); err != nil {
			return nil, err
		}
	} else {
		for _, t := range st.roomAD[room] {
			it, err := st.s.store.AccountData(st.user, room, t)
			if errors.Is(err, projections.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			items = append(items, it)
		}
	}
	return accountDataEvents(items, &af.syncEventFilter), nil
}

// accountDataEvents formats account data entries as events, filtered.
func accountDataEvents(items []projections.AccountDataItem, f *syncEventFilter) [][]byte {
	var out [][]byte
	for _, it := range items {
		if !listAllows(f.Types, f.NotTypes, it.Type, true) {
			continue
		}
		b := append(make([]byte, 0, 32+len(it.Content)), `{"type":`...)
		b = appendJSONString(b, it.Type)
		b = append(b, `,"content":`...)
		if len(it.Content) == 0 {
			b = append(b, "{}"...)
		} else {
			b = append(b, it.Content...)
		}
		out = append(out, append(b, '}'))
	}
	if l := f.limit(-1); l >= 0 && len(out) > l {
		out = out[:l]
	}
	return out
}

// summary builds a joined room's summary: member counts, and heroes when
// the room has no name or canonical alias ("the first 5 members of the
// room, ordered by stream ordering, which are joined or invited ... When
// no joined or invited members are available, this should consist of the
// banned and left users").
func (st *syncState) summary(room string) ([]byte, []string, error) {
	s := st.s
	joined, invited, err := s.store.RoomMemberCounts(room)
	if err != nil {
		return nil, nil, err
	}
	var heroes []string
	named := false
	for _, t := range []struct{ typ, field string }{{"m.room.name", "name"}, {"m.room.canonical_alias", "alias"}} {
		id, err := s.store.StateEvent(room, t.typ, "")
		if err != nil {
			continue
		}
		rec, _, err := s.store.Event(id)
		if err != nil {
			continue
		}
		var v struct {
			Content map[string]any `json:"content"`
		}
		if json.Unmarshal(rec.PDU, &v) == nil {
			if str, _ := v.Content[t.field].(string); str != "" {
				named = true
			}
		}
	}
	if !named {
		members, err := s.store.Members(room)
		if err != nil {
			return nil, nil, err
		}
		sort.Slice(members, func(i, j int) bool { return members[i].Seq < members[j].Seq })
		var gone []string
		for _, m := range members {
			if m.UserID == st.user {
				continue
			}
			switch m.Membership {
			case projections.MemberJoin, projections.MemberInvite:
				if len(heroes) < 5 {
					heroes = append(heroes, m.UserID)
				}
			case projections.MemberLeave, projections.MemberBan:
				if len(gone) < 5 {
					gone = append(gone, m.UserID)
				}
			}
		}
		if len(heroes) == 0 {
			heroes = gone
		}
	}
	v := map[string]any{"m.joined_member_count": joined, "m.invited_member_count": invited}
	if heroes != nil {
		v["m.heroes"] = heroes
	}
	b, err := json.Marshal(v)
	return b, heroes, err
}

// appendRoomStart appends the start of a room's entry, shared by the join
// and leave sections: "room":{"timeline":{...},"state":{"events":[...]
// (the caller closes the state object and adds its own sections).
func (st *syncState) appendRoomStart(b []byte, room string, tl []uint64, limited bool, t0 uint64, stateSeqs []uint64) ([]byte, error) {
	b = appendJSONString(b, room)
	b = append(b, `:{"timeline":{"events":`...)
	b, err := st.appendEvents(b, tl)
	if err != nil {
		return nil, err
	}
	b = append(b, `,"limited":`...)
	b = strconv.AppendBool(b, limited)
	b = append(b, `,"prev_batch":`...)
	b = appendJSONString(b, pageToken(t0-1))
	b = append(b, `},"state":{"events":`...)
	return st.appendEvents(b, stateSeqs)
}
