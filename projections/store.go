package projections

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync/atomic"

	"github.com/cockroachdb/pebble"
	"github.com/dgraph-io/ristretto/v2"
	"github.com/vmihailenco/msgpack/v5"

	"engram/log"
)

// ErrNotFound is returned by reads of rows that do not exist.
var ErrNotFound = errors.New("projections: not found")

// Store answers reads from the projections' rows. Event bodies live once, in
// the log; a ristretto cache holds decoded records by position (immutable, so
// a cache entry can never be stale).
type Store struct {
	log   *log.Log
	db    pebble.Reader
	cache *ristretto.Cache[uint64, *EventRecord]
	// recent holds the newest records by position modulo its size. Every
	// listener of a busy room reads the same few new events; ristretto's
	// admission policy turns new keys away until they are seen often, so
	// without this each listener would decode its own copy.
	recent [recentSize]atomic.Pointer[recentRecord]
	// unread keeps unread counts per user and room (push_reads.go).
	unread unreadCache
}

const recentSize = 4096

type recentRecord struct {
	seq uint64
	rec *EventRecord
}

// NewStore reads rows from db and event bodies from l. cacheBytes bounds the
// event cache (0 disables it).
func NewStore(l *log.Log, db pebble.Reader, cacheBytes int64) (*Store, error) {
	s := &Store{log: l, db: db}
	if cacheBytes > 0 {
		c, err := ristretto.NewCache(&ristretto.Config[uint64, *EventRecord]{
			NumCounters: cacheBytes / 100, // ~10x the expected entries of ~1 KiB
			MaxCost:     cacheBytes,
			BufferItems: 64,
			Metrics:     true,
		})
		if err != nil {
			return nil, err
		}
		s.cache = c
	}
	return s, nil
}

// CacheHitRatio is the event cache's hit ratio since start (NaN without a cache).
func (s *Store) CacheHitRatio() float64 {
	if s.cache == nil || s.cache.Metrics == nil {
		return math.NaN()
	}
	return s.cache.Metrics.Ratio()
}

// Close releases the cache.
func (s *Store) Close() {
	if s.cache != nil {
		s.cache.Close()
	}
}

func (s *Store) get(key []byte) ([]byte, bool, error) {
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	out := append([]byte(nil), v...)
	closer.Close()
	return out, true, nil
}

func row(id byte, k []byte) []byte { return append([]byte{rowPrefix, id}, k...) }

// scan calls fn for every row under prefix (relative to projection id), in key
// order, or in reverse. fn's slices are valid only during the call; returning
// false stops the scan.
func (s *Store) scan(id byte, lo, hi []byte, reverse bool, fn func(k, v []byte) bool) error {
	opts := &pebble.IterOptions{LowerBound: row(id, lo)}
	if hi != nil {
		opts.UpperBound = row(id, hi)
	} else {
		opts.UpperBound = prefixEnd(row(id, lo))
	}
	it, err := s.db.NewIter(opts)
	if err != nil {
		return err
	}
	if reverse {
		for it.Last(); it.Valid() && fn(it.Key()[2:], it.Value()); it.Prev() {
		}
	} else {
		for it.First(); it.Valid() && fn(it.Key()[2:], it.Value()); it.Next() {
		}
	}
	return it.Close()
}

// Account returns a user's account.
func (s *Store) Account(user string) (*Account, error) {
	v, ok, err := s.get(row('a', accountKey(user)))
	if err != nil || !ok {
		return nil, orNotFound(err)
	}
	var a Account
	if err := msgpack.Unmarshal(v, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

func orNotFound(err error) error {
	if err != nil {
		return err
	}
	return ErrNotFound
}

// TokenOwner returns the user and device an access token hash belongs to.
func (s *Store) TokenOwner(hash []byte) (user, device string, err error) {
	v, ok, err := s.get(row('d', tokenKey(hash)))
	if err != nil || !ok {
		return "", "", orNotFound(err)
	}
	user, rest, ok := readStr(v)
	if !ok {
		return "", "", fmt.Errorf("projections: bad token row")
	}
	return user, string(rest), nil
}

// DeviceInfo is a device as listed for its user.
type DeviceInfo struct {
	DeviceID string
	Device
}

// Devices lists a user's devices in device ID order.
func (s *Store) Devices(user string) ([]DeviceInfo, error) {
	prefix := appendStr([]byte{'d'}, user)
	var out []DeviceInfo
	var derr error
	err := s.scan('d', prefix, nil, false, func(k, v []byte) bool {
		var d DeviceInfo
		if derr = msgpack.Unmarshal(v, &d.Device); derr != nil {
			return false
		}
		d.DeviceID = string(k[len(prefix):])
		out = append(out, d)
		return true
	})
	if err == nil {
		err = derr
	}
	return out, err
}

// EventPos returns the log position and status of an event.
func (s *Store) EventPos(id string) (uint64, Status, error) {
	v, ok, err := s.get(row('e', eventKey(id)))
	if err != nil || !ok {
		return 0, 0, orNotFound(err)
	}
	if len(v) != 9 {
		return 0, 0, fmt.Errorf("projections: bad event row")
	}
	return binary.BigEndian.Uint64(v), Status(v[8]), nil
}

// TxnEvent returns the event a client transaction produced.
func (s *Store) TxnEvent(txn string) (string, error) {
	v, ok, err := s.get(row('e', txnKey(txn)))
	if err != nil || !ok {
		return "", orNotFound(err)
	}
	return string(v), nil
}

// RoomVersion returns a room's version ID.
func (s *Store) RoomVersion(room string) (string, error) {
	v, ok, err := s.get(row('e', versionKey(room)))
	if err != nil || !ok {
		return "", orNotFound(err)
	}
	return string(v), nil
}

// Record returns the event record at a log position.
func (s *Store) Record(seq uint64) (*EventRecord, error) {
	slot := &s.recent[seq%recentSize]
	if e := slot.Load(); e != nil && e.seq == seq {
		return e.rec, nil
	}
	if s.cache != nil {
		if r, ok := s.cache.Get(seq); ok {
			return r, nil
		}
	}
	rec, err := s.log.Get(seq)
	if err != nil {
		return nil, err
	}
	v, err := Decode(rec)
	if err != nil {
		return nil, err
	}
	r, ok := v.(*EventRecord)
	if !ok {
		return nil, fmt.Errorf("projections: record %d is not an event", seq)
	}
	r.memo = &recordMemo{} // before the record is shared
	if seq+recentSize > s.log.Last() {
		slot.Store(&recentRecord{seq: seq, rec: r})
	}
	if s.cache != nil {
		s.cache.Set(seq, r, int64(len(r.PDU)+256))
	}
	return r, nil
}

// Event returns an event's record by ID, with its position.
func (s *Store) Event(id string) (*EventRecord, uint64, error) {
	seq, _, err := s.EventPos(id)
	if err != nil {
		return nil, 0, err
	}
	r, err := s.Record(seq)
	return r, seq, err
}

// StateEvent returns the event ID current for (type, stateKey) in a room.
func (s *Store) StateEvent(room, typ, sk string) (string, error) {
	v, ok, err := s.get(row('s', stateKey(room, typ, sk)))
	if err != nil || !ok {
		return "", orNotFound(err)
	}
	return string(v), nil
}

// CurrentState returns a room's current state, ordered by (type, state key);
// typ limits it to one event type when not empty.
func (s *Store) CurrentState(room, typ string) ([]StateEntry, error) {
	prefix := appendStr([]byte{'s'}, room)
	if typ != "" {
		prefix = appendStr(prefix, typ)
	}
	var out []StateEntry
	err := s.scan('s', prefix, nil, false, func(k, v []byte) bool {
		t, rest, ok := readStr(k[len(appendStr([]byte{'s'}, room)):])
		if !ok {
			return true
		}
		out = append(out, StateEntry{Type: t, StateKey: string(rest), EventID: string(v)})
		return true
	})
	return out, err
}

// Member is one membership row of a room.
type Member struct {
	UserID     string
	Membership byte
	Seq        uint64
	EventID    string
}

// Members lists a room's members (every membership) in user ID order.
func (s *Store) Members(room string) ([]Member, error) {
	prefix := appendStr([]byte{'r'}, room)
	var out []Member
	err := s.scan('m', prefix, nil, false, func(k, v []byte) bool {
		if len(v) < 9 {
			return true
		}
		out = append(out, Member{UserID: string(k[len(prefix):]), Membership: v[0],
			Seq: binary.BigEndian.Uint64(v[1:9]), EventID: string(v[9:])})
		return true
	})
	return out, err
}

// MemberOf returns a user's membership in a room (Membership 0 if none).
func (s *Store) MemberOf(room, user string) (Member, error) {
	v, ok, err := s.get(row('m', roomMemberKey(room, user)))
	if err != nil || !ok || len(v) < 9 {
		return Member{UserID: user}, err
	}
	return Member{UserID: user, Membership: v[0], Seq: binary.BigEndian.Uint64(v[1:9]), EventID: string(v[9:])}, nil
}

// UserRoom is one of a user's room memberships.
type UserRoom struct {
	RoomID     string
	Membership byte
	Seq        uint64
}

// UserRooms lists the rooms a user has any membership in.
func (s *Store) UserRooms(user string) ([]UserRoom, error) {
	prefix := appendStr([]byte{'u'}, user)
	var out []UserRoom
	err := s.scan('m', prefix, nil, false, func(k, v []byte) bool {
		if len(v) < 9 {
			return true
		}
		out = append(out, UserRoom{RoomID: string(k[len(prefix):]), Membership: v[0], Seq: binary.BigEndian.Uint64(v[1:9])})
		return true
	})
	return out, err
}

// Timeline returns up to limit positions of a room's events in (after, before),
// oldest first, or newest first when backwards.
func (s *Store) Timeline(room string, after, before uint64, backwards bool, limit int) ([]uint64, error) {
	prefix := appendStr([]byte{'t'}, room)
	lo := appendU64(append([]byte(nil), prefix...), after+1)
	hi := appendU64(append([]byte(nil), prefix...), before)
	var out []uint64
	err := s.scan('t', lo, hi, backwards, func(k, _ []byte) bool {
		out = append(out, binary.BigEndian.Uint64(k[len(prefix):]))
		return len(out) < limit
	})
	return out, err
}

// RoomChange is one entry of the room activity stream.
type RoomChange struct {
	Seq    uint64
	RoomID string
}

// Changes calls fn for each timeline event position in (after, upto], oldest
// first: the work is proportional to what happened, not to how many rooms a
// user is in.
func (s *Store) Changes(after, upto uint64, fn func(seq uint64, room string) bool) error {
	return s.scan('t', changeKey(after+1), changeKey(upto+1), false, func(k, v []byte) bool {
		return fn(binary.BigEndian.Uint64(k[1:]), string(v))
	})
}

// Extremities returns a room's forward extremities, with their depths.
func (s *Store) Extremities(room string) (map[string]int64, error) {
	prefix := appendStr([]byte{'f'}, room)
	out := map[string]int64{}
	err := s.scan('f', prefix, nil, false, func(k, v []byte) bool {
		if len(v) == 8 {
			out[string(k[len(prefix):])] = int64(binary.BigEndian.Uint64(v))
		}
		return true
	})
	return out, err
}
