package stateres

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"sync"
	"sync/atomic"

	"engram/dag"
)

// Event types the authorisation rules look at.
const (
	typeCreate           = "m.room.create"
	typeMember           = "m.room.member"
	typePowerLevels      = "m.room.power_levels"
	typeJoinRules        = "m.room.join_rules"
	typeThirdPartyInvite = "m.room.third_party_invite"
	typeAliases          = "m.room.aliases"
	typeRedaction        = "m.room.redaction"
)

// Membership and join rule values.
const (
	mJoin   = "join"
	mInvite = "invite"
	mLeave  = "leave"
	mBan    = "ban"
	mKnock  = "knock"

	jrPublic          = "public"
	jrInvite          = "invite"
	jrKnock           = "knock"
	jrRestricted      = "restricted"
	jrKnockRestricted = "knock_restricted"
)

var (
	createKey = dag.StateKeyTuple{Type: typeCreate}
	plKey     = dag.StateKeyTuple{Type: typePowerLevels}
	jrKey     = dag.StateKeyTuple{Type: typeJoinRules}
)

// info is what the rules need from one event's content, parsed once. Only
// the part matching the event's type is filled in.
type info struct {
	evType  string
	content []byte // the bytes parsed; a cache hit must match them

	member   memberInfo
	create   createInfo
	joinRule string // "" if absent or not a string
	pl       *powerLevels
	tpi      tpiInfo
}

type memberInfo struct {
	membership    string
	hasMembership bool // present and a string

	hasJAUS bool   // join_authorised_via_users_server present
	jaus    string // its value if a string

	hasTPI       bool            // third_party_invite present
	tpiSigned    json.RawMessage // third_party_invite.signed if an object
	hasMxid      bool
	hasToken     bool
	mxid, token  string // if strings
	tokenIsValid bool   // token is a string
}

type createInfo struct {
	objectOK bool // content is a JSON object

	hasCreator bool
	creator    string // content.creator if a string

	hasRoomVersion bool
	roomVersion    string
	roomVersionStr bool

	noFederate bool // m.federate is exactly false

	hasAdditional   bool
	additional      []string // valid entries of additional_creators
	additionalValid bool     // an array of strings that are all valid user IDs
}

type tpiInfo struct {
	keys [][]byte // decoded ed25519 public keys from public_key and public_keys[].public_key
}

// The parse cache. Content is parsed once per event ID; a hit is only used if
// the type and content bytes are the same (so two different events sharing
// an ID, possible with the opaque IDs of v1/v2, never see each other's
// parse). Comparing the bytes costs nothing when they are the same slice.
// The cache is bounded: past maxCached entries it is emptied and refills.
var (
	maxCached  int64    = 1 << 17
	cacheMap   sync.Map // event ID -> *info
	cacheCount atomic.Int64
)

// parsed returns the parsed content of ev.
func parsed(ev *dag.Event) *info {
	if ev.ID != "" {
		if v, ok := cacheMap.Load(ev.ID); ok {
			in := v.(*info)
			if in.evType == ev.Type && bytes.Equal(in.content, ev.Content) {
				return in
			}
		}
	}
	in := parseInfo(ev.Type, ev.Content)
	if ev.ID != "" {
		if cacheCount.Add(1) > maxCached {
			cacheMap.Clear()
			cacheCount.Store(1)
		}
		cacheMap.Store(ev.ID, in)
	}
	return in
}

func parseInfo(evType string, content []byte) *info {
	in := &info{evType: evType, content: content}
	switch evType {
	case typeMember:
		in.member = parseMember(content)
	case typeCreate:
		in.create = parseCreate(content)
	case typeJoinRules:
		var c struct {
			JoinRule json.RawMessage `json:"join_rule"`
		}
		if json.Unmarshal(content, &c) == nil {
			in.joinRule, _ = jsonString(c.JoinRule)
		}
	case typePowerLevels:
		in.pl = parsePowerLevels(content)
	case typeThirdPartyInvite:
		in.tpi = parseTPI(content)
	}
	return in
}

// object decodes a JSON object into its raw members; ok is false for
// anything else (including invalid JSON).
func object(raw []byte) (map[string]json.RawMessage, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil, false
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return nil, false
	}
	return m, true
}

// jsonString decodes raw if it is a JSON string.
func jsonString(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

func parseMember(content []byte) memberInfo {
	var m memberInfo
	c, ok := object(content)
	if !ok {
		return m
	}
	if raw, ok := c["membership"]; ok {
		m.membership, m.hasMembership = jsonString(raw)
	}
	if raw, ok := c["join_authorised_via_users_server"]; ok {
		m.hasJAUS = true
		m.jaus, _ = jsonString(raw)
	}
	if raw, ok := c["third_party_invite"]; ok {
		m.hasTPI = true
		if tpi, ok := object(raw); ok {
			if signed, ok := tpi["signed"]; ok {
				if s, ok := object(signed); ok {
					m.tpiSigned = signed
					if v, ok := s["mxid"]; ok {
						m.hasMxid = true
						m.mxid, _ = jsonString(v)
					}
					if v, ok := s["token"]; ok {
						m.hasToken = true
						m.token, m.tokenIsValid = jsonString(v)
					}
				}
			}
		}
	}
	return m
}

func parseCreate(content []byte) createInfo {
	var ci createInfo
	c, ok := object(content)
	if !ok {
		return ci
	}
	ci.objectOK = true
	if raw, ok := c["creator"]; ok {
		ci.hasCreator = true
		ci.creator, _ = jsonString(raw)
	}
	if raw, ok := c["room_version"]; ok {
		ci.hasRoomVersion = true
		ci.roomVersion, ci.roomVersionStr = jsonString(raw)
	}
	if raw, ok := c["m.federate"]; ok && string(bytes.TrimSpace(raw)) == "false" {
		ci.noFederate = true
	}
	if raw, ok := c["additional_creators"]; ok {
		ci.hasAdditional = true
		var arr []json.RawMessage
		raw = bytes.TrimSpace(raw)
		if len(raw) > 0 && raw[0] == '[' && json.Unmarshal(raw, &arr) == nil {
			ci.additionalValid = true
			for _, e := range arr {
				s, ok := jsonString(e)
				if !ok || !validUserID(s) {
					ci.additionalValid = false
					continue
				}
				ci.additional = append(ci.additional, s)
			}
		}
	}
	return ci
}

func parseTPI(content []byte) tpiInfo {
	var t tpiInfo
	c, ok := object(content)
	if !ok {
		return t
	}
	if raw, ok := c["public_key"]; ok {
		if s, ok := jsonString(raw); ok {
			if k := decodeKey(s); k != nil {
				t.keys = append(t.keys, k)
			}
		}
	}
	if raw, ok := c["public_keys"]; ok {
		var arr []json.RawMessage
		if json.Unmarshal(raw, &arr) == nil {
			for _, e := range arr {
				o, ok := object(e)
				if !ok {
					continue
				}
				if s, ok := jsonString(o["public_key"]); ok {
					if k := decodeKey(s); k != nil {
						t.keys = append(t.keys, k)
					}
				}
			}
		}
	}
	return t
}

// decodeBase64 accepts the unpadded standard encoding the spec uses, and
// padded or URL-safe forms that some implementations emit.
func decodeBase64(s string) []byte {
	for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.StdEncoding, base64.RawURLEncoding, base64.URLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b
		}
	}
	return nil
}

func decodeKey(s string) []byte {
	k := decodeBase64(s)
	if len(k) != 32 {
		return nil
	}
	return k
}
