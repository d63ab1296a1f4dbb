package dag

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
)

// ContentHash computes the content hash of an event (server-server API,
// "Calculating the content hash for an event"): "any existing unsigned,
// signatures, and hashes properties are removed. The resulting object is then
// encoded as Canonical JSON, and the JSON is hashed using SHA-256."
func ContentHash(raw []byte, ver *RoomVersion) ([sha256.Size]byte, error) {
	if ver == nil {
		return [sha256.Size]byte{}, errNilVersion
	}
	buf := getBuf()
	defer putBuf(buf)
	canon, err := Canonical((*buf)[:0], raw, ver.StrictCanonicalJSON)
	*buf = canon
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	return contentHashCanonical(canon)
}

func contentHashCanonical(canon []byte) ([sha256.Size]byte, error) {
	buf := getBuf()
	defer putBuf(buf)
	stripped, err := appendWithout((*buf)[:0], canon, "unsigned", "signatures", "hashes")
	*buf = stripped
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	return sha256.Sum256(stripped), nil
}

// AddContentHash computes the content hash and returns the event as canonical
// JSON with "hashes" set to {"sha256": <unpadded base64>} ("The hash is
// encoded using Unpadded Base64 and stored in the event object, in a hashes
// object, under a sha256 key"). Any previous hashes object is replaced.
func AddContentHash(raw []byte, ver *RoomVersion) ([]byte, error) {
	if ver == nil {
		return nil, errNilVersion
	}
	buf := getBuf()
	defer putBuf(buf)
	canon, err := Canonical((*buf)[:0], raw, ver.StrictCanonicalJSON)
	*buf = canon
	if err != nil {
		return nil, err
	}
	return addContentHashCanonical(make([]byte, 0, len(canon)+64), canon)
}

func addContentHashCanonical(dst, canon []byte) ([]byte, error) {
	sum, err := contentHashCanonical(canon)
	if err != nil {
		return dst, err
	}
	var hb [64]byte
	h := append(hb[:0], `{"sha256":"`...)
	h = base64.RawStdEncoding.AppendEncode(h, sum[:])
	h = append(h, '"', '}')
	return setMember(dst, canon, "hashes", h)
}

// CheckContentHash recomputes the content hash and compares it with
// hashes.sha256. A mismatch (ErrBadHash) means, per the spec, that "we have
// only been given a redacted version of the event" and the redacted copy
// must be used instead of the received one.
func CheckContentHash(raw []byte, ver *RoomVersion) error {
	if ver == nil {
		return errNilVersion
	}
	buf := getBuf()
	defer putBuf(buf)
	canon, err := Canonical((*buf)[:0], raw, ver.StrictCanonicalJSON)
	*buf = canon
	if err != nil {
		return err
	}
	return checkContentHashCanonical(canon)
}

func checkContentHashCanonical(canon []byte) error {
	hashes := getMember(canon, "hashes")
	if hashes == nil {
		return fmt.Errorf("%w: event has no hashes", ErrBadHash)
	}
	enc := getMember(hashes, "sha256")
	if len(enc) == 0 || enc[0] != '"' {
		return fmt.Errorf("%w: hashes.sha256 is missing or not a string", ErrBadHash)
	}
	var want [sha256.Size]byte
	if !decodeBase64Value(want[:], enc) {
		return fmt.Errorf("%w: hashes.sha256 is not base64 of 32 bytes", ErrBadHash)
	}
	got, err := contentHashCanonical(canon)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("%w: hashes.sha256 is %s, computed %s", ErrBadHash, enc, base64.RawStdEncoding.EncodeToString(got[:]))
	}
	return nil
}

// ReferenceHash computes the reference hash of an event (server-server API,
// "Calculating the reference hash for an event"): the event is redacted, its
// signatures and unsigned properties removed, and the canonical JSON hashed
// with SHA-256.
func ReferenceHash(raw []byte, ver *RoomVersion) ([sha256.Size]byte, error) {
	if ver == nil {
		return [sha256.Size]byte{}, errNilVersion
	}
	buf := getBuf()
	defer putBuf(buf)
	canon, err := Canonical((*buf)[:0], raw, ver.StrictCanonicalJSON)
	*buf = canon
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	return referenceHashCanonical(canon, ver)
}

func referenceHashCanonical(canon []byte, ver *RoomVersion) ([sha256.Size]byte, error) {
	buf := getBuf()
	defer putBuf(buf)
	red, err := redactCanonical((*buf)[:0], canon, ver, true)
	*buf = red
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	return sha256.Sum256(red), nil
}

// EventID returns the ID of an event in a room of the given version: for
// EventIDFormat 1 (v1, v2) the event_id the event carries; for 3 (v3) "$"
// plus the unpadded standard base64 of the reference hash; for 4 (v4 and
// later) "$" plus its URL-safe unpadded base64.
func EventID(raw []byte, ver *RoomVersion) (string, error) {
	if ver == nil {
		return "", errNilVersion
	}
	buf := getBuf()
	defer putBuf(buf)
	canon, err := Canonical((*buf)[:0], raw, ver.StrictCanonicalJSON)
	*buf = canon
	if err != nil {
		return "", err
	}
	return eventIDCanonical(canon, ver)
}

func eventIDCanonical(canon []byte, ver *RoomVersion) (string, error) {
	if ver.EventIDFormat == 1 {
		id, ok := unquote(getMember(canon, "event_id"))
		if !ok {
			return "", fmt.Errorf("%w: event_id is missing or not a string (room version %s)", ErrBadEvent, ver.ID)
		}
		return id, nil
	}
	sum, err := referenceHashCanonical(canon, ver)
	if err != nil {
		return "", err
	}
	return hashToID('$', sum, ver), nil
}

func hashToID(sigil byte, sum [sha256.Size]byte, ver *RoomVersion) string {
	var b [1 + 43]byte
	b[0] = sigil
	if ver.EventIDFormat == 3 {
		base64.RawStdEncoding.Encode(b[1:], sum[:])
	} else {
		base64.RawURLEncoding.Encode(b[1:], sum[:])
	}
	return string(b[:])
}

// RoomIDFromCreateEventID turns the event ID of a version 12 m.room.create
// event into the room ID: "the event ID of the m.room.create event using !
// as the sigil instead of $" (appendices, "Room IDs").
func RoomIDFromCreateEventID(eventID string) string {
	return "!" + strings.TrimPrefix(eventID, "$")
}

// decodeBase64Value decodes a canonical JSON string holding base64 of
// exactly len(out) bytes into out, without allocating. Padding is optional.
func decodeBase64Value(out, v []byte) bool {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return false
	}
	body := bytes.TrimRight(v[1:len(v)-1], "=")
	if base64.RawStdEncoding.DecodedLen(len(body)) != len(out) {
		return false
	}
	n, err := base64.RawStdEncoding.Decode(out, body)
	return err == nil && n == len(out)
}

// decodeBase64 accepts standard base64 with or without padding: "When
// decoding Base64, implementations SHOULD accept input with or without
// padding characters wherever possible".
func decodeBase64(s string) ([]byte, error) {
	return base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
}
