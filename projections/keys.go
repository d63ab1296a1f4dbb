package projections

import (
	"encoding/binary"
)

// Keys are built with append-style encoders. A string that is not the last
// component of a key is length-prefixed (u16 big-endian), so keys stay
// prefix-free whatever bytes the string holds: Matrix IDs, types and state
// keys are at most 255 bytes (the PDU limits), far below the prefix's range.

func appendStr(dst []byte, s string) []byte {
	n := len(s)
	if n > 0xffff {
		n = 0xffff // unreachable for valid PDUs; keeps the key well-formed
	}
	return append(binary.BigEndian.AppendUint16(dst, uint16(n)), s[:n]...)
}

func appendU64(dst []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(dst, v) }

// readStr splits a length-prefixed string off the front of b.
func readStr(b []byte) (string, []byte, bool) {
	if len(b) < 2 {
		return "", nil, false
	}
	n := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+n {
		return "", nil, false
	}
	return string(b[2 : 2+n]), b[2+n:], true
}

// prefixEnd returns the smallest key greater than every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil // p is all 0xff: no upper bound
}
