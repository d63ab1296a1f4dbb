package projections

import (
	"fmt"

	"github.com/vmihailenco/msgpack/v5"

	"engram/log"
)

// EventRecord is the hottest record: it is encoded by hand as a msgpack
// array in a fixed field order instead of a reflected map, which makes
// replay decoding several times cheaper. Fields are only ever appended: a
// decoder skips fields it does not know (written by a newer server) and
// leaves fields it did not get (written by an older one) at their zero value.

const eventRecordFields = 15

var (
	_ msgpack.CustomEncoder = (*EventRecord)(nil)
	_ msgpack.CustomDecoder = (*EventRecord)(nil)
)

// EncodeMsgpack implements msgpack.CustomEncoder.
func (e *EventRecord) EncodeMsgpack(enc *msgpack.Encoder) error {
	enc.EncodeArrayLen(eventRecordFields)
	enc.EncodeString(e.RoomID)
	enc.EncodeString(e.EventID)
	enc.EncodeString(e.RoomVersion)
	enc.EncodeString(e.Type)
	if e.StateKey == nil {
		enc.EncodeNil()
	} else {
		enc.EncodeString(*e.StateKey)
	}
	enc.EncodeString(e.Sender)
	enc.EncodeString(e.Membership)
	enc.EncodeString(e.Redacts)
	enc.EncodeArrayLen(len(e.PrevEvents))
	for _, p := range e.PrevEvents {
		enc.EncodeString(p)
	}
	enc.EncodeInt(e.Depth)
	enc.EncodeUint8(uint8(e.Status))
	enc.EncodeString(e.Reason)
	enc.EncodeString(e.Txn)
	if e.State == nil {
		enc.EncodeNil()
	} else {
		enc.EncodeArrayLen(len(e.State))
		for i := range e.State {
			s := &e.State[i]
			enc.EncodeArrayLen(4)
			enc.EncodeString(s.Type)
			enc.EncodeString(s.StateKey)
			enc.EncodeString(s.EventID)
			enc.EncodeString(s.Membership)
		}
	}
	return enc.EncodeBytes(e.PDU)
}

// DecodeMsgpack implements msgpack.CustomDecoder.
func (e *EventRecord) DecodeMsgpack(dec *msgpack.Decoder) error { return e.decode(dec, false) }

// decodeForApply decodes a record for the projections: event records come
// without their PDU bytes, except those of the types in pduTypes (the
// fields derived from the PDU are what most folds read, and apply and
// replay skip the largest field).
func decodeForApply(rec log.Record) (any, error) {
	if rec.Kind != KindEvent || rec.Version != 1 {
		return Decode(rec)
	}
	e, err := decodeEvent(rec.Body, pduTypeNeeded)
	if err != nil {
		return nil, fmt.Errorf("projections: decode kind %d: %w", rec.Kind, err)
	}
	return e, nil
}

// pduTypes are the event types whose PDU a projection reads while folding
// (messages, for search and relations), registered from an init() of that
// projection's file: their records are decoded whole.
var pduTypes = map[string]bool{}

func (e *EventRecord) decode(dec *msgpack.Decoder, skipPDU bool) error {
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return err
	}
	if n < 0 {
		return fmt.Errorf("projections: event record is nil")
	}
	for i := 0; i < n; i++ {
		if i == 14 && skipPDU {
			if err := dec.Skip(); err != nil {
				return err
			}
			continue
		}
		if err := e.decodeField(dec, i); err != nil {
			return fmt.Errorf("projections: event record field %d: %w", i, err)
		}
	}
	return nil
}

func (e *EventRecord) decodeField(dec *msgpack.Decoder, i int) (err error) {
	switch i {
	case 0:
		e.RoomID, err = dec.DecodeString()
	case 1:
		e.EventID, err = dec.DecodeString()
	case 2:
		e.RoomVersion, err = dec.DecodeString()
	case 3:
		e.Type, err = dec.DecodeString()
	case 4:
		var sk string
		if sk, err = decodeNilableString(dec); err == nil && sk != "\x00nil" {
			e.StateKey = &sk
		}
	case 5:
		e.Sender, err = dec.DecodeString()
	case 6:
		e.Membership, err = dec.DecodeString()
	case 7:
		e.Redacts, err = dec.DecodeString()
	case 8:
		var n int
		if n, err = dec.DecodeArrayLen(); err != nil || n <= 0 {
			return err
		}
		e.PrevEvents = make([]string, n)
		for j := range e.PrevEvents {
			if e.PrevEvents[j], err = dec.DecodeString(); err != nil {
				return err
			}
		}
	case 9:
		e.Depth, err = dec.DecodeInt64()
	case 10:
		var s uint8
		s, err = dec.DecodeUint8()
		e.Status = Status(s)
	case 11:
		e.Reason, err = dec.DecodeString()
	case 12:
		e.Txn, err = dec.DecodeString()
	case 13:
		var n int
		if n, err = dec.DecodeArrayLen(); err != nil || n < 0 {
			return err
		}
		e.State = make([]StateEntry, n)
		for j := range e.State {
			if err = decodeStateEntry(dec, &e.State[j]); err != nil {
				return err
			}
		}
	case 14:
		e.PDU, err = dec.DecodeBytes()
	default:
		err = dec.Skip()
	}
	return err
}

// decodeNilableString returns "\x00nil" for a msgpack nil (no valid state
// key holds a NUL, and the sentinel never escapes this file).
func decodeNilableString(dec *msgpack.Decoder) (string, error) {
	c, err := dec.PeekCode()
	if err != nil {
		return "", err
	}
	if c == 0xc0 {
		return "\x00nil", dec.DecodeNil()
	}
	return dec.DecodeString()
}

func decodeStateEntry(dec *msgpack.Decoder, s *StateEntry) error {
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		switch i {
		case 0:
			s.Type, err = dec.DecodeString()
		case 1:
			s.StateKey, err = dec.DecodeString()
		case 2:
			s.EventID, err = dec.DecodeString()
		case 3:
			s.Membership, err = dec.DecodeString()
		default:
			err = dec.Skip()
		}
		if err != nil {
			return err
		}
	}
	return nil
}
