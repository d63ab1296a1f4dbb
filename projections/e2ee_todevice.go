package projections

import (
	"encoding/binary"

	"github.com/vmihailenco/msgpack/v5"
)

// ToDeviceMsg is one recipient device of a to-device message. Content is the
// JSON object the sender gave for it, byte for byte.
type ToDeviceMsg struct {
	UserID   string `msgpack:"u"`
	DeviceID string `msgpack:"d"`
	Content  []byte `msgpack:"c"`
}

// ToDeviceRecord is the body of KindToDevice, version 1: one send request,
// with '*' already expanded to the recipient's devices at send time (as
// Synapse does), so replay delivers to exactly the same inboxes. TxnID makes
// the request idempotent per sending device.
type ToDeviceRecord struct {
	Sender       string        `msgpack:"s"`
	SenderDevice string        `msgpack:"sd"`
	Type         string        `msgpack:"t"`
	TxnID        string        `msgpack:"x"`
	Msgs         []ToDeviceMsg `msgpack:"m,omitempty"`
}

// ToDeviceAckRecord is the body of KindToDeviceAck, version 1: the device
// synced with a token at UpTo, so it has every message at or before UpTo
// ("the server deletes them once the client syncs with a later token").
type ToDeviceAckRecord struct {
	UserID   string `msgpack:"u"`
	DeviceID string `msgpack:"d"`
	UpTo     uint64 `msgpack:"p"`
}

// ToDevice holds each device's inbox of undelivered to-device messages and
// the senders' transaction IDs:
//
//	'i' ‖ str(user) ‖ str(device) ‖ seq u64 ‖ idx u32 -> msgpack(InboxMsg)
//	'x' ‖ str(sender) ‖ str(senderDevice) ‖ txnID    -> seq u64
//
// Inbox keys sort by log position, so a device reads its messages in the
// order they were sent, and an ack is one range delete.
type ToDevice struct{}

// InboxMsg is one undelivered to-device message.
type InboxMsg struct {
	Sender  string `msgpack:"s"`
	Type    string `msgpack:"t"`
	Content []byte `msgpack:"c"`
}

func (ToDevice) ID() byte     { return 'T' }
func (ToDevice) Name() string { return "todevice" }

func inboxPrefix(user, device string) []byte { return appendStr(appendStr([]byte{'i'}, user), device) }
func inboxKey(user, device string, seq uint64, idx uint32) []byte {
	return binary.BigEndian.AppendUint32(appendU64(inboxPrefix(user, device), seq), idx)
}
func toDeviceTxnKey(sender, device, txn string) []byte {
	return append(appendStr(appendStr([]byte{'x'}, sender), device), txn...)
}

func (ToDevice) Apply(tx *Tx, seq uint64, v any) error {
	switch r := v.(type) {
	case *ToDeviceRecord:
		for i, m := range r.Msgs {
			if err := setMsgpack(tx, inboxKey(m.UserID, m.DeviceID, seq, uint32(i)), &InboxMsg{Sender: r.Sender, Type: r.Type, Content: m.Content}); err != nil {
				return err
			}
		}
		if r.TxnID != "" {
			return tx.Set(toDeviceTxnKey(r.Sender, r.SenderDevice, r.TxnID), appendU64(nil, seq))
		}
	case *ToDeviceAckRecord:
		p := inboxPrefix(r.UserID, r.DeviceID)
		return tx.deleteRange(p, appendU64(append([]byte(nil), p...), r.UpTo+1))
	case *LogoutRecord:
		if r.All {
			p := appendStr([]byte{'i'}, r.UserID)
			return tx.deleteRange(p, prefixEnd(p))
		}
		p := inboxPrefix(r.UserID, r.DeviceID)
		return tx.deleteRange(p, prefixEnd(p))
	case *DeactivateRecord:
		p := appendStr([]byte{'i'}, r.UserID)
		return tx.deleteRange(p, prefixEnd(p))
	}
	return nil
}

// deleteRange removes the projection-relative keys in [lo, hi).
func (t *Tx) deleteRange(lo, hi []byte) error {
	clear(t.memo) // a range delete may cover remembered reads
	if t.w != nil {
		// Buffered replay writes before it stay before it.
		if err := t.w.drain(t.b); err != nil {
			return err
		}
	}
	l := append([]byte{rowPrefix, t.id}, lo...)
	var h []byte
	if hi == nil {
		h = []byte{rowPrefix, t.id + 1}
	} else {
		h = append([]byte{rowPrefix, t.id}, hi...)
	}
	return t.b.DeleteRange(l, h, nil)
}

func init() {
	registerKind(KindToDevice, func() any { return new(ToDeviceRecord) })
	registerKind(KindToDeviceAck, func() any { return new(ToDeviceAckRecord) })
	register(ToDevice{})
}

// Inbox calls fn for a device's undelivered messages at positions in
// (after, upto], in order.
func (s *Store) Inbox(user, device string, after, upto uint64, fn func(seq uint64, m *InboxMsg) bool) error {
	p := inboxPrefix(user, device)
	lo, hi, ok := seqRange(p, after, upto)
	if !ok {
		return nil
	}
	var derr error
	err := s.scan('T', lo, hi, false, func(k, v []byte) bool {
		var m InboxMsg
		if derr = msgpack.Unmarshal(v, &m); derr != nil {
			return false
		}
		return fn(binary.BigEndian.Uint64(k[len(p):]), &m)
	})
	if err == nil {
		err = derr
	}
	return err
}

// ToDeviceTxn returns the position of the send a transaction ID produced.
func (s *Store) ToDeviceTxn(sender, device, txn string) (uint64, error) {
	v, ok, err := s.get(row('T', toDeviceTxnKey(sender, device, txn)))
	if err != nil || !ok || len(v) != 8 {
		return 0, orNotFound(err)
	}
	return binary.BigEndian.Uint64(v), nil
}
