package dag

import "fmt"

// Redact returns the redacted form of an event per the room version's
// redaction algorithm, as canonical JSON.
//
// The algorithm ("Upon receipt of a redaction event, the server must strip
// off any keys not in the following list", rooms/v1..v11 "Redactions"):
//
// Top-level keys kept in every version: event_id, type, room_id, sender,
// state_key, content, hashes, signatures, depth, prev_events, auth_events,
// origin_server_ts; before v11 also prev_state, origin and membership ("The
// top-level origin, membership, and prev_state properties are no longer
// protected from redaction", v11). unsigned is dropped: it is not in any
// list. Servers may add their own unsigned data (redacted_because) when
// serving the event.
//
// Content keys kept, by event type:
//   - m.room.member: membership; join_authorised_via_users_server (v9+);
//     v11+ also "the signed key of the third_party_invite key" (an object
//     third_party_invite becomes {"signed": ...}, or {} without signed, as
//     Synapse does).
//   - m.room.create: creator; v11+ all keys.
//   - m.room.join_rules: join_rule; allow (v8+).
//   - m.room.power_levels: ban, events, events_default, kick, redact,
//     state_default, users, users_default; invite (v11+).
//   - m.room.aliases: aliases (v1-v5 only; "All significant meaning for
//     m.room.aliases has been removed from the redaction algorithm", v6).
//   - m.room.history_visibility: history_visibility.
//   - m.room.redaction: redacts (v11+).
//
// The event must be a JSON object with a string type and an object content.
func Redact(raw []byte, ver *RoomVersion) ([]byte, error) {
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
	return redactCanonical(make([]byte, 0, len(canon)), canon, ver, false)
}

var errNilVersion = fmt.Errorf("%w: no room version", ErrBadEvent)

// span is one top-level member of a canonical object.
type span struct{ key, val []byte }

// topMembers splits a canonical object into its members, using the array
// behind small for the usual dozen or so PDU keys.
func topMembers(small []span, obj []byte) ([]span, error) {
	it, ok := iterObject(obj)
	if !ok {
		return nil, fmt.Errorf("%w: event is not a JSON object", ErrBadEvent)
	}
	ms := small[:0]
	for k, v, ok := it.next(); ok; k, v, ok = it.next() {
		ms = append(ms, span{k, v})
	}
	if it.bad {
		return nil, fmt.Errorf("%w: malformed canonical object", ErrBadJSON)
	}
	return ms, nil
}

// redactCanonical appends the redaction of the canonical event canon to dst.
// forHash also drops signatures, giving the object the reference hash and
// event signatures cover ("The signatures and unsigned properties are
// removed").
func redactCanonical(dst, canon []byte, ver *RoomVersion, forHash bool) ([]byte, error) {
	var small [24]span
	ms, err := topMembers(small[:], canon)
	if err != nil {
		return dst, err
	}
	return redactMembers(dst, ms, ver, forHash)
}

// redactMembers is redactCanonical on an event already split into members.
func redactMembers(dst []byte, ms []span, ver *RoomVersion, forHash bool) ([]byte, error) {
	var typ, content []byte
	for _, m := range ms {
		switch string(m.key) {
		case "type":
			typ = m.val
		case "content":
			content = m.val
		}
	}
	if len(typ) == 0 || typ[0] != '"' {
		return dst, fmt.Errorf("%w: type must be a string", ErrBadEvent)
	}
	if len(content) == 0 || content[0] != '{' {
		return dst, fmt.Errorf("%w: content must be an object", ErrBadEvent)
	}
	v11 := ver.CreatorIsSender
	dst = append(dst, '{')
	first := true
	for _, m := range ms {
		switch string(m.key) {
		case "event_id", "type", "room_id", "sender", "state_key", "hashes",
			"depth", "prev_events", "auth_events", "origin_server_ts":
		case "signatures":
			if forHash {
				continue
			}
		case "prev_state", "origin", "membership":
			if v11 {
				continue
			}
		case "content":
			if !first {
				dst = append(dst, ',')
			}
			first = false
			dst = append(dst, `"content":`...)
			dst = redactContent(dst, typ[1:len(typ)-1], content, ver)
			continue
		default:
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = appendMember(dst, m.key, m.val)
	}
	return append(dst, '}'), nil
}

// Event types with special redaction rules.
const (
	kindOther = iota
	kindMember
	kindCreate
	kindJoinRules
	kindPowerLevels
	kindAliases
	kindHistoryVisibility
	kindRedaction
)

// redactContent appends the kept part of a content object. typ is the
// encoded type; a type with escapes matches none of the special cases.
func redactContent(dst, typ, content []byte, ver *RoomVersion) []byte {
	v11 := ver.CreatorIsSender
	kind := kindOther
	switch string(typ) {
	case "m.room.member":
		kind = kindMember
	case "m.room.create":
		kind = kindCreate
	case "m.room.join_rules":
		kind = kindJoinRules
	case "m.room.power_levels":
		kind = kindPowerLevels
	case "m.room.aliases":
		kind = kindAliases
	case "m.room.history_visibility":
		kind = kindHistoryVisibility
	case "m.room.redaction":
		kind = kindRedaction
	}
	if kind == kindCreate && v11 {
		return append(dst, content...) // "m.room.create allows all keys"
	}
	if kind == kindOther {
		return append(dst, '{', '}')
	}
	keep := func(k []byte) bool {
		switch kind {
		case kindMember:
			return string(k) == "membership" || (string(k) == "join_authorised_via_users_server" && ver.RedactKeepsJoinAuthorised)
		case kindCreate:
			return string(k) == "creator"
		case kindJoinRules:
			return string(k) == "join_rule" || (string(k) == "allow" && ver.RestrictedJoins)
		case kindPowerLevels:
			switch string(k) {
			case "ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default":
				return true
			case "invite":
				return v11
			}
		case kindAliases:
			return string(k) == "aliases" && ver.SpecialCaseAliases
		case kindHistoryVisibility:
			return string(k) == "history_visibility"
		case kindRedaction:
			return string(k) == "redacts" && v11
		}
		return false
	}
	it, _ := iterObject(content)
	dst = append(dst, '{')
	first := true
	for k, v, ok := it.next(); ok; k, v, ok = it.next() {
		if kind == kindMember && v11 && string(k) == "third_party_invite" {
			if len(v) == 0 || v[0] != '{' {
				continue
			}
			if !first {
				dst = append(dst, ',')
			}
			first = false
			dst = append(dst, `"third_party_invite":{`...)
			if signed := getMember(v, "signed"); signed != nil {
				dst = append(dst, `"signed":`...)
				dst = append(dst, signed...)
			}
			dst = append(dst, '}')
			continue
		}
		if !keep(k) {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = appendMember(dst, k, v)
	}
	return append(dst, '}')
}
