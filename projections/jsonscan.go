package projections

import (
	"bytes"
	"strconv"
	"unicode/utf8"
)

// A small validating JSON scanner for the one question the search fold asks
// of every message PDU: what string is content.<member>? Decoding the PDU
// into maps with encoding/json cost more than everything else replay does
// for a message record; this walks the bytes once and allocates nothing.
//
// It answers exactly what the fold asked encoding/json before, so rows
// written by either agree (FuzzContentString compares the two):
//
//	var ev struct{ Content map[string]json.RawMessage `json:"content"` }
//	json.Unmarshal(pdu, &ev)              // any error: no answer
//	json.Unmarshal(ev.Content[member], &text)
//
// which means: the whole document must be valid JSON (nesting at most
// 10,000 deep) whose top level is an object; a top-level key matches
// "content" case-insensitively (encoding/json's field matching); repeated
// "content" objects merge, a later member replacing an earlier one, and a
// "content": null forgets what came before; "content" of any other type is
// an error; the member's value must be a string (null reads as "", ok).
// Strings decode as encoding/json decodes them: invalid UTF-8 bytes and
// unpaired surrogate escapes become U+FFFD.

// jsonMaxDepth is encoding/json's nesting limit.
const jsonMaxDepth = 10000

type jsonScanner struct {
	b     []byte
	i     int
	depth int
	tmp   []byte // unescaped keys
}

func (s *jsonScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// str scans the string starting at s.i (which must be '"'); it returns the
// raw bytes between the quotes and whether they hold a backslash.
func (s *jsonScanner) str() (raw []byte, esc, ok bool) {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false, false
	}
	start := s.i + 1
	for i := start; i < len(s.b); {
		c := s.b[i]
		switch {
		case c == '"':
			s.i = i + 1
			return s.b[start:i], esc, true
		case c == '\\':
			esc = true
			if i+1 >= len(s.b) {
				return nil, false, false
			}
			switch s.b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(s.b) || hex4(s.b[i+2:i+6]) < 0 {
					return nil, false, false
				}
				i += 6
			default:
				return nil, false, false
			}
		case c < 0x20:
			return nil, false, false
		default:
			i++
		}
	}
	return nil, false, false
}

func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r*16 + rune(c)
	}
	return r
}

// value skips one value, checking its syntax.
func (s *jsonScanner) value() bool {
	s.ws()
	if s.i >= len(s.b) {
		return false
	}
	switch c := s.b[s.i]; c {
	case '"':
		_, _, ok := s.str()
		return ok
	case '{':
		return s.object(func([]byte, bool) bool { return s.value() })
	case '[':
		if !s.push() {
			return false
		}
		s.i++
		s.ws()
		if s.i < len(s.b) && s.b[s.i] == ']' {
			s.i++
			s.depth--
			return true
		}
		for {
			if !s.value() {
				return false
			}
			s.ws()
			if s.i >= len(s.b) {
				return false
			}
			switch s.b[s.i] {
			case ',':
				s.i++
			case ']':
				s.i++
				s.depth--
				return true
			default:
				return false
			}
		}
	case 't':
		return s.lit("true")
	case 'f':
		return s.lit("false")
	case 'n':
		return s.lit("null")
	default:
		if c == '-' || ('0' <= c && c <= '9') {
			return s.number()
		}
		return false
	}
}

func (s *jsonScanner) push() bool {
	s.depth++
	return s.depth <= jsonMaxDepth
}

func (s *jsonScanner) lit(w string) bool {
	if len(s.b)-s.i < len(w) || string(s.b[s.i:s.i+len(w)]) != w {
		return false
	}
	s.i += len(w)
	return true
}

// number scans -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *jsonScanner) number() bool {
	b, i := s.b, s.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
			n++
		}
		return n
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case digits() == 0:
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	s.i = i
	return true
}

// object scans the object at s.i, calling member for each key (raw, and
// whether it holds escapes) with s.i just before the member's value; member
// must consume the value.
func (s *jsonScanner) object(member func(key []byte, esc bool) bool) bool {
	if !s.push() {
		return false
	}
	s.i++ // '{'
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		s.depth--
		return true
	}
	for {
		s.ws()
		key, esc, ok := s.str()
		if !ok {
			return false
		}
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return false
		}
		s.i++
		if !member(key, esc) {
			return false
		}
		s.ws()
		if s.i >= len(s.b) {
			return false
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			s.depth--
			return true
		default:
			return false
		}
	}
}

// keyIs reports whether a raw key decodes to name (fold: case-insensitively).
func (s *jsonScanner) keyIs(key []byte, esc bool, name string, fold bool) bool {
	if esc {
		s.tmp = appendUnquoted(s.tmp[:0], key)
		key = s.tmp
	}
	if fold {
		return bytes.EqualFold(key, []byte(name))
	}
	return string(key) == name
}

// contentString returns the decoded string content.<member> of the JSON
// document pdu, appended to dst, as described at the top of this file; ok
// is false when there is none (or it is not a string, or the document is
// not valid JSON).
func contentString(dst, pdu []byte, member string) (out []byte, ok bool) {
	s := jsonScanner{b: pdu}
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return dst, false
	}
	var val []byte // the member's last raw value, nil if none
	okDoc := s.object(func(key []byte, esc bool) bool {
		if !s.keyIs(key, esc, "content", true) {
			return s.value()
		}
		s.ws()
		if s.i >= len(s.b) {
			return false
		}
		switch s.b[s.i] {
		case 'n':
			val = nil // "content": null resets the map
			return s.lit("null")
		case '{':
			return s.object(func(key []byte, esc bool) bool {
				if !s.keyIs(key, esc, member, false) {
					return s.value()
				}
				s.ws()
				start := s.i
				if !s.value() {
					return false
				}
				val = s.b[start:s.i]
				return true
			})
		default:
			return false // not an object: an error for encoding/json
		}
	})
	if !okDoc {
		return dst, false
	}
	s.ws()
	switch {
	case s.i != len(s.b) || len(val) == 0:
		return dst, false
	case val[0] == 'n': // null decodes to ""
		return dst, true
	case val[0] != '"':
		return dst, false
	}
	return appendUnquoted(dst, val[1:len(val)-1]), true
}

// appendUnquoted appends the decoded form of the raw (already validated)
// contents of a JSON string, replacing invalid UTF-8 and unpaired
// surrogates with U+FFFD as encoding/json does.
func appendUnquoted(dst, raw []byte) []byte {
	for i := 0; i < len(raw); {
		c := raw[i]
		if c == '\\' && i+1 < len(raw) {
			switch raw[i+1] {
			case 'b':
				dst = append(dst, '\b')
			case 'f':
				dst = append(dst, '\f')
			case 'n':
				dst = append(dst, '\n')
			case 'r':
				dst = append(dst, '\r')
			case 't':
				dst = append(dst, '\t')
			case 'u':
				r := rune(-1)
				if i+6 <= len(raw) {
					r = hex4(raw[i+2 : i+6])
				}
				if r < 0 {
					return dst // unreachable for validated input
				}
				i += 6
				if 0xd800 <= r && r < 0xe000 {
					// A surrogate: a valid pair needs a low one next.
					if r < 0xdc00 && i+6 <= len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
						if r2 := hex4(raw[i+2 : i+6]); 0xdc00 <= r2 && r2 < 0xe000 {
							dst = utf8.AppendRune(dst, (r-0xd800)<<10|(r2-0xdc00)+0x10000)
							i += 6
							continue
						}
					}
					r = utf8.RuneError
				}
				dst = utf8.AppendRune(dst, r)
				continue
			default: // '"', '\\', '/'
				dst = append(dst, raw[i+1])
			}
			i += 2
			continue
		}
		if c < utf8.RuneSelf {
			dst = append(dst, c)
			i++
			continue
		}
		r, n := utf8.DecodeRune(raw[i:])
		if r == utf8.RuneError && n == 1 {
			dst = append(dst, "\uFFFD"...)
		} else {
			dst = append(dst, raw[i:i+n]...)
		}
		i += n
	}
	return dst
}

// jsonMember returns the raw value of member key of the JSON object obj
// (the last one, if repeated), as
//
//	var m map[string]json.RawMessage
//	json.Unmarshal(obj, &m) == nil && m[key] != nil
//
// would, without allocating: obj must be valid JSON as a whole. It is the
// building block for folds that read a few members of a PDU (content,
// then content.body) instead of decoding it into maps.
func jsonMember(obj []byte, key string) ([]byte, bool) {
	s := jsonScanner{b: obj}
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return nil, false
	}
	var val []byte
	ok := s.object(func(k []byte, esc bool) bool {
		if !s.keyIs(k, esc, key, false) {
			return s.value()
		}
		s.ws()
		start := s.i
		if !s.value() {
			return false
		}
		val = s.b[start:s.i]
		return true
	})
	s.ws()
	if !ok || s.i != len(s.b) || val == nil {
		return nil, false
	}
	return val, true
}

// unquoteString decodes the raw (validated) contents of a JSON string.
func unquoteString(raw []byte) string {
	if bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
		return string(raw)
	}
	var buf [128]byte
	return string(appendUnquoted(buf[:0], raw))
}

// jsonStringValue decodes a raw JSON string value (from jsonMember),
// appending it to dst; ok is false if raw is not a string. Like
// encoding/json, it reads null as "".
func jsonStringValue(dst, raw []byte) ([]byte, bool) {
	if string(raw) == "null" {
		return dst, true
	}
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return dst, false
	}
	return appendUnquoted(dst, raw[1:len(raw)-1]), true
}

// Outcomes of scanRelatesTo.
const (
	scanOK      = iota // the fields were read
	scanInvalid        // not valid JSON, or not an object: encoding/json fails too
	scanUnusual        // a shape this scanner leaves to encoding/json
)

// scanRelatesTo reads what relationOf needs from a PDU without
// encoding/json, for the shape every PDU has: each of the struct's keys at
// most once, spelled exactly, holding the type the struct wants (or null).
// Anything else (a key repeated or in other case, which encoding/json
// merges or matches case-insensitively; a number that is not an int64; a
// member of another type, which it reports as an error) is scanUnusual,
// and the caller asks encoding/json: answers stay exactly its answers
// (FuzzScanRelatesTo).
func scanRelatesTo(pdu []byte) (ev relatesTo, status int) {
	s := jsonScanner{b: pdu}
	unusual := false
	var rt struct{ relType, eventID, key []byte }
	hasRel := false
	// once checks a member name against the struct's: exact is one of its
	// names (seen tracks repeats), a case-insensitive match is unusual.
	once := func(key []byte, esc bool, names []string, seen []bool) int {
		if esc {
			s.tmp = appendUnquoted(s.tmp[:0], key)
			key = s.tmp
		}
		for i, n := range names {
			if string(key) == n {
				if seen[i] {
					unusual = true
				}
				seen[i] = true
				return i
			}
			if bytes.EqualFold(key, []byte(n)) {
				unusual = true
				return -1
			}
		}
		return -1
	}
	// str reads a string member (null leaves it empty).
	str := func(dst *[]byte) bool {
		s.ws()
		if s.i < len(s.b) && s.b[s.i] == '"' {
			raw, _, ok := s.str()
			*dst = raw
			return ok
		}
		if s.i < len(s.b) && s.b[s.i] != 'n' {
			unusual = true
		}
		return s.value()
	}
	topNames, topSeen := []string{"content", "origin_server_ts"}, make([]bool, 2)
	contentNames, contentSeen := []string{"m.relates_to", "m.new_content"}, make([]bool, 2)
	relNames, relSeen := []string{"rel_type", "event_id", "key"}, make([]bool, 3)
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return ev, scanInvalid // null, the one other answer without error, has no relation either
	}
	ok := s.object(func(key []byte, esc bool) bool {
		switch once(key, esc, topNames, topSeen) {
		case 0: // content
			s.ws()
			if s.i >= len(s.b) || s.b[s.i] != '{' {
				if s.i < len(s.b) && s.b[s.i] != 'n' {
					unusual = true
				}
				return s.value()
			}
			return s.object(func(key []byte, esc bool) bool {
				switch once(key, esc, contentNames, contentSeen) {
				case 0: // m.relates_to
					s.ws()
					if s.i >= len(s.b) || s.b[s.i] != '{' {
						if s.i < len(s.b) && s.b[s.i] != 'n' {
							unusual = true
						}
						return s.value()
					}
					hasRel = true
					return s.object(func(key []byte, esc bool) bool {
						switch once(key, esc, relNames, relSeen) {
						case 0:
							return str(&rt.relType)
						case 1:
							return str(&rt.eventID)
						case 2:
							return str(&rt.key)
						}
						return s.value()
					})
				case 1: // m.new_content
					s.ws()
					start := s.i
					if !s.value() {
						return false
					}
					ev.Content.NewContent = s.b[start:s.i]
					return true
				}
				return s.value()
			})
		case 1: // origin_server_ts
			s.ws()
			start := s.i
			if !s.value() {
				return false
			}
			switch raw := s.b[start:s.i]; {
			case string(raw) == "null":
			case raw[0] == '-' || '0' <= raw[0] && raw[0] <= '9':
				n, err := strconv.ParseInt(string(raw), 10, 64)
				if err != nil {
					unusual = true
				}
				ev.OriginServerTS = n
			default:
				unusual = true
			}
			return true
		}
		return s.value()
	})
	s.ws()
	if !ok || s.i != len(s.b) {
		return relatesTo{}, scanInvalid
	}
	if unusual {
		return relatesTo{}, scanUnusual
	}
	if hasRel {
		ev.Content.RelatesTo = &struct {
			RelType string `json:"rel_type"`
			EventID string `json:"event_id"`
			Key     string `json:"key"`
		}{
			RelType: unquoteString(rt.relType),
			EventID: unquoteString(rt.eventID),
			Key:     unquoteString(rt.key),
		}
	}
	return ev, scanOK
}
