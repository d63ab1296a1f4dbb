package api

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// syncHub holds what /sync serves that is not in the log: the ephemeral
// streams (typing notifications and presence, which "is not logged"), their
// stream position, and the wake-up channel long-polls wait on besides the
// log's. It also owns the background workers of the sync area (presence
// timeouts, pushers).
//
// Ephemeral position: one in-memory counter for both streams, the second
// part of a sync token ("s<log>_<eph>"). It starts at the wall clock in
// microseconds, so after a restart it is almost surely above every token
// handed out before; a token from before a restart that is still ahead of
// it raises the counter above itself (observe), and that sync reports no
// ephemeral change: typing and presence are current state, and a client
// misses at most changes it would have been told about by the next one.
type syncHub struct {
	s *Server

	mu   sync.Mutex
	pos  uint64
	wake chan struct{} // closed at the next bump; nil until someone waits

	typing    map[string]*roomTyping // room -> who types
	typingLog posLog                 // (pos, room) of typing changes

	presence    map[string]*presenceState
	presenceLog posLog // (pos, user) of presence changes

	lazy lazyMembers

	// served lets serving skip per-event reads for plain events (served.go).
	served servedTracker

	// quiet caches values only non-event records change (served.go).
	quiet quietCache

	// tokens caches access token owners (tokens.go).
	tokens tokenCache

	// tlMembers shares the timeline senders' membership events among the
	// listeners of a wake (sync_rooms.go).
	tlMembers tlMembersCache

	// filters caches parsed sync filters (sync_filter.go).
	filters filterCache

	pushers *pusherPool

	// waiting counts long-polls blocked waiting for a change (tests and
	// benchmarks wait for it to be sure a sync is parked).
	waiting atomic.Int64

	// Presence timeouts (Synapse's values): a user who stops syncing goes
	// offline after syncTimeout, an online user idle for idleTimeout goes
	// unavailable. The janitor checks every janitorEvery.
	syncTimeout, idleTimeout, janitorEvery time.Duration

	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

func newSyncHub(s *Server) *syncHub {
	h := &syncHub{
		s:            s,
		pos:          uint64(time.Now().UnixMicro()),
		typing:       map[string]*roomTyping{},
		presence:     map[string]*presenceState{},
		syncTimeout:  30 * time.Second,
		idleTimeout:  5 * time.Minute,
		janitorEvery: 5 * time.Second,
		stop:         make(chan struct{}),
	}
	h.lazy.m = map[lazyDevice]*deviceMembers{}
	h.pushers = newPusherPool(s, h)
	return h
}

// start runs the background workers.
func (h *syncHub) start() {
	h.wg.Add(1)
	go h.presenceJanitor()
	h.pushers.start()
}

// close stops the background workers and waits for them.
func (h *syncHub) close() {
	if h == nil {
		return
	}
	h.stopOnce.Do(func() {
		close(h.stop)
		h.pushers.close()
	})
	h.wg.Wait()
}

// ephPos returns the current ephemeral stream position.
func (h *syncHub) ephPos() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.pos
}

// changed returns a channel closed at the next ephemeral change. Take it
// before reading positions, like log.Changed.
func (h *syncHub) changed() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.wake == nil {
		h.wake = make(chan struct{})
	}
	return h.wake
}

// bumpLocked advances the ephemeral position and wakes the waiters; h.mu
// is held.
func (h *syncHub) bumpLocked() uint64 {
	h.pos++
	if h.wake != nil {
		close(h.wake)
		h.wake = nil
	}
	return h.pos
}

// observe raises the counter to a token's ephemeral position if the token
// is ahead of it (a token from before a restart).
func (h *syncHub) observe(eph uint64) {
	h.mu.Lock()
	if eph > h.pos {
		h.pos = eph
	}
	h.mu.Unlock()
}

// posLog is a bounded log of (position, key) pairs in position order.
// Entries at or below dropped were discarded: a reader asking for changes
// since before it gets "incomplete" and falls back to current state.
type posLog struct {
	entries []posEntry
	dropped uint64
}

type posEntry struct {
	pos uint64
	key string
}

const posLogMax = 8192

func (l *posLog) add(pos uint64, key string) {
	if len(l.entries) >= posLogMax {
		half := len(l.entries) / 2
		l.dropped = l.entries[half-1].pos
		l.entries = append(l.entries[:0], l.entries[half:]...)
	}
	l.entries = append(l.entries, posEntry{pos, key})
}

// since returns the distinct keys changed in (after, upto], and whether the
// log still covers all of that range.
func (l *posLog) since(after, upto uint64) ([]string, bool) {
	i := sort.Search(len(l.entries), func(i int) bool { return l.entries[i].pos > after })
	seen := map[string]bool{}
	var out []string
	for ; i < len(l.entries) && l.entries[i].pos <= upto; i++ {
		k := l.entries[i].key
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out, after >= l.dropped
}

// ---- typing ----

// roomTyping is who is typing in a room, with when it expires.
type roomTyping struct {
	users map[string]time.Time
	pos   uint64 // position of the last change
}

// maxTypingTimeout bounds how long one request marks a user as typing.
const maxTypingTimeout = 120 * time.Second

// setTyping marks user as typing in room until now+timeout, or not typing.
// Only a change of who types is a change of the stream.
func (h *syncHub) setTyping(room, user string, typing bool, timeout time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	rt := h.typing[room]
	if !typing {
		if rt == nil {
			return
		}
		if _, ok := rt.users[user]; !ok {
			return
		}
		delete(rt.users, user)
		h.typingChangedLocked(room, rt)
		return
	}
	if rt == nil {
		rt = &roomTyping{users: map[string]time.Time{}}
		h.typing[room] = rt
	}
	timeout = min(max(timeout, 0), maxTypingTimeout)
	until := time.Now().Add(timeout)
	_, was := rt.users[user]
	rt.users[user] = until
	if !was {
		h.typingChangedLocked(room, rt)
	}
	time.AfterFunc(timeout, func() { h.expireTyping(room, user, until) })
}

func (h *syncHub) typingChangedLocked(room string, rt *roomTyping) {
	rt.pos = h.bumpLocked()
	h.typingLog.add(rt.pos, room)
	if len(rt.users) == 0 {
		delete(h.typing, room)
	}
}

// expireTyping ends a typing notification unless it was renewed.
func (h *syncHub) expireTyping(room, user string, until time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	rt := h.typing[room]
	if rt == nil {
		return
	}
	if t, ok := rt.users[user]; ok && t.Equal(until) {
		delete(rt.users, user)
		h.typingChangedLocked(room, rt)
	}
}

// typingIn returns who is typing in a room (sorted) and the position of the
// last change.
func (h *syncHub) typingIn(room string) ([]string, uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	rt := h.typing[room]
	if rt == nil {
		return nil, 0
	}
	users := make([]string, 0, len(rt.users))
	for u := range rt.users {
		users = append(users, u)
	}
	sort.Strings(users)
	return users, rt.pos
}

// typingChanges returns the rooms whose typing changed in (after, upto].
// When the bounded log no longer covers the range it returns every room
// with a typing entry.
func (h *syncHub) typingChanges(after, upto uint64) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	rooms, complete := h.typingLog.since(after, upto)
	if complete {
		return rooms
	}
	rooms = rooms[:0]
	for r, rt := range h.typing {
		if rt.pos > after && rt.pos <= upto || len(rt.users) > 0 {
			rooms = append(rooms, r)
		}
	}
	sort.Strings(rooms)
	return rooms
}

// ---- lazy-loading members ----

// lazyMembers remembers, per device, which membership events a
// lazy-loading client already has, so they are not sent again ("the server
// MAY omit redundant membership events"). Bounded: a device's memory is
// dropped when it grows too large, which only costs resending.
type lazyMembers struct {
	mu sync.Mutex
	m  map[lazyDevice]*deviceMembers
}

type lazyDevice struct{ user, device string }

type deviceMembers struct {
	sent map[string]map[string]string // room -> member -> event ID
	n    int                          // entries in sent
}

const lazyMaxPerDevice = 50000

func (lm *lazyMembers) reset(user, device string) {
	lm.mu.Lock()
	delete(lm.m, lazyDevice{user, device})
	lm.mu.Unlock()
}

// room returns, locked, what the device was sent of room's members
// (member -> event ID; nil if nothing); unlock with lm.mu.Unlock. For
// checking many members with one lock and one room lookup.
func (lm *lazyMembers) room(user, device, room string) map[string]string {
	lm.mu.Lock()
	if d := lm.m[lazyDevice{user, device}]; d != nil {
		return d.sent[room]
	}
	return nil
}

func (lm *lazyMembers) add(user, device, room, member, eventID string) {
	lm.mu.Lock()
	defer lm.mu.Unlock()
	k := lazyDevice{user, device}
	d := lm.m[k]
	if d == nil {
		if len(lm.m) > 10000 {
			lm.m = map[lazyDevice]*deviceMembers{}
		}
		d = &deviceMembers{sent: map[string]map[string]string{}}
		lm.m[k] = d
	}
	if d.n >= lazyMaxPerDevice {
		d.sent, d.n = map[string]map[string]string{}, 0
	}
	r := d.sent[room]
	if r == nil {
		r = map[string]string{}
		d.sent[room] = r
	}
	if _, ok := r[member]; !ok {
		d.n++
	}
	r[member] = eventID
}
