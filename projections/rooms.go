package projections

import (
	"encoding/binary"
	"sort"
)

// Room views. Every one folds KindEvent only.

// stateChanges is what an event record changes in its room's current state:
// the resolved entries when the sequencer resolved a fork, otherwise the
// event itself if it is an accepted state event.
func stateChanges(r *EventRecord) []StateEntry {
	if r.Status != Accepted {
		return nil
	}
	if r.State != nil {
		return r.State
	}
	if r.StateKey == nil {
		return nil
	}
	return []StateEntry{{Type: r.Type, StateKey: *r.StateKey, EventID: r.EventID, Membership: r.Membership}}
}

// Events indexes every event the server holds, whatever its status, and the
// client transactions that produced local ones:
//
//	'e' ‖ eventID            -> seq u64 ‖ status u8
//	'x' ‖ user\0device\0txn  -> eventID
//	'v' ‖ roomID             -> room version (from the create event)
type Events struct{}

func (Events) ID() byte     { return 'e' }
func (Events) Name() string { return "events" }

func eventKey(id string) []byte     { return append([]byte{'e'}, id...) }
func txnKey(txn string) []byte      { return append([]byte{'x'}, txn...) }
func versionKey(room string) []byte { return append([]byte{'v'}, room...) }

// TxnKeys calls fn with every stored client transaction key that starts
// with prefix (TxnEvent's argument), in key order; fn's slice is valid only
// during the call, and returning false stops the scan. The sequencer learns
// a device's transactions with it, once per process (see dag/rooms).
func (s *Store) TxnKeys(prefix string, fn func(txn []byte) bool) error {
	return s.scan('e', txnKey(prefix), nil, false, func(k, _ []byte) bool { return fn(k[1:]) })
}

// keyBuf is stack space for the keys and values a fold writes: Tx.Set
// copies them, so the hot folds build them here instead of allocating
// (appends past it still work, on the heap).
type keyBuf [256]byte

func (Events) Apply(tx *Tx, seq uint64, v any) error {
	r, ok := v.(*EventRecord)
	if !ok {
		return nil
	}
	var kb, vb keyBuf
	if err := tx.Set(append(append(kb[:0], 'e'), r.EventID...), append(appendU64(vb[:0], seq), byte(r.Status))); err != nil {
		return err
	}
	if r.Txn != "" {
		if err := tx.Set(append(append(kb[:0], 'x'), r.Txn...), append(vb[:0], r.EventID...)); err != nil {
			return err
		}
	}
	// An outlier create counts too: a room joined over federation holds its
	// create event as an outlier (from the send_join state).
	if r.Type == "m.room.create" && r.StateKey != nil && *r.StateKey == "" && (r.Status == Accepted || r.Status == Outlier) {
		return tx.Set(versionKey(r.RoomID), []byte(r.RoomVersion))
	}
	return nil
}

// State is each room's current state:
//
//	's' ‖ str(roomID) ‖ str(type) ‖ stateKey -> eventID
type State struct{}

func (State) ID() byte     { return 's' }
func (State) Name() string { return "state" }

func stateKey(room, typ, sk string) []byte {
	return append(appendStr(appendStr([]byte{'s'}, room), typ), sk...)
}

func (State) Apply(tx *Tx, _ uint64, v any) error {
	r, ok := v.(*EventRecord)
	if !ok {
		return nil
	}
	var kb, vb keyBuf
	for _, c := range stateChanges(r) {
		k := append(appendStr(appendStr(append(kb[:0], 's'), r.RoomID), c.Type), c.StateKey...)
		var err error
		if c.EventID == "" {
			err = tx.Delete(k)
		} else {
			err = tx.Set(k, append(vb[:0], c.EventID...))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Membership codes, as stored.
const (
	MemberJoin   byte = 1
	MemberInvite byte = 2
	MemberLeave  byte = 3
	MemberBan    byte = 4
	MemberKnock  byte = 5
)

// MembershipCode maps a membership string to its code (0 if unknown).
func MembershipCode(m string) byte {
	switch m {
	case "join":
		return MemberJoin
	case "invite":
		return MemberInvite
	case "leave":
		return MemberLeave
	case "ban":
		return MemberBan
	case "knock":
		return MemberKnock
	}
	return 0
}

// MembershipName is the inverse of MembershipCode.
func MembershipName(c byte) string {
	switch c {
	case MemberJoin:
		return "join"
	case MemberInvite:
		return "invite"
	case MemberLeave:
		return "leave"
	case MemberBan:
		return "ban"
	case MemberKnock:
		return "knock"
	}
	return ""
}

// Membership indexes current memberships both ways, in one batch:
//
//	'r' ‖ str(roomID) ‖ userID -> code u8 ‖ seq u64 ‖ eventID
//	'u' ‖ str(userID) ‖ roomID -> code u8 ‖ seq u64
//
// seq is the position of the record that made the membership current, which
// is what /sync compares tokens with.
type Membership struct{}

func (Membership) ID() byte     { return 'm' }
func (Membership) Name() string { return "membership" }

func roomMemberKey(room, user string) []byte { return append(appendStr([]byte{'r'}, room), user...) }

func (Membership) Apply(tx *Tx, seq uint64, v any) error {
	r, ok := v.(*EventRecord)
	if !ok {
		return nil
	}
	var kb, vb keyBuf
	for _, c := range stateChanges(r) {
		if c.Type != "m.room.member" {
			continue
		}
		roomMember := append(appendStr(append(kb[:0], 'r'), r.RoomID), c.StateKey...)
		code := MembershipCode(c.Membership)
		if c.EventID == "" || code == 0 {
			if err := tx.Delete(roomMember); err != nil {
				return err
			}
			if err := tx.Delete(append(appendStr(append(kb[:0], 'u'), c.StateKey), r.RoomID...)); err != nil {
				return err
			}
			continue
		}
		val := appendU64(append(vb[:0], code), seq)
		if err := tx.Set(roomMember, append(val, c.EventID...)); err != nil {
			return err
		}
		if err := tx.Set(append(appendStr(append(kb[:0], 'u'), c.StateKey), r.RoomID...), val); err != nil {
			return err
		}
	}
	return nil
}

// Timeline orders each room's accepted events by log position, and keeps the
// stream of room activity that incremental /sync scans:
//
//	't' ‖ str(roomID) ‖ seq u64 -> ∅
//	'c' ‖ seq u64               -> roomID
type Timeline struct{}

func (Timeline) ID() byte     { return 't' }
func (Timeline) Name() string { return "timeline" }

func changeKey(seq uint64) []byte { return appendU64([]byte{'c'}, seq) }

func (Timeline) Apply(tx *Tx, seq uint64, v any) error {
	r, ok := v.(*EventRecord)
	if !ok || r.Status != Accepted {
		return nil
	}
	var kb, vb keyBuf
	if err := tx.Set(appendU64(appendStr(append(kb[:0], 't'), r.RoomID), seq), nil); err != nil {
		return err
	}
	return tx.Set(appendU64(append(kb[:0], 'c'), seq), append(vb[:0], r.RoomID...))
}

// Extremities tracks each room's forward extremities: accepted events no
// other accepted event names in prev_events.
//
//	'f' ‖ str(roomID) ‖ eventID -> depth u64
type Extremities struct{}

func (Extremities) ID() byte     { return 'f' }
func (Extremities) Name() string { return "extremities" }

func (Extremities) Apply(tx *Tx, _ uint64, v any) error {
	r, ok := v.(*EventRecord)
	if !ok || r.Status != Accepted {
		return nil
	}
	var kb keyBuf
	room := appendStr(append(kb[:0], 'f'), r.RoomID)
	for _, p := range r.PrevEvents {
		if err := tx.Delete(append(room, p...)); err != nil {
			return err
		}
	}
	var d [8]byte
	binary.BigEndian.PutUint64(d[:], uint64(r.Depth))
	return tx.Set(append(room, r.EventID...), d[:])
}

var registered []Projection

// register adds a projection to the server's set (from init, in the file
// that defines it). IDs are forever, like record kinds.
func register(p Projection) { registered = append(registered, p) }

func init() {
	register(Accounts{})
	register(Devices{})
	register(Events{})
	register(State{})
	register(Membership{})
	register(Timeline{})
	register(Extremities{})
	register(UserData{})
}

// All returns the server's projection set, ordered by ID.
func All() (*Set, error) {
	ps := append([]Projection(nil), registered...)
	sort.Slice(ps, func(i, j int) bool { return ps[i].ID() < ps[j].ID() })
	return NewSet(ps...)
}
