package log

import (
	"encoding/binary"
	"fmt"
)

// Keyspace and envelope constants. The layout is specified in doc.go; these
// constants are that specification in code.
const (
	// keyPrefix starts every log key: 'l' ‖ seq (8 bytes, big-endian), so keys
	// sort in log order.
	keyPrefix = 'l'
	// keyLen is the length of a log key.
	keyLen = 1 + 8

	// envelopeV1 is the first (and current) envelope format:
	// [format=1][kind][record version][body...].
	envelopeV1 = 1
	// envelopeV1HeaderLen is the number of bytes before the body in format 1.
	envelopeV1HeaderLen = 3
)

// keyLower and keyUpper bound the whole log keyspace (upper is exclusive).
var (
	keyLower = []byte{keyPrefix}
	keyUpper = []byte{keyPrefix + 1}
)

// appendKey appends the log key of seq to dst.
func appendKey(dst []byte, seq uint64) []byte {
	dst = append(dst, keyPrefix)
	return binary.BigEndian.AppendUint64(dst, seq)
}

// putKey writes the log key of seq into dst, which must be keyLen bytes long.
func putKey(dst []byte, seq uint64) {
	dst[0] = keyPrefix
	binary.BigEndian.PutUint64(dst[1:keyLen], seq)
}

// decodeKey returns the position encoded in a log key.
func decodeKey(key []byte) (uint64, error) {
	if len(key) != keyLen || key[0] != keyPrefix {
		return 0, fmt.Errorf("%w: malformed key %x", ErrCorrupt, key)
	}
	return binary.BigEndian.Uint64(key[1:]), nil
}

// envelopeLen is the encoded length of rec in the current format.
func envelopeLen(rec *Record) int {
	return envelopeV1HeaderLen + len(rec.Body)
}

// putEnvelope writes rec in the current envelope format into dst, which must
// be envelopeLen(rec) bytes long.
func putEnvelope(dst []byte, rec *Record) {
	dst[0] = envelopeV1
	dst[1] = byte(rec.Kind)
	dst[2] = rec.Version
	copy(dst[envelopeV1HeaderLen:], rec.Body)
}

// appendEnvelope appends rec in the current envelope format to dst.
func appendEnvelope(dst []byte, rec Record) []byte {
	dst = append(dst, envelopeV1, byte(rec.Kind), rec.Version)
	return append(dst, rec.Body...)
}

// decodeEnvelope decodes a stored value. The returned Body aliases value.
// Every format version ever written must stay decodable here: records are
// never rewritten, so a log written by the first release is replayed by the
// last.
func decodeEnvelope(value []byte) (Record, error) {
	if len(value) == 0 {
		return Record{}, fmt.Errorf("%w: empty envelope", ErrCorrupt)
	}
	switch value[0] {
	case envelopeV1:
		if len(value) < envelopeV1HeaderLen {
			return Record{}, fmt.Errorf("%w: envelope v1 truncated (%d bytes)", ErrCorrupt, len(value))
		}
		return Record{
			Kind:    Kind(value[1]),
			Version: value[2],
			Body:    value[envelopeV1HeaderLen:],
		}, nil
	default:
		return Record{}, fmt.Errorf("%w: unknown envelope format %d", ErrCorrupt, value[0])
	}
}
