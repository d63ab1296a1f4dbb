package projections

import (
	"sort"
	"sync"
)

// Every listener of a busy room folds the same new notification entries
// into its unread counts on every wake. Reading them from pebble cost one
// iterator per listener and sync (creating and seeking it was most of the
// cost of unread counts), so the newest entries of each room are kept in
// memory, decoded as far as counting needs: the first reader of a window
// reads it from pebble, under the room's lock, and the others count from
// memory.
//
// A tail holds every entry of its room at positions in (from, upto], and
// only durable positions: upto never passes the log's Last(), and every row
// at or before Last() is in the database (rows are committed with their
// records, before Last() moves), and entries are never changed or removed
// once written. A window that starts before from is read from pebble.

// tailEntry is a notification entry as counting reads it.
type tailEntry struct {
	seq    uint64
	flags  byte
	sender string
	thread string // threadKeyOf: "main" or the root's event ID
	except []tailExcept
}

type tailExcept struct {
	user  string
	flags byte
}

// outcome is entryHead.outcome for a tail entry.
func (e *tailEntry) outcome(user string, join uint64) byte {
	for i := range e.except {
		if e.except[i].user == user {
			return e.except[i].flags
		}
	}
	if join == 0 || e.seq <= join || e.sender == user {
		return 0
	}
	return e.flags
}

type roomTail struct {
	mu      sync.Mutex
	started bool
	from    uint64
	upto    uint64
	// entries are in position order. Elements are never changed once
	// appended and a trim copies, so a reader may keep a slice of them
	// after letting go of mu.
	entries []tailEntry
}

// entryTails holds the tails of the rooms read recently.
type entryTails struct {
	mu    sync.Mutex
	rooms map[string]*roomTail
	total int // entries over all tails
}

// tailMax bounds one room's tail; it keeps the newer half when full (a
// variable for tests).
var tailMax = 4096

const (
	// tailsMax bounds the entries of all tails (~100 bytes each): reaching
	// it forgets every tail, which only costs reading them again.
	tailsMax = 1 << 18
)

func (t *entryTails) room(room string) *roomTail {
	t.mu.Lock()
	defer t.mu.Unlock()
	rt := t.rooms[room]
	if rt == nil {
		if t.rooms == nil || t.total >= tailsMax || len(t.rooms) >= tailsMax/64 {
			t.rooms, t.total = map[string]*roomTail{}, 0
		}
		rt = &roomTail{}
		t.rooms[room] = rt
	}
	return rt
}

// grew notes that a tail grew by n entries (shrank, if negative).
// Readers keep the tails they hold when they are forgotten.
func (t *entryTails) grew(n int) {
	t.mu.Lock()
	t.total += n
	if t.total > tailsMax {
		t.rooms, t.total = map[string]*roomTail{}, 0
	}
	t.mu.Unlock()
}

// tailEntries returns a room's entries at positions in (after, upto], in
// position order, from the room's tail; ok is false when the tail cannot
// serve the window (it starts after after), and the caller reads pebble.
// upto must be durable (at most the log's Last()). The slice is shared:
// read only.
func (s *Store) tailEntries(room string, after, upto uint64) ([]tailEntry, bool, error) {
	if upto <= after {
		return nil, true, nil
	}
	tails := &s.unread.tails
	rt := tails.room(room)
	rt.mu.Lock()
	if !rt.started {
		rt.started, rt.from, rt.upto = true, after, after
	}
	if after < rt.from {
		rt.mu.Unlock()
		return nil, false, nil
	}
	if upto > rt.upto {
		n := len(rt.entries)
		err := s.scanEntries(room, rt.upto, upto, false, func(seq uint64, h *entryHead, _ []byte) (bool, error) {
			var e tailEntry
			if err := e.decode(seq, h); err != nil {
				return false, err
			}
			rt.entries = append(rt.entries, e)
			return true, nil
		})
		if err != nil {
			// Keep what the tail vouched for before this read.
			rt.entries = rt.entries[:n]
			rt.mu.Unlock()
			return nil, false, err
		}
		rt.upto = upto
		if len(rt.entries) > tailMax {
			drop := len(rt.entries) - tailMax/2
			rt.from = rt.entries[drop-1].seq
			rt.entries = append([]tailEntry(nil), rt.entries[drop:]...)
		}
		if d := len(rt.entries) - n; d != 0 {
			defer tails.grew(d) // after rt.mu: tails.mu is taken before it
		}
		if after < rt.from {
			rt.mu.Unlock()
			return nil, false, nil
		}
	}
	all := rt.entries
	rt.mu.Unlock()
	i := sort.Search(len(all), func(i int) bool { return all[i].seq > after })
	j := sort.Search(len(all), func(j int) bool { return all[j].seq > upto })
	return all[i:j:j], true, nil
}

// forEachEntry calls fn for a room's entries in (after, upto] (upto
// durable), oldest first, from the room's tail when it covers the window.
func (s *Store) forEachEntry(room string, after, upto uint64, fn func(e *tailEntry) error) error {
	entries, ok, err := s.tailEntries(room, after, upto)
	if err != nil {
		return err
	}
	if ok {
		for i := range entries {
			if err := fn(&entries[i]); err != nil {
				return err
			}
		}
		return nil
	}
	var e tailEntry
	return s.scanEntries(room, after, upto, false, func(seq uint64, h *entryHead, _ []byte) (bool, error) {
		if err := e.decode(seq, h); err != nil {
			return false, err
		}
		return true, fn(&e)
	})
}

// decode sets e to the entry at seq whose head is h, reusing e's
// exceptions slice.
func (e *tailEntry) decode(seq uint64, h *entryHead) error {
	*e = tailEntry{seq: seq, flags: h.flags, sender: string(h.sender), thread: threadKeyOf(h.thread), except: e.except[:0]}
	r := h.rest
	for i := 0; i < h.nExcept; i++ {
		u, f := r.bytes(), r.u8()
		if r.bad {
			return errBadEntry
		}
		e.except = append(e.except, tailExcept{user: string(u), flags: f})
	}
	return nil
}
