package projections

import (
	"encoding/binary"
	"errors"
	"sync"
)

// Notification entries and the reads built on them: unread counts,
// notification lists. The push projection writes one entry per event that
// notifies anyone (push.go); counts are folded from the entries past a
// user's read positions when asked, and kept per user and room so the next
// read folds only what is new.

const (
	entryNotify byte = 1 << iota
	entryHighlight
)

// notifEntry is what push rules made of one event for the room's local
// members: the default outcome, and the members whose outcome differs.
type notifEntry struct {
	EventID, Sender, Thread string
	TS                      int64
	Flags                   byte   // default outcome: entryNotify, entryHighlight
	Actions                 []byte // default actions (JSON array)
	Except                  []notifExcept
}

type notifExcept struct {
	User    string
	Flags   byte
	Actions []byte
}

// entryFormat is the first byte of an encoded entry.
const entryFormat = 1

// encode writes the entry as
//
//	format u8 ‖ flags u8 ‖ s(sender) ‖ s(thread) ‖ uvarint n ‖ n × (s(user) ‖ flags u8)
//	‖ varint ts ‖ s(eventID) ‖ s(actions) ‖ n × s(actions)
//
// where s(x) is uvarint len ‖ x: what counting needs comes first, and is
// read without allocating.
func (e *notifEntry) encode(b []byte) []byte {
	b = append(b, entryFormat, e.Flags)
	b = appendBytes(b, e.Sender)
	b = appendBytes(b, e.Thread)
	b = binary.AppendUvarint(b, uint64(len(e.Except)))
	for _, x := range e.Except {
		b = appendBytes(b, x.User)
		b = append(b, x.Flags)
	}
	b = binary.AppendVarint(b, e.TS)
	b = appendBytes(b, e.EventID)
	b = appendBytes(b, e.Actions)
	for _, x := range e.Except {
		b = appendBytes(b, x.Actions)
	}
	return b
}

func appendBytes[T string | []byte](b []byte, s T) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

var errBadEntry = errors.New("projections: malformed notification entry")

type entryReader struct {
	b   []byte
	bad bool
}

func (r *entryReader) u8() byte {
	if len(r.b) < 1 {
		r.bad = true
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *entryReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *entryReader) bytes() []byte {
	n := r.uvarint()
	if r.bad || n > uint64(len(r.b)) {
		r.bad = true
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// entryHead is the part of an entry counting needs.
type entryHead struct {
	flags          byte
	sender, thread []byte
	nExcept        int
	rest           entryReader // positioned at the first exception
}

func readHead(v []byte) (entryHead, error) {
	r := entryReader{b: v}
	if r.u8() != entryFormat {
		return entryHead{}, errBadEntry
	}
	h := entryHead{flags: r.u8()}
	h.sender, h.thread = r.bytes(), r.bytes()
	n := r.uvarint()
	if r.bad || n > uint64(len(r.b)) {
		return entryHead{}, errBadEntry
	}
	h.nExcept, h.rest = int(n), r
	return h, nil
}

// outcome returns the entry's flags for user, who joined the room at join
// (0: not joined), and the index of user among the exceptions (-1: not
// listed).
func (h *entryHead) outcome(seq uint64, user string, join uint64) (byte, int, error) {
	r := h.rest
	for i := 0; i < h.nExcept; i++ {
		u, f := r.bytes(), r.u8()
		if r.bad {
			return 0, -1, errBadEntry
		}
		if string(u) == user {
			return f, i, nil
		}
	}
	if join == 0 || seq <= join || string(h.sender) == user {
		return 0, -1, nil
	}
	return h.flags, -1, nil
}

// decodeEntry reads a whole entry.
func decodeEntry(v []byte) (*notifEntry, error) {
	h, err := readHead(v)
	if err != nil {
		return nil, err
	}
	e := &notifEntry{Flags: h.flags, Sender: string(h.sender), Thread: string(h.thread)}
	r := h.rest
	for i := 0; i < h.nExcept; i++ {
		u, f := r.bytes(), r.u8()
		e.Except = append(e.Except, notifExcept{User: string(u), Flags: f})
	}
	ts, n := binary.Varint(r.b)
	if n <= 0 {
		return nil, errBadEntry
	}
	r.b = r.b[n:]
	e.TS = ts
	e.EventID = string(r.bytes())
	e.Actions = r.bytes()
	for i := range e.Except {
		e.Except[i].Actions = r.bytes()
	}
	if r.bad {
		return nil, errBadEntry
	}
	return e, nil
}

// Counts are unread notification counts.
type Counts struct{ Notify, Highlight int64 }

func (c *Counts) add(flags byte, n int64) {
	if flags&entryNotify == 0 {
		return
	}
	c.Notify += n
	if flags&entryHighlight != 0 {
		c.Highlight += n
	}
}

// unreadState is a user's counts in a room as of entry position upto, with
// the join and read positions they were counted from, read as of position
// at (or later). States are shared: never changed once cached.
type unreadState struct {
	join   uint64
	pos    map[string]uint64 // by thread: "" unthreaded, "main", root ID
	at     uint64
	upto   uint64
	counts map[string]Counts
}

// effective is the read position that applies to an entry of thread t.
func (st *unreadState) effective(pos map[string]uint64, t string) uint64 {
	return max(st.join, pos[""], pos[t])
}

// unreadCache keeps unreadStates by user and room, and the rooms' entry
// tails (push_tail.go). States are replaced, never changed in place, so a
// reader holds a consistent one.
type unreadCache struct {
	mu sync.Mutex
	m  map[unreadKey]*unreadState

	tails entryTails
}

type unreadKey struct{ user, room string }

const unreadCacheMax = 200000

func (c *unreadCache) get(k unreadKey) *unreadState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[k]
}

func (c *unreadCache) put(k unreadKey, st *unreadState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= unreadCacheMax {
		c.m = map[unreadKey]*unreadState{}
	}
	// Keep the state counted furthest: a reader with an older window
	// must not take a newer one's place.
	if old := c.m[k]; old == nil || old.upto <= st.upto || old.join != st.join || regressed(old.pos, st.pos) {
		c.m[k] = st
	}
}

// pushJoin returns the position at which a local user joined a room (0 if
// they are not joined).
func (s *Store) pushJoin(room, user string) (uint64, error) {
	v, ok, err := s.get(row(PushID, append(pushLocalPrefix(room), user...)))
	if err != nil || !ok || len(v) < 8 {
		return 0, err
	}
	return max(1, binary.BigEndian.Uint64(v)), nil
}

func (s *Store) readPositions(user, room string) (map[string]uint64, error) {
	prefix := readPosPrefix(user, room)
	out := map[string]uint64{}
	err := s.scan(PushID, prefix, nil, false, func(k, v []byte) bool {
		if len(v) == 8 {
			out[string(k[len(prefix):])] = binary.BigEndian.Uint64(v)
		}
		return true
	})
	return out, err
}

// UnreadCounts returns a user's unread notification counts in a room, per
// thread ("main" for the main timeline): the entries after the user's join
// and read positions that notify them, up to the log's durable position.
func (s *Store) UnreadCounts(user, room string) (map[string]Counts, error) {
	c, err := s.UnreadCountsAt(user, room, s.log.Last(), nil)
	if err != nil {
		return nil, err
	}
	out := make(map[string]Counts, len(c))
	for t, x := range c {
		out[t] = x
	}
	return out, nil
}

// UnreadCountsAt is UnreadCounts counting the entries up to position upto,
// which must be durable (at most the log's Last(); entries after it that
// an earlier call counted stay counted), for a reader that can vouch for
// the user's positions: when fresh(at) reports that the user's join and
// read positions in the room did not change in (at, upto], those read as
// of position at are used again instead of being read. A user's positions
// in a room change with their membership, their read receipts and their
// own events in it. fresh may be nil. The map returned is shared: read
// only.
func (s *Store) UnreadCountsAt(user, room string, upto uint64, fresh func(at uint64) bool) (map[string]Counts, error) {
	upto = min(upto, s.log.Last())
	key := unreadKey{user, room}
	prev := s.unread.get(key)
	var join, at uint64
	var pos map[string]uint64
	if prev != nil && fresh != nil && fresh(prev.at) {
		join, pos, at = prev.join, prev.pos, max(prev.at, upto)
		if prev.upto >= upto {
			if at != prev.at {
				st := *prev
				st.at = at
				s.unread.put(key, &st)
			}
			return prev.counts, nil // nothing new to count
		}
	} else {
		var err error
		if join, err = s.pushJoin(room, user); err != nil || join == 0 {
			return map[string]Counts{}, err
		}
		if pos, err = s.readPositions(user, room); err != nil {
			return nil, err
		}
		at = upto // the reads reflect at least this position
	}
	st := &unreadState{join: join, pos: pos, at: at, counts: map[string]Counts{}}
	if prev != nil && prev.join == join && !regressed(prev.pos, pos) {
		st.upto = prev.upto
		for t, c := range prev.counts {
			st.counts[t] = c
		}
		if err := s.uncount(st, prev, user, room); err != nil {
			return nil, err
		}
	} else {
		st.upto = max(join, pos[""])
	}
	if upto > st.upto {
		// The positions that apply to the main timeline, looked up once:
		// nearly every entry is of it.
		mainPos := st.effective(pos, "main")
		var main Counts
		err := s.forEachEntry(room, st.upto, upto, func(e *tailEntry) error {
			if e.thread == "main" {
				if e.seq > mainPos {
					main.add(e.outcome(user, join), 1)
				}
				return nil
			}
			if e.seq > st.effective(pos, e.thread) {
				st.count(e.thread, e.outcome(user, join), 1)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if main != (Counts{}) {
			c := st.counts["main"]
			c.Notify += main.Notify
			c.Highlight += main.Highlight
			st.counts["main"] = c
		}
		st.upto = upto
	}
	for t, c := range st.counts {
		if c == (Counts{}) {
			delete(st.counts, t)
		}
	}
	s.unread.put(key, st)
	return st.counts, nil
}

// uncount takes out of st's counts the entries up to st.upto that read
// positions moved past since prev: only the range between the old and new
// positions is read.
func (s *Store) uncount(st, prev *unreadState, user, room string) error {
	lo, hi := ^uint64(0), uint64(0)
	for t, p := range st.pos {
		if prev.pos[t] == p {
			continue
		}
		if t == "" {
			lo = min(lo, max(st.join, prev.pos[""]))
		} else {
			lo = min(lo, prev.effective(prev.pos, t))
		}
		hi = max(hi, st.effective(st.pos, t))
	}
	hi = min(hi, st.upto)
	if hi <= lo {
		return nil
	}
	return s.forEachEntry(room, lo, hi, func(e *tailEntry) error {
		if e.seq <= prev.effective(prev.pos, e.thread) || e.seq > st.effective(st.pos, e.thread) {
			return nil
		}
		st.count(e.thread, e.outcome(user, st.join), -1)
		return nil
	})
}

// count adds n times an entry's flags f to the counts of thread t.
func (st *unreadState) count(t string, f byte, n int64) {
	if f&entryNotify != 0 {
		c := st.counts[t]
		c.add(f, n)
		st.counts[t] = c
	}
}

// scanEntries calls fn for a room's notification entries at positions in
// (after, upto], oldest first or newest first, until fn returns false or
// an error.
func (s *Store) scanEntries(room string, after, upto uint64, backwards bool, fn func(seq uint64, h *entryHead, v []byte) (bool, error)) error {
	lo, hi, ok := seqRange(entryPrefix(room), after, upto)
	if !ok {
		return nil
	}
	var ferr error
	err := s.scan(PushID, lo, hi, backwards, func(k, v []byte) bool {
		seq := binary.BigEndian.Uint64(k[len(k)-8:])
		h, err := readHead(v)
		if err == nil {
			var more bool
			if more, err = fn(seq, &h, v); err == nil {
				return more
			}
		}
		ferr = err
		return false
	})
	if err == nil {
		err = ferr
	}
	return err
}

// regressed reports whether any read position moved back (the projection
// was rebuilt): counts must then be folded again from the start.
func regressed(old, cur map[string]uint64) bool {
	for t, p := range old {
		if cur[t] < p {
			return true
		}
	}
	return false
}

func threadKeyOf(thread []byte) string {
	if len(thread) == 0 {
		return "main"
	}
	return string(thread)
}

// UnreadTotal returns a user's unread notification count over the rooms
// they are joined to.
func (s *Store) UnreadTotal(user string) (int64, error) {
	rooms, err := s.UserRooms(user)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, r := range rooms {
		if r.Membership != MemberJoin {
			continue
		}
		c, err := s.UnreadCounts(user, r.RoomID)
		if err != nil {
			return 0, err
		}
		for _, x := range c {
			n += x.Notify
		}
	}
	return n, nil
}

// ReadPosition returns a user's read position in a room for a thread ("" for
// the unthreaded receipt, "main", or a root event ID).
func (s *Store) ReadPosition(user, room, thread string) (uint64, error) {
	v, _, err := s.get(row(PushID, readPosKey(user, room, thread)))
	if err != nil || len(v) != 8 {
		return 0, err
	}
	return binary.BigEndian.Uint64(v), nil
}

// Notifications calls fn for a user's notifications at positions in
// (after, upto], oldest first, or newest first when backwards: the entries
// of the rooms the user is joined or invited to that notify them.
func (s *Store) Notifications(user string, after, upto uint64, backwards bool, fn func(seq uint64, n *Notification) bool) error {
	rooms, err := s.UserRooms(user)
	if err != nil {
		return err
	}
	type cursor struct {
		room  string
		join  uint64
		items []uint64 // positions, in the order they are given out
		vals  [][]byte
	}
	// Each room is read in pages; a page is refilled when used up.
	const page = 64
	var cursors []*cursor
	fill := func(c *cursor, after, upto uint64) error {
		return s.scanEntries(c.room, after, upto, backwards, func(seq uint64, h *entryHead, v []byte) (bool, error) {
			f, _, err := h.outcome(seq, user, c.join)
			if f&entryNotify != 0 {
				c.items = append(c.items, seq)
				c.vals = append(c.vals, append([]byte(nil), v...))
			}
			return len(c.items) < page, err
		})
	}
	for _, r := range rooms {
		if r.Membership != MemberJoin && r.Membership != MemberInvite {
			continue
		}
		c := &cursor{room: r.RoomID}
		if r.Membership == MemberJoin {
			if c.join, err = s.pushJoin(r.RoomID, user); err != nil {
				return err
			}
		}
		if err := fill(c, after, upto); err != nil {
			return err
		}
		if len(c.items) > 0 {
			cursors = append(cursors, c)
		}
	}
	for len(cursors) > 0 {
		best := 0
		for i, c := range cursors {
			if (backwards && c.items[0] > cursors[best].items[0]) || (!backwards && c.items[0] < cursors[best].items[0]) {
				best = i
			}
		}
		c := cursors[best]
		seq, v := c.items[0], c.vals[0]
		c.items, c.vals = c.items[1:], c.vals[1:]
		n, err := s.notification(c.room, seq, v, user)
		if err != nil {
			return err
		}
		if !fn(seq, n) {
			return nil
		}
		if len(c.items) == 0 {
			a, u := after, upto
			if backwards {
				u = seq - 1
			} else {
				a = seq
			}
			if err := fill(c, a, u); err != nil {
				return err
			}
			if len(c.items) == 0 {
				cursors = append(cursors[:best], cursors[best+1:]...)
			}
		}
	}
	return nil
}

// notification is the Notification an entry makes for user.
func (s *Store) notification(room string, seq uint64, v []byte, user string) (*Notification, error) {
	e, err := decodeEntry(v)
	if err != nil {
		return nil, err
	}
	n := &Notification{RoomID: room, EventID: e.EventID, Thread: e.Thread, TS: e.TS, Actions: e.Actions, Highlight: e.Flags&entryHighlight != 0}
	for _, x := range e.Except {
		if x.User == user {
			n.Actions, n.Highlight = x.Actions, x.Flags&entryHighlight != 0
		}
	}
	return n, nil
}
