package projections

import (
	"encoding/binary"

	"github.com/vmihailenco/msgpack/v5"
)

// StateStream lists, per room, the log positions whose records changed the
// room's state, with what they changed:
//
//	'h' ‖ str(roomID) ‖ seq u64 -> msgpack([]StateEntry)
//
// RoomHistory ('j') answers "which event was current for this key at P";
// this view answers "which keys changed between P and Q" in time
// proportional to the state changes, not to the events, in between. /sync
// uses it for the state delta of a room (the state that changed between
// the since token and the start of the timeline) and to notice membership
// changes; unread-count and push evaluation use the membership entries.
type StateStream struct{}

func (StateStream) ID() byte     { return 'z' }
func (StateStream) Name() string { return "statestream" }

func stateStreamKey(room string, seq uint64) []byte {
	return appendU64(appendStr([]byte{'h'}, room), seq)
}

func (StateStream) Apply(tx *Tx, seq uint64, v any) error {
	r, ok := v.(*EventRecord)
	if !ok {
		return nil
	}
	ch := stateChanges(r)
	if len(ch) == 0 {
		return nil
	}
	return setMsgpack(tx, stateStreamKey(r.RoomID, seq), ch)
}

func init() { register(StateStream{}) }

// RoomStateChanges calls fn for each record that changed a room's state in
// (after, upto], oldest first. An entry with an empty EventID removed its key.
func (s *Store) RoomStateChanges(room string, after, upto uint64, fn func(seq uint64, changes []StateEntry) bool) error {
	lo, hi, ok := seqRange(appendStr([]byte{'h'}, room), after, upto)
	if !ok {
		return nil
	}
	var derr error
	err := s.scan('z', lo, hi, false, func(k, v []byte) bool {
		var ch []StateEntry
		if derr = msgpack.Unmarshal(v, &ch); derr != nil {
			return false
		}
		return fn(binary.BigEndian.Uint64(k[len(k)-8:]), ch)
	})
	if err == nil {
		err = derr
	}
	return err
}
