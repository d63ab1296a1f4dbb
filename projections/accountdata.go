package projections

import (
	"encoding/binary"

	"engram/log"
)

// Per-user data kinds (30-39).
const (
	KindAccountData log.Kind = 30 // a user set global or per-room account data
	KindReceipt     log.Kind = 31 // a user moved a read receipt
	KindPushRules   log.Kind = 32 // a user's push rules changed
	KindPusher      log.Kind = 33 // a pusher was set or removed
	KindPusherPos   log.Kind = 34 // a pusher delivered everything up to a position
)

// AccountDataRecord is the body of KindAccountData, version 1. RoomID is
// empty for global account data. Content is the JSON object the client
// sent, stored byte for byte.
type AccountDataRecord struct {
	UserID  string `msgpack:"u"`
	RoomID  string `msgpack:"r,omitempty"`
	Type    string `msgpack:"t"`
	Content []byte `msgpack:"c"`
}

// TypePushRules is the account data type under which clients see push
// rule changes ("When a user changes their push rules a m.push_rules event
// is sent to all clients in the account_data section of their next /sync").
// Its content is not stored here but built from the push projection.
const TypePushRules = "m.push_rules"

// AccountData holds users' account data and the per-user stream of changes
// that incremental /sync reads:
//
//	'd' ‖ str(userID) ‖ str(roomID) ‖ type -> seq u64 ‖ content JSON
//	'c' ‖ str(userID) ‖ seq u64            -> str(roomID) ‖ type
//
// roomID is "" for global data. A push rules change (KindPushRules) adds an
// m.push_rules entry to the stream without a 'd' row. Neither needs a read:
// the stream may name a type twice, and readers keep the latest.
type AccountData struct{}

func (AccountData) ID() byte     { return 'v' }
func (AccountData) Name() string { return "accountdata" }

func accountDataPrefix(user, room string) []byte {
	return appendStr(appendStr([]byte{'d'}, user), room)
}
func accountDataKey(user, room, typ string) []byte {
	return append(accountDataPrefix(user, room), typ...)
}
func accountDataStreamKey(user string, seq uint64) []byte {
	return appendU64(appendStr([]byte{'c'}, user), seq)
}

func (AccountData) Apply(tx *Tx, seq uint64, v any) error {
	switch r := v.(type) {
	case *AccountDataRecord:
		if err := tx.Set(accountDataKey(r.UserID, r.RoomID, r.Type), append(appendU64(nil, seq), r.Content...)); err != nil {
			return err
		}
		return tx.Set(accountDataStreamKey(r.UserID, seq), append(appendStr(nil, r.RoomID), r.Type...))
	case *PushRulesRecord:
		return tx.Set(accountDataStreamKey(r.UserID, seq), append(appendStr(nil, ""), TypePushRules...))
	}
	return nil
}

func init() {
	registerKind(KindAccountData, func() any { return new(AccountDataRecord) })
	register(AccountData{})
}

// AccountDataItem is one account data entry.
type AccountDataItem struct {
	Type    string
	Seq     uint64 // position of the record that set it
	Content []byte
}

// AccountData returns one account data entry of a user (room "" for global).
func (s *Store) AccountData(user, room, typ string) (AccountDataItem, error) {
	v, ok, err := s.get(row('v', accountDataKey(user, room, typ)))
	if err != nil || !ok || len(v) < 8 {
		return AccountDataItem{}, orNotFound(err)
	}
	return AccountDataItem{Type: typ, Seq: binary.BigEndian.Uint64(v), Content: v[8:]}, nil
}

// AccountDataList returns all of a user's account data for a room (or the
// global data for room ""), by type. Entries set after upto are left out.
func (s *Store) AccountDataList(user, room string, upto uint64) ([]AccountDataItem, error) {
	prefix := accountDataPrefix(user, room)
	var out []AccountDataItem
	err := s.scan('v', prefix, nil, false, func(k, v []byte) bool {
		if len(v) < 8 {
			return true
		}
		seq := binary.BigEndian.Uint64(v)
		if seq <= upto {
			out = append(out, AccountDataItem{Type: string(k[len(prefix):]), Seq: seq, Content: append([]byte(nil), v[8:]...)})
		}
		return true
	})
	return out, err
}

// AccountDataChanges calls fn for each account data change of a user in
// (after, upto], oldest first. The same (room, type) may come more than once.
func (s *Store) AccountDataChanges(user string, after, upto uint64, fn func(seq uint64, room, typ string) bool) error {
	lo, hi, ok := seqRange(appendStr([]byte{'c'}, user), after, upto)
	if !ok {
		return nil
	}
	return s.scan('v', lo, hi, false, func(k, v []byte) bool {
		room, rest, ok := readStr(v)
		if !ok || len(k) < 8 {
			return true
		}
		return fn(binary.BigEndian.Uint64(k[len(k)-8:]), room, string(rest))
	})
}

// seqRange returns the scan bounds of the keys prefix ‖ seq for seq in
// (after, upto]; ok is false when the range is empty.
func seqRange(prefix []byte, after, upto uint64) (lo, hi []byte, ok bool) {
	if upto <= after {
		return nil, nil, false
	}
	lo = appendU64(append([]byte(nil), prefix...), after+1)
	if upto == ^uint64(0) {
		return lo, prefixEnd(prefix), true
	}
	return lo, appendU64(append([]byte(nil), prefix...), upto+1), true
}
