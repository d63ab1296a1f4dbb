package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"engram/projections"
)

// The served tracker is what lets every listener of a busy room answer its
// /sync from memory instead of from the store. All of them serve the same
// new events on every wake; each store read made per listener and per
// event or per sync was multiplied by the listeners, and those reads (of
// rows that mostly do not exist) were most of the cost of /sync.
//
// The tracker follows the room activity stream (every accepted event, in
// log order) up to the log's durable position, once for everybody, before a
// response is built; projection rows are written before that position is
// published, so a read made after the tracker reached p reflects at least
// everything up to p. From each event it notes, by position:
//
//   - redactions (per room) and events relating to another (per parent and
//     per room): an event found unredacted and without served aggregations
//     is marked so in its shared client form (clientBase.plainAt) and is
//     served without reads until one of these concerns it; a room with no
//     redaction or relation rows at all needs no per-event read (roomPlain);
//   - state changes (per room) and membership changes (per room and user,
//     and anywhere): the state delta of a room whose state did not change
//     needs no scan; membership rows are cached (memberOf); device lists
//     need no work in a window without membership or key changes;
//   - positions that are not accepted events (lastOther): a window of room
//     events only has no receipts, account data, key changes or to-device
//     messages, which are folded from other records, so those streams need
//     no scan, and values computed from them stay valid (quietCache);
//   - the stream itself for the newest positions (recent), from which the
//     woken long-polls read their window and a room's newest timeline.
//
// Marks older than the floor are void: the tracker starts at the log's
// position when first used and starts again (raising the floor) when its
// maps grow too large or it cannot read what an event changed; anything
// it cannot vouch for is read from the store as before.
type servedTracker struct {
	scanned atomic.Uint64 // positions up to here are in the maps
	// gen moves whenever a mark that can make a plain event unplain is
	// made (a redaction, a relation, a reset): while it stays, an event
	// known plain at it is still plain, without looking at the maps.
	gen atomic.Uint64

	scanMu sync.Mutex // one scanner at a time

	mu sync.RWMutex
	// touched: event ID -> position of the latest event relating to it.
	touched map[string]uint64
	// redacted: room ID -> position of the latest redaction in it.
	redacted map[string]uint64
	// floor: marks below it are void (the maps were cleared to bound them).
	// Every accepted event in (floor, scanned] was seen.
	floor uint64
	// stateAt: room ID -> position of the latest change of its state.
	stateAt map[string]uint64
	// related: room ID -> position of the latest event relating to another.
	related map[string]uint64
	// clean: room ID -> a position at which the room had no redaction and
	// no relation rows at all (roomPlain).
	clean map[string]uint64
	// lastMember is the position of the latest membership change anywhere.
	lastMember uint64
	// memberAt: (room, user) -> position of the latest change of that
	// membership; members caches membership rows (memberOf).
	memberAt map[memberKey]uint64
	members  map[memberKey]cachedMember
	// lastOther is the latest position in (floor, scanned] that is not an
	// accepted event (another kind of record, or a rejected event).
	lastOther uint64
	// readAt: (room, user) -> position of the latest record that can move
	// the user's read positions in the room (their own event in it, their
	// receipt in it); with memberAt, what says that unread counts may use
	// the positions they read before (positionsFresh).
	readAt map[memberKey]uint64
	// tokenAt is the position of the latest record that can revoke an
	// access token (login to an existing device, logout, refresh,
	// deactivation, password change): cached token owners read before it
	// are void (tokens.go).
	tokenAt uint64
	// recent is the room activity stream of (recentFrom, scanned], which
	// every woken long-poll scans.
	recent     []projections.RoomChange
	recentFrom uint64
}

type memberKey struct{ room, user string }

type cachedMember struct {
	m projections.Member
	p uint64 // the row was read with the tracker at this position
}

// servedTrackerMax bounds the tracker's maps; reaching it clears them and
// raises the floor, which only costs the reads again.
const servedTrackerMax = 1 << 16

// advance brings the tracker up to the log position last. Cheap when it is
// there already (one atomic load).
func (t *servedTracker) advance(s *Server, last uint64) {
	if t.scanned.Load() >= last {
		return
	}
	t.scanMu.Lock()
	defer t.scanMu.Unlock()
	from := t.scanned.Load()
	if from >= last {
		return
	}
	if from == 0 || last-from > servedTrackerMax {
		// First use, or too far behind to be worth scanning: nothing was
		// marked plain before now, so start from here.
		t.void(last)
		return
	}
	type mark struct {
		key  string
		kind byte // 't' event related to, 'R' relation in room, 'r' redaction in room, 's' state change in room, 'm' membership change (key room\x00user)
		seq  uint64
	}
	var marks []mark
	var reads []readMark
	var gaps [][2]uint64 // [lo, hi) ranges of positions that are not accepted events
	member, other, next := uint64(0), uint64(0), from+1
	var bad error
	var changes []projections.RoomChange
	err := s.store.Changes(from, last, func(seq uint64, _ string) bool {
		if seq != next {
			other = seq - 1 // positions in [next, seq) are not accepted events
			gaps = append(gaps, [2]uint64{next, seq})
		}
		next = seq + 1
		rec, err := s.store.Record(seq)
		if err != nil {
			bad = err // cannot tell what it changed: void below
			return false
		}
		changes = append(changes, projections.RoomChange{Seq: seq, RoomID: rec.RoomID})
		// The sender's own event moves their read position in its room.
		reads = append(reads, readMark{memberKey{rec.RoomID, rec.Sender}, seq})
		if rec.Type == "m.room.redaction" && rec.StateKey == nil {
			marks = append(marks, mark{rec.RoomID, 'r', seq})
		}
		if parent := relatesToParent(rec.PDU); parent != "" {
			marks = append(marks, mark{parent, 't', seq}, mark{rec.RoomID, 'R', seq})
		}
		if rec.Status == projections.Accepted && (rec.State != nil || rec.StateKey != nil) {
			marks = append(marks, mark{rec.RoomID, 's', seq})
			if rec.State == nil && rec.Type == "m.room.member" {
				member = seq
				marks = append(marks, mark{rec.RoomID + "\x00" + *rec.StateKey, 'm', seq})
			}
			for _, c := range rec.State {
				if c.Type == "m.room.member" {
					member = seq
					marks = append(marks, mark{rec.RoomID + "\x00" + c.StateKey, 'm', seq})
				}
			}
		}
		return true
	})
	if next <= last {
		other = last
		gaps = append(gaps, [2]uint64{next, last + 1})
	}
	var tokenAt uint64
	if err == nil && bad == nil {
		var rs []readMark
		if rs, tokenAt, bad = classifyGaps(s, gaps); bad == nil {
			reads = append(reads, rs...)
		}
	}
	if err != nil || bad != nil || len(t.touched)+len(t.stateAt)+len(t.memberAt)+len(marks) > servedTrackerMax ||
		len(t.redacted)+len(t.related)+len(t.clean) > servedTrackerMax || len(t.readAt)+len(reads) > servedTrackerMax {
		t.void(last) // unknown or too much
		return
	}
	t.mu.Lock()
	for _, m := range marks {
		if m.kind == 'r' || m.kind == 't' || m.kind == 'R' {
			t.gen.Add(1)
		}
		switch m.kind {
		case 'r':
			t.redacted[m.key] = m.seq
		case 't':
			t.touched[m.key] = m.seq
		case 'R':
			t.related[m.key] = m.seq
		case 's':
			t.stateAt[m.key] = m.seq
		case 'm':
			room, user, _ := strings.Cut(m.key, "\x00")
			k := memberKey{room, user}
			t.memberAt[k] = m.seq
			delete(t.members, k)
		}
	}
	for _, r := range reads {
		t.readAt[r.k] = max(t.readAt[r.k], r.seq)
	}
	t.lastMember = max(t.lastMember, member)
	t.lastOther = max(t.lastOther, other)
	t.tokenAt = max(t.tokenAt, tokenAt)
	if len(t.recent)+len(changes) > recentMax {
		// Keep the newer half (at least): long-polls ask for the newest.
		drop := max(len(t.recent)/2, len(t.recent)+len(changes)-recentMax)
		if drop >= len(t.recent) {
			t.recent, t.recentFrom = t.recent[:0], from
		} else {
			t.recentFrom = t.recent[drop-1].Seq
			t.recent = append(t.recent[:0], t.recent[drop:]...)
		}
	}
	t.recent = append(t.recent, changes...)
	t.mu.Unlock()
	t.scanned.Store(last)
}

// void forgets every mark and restarts the tracker at position last.
// Called with scanMu held.
func (t *servedTracker) void(last uint64) {
	t.mu.Lock()
	if t.touched == nil {
		t.touched, t.redacted, t.stateAt = map[string]uint64{}, map[string]uint64{}, map[string]uint64{}
		t.memberAt, t.members = map[memberKey]uint64{}, map[memberKey]cachedMember{}
		t.related, t.clean = map[string]uint64{}, map[string]uint64{}
		t.readAt = map[memberKey]uint64{}
	}
	clear(t.touched)
	clear(t.redacted)
	clear(t.related)
	clear(t.clean)
	clear(t.stateAt)
	clear(t.memberAt)
	clear(t.members)
	clear(t.readAt)
	t.floor, t.lastMember, t.lastOther, t.tokenAt = last, 0, 0, 0
	t.gen.Add(1)
	t.recent, t.recentFrom = t.recent[:0], last
	t.mu.Unlock()
	t.scanned.Store(last)
}

// readMark is a record at seq that can move k.user's read positions in
// k.room.
type readMark struct {
	k   memberKey
	seq uint64
}

// gapReadMax bounds the records classifyGaps reads in one advance; a
// window with more of them voids the tracker instead.
const gapReadMax = 4096

// classifyGaps reads the records at the positions of gaps (those that are
// not accepted room events) for what the tracker's caches depend on: the
// receipts, which move read positions, and the records that can revoke
// access tokens (tokenAt, the latest of them; 0 if none). An error means
// it cannot tell.
func classifyGaps(s *Server, gaps [][2]uint64) (reads []readMark, tokenAt uint64, err error) {
	n := uint64(0)
	for _, g := range gaps {
		n += g[1] - g[0]
	}
	if n > gapReadMax {
		return nil, 0, errTooManyGaps
	}
	for _, g := range gaps {
		for q := g[0]; q < g[1]; q++ {
			rec, err := s.log.Get(q)
			if err != nil {
				return nil, 0, err
			}
			switch rec.Kind {
			case projections.KindReceipt:
				v, err := projections.Decode(rec)
				if err != nil {
					return nil, 0, err
				}
				if r, ok := v.(*projections.ReceiptRecord); ok {
					reads = append(reads, readMark{memberKey{r.RoomID, r.UserID}, q})
				}
			case projections.KindLogin, projections.KindLogout, projections.KindRefresh,
				projections.KindDeactivate, projections.KindPassword:
				tokenAt = q
			}
		}
	}
	return reads, tokenAt, nil
}

var errTooManyGaps = errors.New("api: too many records to classify")

// positionsFresh reports whether the tracker knows that user's join and
// read positions in room did not change in (at, t.scanned]: neither their
// membership, nor a receipt or an event of theirs in the room.
func (t *servedTracker) positionsFresh(room, user string, at uint64) bool {
	k := memberKey{room, user}
	t.mu.RLock()
	ok := at >= t.floor && t.memberAt[k] <= at && t.readAt[k] <= at
	t.mu.RUnlock()
	return ok
}

// tokensFresh reports whether the tracker knows that no access token was
// revoked in (at, t.scanned].
func (t *servedTracker) tokensFresh(at uint64) bool {
	t.mu.RLock()
	ok := at >= t.floor && t.tokenAt <= at
	t.mu.RUnlock()
	return ok
}

// stillPlain reports whether an event found plain (as of base.plainAt) is
// still plain now (as of the tracker's position).
func (t *servedTracker) stillPlain(rec *projections.EventRecord, base *clientBase) bool {
	g := t.gen.Load()
	if base.plainGen.Load() == g && g != 0 {
		return true // nothing happened that could matter
	}
	p := base.plainAt.Load()
	if p == 0 {
		return false
	}
	t.mu.RLock()
	ok := p >= t.floor && t.redacted[rec.RoomID] <= p && t.touched[rec.EventID] <= p
	t.mu.RUnlock()
	if ok {
		base.plainGen.Store(g)
	}
	return ok
}

// roomPlain reports whether no event of room can be served redacted or with
// bundled aggregations now: the room had no redaction and no relation rows
// at a position the tracker checked, and no redaction or relation has
// happened in it since. One scan per room and change instead of two point
// reads per new event.
func (t *servedTracker) roomPlain(s *Server, room string) bool {
	t.mu.RLock()
	p, ok := t.clean[room]
	ok = ok && p >= t.floor && t.redacted[room] <= p && t.related[room] <= p
	t.mu.RUnlock()
	if ok {
		return true
	}
	p = t.scanned.Load() // the scans below reflect at least this position
	if red, err := s.store.RoomHasRedactions(room); err != nil || red {
		return false
	}
	if rel, err := s.store.RoomHasRelations(room); err != nil || rel {
		return false
	}
	t.mu.Lock()
	if t.clean != nil && len(t.clean) < servedTrackerMax && t.clean[room] < p {
		t.clean[room] = p
	}
	t.mu.Unlock()
	// Valid for this call if nothing happened in the room since p.
	t.mu.RLock()
	ok = p >= t.floor && t.redacted[room] <= p && t.related[room] <= p
	t.mu.RUnlock()
	return ok
}

// noStateChange reports whether the tracker knows that room's state did not
// change in (after, t.scanned]; false when it cannot tell.
func (t *servedTracker) noStateChange(room string, after uint64) bool {
	t.mu.RLock()
	ok := after >= t.floor && t.stateAt[room] <= after
	t.mu.RUnlock()
	return ok
}

// noMemberChange reports whether the tracker knows that no membership
// changed in any room in (after, t.scanned]; false when it cannot tell.
func (t *servedTracker) noMemberChange(after uint64) bool {
	t.mu.RLock()
	ok := after >= t.floor && t.lastMember <= after
	t.mu.RUnlock()
	return ok
}

// recentMax bounds the tracker's copy of the room activity stream.
const recentMax = 8192

// onlyEvents reports whether the tracker knows that every position in
// (after, t.scanned] holds an accepted event. The streams folded from other
// records (receipts, account data, key changes, to-device messages) then
// have nothing in that window.
func (t *servedTracker) onlyEvents(after uint64) bool {
	t.mu.RLock()
	ok := after >= t.floor && t.lastOther <= after
	t.mu.RUnlock()
	return ok
}

// changes is Store.Changes over (after, upto] from the tracker's copy when
// it covers the window; upto must not be beyond the tracker's position.
func (s *Server) changes(after, upto uint64, fn func(seq uint64, room string) bool) error {
	t := &s.hub.served
	t.advance(s, upto)
	t.mu.RLock()
	if after < t.recentFrom || upto > t.scanned.Load() {
		t.mu.RUnlock()
		return s.store.Changes(after, upto, fn)
	}
	i := sort.Search(len(t.recent), func(i int) bool { return t.recent[i].Seq > after })
	j := i
	for j < len(t.recent) && t.recent[j].Seq <= upto {
		j++
	}
	window := append([]projections.RoomChange(nil), t.recent[i:j]...) // fn may take t.mu
	t.mu.RUnlock()
	for _, c := range window {
		if !fn(c.Seq, c.RoomID) {
			break
		}
	}
	return nil
}

// memberOf is Store.MemberOf through the tracker's cache: a membership row
// is read once and reused until the tracker sees that membership change.
// Every listener of a room asks for its own membership and for the
// timeline senders' on every sync. Like MemberOf, the answer may run ahead
// of the durable position (callers compare Member.Seq).
func (s *Server) memberOf(room, user string) (projections.Member, error) {
	if s.hub == nil {
		return s.store.MemberOf(room, user)
	}
	t := &s.hub.served
	t.advance(s, s.log.Last())
	k := memberKey{room, user}
	t.mu.RLock()
	c, ok := t.members[k]
	ok = ok && c.p >= t.floor && t.memberAt[k] <= c.p
	t.mu.RUnlock()
	if ok {
		return c.m, nil
	}
	p := t.scanned.Load() // the read below reflects at least this position
	m, err := s.store.MemberOf(room, user)
	if err != nil {
		return m, err
	}
	t.mu.Lock()
	if t.members == nil { // the tracker has not started (empty log)
		t.mu.Unlock()
		return m, nil
	}
	if len(t.members) >= servedTrackerMax {
		clear(t.members)
	}
	if old, had := t.members[k]; !had || old.p <= p {
		t.members[k] = cachedMember{m: m, p: p}
	}
	t.mu.Unlock()
	return m, nil
}

// relatesToParent returns content."m.relates_to".event_id of a PDU, or "".
func relatesToParent(pdu []byte) string {
	if !bytes.Contains(pdu, []byte(`"m.relates_to"`)) {
		return ""
	}
	var v struct {
		Content struct {
			RelatesTo *struct {
				EventID string `json:"event_id"`
			} `json:"m.relates_to"`
		} `json:"content"`
	}
	if json.Unmarshal(pdu, &v) != nil || v.Content.RelatesTo == nil {
		return ""
	}
	return v.Content.RelatesTo.EventID
}

// quietCache keeps values computed from views that only records other than
// room events change (account data, keys, the to-device inbox), each with
// the tracker position it was computed at. A value stays valid while the
// tracker sees nothing but accepted room events after that position, which
// on a busy server is most of the time between two syncs of a listener.
type quietCache struct {
	mu sync.Mutex
	m  map[quietKey]quietEntry
}

type quietKey struct {
	kind         byte // 'i' ignored users, 'x' + extension index
	user, device string
}

type quietEntry struct {
	p uint64
	v any
}

// quietGet returns a cached value that is still valid, after bringing the
// tracker up to the log's position.
func (s *Server) quietGet(k quietKey) (any, bool) {
	t := &s.hub.served
	t.advance(s, s.log.Last())
	c := &s.hub.quiet
	c.mu.Lock()
	e, ok := c.m[k]
	c.mu.Unlock()
	if !ok || !t.onlyEvents(e.p) {
		return nil, false
	}
	return e.v, true
}

// quietPos is the position to store a value computed from reads that
// start now: they reflect at least this position.
func (s *Server) quietPos() uint64 { return s.hub.served.scanned.Load() }

func (s *Server) quietPut(k quietKey, p uint64, v any) {
	c := &s.hub.quiet
	c.mu.Lock()
	if c.m == nil || len(c.m) >= servedTrackerMax {
		c.m = map[quietKey]quietEntry{} // bounded: forgetting costs a read
	}
	if old, ok := c.m[k]; !ok || old.p <= p {
		c.m[k] = quietEntry{p: p, v: v}
	}
	c.mu.Unlock()
}

// ignoredUsersCached is ignoredUsers (m.ignored_user_list, account data)
// read once per change instead of on every sync and every read path. The
// map is shared: read only.
func (s *Server) ignoredUsersCached(user string) map[string]bool {
	if s.hub == nil {
		return s.ignoredUsers(user)
	}
	k := quietKey{kind: 'i', user: user}
	if v, ok := s.quietGet(k); ok {
		return v.(map[string]bool)
	}
	p := s.quietPos()
	m := s.ignoredUsers(user)
	s.quietPut(k, p, m)
	return m
}

// timeline is Store.Timeline(room, after, before, true, limit) (positions
// in (after, before), newest first) from the tracker's copy of the activity
// stream when it covers the window and the room's events are not too
// sparse in it; from the store otherwise.
func (s *Server) timeline(room string, after, before uint64, limit int) ([]uint64, error) {
	if s.hub != nil && before > after+1 {
		t := &s.hub.served
		t.advance(s, before-1)
		t.mu.RLock()
		out, ok := t.recentTimeline(room, after, before, limit)
		t.mu.RUnlock()
		if ok {
			return out, nil
		}
	}
	return s.store.Timeline(room, after, before, true, limit)
}

// recentTimeline answers timeline from t.recent; ok is false when it
// cannot. Called with t.mu held (read).
func (t *servedTracker) recentTimeline(room string, after, before uint64, limit int) ([]uint64, bool) {
	if after < t.recentFrom || after < t.floor || before-1 > t.scanned.Load() {
		return nil, false
	}
	budget := 4*limit + 256 // entries of other rooms to look at before giving up
	i := sort.Search(len(t.recent), func(i int) bool { return t.recent[i].Seq >= before })
	var out []uint64
	for i--; i >= 0 && len(out) < limit; i-- {
		c := &t.recent[i]
		if c.Seq <= after {
			break
		}
		if c.RoomID == room {
			out = append(out, c.Seq)
		} else if budget--; budget < 0 {
			return nil, false
		}
	}
	return out, true
}

// visibilityRestricted is Store.VisibilityRestricted, cached per room until
// the tracker sees the room's state change (only a state change can set it).
func (s *Server) visibilityRestricted(room string) (bool, error) {
	if s.hub == nil {
		return s.store.VisibilityRestricted(room)
	}
	t := &s.hub.served
	t.advance(s, s.log.Last())
	k := quietKey{kind: 'v', user: room}
	c := &s.hub.quiet
	c.mu.Lock()
	e, ok := c.m[k]
	c.mu.Unlock()
	if ok && t.noStateChange(room, e.p) {
		return e.v.(bool), nil
	}
	p := t.scanned.Load()
	v, err := s.store.VisibilityRestricted(room)
	if err == nil {
		s.quietPut(k, p, v)
	}
	return v, err
}
