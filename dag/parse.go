package dag

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strings"
)

// Size limits from the spec (client-server API, "Size limits", and the PDU
// schemas).
const (
	// MaxPDUSize: "The complete event MUST NOT be larger than 65536 bytes,
	// when formatted with the federation event format, including any
	// signatures, and encoded as Canonical JSON."
	MaxPDUSize = 65536
	// MaxIDLength bounds sender, room_id, event_id, type and state_key, in
	// bytes of UTF-8.
	MaxIDLength = 255
	// MaxPrevEvents and MaxAuthEvents: prev_events "Must contain less than
	// or equal to 20 events", auth_events "less than or equal to 10".
	MaxPrevEvents = 20
	MaxAuthEvents = 10
	// maxRawSize stops Canonical from chewing on megabytes of whitespace
	// before the canonical size check can fire.
	maxRawSize = 1 << 20
)

// ParseEvent parses and validates a PDU of the given room version and
// computes its event ID (and, for a version 12 m.room.create, its room ID).
//
// Raw is a copy of the input, exactly as given. Content and Unsigned are
// canonical JSON and share memory with Raw when the input was canonical
// already, so they must not be modified.
//
// The event must be valid JSON under the version's canonical JSON rules
// (strict from v6) and no larger than MaxPDUSize once canonical. It must have
// the keys every PDU schema requires: type, sender, content (an object),
// depth (a non-negative integer), origin_server_ts (an integer), hashes with
// a string sha256, signatures (an object of objects of strings), prev_events
// and auth_events in the version's format (v1, v2: [event_id, {hashes}]
// pairs; v3+: event ID strings; at most MaxPrevEvents and MaxAuthEvents),
// room_id (except on a v12 m.room.create, which must not have one), and for
// v1/v2 event_id. state_key, redacts (before v11) and origin must be strings
// when present, unsigned an object. Identifiers are checked for their sigil
// and MaxIDLength. Hashes and signatures are not checked here: see
// CheckContentHash and VerifyEvent.
func ParseEvent(raw []byte, ver *RoomVersion) (*Event, error) {
	if ver == nil {
		return nil, errNilVersion
	}
	if len(raw) > maxRawSize {
		return nil, fmt.Errorf("%w: %d bytes of input, limit %d canonical", ErrTooLarge, len(raw), MaxPDUSize)
	}
	buf := getBuf()
	canon, err := Canonical((*buf)[:0], raw, ver.StrictCanonicalJSON)
	*buf = canon
	if err != nil {
		putBuf(buf)
		return nil, err
	}
	if len(canon) > MaxPDUSize {
		putBuf(buf)
		return nil, fmt.Errorf("%w: %d bytes as canonical JSON, limit %d", ErrTooLarge, len(canon), MaxPDUSize)
	}
	ev := &Event{Version: ver, Raw: append(make([]byte, 0, len(raw)), raw...)}
	view := ev.Raw
	if !bytes.Equal(canon, raw) {
		view = append(make([]byte, 0, len(canon)), canon...)
	}
	putBuf(buf)
	if err := fillEvent(ev, view, ver); err != nil {
		return nil, err
	}
	return ev, nil
}

// fillEvent sets the fields of ev from view, the event's canonical JSON.
func fillEvent(ev *Event, view []byte, ver *RoomVersion) error {
	if len(view) > MaxPDUSize {
		return fmt.Errorf("%w: %d bytes as canonical JSON, limit %d", ErrTooLarge, len(view), MaxPDUSize)
	}
	var small [24]span
	ms, err := topMembers(small[:], view)
	if err != nil {
		return err
	}
	p := fieldParser{str: string(view), base: cap(view)}
	var (
		hasType, hasSender, hasRoom, hasContent, hasDepth, hasTS bool
		hasHashes, hasSigs, hasPrev, hasAuth, hasEventID         bool
		eventID                                                  string
		content                                                  []byte
	)
	for _, m := range ms {
		v := m.val
		switch string(m.key) {
		case "auth_events":
			hasAuth = true
			if ev.AuthEvents, err = p.refs("auth_events", "auth_events entry", v, ver, MaxAuthEvents); err != nil {
				return err
			}
		case "content":
			hasContent = true
			if v[0] != '{' {
				return badEvent("content must be an object")
			}
			content = v
			ev.Content = json.RawMessage(v[:len(v):len(v)]) // capped: appending must not write into the event
		case "depth":
			hasDepth = true
			if ev.Depth, err = parseInt("depth", v); err != nil {
				return err
			}
			if ev.Depth < 0 {
				return badEvent("depth must not be negative")
			}
		case "event_id":
			if ver.EventIDFormat == 1 {
				hasEventID = true
				if eventID, err = p.id("event_id", v, '$'); err != nil {
					return err
				}
				if !strings.Contains(eventID, ":") {
					return badEvent(fmt.Sprintf("event_id %q has no domain (room version %s)", eventID, ver.ID))
				}
			}
		case "hashes":
			hasHashes = true
			if v[0] != '{' {
				return badEvent("hashes must be an object")
			}
			if h := getMember(v, "sha256"); len(h) == 0 || h[0] != '"' {
				return badEvent("hashes.sha256 is missing or not a string")
			}
		case "origin":
			ev.Origin, _ = p.string(v) // deprecated and unchecked by anyone; ignore other types
		case "origin_server_ts":
			hasTS = true
			if ev.OriginServerTS, err = parseInt("origin_server_ts", v); err != nil {
				return err
			}
		case "prev_events":
			hasPrev = true
			if ev.PrevEvents, err = p.refs("prev_events", "prev_events entry", v, ver, MaxPrevEvents); err != nil {
				return err
			}
		case "redacts":
			if !ver.CreatorIsSender { // v11 moved it into content
				if ev.Redacts, err = p.id("redacts", v, '$'); err != nil {
					return err
				}
			}
		case "room_id":
			hasRoom = true
			if ev.RoomID, err = p.id("room_id", v, '!'); err != nil {
				return err
			}
		case "sender":
			hasSender = true
			if ev.Sender, err = p.id("sender", v, '@'); err != nil {
				return err
			}
			if !strings.Contains(ev.Sender, ":") {
				return badEvent(fmt.Sprintf("sender %q is not a user ID", ev.Sender))
			}
		case "signatures":
			hasSigs = true
			if err := checkSignaturesShape(v); err != nil {
				return err
			}
		case "state_key":
			sk, ok := p.string(v)
			if !ok {
				return badEvent("state_key must be a string")
			}
			if len(sk) > MaxIDLength {
				return tooLong("state_key", sk)
			}
			ev.StateKey = &sk
		case "type":
			hasType = true
			var ok bool
			if ev.Type, ok = p.string(v); !ok {
				return badEvent("type must be a string")
			}
			if len(ev.Type) > MaxIDLength {
				return tooLong("type", ev.Type)
			}
		case "unsigned":
			if v[0] != '{' {
				return badEvent("unsigned must be an object")
			}
			ev.Unsigned = json.RawMessage(v[:len(v):len(v)])
		}
	}
	switch {
	case !hasType:
		return missing("type")
	case !hasSender:
		return missing("sender")
	case !hasContent:
		return missing("content")
	case !hasDepth:
		return missing("depth")
	case !hasTS:
		return missing("origin_server_ts")
	case !hasHashes:
		return missing("hashes")
	case !hasSigs:
		return missing("signatures")
	case !hasPrev:
		return missing("prev_events")
	case !hasAuth:
		return missing("auth_events")
	case ver.EventIDFormat == 1 && !hasEventID:
		return missing("event_id")
	}
	v12Create := ver.RoomIDFromCreate && ev.Type == "m.room.create"
	switch {
	case v12Create && hasRoom:
		return badEvent(fmt.Sprintf("an m.room.create event must not have a room_id (room version %s)", ver.ID))
	case !v12Create && !hasRoom:
		return missing("room_id")
	case hasRoom && ver.RoomIDFromCreate && !isHashID(ev.RoomID):
		return badEvent(fmt.Sprintf("room_id %q is not a create event hash (room version %s)", ev.RoomID, ver.ID))
	case hasRoom && !ver.RoomIDFromCreate && !strings.Contains(ev.RoomID, ":"):
		return badEvent(fmt.Sprintf("room_id %q has no domain (room version %s)", ev.RoomID, ver.ID))
	}
	if ver.CreatorIsSender && ev.Type == "m.room.redaction" {
		if r := getMember(content, "redacts"); r != nil {
			if ev.Redacts, err = p.id("content.redacts", r, '$'); err != nil {
				return err
			}
		}
	}

	if ver.EventIDFormat == 1 {
		ev.ID = eventID
	} else {
		buf := getBuf()
		red, err := redactMembers((*buf)[:0], ms, ver, true)
		*buf = red
		if err != nil {
			putBuf(buf)
			return err
		}
		ev.ID = hashToID('$', sha256.Sum256(red), ver)
		putBuf(buf)
	}
	if v12Create {
		ev.RoomID = RoomIDFromCreateEventID(ev.ID)
	}
	return nil
}

func badEvent(msg string) error { return fmt.Errorf("%w: %s", ErrBadEvent, msg) }

func missing(key string) error { return fmt.Errorf("%w: required key %s is missing", ErrBadEvent, key) }

func tooLong(key, val string) error {
	return fmt.Errorf("%w: %s is %d bytes, limit %d", ErrTooLarge, key, len(val), MaxIDLength)
}

// isHashID reports whether id is a sigil plus URL-safe unpadded base64 of 32
// bytes, the shape of v4+ event IDs and v12 room IDs.
func isHashID(id string) bool {
	if len(id) != 44 {
		return false
	}
	for i := 1; i < len(id); i++ {
		b := id[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '_') {
			return false
		}
	}
	return true
}

// fieldParser turns canonical JSON string values into Go strings. A string
// without escapes becomes a substring of one copy of the whole event, so an
// event costs one string allocation rather than one per field.
type fieldParser struct {
	str  string // string(view)
	base int    // cap(view): a value v of view starts at base-cap(v)
}

func (p *fieldParser) string(v []byte) (string, bool) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return "", false
	}
	body := v[1 : len(v)-1]
	if bytes.IndexByte(body, '\\') >= 0 {
		return decodeBody(body), true
	}
	// body is a subslice of view, so its capacity tells where it starts;
	// the comparison guards against a slice that is not (no allocation).
	if off := p.base - cap(body); off >= 0 && off+len(body) <= len(p.str) && p.str[off:off+len(body)] == string(body) {
		return p.str[off : off+len(body)], true
	}
	return string(body), true
}

// id parses an identifier: a string starting with sigil, at most MaxIDLength
// bytes.
func (p *fieldParser) id(key string, v []byte, sigil byte) (string, error) {
	s, ok := p.string(v)
	if !ok {
		return "", badEvent(key + " must be a string")
	}
	if len(s) > MaxIDLength {
		return "", tooLong(key, s)
	}
	if len(s) < 2 || s[0] != sigil {
		return "", badEvent(fmt.Sprintf("%s %q does not start with %q", key, s, sigil))
	}
	return s, nil
}

// refs parses prev_events or auth_events: event ID strings, or for
// EventIDFormat 1 [event_id, {hashes}] pairs.
func (p *fieldParser) refs(key, entry string, v []byte, ver *RoomVersion, limit int) ([]string, error) {
	it, ok := iterArray(v)
	if !ok {
		return nil, badEvent(key + " must be an array")
	}
	n := 0
	for _, ok := it.next(); ok; _, ok = it.next() {
		n++
	}
	if it.bad {
		return nil, badEvent(key + " is malformed")
	}
	if n > limit {
		return nil, badEvent(fmt.Sprintf("%s has %d entries, limit %d", key, n, limit))
	}
	ids := make([]string, 0, n)
	it, _ = iterArray(v)
	for e, ok := it.next(); ok; e, ok = it.next() {
		if ver.EventIDFormat == 1 {
			pair, _ := iterArray(e)
			idv, ok1 := pair.next()
			hv, ok2 := pair.next()
			_, ok3 := pair.next()
			if e[0] != '[' || !ok1 || !ok2 || ok3 || hv[0] != '{' {
				return nil, badEvent(key + " entries must be [event_id, {hashes}] pairs (room version " + ver.ID + ")")
			}
			e = idv
		}
		id, err := p.id(entry, e, '$')
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// arrIter walks the elements of a canonical JSON array.
type arrIter struct {
	b   []byte
	i   int
	bad bool
}

func iterArray(b []byte) (arrIter, bool) {
	if len(b) < 2 || b[0] != '[' || b[len(b)-1] != ']' {
		return arrIter{}, false
	}
	return arrIter{b: b, i: 1}, true
}

func (it *arrIter) next() ([]byte, bool) {
	b, i := it.b, it.i
	if it.bad || i >= len(b)-1 {
		return nil, false
	}
	if i > 1 {
		if b[i] != ',' {
			it.bad = true
			return nil, false
		}
		i++
	}
	end, ok := skipValue(b, i)
	if !ok || end > len(b)-1 {
		it.bad = true
		return nil, false
	}
	it.i = end
	return b[i:end], true
}

// parseInt parses a canonical JSON integer into an int64.
func parseInt(key string, v []byte) (int64, error) {
	neg := len(v) > 0 && v[0] == '-'
	d := v
	if neg {
		d = v[1:]
	}
	if len(d) == 0 {
		return 0, badEvent(key + " must be an integer")
	}
	var n uint64
	for _, b := range d {
		if b < '0' || b > '9' {
			return 0, badEvent(key + " must be an integer")
		}
		if n > (1<<63)/10 {
			return 0, badEvent(key + " is out of range")
		}
		n = n*10 + uint64(b-'0')
	}
	if neg {
		if n > 1<<63 {
			return 0, badEvent(key + " is out of range")
		}
		return -int64(n), nil
	}
	if n > 1<<63-1 {
		return 0, badEvent(key + " is out of range")
	}
	return int64(n), nil
}

// checkSignaturesShape checks that signatures is an object of objects of
// strings.
func checkSignaturesShape(v []byte) error {
	it, ok := iterObject(v)
	if !ok {
		return badEvent("signatures must be an object")
	}
	for server, inner, ok := it.next(); ok; server, inner, ok = it.next() {
		in, ok := iterObject(inner)
		if !ok {
			return badEvent(fmt.Sprintf("signatures[%q] must be an object", server))
		}
		for k, s, ok := in.next(); ok; k, s, ok = in.next() {
			if s[0] != '"' {
				return badEvent(fmt.Sprintf("signatures[%q][%q] must be a string", server, k))
			}
		}
		if in.bad {
			return badEvent("signatures is malformed")
		}
	}
	if it.bad {
		return badEvent("signatures is malformed")
	}
	return nil
}

// CheckContentHash checks the event's hashes.sha256 against its content
// hash; see the package function.
func (e *Event) CheckContentHash() error { return CheckContentHash(e.Raw, e.Version) }

// VerifySignature checks serverName's signature under keyID; see
// VerifyEvent.
func (e *Event) VerifySignature(serverName, keyID string, pub ed25519.PublicKey) error {
	return VerifyEvent(e.Raw, e.Version, serverName, keyID, pub)
}

// Redacted returns the event's redacted form as canonical JSON; see Redact.
func (e *Event) Redacted() ([]byte, error) { return Redact(e.Raw, e.Version) }

// CanonicalJSON returns the event as canonical JSON (Raw itself when it is
// canonical already).
func (e *Event) CanonicalJSON() ([]byte, error) {
	if e.Version == nil {
		return nil, errNilVersion
	}
	out, err := Canonical(make([]byte, 0, len(e.Raw)), e.Raw, e.Version.StrictCanonicalJSON)
	if err != nil {
		return nil, err
	}
	if bytes.Equal(out, e.Raw) {
		return e.Raw, nil
	}
	return out, nil
}

// RequiredSigners lists the servers whose signatures the event must carry:
// the sender's server ("Events must be signed by the server denoted by the
// sender property") and, in room versions 1 and 2, also "the domain in the
// event_id, if it differs from the originating server". The third-party
// invite exception and the v8+ join_authorised_via_users_server signature
// are left to the auth rules.
func (e *Event) RequiredSigners() []string {
	s := []string{ServerName(e.Sender)}
	if e.Version != nil && e.Version.EventIDFormat == 1 {
		if d := ServerName(e.ID); d != "" && d != s[0] {
			s = append(s, d)
		}
	}
	return s
}

// ServerName returns the domain of a user, room (before v12), alias or
// v1/v2 event ID: everything after the first ':' (the localpart cannot hold
// one; the domain may carry a port). It returns "" when there is none.
func ServerName(id string) string {
	if i := strings.IndexByte(id, ':'); i >= 0 {
		return id[i+1:]
	}
	return ""
}
