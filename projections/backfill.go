package projections

import (
	"encoding/binary"
	"errors"
	"math"

	"github.com/vmihailenco/msgpack/v5"

	"engram/log"
)

// Backfilled history: events older than anything the server held, fetched
// from other servers (/backfill) when a client paginates past the start of
// a room it joined over federation.
//
// The events themselves are ordinary KindEvent records with status Outlier
// (so they change neither current state, nor forward extremities, nor the
// forward timeline, and the sequencer's DAG walks never enter them); a
// KindBackfill record, appended in the same batch right after them, says
// that they are the room's history and in which order. Their order is a
// backward one: an ordinal that grows as events get older, ord = seq<<16 |
// i for the i-th event (newest first) of the KindBackfill record at log
// position seq. Every batch is fetched from the backward extremities of what
// the server held before it, so a later batch is older than every earlier
// one, and an ordinal only depends on log order: replay gives the same
// ordinals, and a client paginating backwards never misses an event that
// lands behind it. (Synapse gives backfilled events negative stream
// orderings for the same reason.)

// KindBackfill is a batch of backfilled history (rooms range).
const KindBackfill log.Kind = 24

// BackfillRecord is the body of KindBackfill, version 1.
type BackfillRecord struct {
	RoomID string `msgpack:"r"`
	// Events are the batch's events, newest first; each is held as an
	// Outlier event record appended before this record.
	Events []BackfillEvent `msgpack:"e"`
	// Frontier is the room's backward extremities after this batch: events
	// named in prev_events of held events that the server does not hold.
	// Empty once the history reaches the room's creation.
	Frontier []string `msgpack:"f,omitempty"`
}

// BackfillEvent is one event of a BackfillRecord, with what the read path
// needs to apply history visibility without parsing it ("the state of the
// room at that event" is approximated from the backfilled history by
// depth).
type BackfillEvent struct {
	EventID string `msgpack:"i"`
	Depth   int64  `msgpack:"d"`
	// Vis is the history_visibility code of an m.room.history_visibility
	// event (0 otherwise).
	Vis byte `msgpack:"v,omitempty"`
	// Member and Membership are the state key and membership code of an
	// m.room.member event.
	Member     string `msgpack:"u,omitempty"`
	Membership byte   `msgpack:"m,omitempty"`
}

// maxBackfillBatch is how many events of one record get an ordinal (the
// low 16 bits); the sequencer never writes more.
const maxBackfillBatch = 1 << 16

// Backfill indexes backfilled history:
//
//	'o' ‖ str(roomID) ‖ ord u64                          -> eventID
//	'i' ‖ eventID                                        -> ord u64
//	'f' ‖ roomID                                         -> frontier (msgpack []string)
//	'v' ‖ str(roomID) ‖ depth u64 ‖ eventID              -> visibility code
//	'm' ‖ str(roomID) ‖ str(userID) ‖ depth u64 ‖ eventID -> membership code
type Backfill struct{}

// BackfillID is the backfill projection's ID.
const BackfillID byte = 'b'

func (Backfill) ID() byte     { return BackfillID }
func (Backfill) Name() string { return "backfill" }

func bfOrderKey(room string, ord uint64) []byte { return appendU64(appendStr([]byte{'o'}, room), ord) }
func bfEventKey(id string) []byte               { return append([]byte{'i'}, id...) }
func bfFrontierKey(room string) []byte          { return append([]byte{'f'}, room...) }
func bfVisKey(room string, depth uint64, id string) []byte {
	return append(appendU64(appendStr([]byte{'v'}, room), depth), id...)
}
func bfMemberKey(room, user string, depth uint64, id string) []byte {
	return append(appendU64(appendStr(appendStr([]byte{'m'}, room), user), depth), id...)
}

func clampDepth(d int64) uint64 {
	if d < 0 {
		return 0
	}
	return uint64(d)
}

// NeedsRead: an event already given an ordinal keeps its first one.
func (Backfill) NeedsRead(v any) bool {
	_, ok := v.(*BackfillRecord)
	return ok
}

func (Backfill) Apply(tx *Tx, seq uint64, v any) error {
	r, ok := v.(*BackfillRecord)
	if !ok {
		return nil
	}
	if seq >= 1<<48 {
		return nil // no ordinal left; unreachable in practice
	}
	for i, e := range r.Events {
		if i >= maxBackfillBatch {
			break
		}
		if _, dup, err := tx.Get(bfEventKey(e.EventID)); err != nil {
			return err
		} else if dup {
			continue
		}
		ord := seq<<16 | uint64(i)
		if err := tx.Set(bfOrderKey(r.RoomID, ord), []byte(e.EventID)); err != nil {
			return err
		}
		if err := tx.Set(bfEventKey(e.EventID), appendU64(nil, ord)); err != nil {
			return err
		}
		d := clampDepth(e.Depth)
		if e.Vis != 0 {
			if err := tx.Set(bfVisKey(r.RoomID, d, e.EventID), []byte{e.Vis}); err != nil {
				return err
			}
		}
		if e.Member != "" && e.Membership != 0 {
			if err := tx.Set(bfMemberKey(r.RoomID, e.Member, d, e.EventID), []byte{e.Membership}); err != nil {
				return err
			}
		}
	}
	f, err := msgpack.Marshal(r.Frontier)
	if err != nil {
		return err
	}
	return tx.Set(bfFrontierKey(r.RoomID), f)
}

func init() {
	registerKind(KindBackfill, func() any { return new(BackfillRecord) })
	register(Backfill{})
}

// BackfillItem is one event of a room's backfilled history.
type BackfillItem struct {
	Ord     uint64
	EventID string
}

// Backfilled returns up to limit events of a room's backfilled history with
// ordinals in (after, before): newest first (ascending ordinals), or oldest
// first when newer is set.
func (s *Store) Backfilled(room string, after, before uint64, newer bool, limit int) ([]BackfillItem, error) {
	if after == math.MaxUint64 || before <= after+1 || limit <= 0 {
		return nil, nil
	}
	prefix := appendStr([]byte{'o'}, room)
	lo := appendU64(append([]byte(nil), prefix...), after+1)
	hi := appendU64(append([]byte(nil), prefix...), before)
	var out []BackfillItem
	err := s.scan(BackfillID, lo, hi, newer, func(k, v []byte) bool {
		if len(k) == len(prefix)+8 {
			out = append(out, BackfillItem{Ord: binary.BigEndian.Uint64(k[len(prefix):]), EventID: string(v)})
		}
		return len(out) < limit
	})
	return out, err
}

// BackfillOrd returns the ordinal of a backfilled event; ok is false for
// an event that was not backfilled.
func (s *Store) BackfillOrd(id string) (ord uint64, ok bool, err error) {
	v, ok, err := s.get(row(BackfillID, bfEventKey(id)))
	if err != nil || !ok || len(v) != 8 {
		return 0, false, err
	}
	return binary.BigEndian.Uint64(v), true, nil
}

// BackfillFrontier returns a room's backward extremities as of its latest
// backfilled batch; ok is false if nothing was ever backfilled.
func (s *Store) BackfillFrontier(room string) (ids []string, ok bool, err error) {
	v, ok, err := s.get(row(BackfillID, bfFrontierKey(room)))
	if err != nil || !ok {
		return nil, false, err
	}
	if err := msgpack.Unmarshal(v, &ids); err != nil {
		return nil, false, errors.New("projections: bad backfill frontier row")
	}
	return ids, true, nil
}

// lastBelow returns the value and last key component (the event ID) of the
// last row under group whose depth is below depth (or at most depth).
func (s *Store) lastBelow(group []byte, depth int64, inclusive bool) (val []byte, id string, found bool, err error) {
	d := clampDepth(depth)
	hi := appendU64(append([]byte(nil), group...), d)
	if inclusive {
		if d == math.MaxUint64 {
			hi = prefixEnd(group)
		} else {
			hi = appendU64(append([]byte(nil), group...), d+1)
		}
	}
	err = s.scan(BackfillID, group, hi, true, func(k, v []byte) bool {
		if len(k) >= len(group)+8 {
			val, id, found = append([]byte(nil), v...), string(k[len(group)+8:]), true
		}
		return false
	})
	return val, id, found, err
}

// BackfillVisAt returns the history visibility set by the deepest
// backfilled m.room.history_visibility event of a room below depth (at
// most depth if inclusive).
func (s *Store) BackfillVisAt(room string, depth int64, inclusive bool) (byte, bool, error) {
	v, _, found, err := s.lastBelow(appendStr([]byte{'v'}, room), depth, inclusive)
	if err != nil || !found || len(v) != 1 {
		return 0, false, err
	}
	return v[0], true, nil
}

// BackfillMemberAt returns the membership code and event of the deepest
// backfilled m.room.member event of user in a room below depth (at most
// depth if inclusive).
func (s *Store) BackfillMemberAt(room, user string, depth int64, inclusive bool) (byte, string, bool, error) {
	v, id, found, err := s.lastBelow(appendStr(appendStr([]byte{'m'}, room), user), depth, inclusive)
	if err != nil || !found || len(v) != 1 {
		return 0, "", false, err
	}
	return v[0], id, true, nil
}
