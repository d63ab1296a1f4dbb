package projections

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"

	"github.com/cockroachdb/pebble"
)

// RoomHistory keeps each room's state as it was at every log position, so
// reads can ask for "the state of the room at that event" (history
// visibility), the state when a user left (/state, /members), the state at
// the end of a /context window, and what a state event replaced
// (unsigned.prev_content):
//
//	'h' ‖ str(roomID) ‖ str(type) ‖ str(stateKey) ‖ seq u64 -> membership u8 ‖ eventID
//	'v' ‖ str(roomID) ‖ seq u64                              -> visibility u8
//	'e' ‖ eventID                                            -> visibility u8 (m.room.history_visibility events)
//	'x' ‖ roomID                                             -> ∅ (the room was once invited or joined)
//
// An 'h' row with an empty event ID records that resolution removed the key.
// The membership byte is the code of the event's membership for
// m.room.member rows (0 otherwise). 'v' rows are the history of the room's
// m.room.history_visibility value; a room without one is "shared" ("By
// default if no history_visibility is set, or if the value is not
// understood, the visibility is assumed to be shared"). 'x' lets the read
// path skip per-event checks for the common room that was always shared or
// world_readable.
type RoomHistory struct{}

func (RoomHistory) ID() byte     { return 'j' }
func (RoomHistory) Name() string { return "room_history" }

// History visibility codes, as stored.
const (
	VisWorldReadable byte = 1
	VisShared        byte = 2
	VisInvited       byte = 3
	VisJoined        byte = 4
)

// VisibilityCode maps a history_visibility value to its code; anything not
// understood is shared.
func VisibilityCode(v string) byte {
	switch v {
	case "world_readable":
		return VisWorldReadable
	case "invited":
		return VisInvited
	case "joined":
		return VisJoined
	}
	return VisShared
}

// VisibilityName is the inverse of VisibilityCode.
func VisibilityName(c byte) string {
	switch c {
	case VisWorldReadable:
		return "world_readable"
	case VisInvited:
		return "invited"
	case VisJoined:
		return "joined"
	}
	return "shared"
}

const typeHistoryVisibility = "m.room.history_visibility"

func histGroup(room, typ, sk string) []byte {
	return appendStr(appendStr(appendStr([]byte{'h'}, room), typ), sk)
}
func histKey(room, typ, sk string, seq uint64) []byte {
	return appendU64(histGroup(room, typ, sk), seq)
}
func visKey(room string, seq uint64) []byte { return appendU64(appendStr([]byte{'v'}, room), seq) }
func hvEventKey(id string) []byte           { return append([]byte{'e'}, id...) }
func restrictedKey(room string) []byte      { return append([]byte{'x'}, room...) }

// hvOf reads content.history_visibility of an m.room.history_visibility
// PDU. Only these (rare) events are parsed during a fold (their records
// are decoded with the PDU: pduTypes).
func hvOf(pdu []byte) byte {
	var ev struct {
		Content struct {
			HistoryVisibility any `json:"history_visibility"`
		} `json:"content"`
	}
	if json.Unmarshal(pdu, &ev) != nil {
		return VisShared
	}
	s, _ := ev.Content.HistoryVisibility.(string)
	return VisibilityCode(s)
}

// NeedsRead: a resolved state that makes an older m.room.history_visibility
// event current looks up that event's value.
func (RoomHistory) NeedsRead(v any) bool {
	r, ok := v.(*EventRecord)
	if !ok || r.State == nil || r.Status != Accepted {
		return false
	}
	for _, c := range r.State {
		if c.Type == typeHistoryVisibility && c.StateKey == "" && c.EventID != "" && c.EventID != r.EventID {
			return true
		}
	}
	return false
}

func (RoomHistory) Apply(tx *Tx, seq uint64, v any) error {
	r, ok := v.(*EventRecord)
	if !ok {
		return nil
	}
	var own byte
	if r.Type == typeHistoryVisibility && r.StateKey != nil && *r.StateKey == "" {
		// Every such event is remembered, whatever its status: resolution
		// may make it current later.
		own = hvOf(r.PDU)
		if err := tx.Set(hvEventKey(r.EventID), []byte{own}); err != nil {
			return err
		}
	}
	for _, c := range stateChanges(r) {
		var code byte
		if c.Type == "m.room.member" && c.EventID != "" {
			code = MembershipCode(c.Membership)
		}
		if err := tx.Set(histKey(r.RoomID, c.Type, c.StateKey, seq), append([]byte{code}, c.EventID...)); err != nil {
			return err
		}
		if c.Type != typeHistoryVisibility || c.StateKey != "" {
			continue
		}
		vis := VisShared
		switch {
		case c.EventID == "":
		case c.EventID == r.EventID && own != 0:
			vis = own
		default:
			b, found, err := tx.Get(hvEventKey(c.EventID))
			if err != nil {
				return err
			}
			if found && len(b) == 1 {
				vis = b[0]
			}
		}
		if err := tx.Set(visKey(r.RoomID, seq), []byte{vis}); err != nil {
			return err
		}
		if vis == VisInvited || vis == VisJoined {
			if err := tx.Set(restrictedKey(r.RoomID), nil); err != nil {
				return err
			}
		}
	}
	return nil
}

func init() {
	register(RoomHistory{})
	pduTypes[typeHistoryVisibility] = true
}

// VisChange is one value of a room's history visibility, current from Seq.
type VisChange struct {
	Seq uint64
	Vis byte
}

// VisibilityHistory returns every history visibility a room had, oldest first.
func (s *Store) VisibilityHistory(room string) ([]VisChange, error) {
	prefix := appendStr([]byte{'v'}, room)
	var out []VisChange
	err := s.scan('j', prefix, nil, false, func(k, v []byte) bool {
		if len(k) == len(prefix)+8 && len(v) == 1 {
			out = append(out, VisChange{Seq: binary.BigEndian.Uint64(k[len(prefix):]), Vis: v[0]})
		}
		return true
	})
	return out, err
}

// HistoryVisibility returns a room's current history visibility code.
func (s *Store) HistoryVisibility(room string) (byte, error) {
	prefix := appendStr([]byte{'v'}, room)
	vis := VisShared
	err := s.scan('j', prefix, nil, true, func(_, v []byte) bool {
		if len(v) == 1 {
			vis = v[0]
		}
		return false
	})
	return vis, err
}

// VisibilityRestricted reports whether a room's history visibility was ever
// invited or joined. When it was not, every event is visible to a user who
// is joined now.
func (s *Store) VisibilityRestricted(room string) (bool, error) {
	_, ok, err := s.get(row('j', restrictedKey(room)))
	return ok, err
}

// StateChange is one change of a state key, at log position Seq. EventID is
// empty when the key was removed; Membership is the code for m.room.member.
type StateChange struct {
	Seq        uint64
	EventID    string
	Membership byte
}

// MembershipHistory returns every change of a user's membership in a room,
// oldest first.
func (s *Store) MembershipHistory(room, user string) ([]StateChange, error) {
	return s.StateHistory(room, "m.room.member", user)
}

// StateHistory returns every change of one state key of a room, oldest first.
func (s *Store) StateHistory(room, typ, sk string) ([]StateChange, error) {
	prefix := histGroup(room, typ, sk)
	var out []StateChange
	err := s.scan('j', prefix, nil, false, func(k, v []byte) bool {
		if len(k) == len(prefix)+8 && len(v) >= 1 {
			out = append(out, StateChange{Seq: binary.BigEndian.Uint64(k[len(prefix):]), Membership: v[0], EventID: string(v[1:])})
		}
		return true
	})
	return out, err
}

// StateEventAt returns the event current for (type, stateKey) in a room
// just after log position at, and the position where it became current.
func (s *Store) StateEventAt(room, typ, sk string, at uint64) (string, uint64, error) {
	group := row('j', histGroup(room, typ, sk))
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: group, UpperBound: prefixEnd(group)})
	if err != nil {
		return "", 0, err
	}
	id, pos := "", uint64(0)
	if it.SeekLT(seekAfter(group, at)) && len(it.Key()) == len(group)+8 && len(it.Value()) >= 1 {
		id, pos = string(it.Value()[1:]), binary.BigEndian.Uint64(it.Key()[len(group):])
	}
	if err := it.Close(); err != nil {
		return "", 0, err
	}
	if id == "" {
		return "", 0, ErrNotFound
	}
	return id, pos, nil
}

// seekAfter is the smallest key of group after every position <= at.
func seekAfter(group []byte, at uint64) []byte {
	k := append(make([]byte, 0, len(group)+8), group...)
	if at == math.MaxUint64 {
		return prefixEnd(k)
	}
	return appendU64(k, at+1)
}

// StateAt returns a room's state just after log position at, in key order
// (as CurrentState orders it); typ limits it to one event type when not empty. Each
// state key costs two seeks, whatever its history's length.
func (s *Store) StateAt(room, typ string, at uint64) ([]StateEntry, error) {
	base := row('j', appendStr([]byte{'h'}, room))
	lo := base
	if typ != "" {
		lo = appendStr(append([]byte(nil), base...), typ)
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return nil, err
	}
	var out []StateEntry
	for valid := it.First(); valid; {
		key := it.Key()
		if len(key) < len(base)+8 {
			valid = it.Next()
			continue
		}
		group := append([]byte(nil), key[:len(key)-8]...)
		t, rest, ok1 := readStr(group[len(base):])
		sk, rest, ok2 := readStr(rest)
		if ok1 && ok2 && len(rest) == 0 {
			if it.SeekLT(seekAfter(group, at)) && bytes.HasPrefix(it.Key(), group) && len(it.Key()) == len(group)+8 {
				if v := it.Value(); len(v) > 1 {
					e := StateEntry{Type: t, StateKey: sk, EventID: string(v[1:])}
					if v[0] != 0 {
						e.Membership = MembershipName(v[0])
					}
					out = append(out, e)
				}
			}
		}
		end := prefixEnd(group)
		if end == nil {
			break
		}
		valid = it.SeekGE(end)
	}
	return out, it.Close()
}
