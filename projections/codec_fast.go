package projections

import (
	"errors"
	"fmt"
)

// Event records are the bulk of every log, and replay decodes each one: the
// msgpack library (a reader, reflection, a string allocation per field)
// cost more than most projections' folds. decodeEvent reads the fixed field
// order of EventRecord.EncodeMsgpack straight from the bytes and accepts
// exactly what DecodeMsgpack accepts (FuzzDecodeEvent compares the two).
// The string fields are slices of one string holding the record's bytes
// before the PDU: one allocation instead of one per field.

var errTruncated = errors.New("projections: event record truncated")

// mpBytes is the msgpack reader's vocabulary over both forms it reads.
type mpBytes interface{ ~string | ~[]byte }

// mpUint reads an n-byte big-endian unsigned integer at b[i].
func mpUint[T mpBytes](b T, i, n int) (uint64, error) {
	if n > len(b)-i {
		return 0, errTruncated
	}
	var v uint64
	for k := i; k < i+n; k++ {
		v = v<<8 | uint64(b[k])
	}
	return v, nil
}

// mpStrLen reads a string or bin header at b[i] (what msgpack's bytesLen
// accepts): the length (-1 for nil) and where the bytes start.
func mpStrLen[T mpBytes](b T, i int) (n, start int, err error) {
	if i >= len(b) {
		return 0, 0, errTruncated
	}
	c := b[i]
	i++
	var w int
	switch {
	case c == 0xc0:
		return -1, i, nil
	case c >= 0xa0 && c <= 0xbf:
		n = int(c & 0x1f)
	case c == 0xd9 || c == 0xc4:
		w = 1
	case c == 0xda || c == 0xc5:
		w = 2
	case c == 0xdb || c == 0xc6:
		w = 4
	default:
		return 0, 0, fmt.Errorf("projections: msgpack code %#x is not a string", c)
	}
	if w > 0 {
		v, err := mpUint(b, i, w)
		if err != nil {
			return 0, 0, err
		}
		n, i = int(v), i+w
	}
	if n > len(b)-i {
		return 0, 0, errTruncated
	}
	return n, i, nil
}

// mpArrayLen reads an array header at b[i] (-1 for nil).
func mpArrayLen[T mpBytes](b T, i int) (n, next int, err error) {
	if i >= len(b) {
		return 0, 0, errTruncated
	}
	c := b[i]
	i++
	switch {
	case c == 0xc0:
		return -1, i, nil
	case c >= 0x90 && c <= 0x9f:
		return int(c & 0x0f), i, nil
	case c == 0xdc || c == 0xdd:
		w := 2
		if c == 0xdd {
			w = 4
		}
		v, err := mpUint(b, i, w)
		if err != nil {
			return 0, 0, err
		}
		return int(v), i + w, nil
	}
	return 0, 0, fmt.Errorf("projections: msgpack code %#x is not an array", c)
}

// mpInt reads an integer at b[i] as msgpack's DecodeInt64 does (nil is 0).
func mpInt[T mpBytes](b T, i int) (int64, int, error) {
	if i >= len(b) {
		return 0, 0, errTruncated
	}
	c := b[i]
	i++
	if c <= 0x7f || c >= 0xe0 || c == 0xc0 {
		if c == 0xc0 {
			return 0, i, nil
		}
		return int64(int8(c)), i, nil
	}
	var w int
	switch c {
	case 0xcc, 0xd0:
		w = 1
	case 0xcd, 0xd1:
		w = 2
	case 0xce, 0xd2:
		w = 4
	case 0xcf, 0xd3:
		w = 8
	default:
		return 0, 0, fmt.Errorf("projections: msgpack code %#x is not an integer", c)
	}
	v, err := mpUint(b, i, w)
	if err != nil {
		return 0, 0, err
	}
	switch c {
	case 0xd0:
		return int64(int8(v)), i + w, nil
	case 0xd1:
		return int64(int16(v)), i + w, nil
	case 0xd2:
		return int64(int32(v)), i + w, nil
	}
	return int64(v), i + w, nil
}

// mpSkip skips one value at b[i], as msgpack's Skip does (without its
// recursion: pending counts the values still to skip).
func mpSkip[T mpBytes](b T, i int) (int, error) {
	for pending := 1; pending > 0; pending-- {
		if i >= len(b) {
			return 0, errTruncated
		}
		c := b[i]
		var n, w int // n: payload bytes after a w-byte length
		items := 0   // values the one at i contains
		switch {
		case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
			i++
			continue
		case c >= 0x80 && c <= 0x8f:
			items = 2 * int(c&0x0f)
		case c >= 0x90 && c <= 0x9f:
			items = int(c & 0x0f)
		case c >= 0xa0 && c <= 0xbf:
			n = int(c & 0x1f)
		case c == 0xcc || c == 0xd0:
			n = 1
		case c == 0xcd || c == 0xd1:
			n = 2
		case c == 0xce || c == 0xd2 || c == 0xca:
			n = 4
		case c == 0xcf || c == 0xd3 || c == 0xcb:
			n = 8
		case c == 0xd9 || c == 0xc4:
			w = 1
		case c == 0xda || c == 0xc5 || c == 0xdc || c == 0xde:
			w = 2
		case c == 0xdb || c == 0xc6 || c == 0xdd || c == 0xdf:
			w = 4
		case c >= 0xd4 && c <= 0xd8: // fixext 1, 2, 4, 8, 16 and a type byte
			n = 1<<(c-0xd4) + 1
		case c >= 0xc7 && c <= 0xc9: // ext 8, 16, 32
			w = 1 << (c - 0xc7)
		default:
			return 0, fmt.Errorf("projections: unknown msgpack code %#x", c)
		}
		i++
		if w > 0 {
			v, err := mpUint(b, i, w)
			if err != nil {
				return 0, err
			}
			i += w
			switch {
			case c == 0xdc || c == 0xdd:
				items = int(v)
			case c == 0xde || c == 0xdf:
				items = 2 * int(v)
			case c >= 0xc7 && c <= 0xc9:
				n = int(v) + 1
			default:
				n = int(v)
			}
		}
		if n > len(b)-i || items > len(b)-i {
			return 0, errTruncated // every item takes a byte at least
		}
		i += n
		pending += items
	}
	return i, nil
}

func allPDUs(string) bool { return true }

func pduTypeNeeded(typ string) bool { return pduTypes[typ] }

// decodeEvent decodes a version 1 event record body; the PDU is copied
// when withPDU says so for the record's type, and skipped otherwise.
func decodeEvent(body []byte, withPDU func(typ string) bool) (*EventRecord, error) {
	// Most events name one prev event: its slice comes with the record.
	x := new(struct {
		EventRecord
		prev [1]string
	})
	e := &x.EventRecord
	if len(body) > 0 && body[0] == 0xc0 {
		return e, nil // msgpack leaves a nil body's value at zero
	}
	e.PrevEvents = x.prev[:0:1]
	n, i, err := mpArrayLen(body, 0)
	if err != nil {
		return nil, err
	}
	if n < 0 {
		return nil, fmt.Errorf("projections: event record is nil")
	}
	// The fields before the PDU, as one string.
	hdr := i
	for f := 0; f < min(n, 14); f++ {
		if hdr, err = mpSkip(body, hdr); err != nil {
			return nil, fmt.Errorf("projections: event record field %d: %w", f, err)
		}
	}
	s := string(body[:hdr])
	for f := 0; f < min(n, 14); f++ {
		if i, err = e.decodeFieldFast(s, i, f); err != nil {
			return nil, fmt.Errorf("projections: event record field %d: %w", f, err)
		}
	}
	if n > 14 {
		if withPDU(e.Type) {
			m, start, err := mpStrLen(body, i)
			if err != nil {
				return nil, fmt.Errorf("projections: event record field 14: %w", err)
			}
			if m >= 0 {
				e.PDU = append(make([]byte, 0, m), body[start:start+m]...)
				start += m
			}
			i = start
		} else if i, err = mpSkip(body, i); err != nil {
			return nil, fmt.Errorf("projections: event record field 14: %w", err)
		}
	}
	for f := 15; f < n; f++ {
		if i, err = mpSkip(body, i); err != nil {
			return nil, fmt.Errorf("projections: event record field %d: %w", f, err)
		}
	}
	if len(e.PrevEvents) == 0 {
		e.PrevEvents = nil
	}
	return e, nil
}

// mpString reads a string at s[i] (nil reads as "").
func mpString(s string, i int) (string, int, error) {
	n, start, err := mpStrLen(s, i)
	if err != nil || n < 0 {
		return "", start, err
	}
	return s[start : start+n], start + n, nil
}

func (e *EventRecord) decodeFieldFast(s string, i, f int) (next int, err error) {
	switch f {
	case 0:
		e.RoomID, i, err = mpString(s, i)
	case 1:
		e.EventID, i, err = mpString(s, i)
	case 2:
		e.RoomVersion, i, err = mpString(s, i)
	case 3:
		e.Type, i, err = mpString(s, i)
	case 4:
		if i < len(s) && s[i] == 0xc0 {
			return i + 1, nil
		}
		var sk string
		if sk, i, err = mpString(s, i); err == nil && sk != "\x00nil" {
			e.StateKey = &sk
		}
	case 5:
		e.Sender, i, err = mpString(s, i)
	case 6:
		e.Membership, i, err = mpString(s, i)
	case 7:
		e.Redacts, i, err = mpString(s, i)
	case 8:
		var n int
		if n, i, err = mpArrayLen(s, i); err != nil || n <= 0 {
			return i, err
		}
		if n > len(s)-i {
			return 0, errTruncated
		}
		if n > cap(e.PrevEvents) {
			e.PrevEvents = make([]string, n)
		}
		e.PrevEvents = e.PrevEvents[:n]
		for j := range e.PrevEvents {
			if e.PrevEvents[j], i, err = mpString(s, i); err != nil {
				return 0, err
			}
		}
	case 9:
		e.Depth, i, err = mpInt(s, i)
	case 10:
		var v int64
		v, i, err = mpInt(s, i)
		e.Status = Status(uint8(v))
	case 11:
		e.Reason, i, err = mpString(s, i)
	case 12:
		e.Txn, i, err = mpString(s, i)
	case 13:
		var n int
		if n, i, err = mpArrayLen(s, i); err != nil || n < 0 {
			return i, err
		}
		if n > len(s)-i {
			return 0, errTruncated
		}
		e.State = make([]StateEntry, n)
		for j := range e.State {
			if i, err = decodeStateEntryFast(s, i, &e.State[j]); err != nil {
				return 0, err
			}
		}
	}
	return i, err
}

func decodeStateEntryFast(s string, i int, se *StateEntry) (int, error) {
	n, i, err := mpArrayLen(s, i)
	if err != nil {
		return 0, err
	}
	for f := 0; f < n; f++ {
		switch f {
		case 0:
			se.Type, i, err = mpString(s, i)
		case 1:
			se.StateKey, i, err = mpString(s, i)
		case 2:
			se.EventID, i, err = mpString(s, i)
		case 3:
			se.Membership, i, err = mpString(s, i)
		default:
			i, err = mpSkip(s, i)
		}
		if err != nil {
			return 0, err
		}
	}
	return i, nil
}
