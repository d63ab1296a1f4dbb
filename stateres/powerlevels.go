package stateres

import (
	"bytes"
	"encoding/json"
	"math"
	"sort"
	"strconv"
	"strings"

	"engram/dag"
)

// levelInfinite is the power level of room creators in room version 12
// ("The power level of "room creators" is infinitely high"). Finite levels
// are clamped below it, so it compares greater than any level a
// power_levels event can state.
const levelInfinite = math.MaxInt64

// How a level value was written. Versions differ in what they accept:
// strings are a v1-v9 compatibility form ("m.room.power_levels events accept
// values as strings"), floats a v1-v5 one ("accept values as floats"), and
// v10 requires integers.
const (
	kAbsent uint8 = iota
	kInt          // a JSON integer
	kString       // a string holding an integer
	kFloat        // a JSON number with a fraction or exponent, truncated
	kBad          // anything else, including null
)

type level struct {
	v    int64
	kind uint8
}

func (l level) present() bool { return l.kind != kAbsent }
func (l level) usable() bool  { return l.kind == kInt || l.kind == kString || l.kind == kFloat }

type levelEntry struct {
	key string
	level
}

// levelMap is an object of levels, sorted by key so that lookups are binary
// searches and every walk over it is in a fixed order.
type levelMap struct {
	kind    uint8 // kAbsent, kInt (meaning: an object) or kBad (not an object)
	entries []levelEntry
}

func (m *levelMap) get(key string) (level, bool) {
	i := sort.Search(len(m.entries), func(i int) bool { return m.entries[i].key >= key })
	if i < len(m.entries) && m.entries[i].key == key {
		return m.entries[i].level, true
	}
	return level{}, false
}

// The top-level levels, in the order the spec lists them.
const (
	fUsersDefault = iota
	fEventsDefault
	fStateDefault
	fBan
	fRedact
	fKick
	fInvite
	numFields
)

var fieldNames = [numFields]string{"users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"}

// fieldDefaults: "The invite level defaults to 0 if unspecified. The kick
// level, ban level and redact level each default to 50 if unspecified."
// state_default is 50 and events_default and users_default 0, whether or not
// there is a power_levels event (m.room.power_levels schema).
var fieldDefaults = [numFields]int64{0, 0, 50, 50, 50, 50, 0}

type powerLevels struct {
	objectOK      bool
	fields        [numFields]level
	events        levelMap
	notifications levelMap
	users         levelMap
}

func parsePowerLevels(content []byte) *powerLevels {
	p := &powerLevels{}
	c, ok := object(content)
	if !ok {
		return p
	}
	p.objectOK = true
	for i, name := range fieldNames {
		if raw, ok := c[name]; ok {
			p.fields[i] = parseLevel(raw)
		}
	}
	p.events = parseLevelMap(c, "events")
	p.notifications = parseLevelMap(c, "notifications")
	p.users = parseLevelMap(c, "users")
	return p
}

func parseLevelMap(c map[string]json.RawMessage, name string) levelMap {
	raw, ok := c[name]
	if !ok {
		return levelMap{}
	}
	o, ok := object(raw)
	if !ok {
		return levelMap{kind: kBad}
	}
	m := levelMap{kind: kInt, entries: make([]levelEntry, 0, len(o))}
	for k, v := range o {
		m.entries = append(m.entries, levelEntry{key: k, level: parseLevel(v)})
	}
	sort.Slice(m.entries, func(i, j int) bool { return m.entries[i].key < m.entries[j].key })
	return m
}

func clampLevel(v int64) int64 {
	if v >= levelInfinite {
		return levelInfinite - 1
	}
	return v
}

// parseLevel reads one level value.
func parseLevel(raw json.RawMessage) level {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return level{kind: kBad}
	}
	switch c := raw[0]; {
	case c == '-' || (c >= '0' && c <= '9'):
		s := string(raw)
		if isIntegerLiteral(s) {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil { // out of int64 range: only reachable in v1-v5
				if s[0] == '-' {
					v = math.MinInt64
				} else {
					v = math.MaxInt64
				}
			}
			return level{v: clampLevel(v), kind: kInt}
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			// "Values outside the range represented by IEE754 binary64 (a
			// "double") cause the powerlevel event to be rejected"
			return level{kind: kBad}
		}
		f = math.Trunc(f)
		var v int64
		switch {
		case f >= math.MaxInt64:
			v = math.MaxInt64
		case f <= math.MinInt64:
			v = math.MinInt64
		default:
			v = int64(f)
		}
		return level{v: clampLevel(v), kind: kFloat}
	case c == '"':
		s, ok := jsonString(raw)
		if !ok {
			return level{kind: kBad}
		}
		v, ok := parseStringLevel(s)
		if !ok {
			return level{kind: kBad}
		}
		return level{v: v, kind: kString}
	}
	return level{kind: kBad}
}

func isIntegerLiteral(s string) bool {
	if s[0] == '-' {
		s = s[1:]
	}
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// parseStringLevel implements the v1-v9 string form: "a single base 10
// integer, no float values or decimal points, optionally with any number of
// leading zeroes", "optionally prefixed with a single - or + character",
// "optionally with any number of leading or trailing whitespace characters".
func parseStringLevel(s string) (int64, bool) {
	s = strings.TrimSpace(s)
	neg := false
	if s != "" && (s[0] == '+' || s[0] == '-') {
		neg = s[0] == '-'
		s = s[1:]
	}
	if s == "" {
		return 0, false
	}
	var v int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if v < math.MaxInt64/10 {
			v = v*10 + int64(c-'0')
		} else {
			v = math.MaxInt64 // saturate
		}
	}
	if neg {
		v = -v
	}
	return clampLevel(v), true
}

// acceptedKind reports whether a level written as kind is an integer in the
// sense of ver's rules.
func acceptedKind(ver *dag.RoomVersion, kind uint8) bool {
	switch kind {
	case kInt:
		return true
	case kString:
		return !ver.IntegerPowerLevels
	case kFloat:
		return !ver.StrictCanonicalJSON
	}
	return false
}

// fieldLevel is the value of a top-level level, or its default. A value
// that cannot be read counts as unspecified.
func (p *powerLevels) fieldLevel(f int) int64 {
	if p != nil && p.fields[f].usable() {
		return p.fields[f].v
	}
	return fieldDefaults[f]
}

// requiredLevel is the event type's required power level: "The event type
// is either listed explicitly in the events section or given by either
// state_default or events_default depending on if the event is a state
// event or not."
func (p *powerLevels) requiredLevel(evType string, state bool) int64 {
	if p != nil {
		if l, ok := p.events.get(evType); ok && l.usable() {
			return l.v
		}
	}
	if state {
		return p.fieldLevel(fStateDefault)
	}
	return p.fieldLevel(fEventsDefault)
}

// validatePowerLevels applies the rules on the new m.room.power_levels
// event's own content: in v10+ "If any of the properties users_default,
// events_default, state_default, ban, redact, kick, or invite in content are
// present and not an integer, reject." and the two following rules; in
// every version "If the users property in content is not an object with keys
// that are valid user IDs with values that are integers (or a string that is
// an integer), reject."
func validatePowerLevels(c *checker, p *powerLevels) error {
	ver := c.ver
	if !p.objectOK {
		return c.deny(rFormat, "power_levels content is not an object")
	}
	if ver.IntegerPowerLevels {
		for i := range p.fields {
			if p.fields[i].present() && p.fields[i].kind != kInt {
				return c.deny(rPLFieldsInt, fieldNames[i]+" is not an integer")
			}
		}
		for _, m := range []*levelMap{&p.events, &p.notifications} {
			if m.kind == kBad {
				return c.deny(rPLMapsInt, "events or notifications is not an object")
			}
			for _, e := range m.entries {
				if e.kind != kInt {
					return c.deny(rPLMapsInt, "level for "+e.key+" is not an integer")
				}
			}
		}
	}
	if p.users.kind == kBad {
		return c.deny(rPLUsers, "users is not an object")
	}
	for _, e := range p.users.entries {
		if !looseUserID(e.key) {
			return c.deny(rPLUsers, "users key "+e.key+" is not a user ID")
		}
		if !acceptedKind(ver, e.kind) {
			return c.deny(rPLUsers, "level of "+e.key+" is not an integer")
		}
	}
	return nil
}
