package projections

import (
	"encoding/binary"

	"github.com/vmihailenco/msgpack/v5"
)

// Receipt types as stored. m.fully_read is not a receipt: it is room
// account data.
const (
	ReceiptRead        = "m.read"
	ReceiptReadPrivate = "m.read.private"
)

// ReceiptRecord is the body of KindReceipt, version 1. ThreadID is "" for
// an unthreaded receipt, "main" or a thread root's event ID otherwise.
// EventSeq is the log position of EventID, captured at append time so the
// folds never look events up.
type ReceiptRecord struct {
	RoomID   string `msgpack:"r"`
	UserID   string `msgpack:"u"`
	Type     string `msgpack:"t"`
	ThreadID string `msgpack:"th,omitempty"`
	EventID  string `msgpack:"e"`
	EventSeq uint64 `msgpack:"q"`
	TS       int64  `msgpack:"ts"`
}

// Receipts holds the current receipts of every room and the streams that
// /sync reads:
//
//	'r' ‖ str(roomID) ‖ str(userID) ‖ str(type) ‖ threadID -> msgpack(ReceiptRow)
//	'h' ‖ str(roomID) ‖ seq u64                          -> msgpack(ReceiptRecord)
//	'c' ‖ seq u64                                        -> str(roomID) ‖ str(userID) ‖ type
//
// A receipt never moves backwards: like Synapse, a receipt for an event at
// or before the current one of the same (user, type, thread) is ignored, so
// the fold reads the current row (NeedsRead).
type Receipts struct{}

// ReceiptRow is a current receipt.
type ReceiptRow struct {
	EventID  string `msgpack:"e"`
	EventSeq uint64 `msgpack:"q"`
	TS       int64  `msgpack:"ts"`
	Seq      uint64 `msgpack:"s"` // position of the receipt record
}

func (Receipts) ID() byte     { return 'q' }
func (Receipts) Name() string { return "receipts" }

func receiptKey(room, user, typ, thread string) []byte {
	return append(appendStr(appendStr(appendStr([]byte{'r'}, room), user), typ), thread...)
}
func receiptHistKey(room string, seq uint64) []byte {
	return appendU64(appendStr([]byte{'h'}, room), seq)
}
func receiptStreamKey(seq uint64) []byte { return appendU64([]byte{'c'}, seq) }

// NeedsRead: a receipt reads the current one to stay monotonic.
func (Receipts) NeedsRead(v any) bool {
	_, ok := v.(*ReceiptRecord)
	return ok
}

func (Receipts) Apply(tx *Tx, seq uint64, v any) error {
	r, ok := v.(*ReceiptRecord)
	if !ok {
		return nil
	}
	k := receiptKey(r.RoomID, r.UserID, r.Type, r.ThreadID)
	old, found, err := tx.Get(k)
	if err != nil {
		return err
	}
	if found {
		var cur ReceiptRow
		if msgpack.Unmarshal(old, &cur) == nil && cur.EventSeq >= r.EventSeq {
			return nil
		}
	}
	if err := setMsgpack(tx, k, &ReceiptRow{EventID: r.EventID, EventSeq: r.EventSeq, TS: r.TS, Seq: seq}); err != nil {
		return err
	}
	if err := setMsgpack(tx, receiptHistKey(r.RoomID, seq), r); err != nil {
		return err
	}
	return tx.Set(receiptStreamKey(seq), append(appendStr(appendStr(nil, r.RoomID), r.UserID), r.Type...))
}

func init() {
	registerKind(KindReceipt, func() any { return new(ReceiptRecord) })
	register(Receipts{})
}

// Receipt returns a user's current receipt of a type (and thread) in a room.
func (s *Store) Receipt(room, user, typ, thread string) (ReceiptRow, error) {
	v, ok, err := s.get(row('q', receiptKey(room, user, typ, thread)))
	if err != nil || !ok {
		return ReceiptRow{}, orNotFound(err)
	}
	var rr ReceiptRow
	err = msgpack.Unmarshal(v, &rr)
	return rr, err
}

// RoomReceipt is one current receipt of a room.
type RoomReceipt struct {
	UserID, Type, ThreadID string
	ReceiptRow
}

// RoomReceipts calls fn for every current receipt of a room.
func (s *Store) RoomReceipts(room string, fn func(RoomReceipt) bool) error {
	prefix := appendStr([]byte{'r'}, room)
	var derr error
	err := s.scan('q', prefix, nil, false, func(k, v []byte) bool {
		user, rest, ok1 := readStr(k[len(prefix):])
		typ, thread, ok2 := readStr(rest)
		if !ok1 || !ok2 {
			return true
		}
		rr := RoomReceipt{UserID: user, Type: typ, ThreadID: string(thread)}
		if derr = msgpack.Unmarshal(v, &rr.ReceiptRow); derr != nil {
			return false
		}
		return fn(rr)
	})
	if err == nil {
		err = derr
	}
	return err
}

// ReceiptChanges calls fn for each receipt of a room that moved in
// (after, upto], oldest first.
func (s *Store) ReceiptChanges(room string, after, upto uint64, fn func(seq uint64, r *ReceiptRecord) bool) error {
	lo, hi, ok := seqRange(appendStr([]byte{'h'}, room), after, upto)
	if !ok {
		return nil
	}
	var derr error
	err := s.scan('q', lo, hi, false, func(k, v []byte) bool {
		var r ReceiptRecord
		if derr = msgpack.Unmarshal(v, &r); derr != nil {
			return false
		}
		return fn(binary.BigEndian.Uint64(k[len(k)-8:]), &r)
	})
	if err == nil {
		err = derr
	}
	return err
}

// ReceiptStream calls fn for each receipt that moved in (after, upto], in
// any room, oldest first: what incremental /sync scans to find rooms with
// new receipts.
func (s *Store) ReceiptStream(after, upto uint64, fn func(seq uint64, room, user, typ string) bool) error {
	lo, hi, ok := seqRange([]byte{'c'}, after, upto)
	if !ok {
		return nil
	}
	return s.scan('q', lo, hi, false, func(k, v []byte) bool {
		room, rest, ok1 := readStr(v)
		user, typ, ok2 := readStr(rest)
		if !ok1 || !ok2 || len(k) != 9 {
			return true
		}
		return fn(binary.BigEndian.Uint64(k[1:]), room, user, string(typ))
	})
}
