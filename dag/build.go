package dag

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
)

// ProtoEvent is an event this server is about to create: everything but the
// hashes, signatures and (for v3+) the event ID, which Build derives.
type ProtoEvent struct {
	RoomID   string // empty for a room version 12 m.room.create
	Sender   string
	Type     string
	StateKey *string // nil for message events
	// Content is any JSON object; it is canonicalised. nil means {}.
	Content        json.RawMessage
	PrevEvents     []string
	AuthEvents     []string
	Depth          int64
	OriginServerTS int64
	// Redacts is the event an m.room.redaction redacts. Before v11 it
	// becomes the top-level redacts key; from v11 content.redacts, which is
	// added to Content unless it is there already with the same value.
	Redacts string

	// EventID is for room versions 1 and 2 only, whose events carry their
	// ID: empty means a fresh random "$<18 letters>:<origin>".
	EventID string
	// RefHashes is for room versions 1 and 2 only, whose prev_events and
	// auth_events are [event_id, {"sha256": reference hash}] pairs: the
	// reference hash of each listed event by ID. An event missing here gets
	// an empty hash object.
	RefHashes map[string][]byte
}

// Build turns p into a signed event of room version ver: it encodes the
// event as canonical JSON in the version's format, adds the content hash,
// signs the redacted event as origin with the key keyID ("Adding hashes and
// signatures to outgoing events") and parses the result, so the Event's Raw
// is what goes into the log and over federation. origin should be the
// sender's server, whose signature the auth rules require; Build does not
// check that.
func Build(p ProtoEvent, ver *RoomVersion, origin, keyID string, key ed25519.PrivateKey) (*Event, error) {
	if err := checkSigningKey(keyID, key); err != nil {
		return nil, err
	}
	buf := getBuf()
	defer putBuf(buf)
	proto, err := encodeProto((*buf)[:0], &p, ver, origin)
	*buf = proto
	if err != nil {
		return nil, err
	}
	buf2 := getBuf()
	defer putBuf(buf2)
	hashed, err := addContentHashCanonical((*buf2)[:0], proto)
	*buf2 = hashed
	if err != nil {
		return nil, err
	}
	signed, err := signEventCanonical(hashed, ver, origin, keyID, key)
	if err != nil {
		return nil, err
	}
	ev := &Event{Version: ver, Raw: signed}
	if err := fillEvent(ev, signed, ver); err != nil {
		return nil, err
	}
	return ev, nil
}

// EncodeProto returns p as canonical JSON in ver's event format, without
// hashes and signatures: the event template of make_join, make_leave and
// make_knock. origin is only used for a generated v1/v2 event ID.
func EncodeProto(p ProtoEvent, ver *RoomVersion, origin string) ([]byte, error) {
	return encodeProto(nil, &p, ver, origin)
}

func encodeProto(dst []byte, p *ProtoEvent, ver *RoomVersion, origin string) ([]byte, error) {
	if ver == nil {
		return dst, errNilVersion
	}
	if p.Type == "" {
		return dst, badEvent("type is empty")
	}
	v12Create := ver.RoomIDFromCreate && p.Type == "m.room.create"
	if v12Create && p.RoomID != "" {
		return dst, badEvent("an m.room.create event must not have a room_id (room version " + ver.ID + ")")
	}
	if !v12Create && p.RoomID == "" {
		return dst, missing("room_id")
	}
	if p.Depth < 0 {
		return dst, badEvent("depth must not be negative")
	}
	if ver.StrictCanonicalJSON && (p.Depth > maxSafeInt || p.OriginServerTS > maxSafeInt || p.OriginServerTS < -maxSafeInt) {
		return dst, badEvent("depth or origin_server_ts outside the canonical JSON integer range")
	}
	if p.Redacts != "" && p.Type != "m.room.redaction" {
		return dst, badEvent("redacts is only for m.room.redaction events")
	}

	content := []byte("{}")
	if len(p.Content) > 0 {
		cb := getBuf()
		defer putBuf(cb)
		var err error
		content, err = Canonical((*cb)[:0], p.Content, ver.StrictCanonicalJSON)
		*cb = content
		if err != nil {
			return dst, err
		}
		if content[0] != '{' {
			return dst, badEvent("content must be an object")
		}
	}
	if p.Redacts != "" && ver.CreatorIsSender {
		switch have := getMember(content, "redacts"); {
		case have == nil:
			q, err := appendString(nil, p.Redacts)
			if err != nil {
				return dst, err
			}
			if content, err = setMember(nil, content, "redacts", q); err != nil {
				return dst, err
			}
		default:
			if s, _ := unquote(have); s != p.Redacts {
				return dst, badEvent("content.redacts differs from Redacts")
			}
		}
	}

	eventID := p.EventID
	if ver.EventIDFormat == 1 && eventID == "" {
		if origin == "" {
			return dst, badEvent("origin is needed to generate a v1/v2 event ID")
		}
		var err error
		if eventID, err = randomEventID(origin); err != nil {
			return dst, err
		}
	}

	var err error
	dst = append(dst, `{"auth_events":`...)
	if dst, err = appendRefs(dst, p.AuthEvents, ver, p.RefHashes); err != nil {
		return dst, err
	}
	dst = append(dst, `,"content":`...)
	dst = append(dst, content...)
	dst = append(dst, `,"depth":`...)
	dst = strconv.AppendInt(dst, p.Depth, 10)
	if ver.EventIDFormat == 1 {
		dst = append(dst, `,"event_id":`...)
		if dst, err = appendString(dst, eventID); err != nil {
			return dst, err
		}
	}
	dst = append(dst, `,"origin_server_ts":`...)
	dst = strconv.AppendInt(dst, p.OriginServerTS, 10)
	dst = append(dst, `,"prev_events":`...)
	if dst, err = appendRefs(dst, p.PrevEvents, ver, p.RefHashes); err != nil {
		return dst, err
	}
	if p.Redacts != "" && !ver.CreatorIsSender {
		dst = append(dst, `,"redacts":`...)
		if dst, err = appendString(dst, p.Redacts); err != nil {
			return dst, err
		}
	}
	if !v12Create {
		dst = append(dst, `,"room_id":`...)
		if dst, err = appendString(dst, p.RoomID); err != nil {
			return dst, err
		}
	}
	dst = append(dst, `,"sender":`...)
	if dst, err = appendString(dst, p.Sender); err != nil {
		return dst, err
	}
	if p.StateKey != nil {
		dst = append(dst, `,"state_key":`...)
		if dst, err = appendString(dst, *p.StateKey); err != nil {
			return dst, err
		}
	}
	dst = append(dst, `,"type":`...)
	if dst, err = appendString(dst, p.Type); err != nil {
		return dst, err
	}
	return append(dst, '}'), nil
}

func appendRefs(dst []byte, ids []string, ver *RoomVersion, hashes map[string][]byte) ([]byte, error) {
	dst = append(dst, '[')
	var err error
	for i, id := range ids {
		if i > 0 {
			dst = append(dst, ',')
		}
		if ver.EventIDFormat != 1 {
			if dst, err = appendString(dst, id); err != nil {
				return dst, err
			}
			continue
		}
		dst = append(dst, '[')
		if dst, err = appendString(dst, id); err != nil {
			return dst, err
		}
		if h, ok := hashes[id]; ok {
			dst = append(dst, `,{"sha256":"`...)
			dst = base64.RawStdEncoding.AppendEncode(dst, h)
			dst = append(dst, `"}]`...)
		} else {
			dst = append(dst, `,{}]`...)
		}
	}
	return append(dst, ']'), nil
}

func randomEventID(origin string) (string, error) {
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	var r [18]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", fmt.Errorf("dag: generate event ID: %w", err)
	}
	b := make([]byte, 0, 1+len(r)+1+len(origin))
	b = append(b, '$')
	for _, x := range r {
		b = append(b, letters[int(x)%len(letters)])
	}
	b = append(b, ':')
	b = append(b, origin...)
	return string(b), nil
}
