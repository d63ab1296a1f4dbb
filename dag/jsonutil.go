package dag

import (
	"bytes"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Helpers that walk and edit canonical JSON (the output of Canonical) without
// decoding it. Removing members from a sorted object keeps it sorted, and
// setMember inserts at the sorted position, so edited objects stay canonical
// and never need a second pass through Canonical.

// skipString returns the index after the string starting at b[i] ('"').
// It jumps from quote to quote; a quote preceded by an odd number of
// backslashes is escaped.
func skipString(b []byte, i int) (int, bool) {
	start := i + 1
	i = start
	for i < len(b) {
		j := bytes.IndexByte(b[i:], '"')
		if j < 0 {
			break
		}
		i += j
		n := 0
		for k := i - 1; k >= start && b[k] == '\\'; k-- {
			n++
		}
		if n%2 == 0 {
			return i + 1, true
		}
		i++
	}
	return len(b), false
}

// skipValue returns the index after the JSON value starting at b[i]. It
// trusts the input to be valid JSON without whitespace (our canonical
// output) but never indexes out of bounds on anything else.
func skipValue(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return i, false
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				j, ok := skipString(b, i)
				if !ok {
					return j, false
				}
				i = j
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, true
				}
			}
			i++
		}
		return i, false
	default:
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ':' {
			j++
		}
		return j, j > i
	}
}

// objIter walks the members of a canonical JSON object.
type objIter struct {
	b   []byte
	i   int
	bad bool
}

func iterObject(b []byte) (objIter, bool) {
	if len(b) < 2 || b[0] != '{' || b[len(b)-1] != '}' {
		return objIter{}, false
	}
	return objIter{b: b, i: 1}, true
}

// next returns the next member's encoded key (the string body, without
// quotes) and raw value.
func (it *objIter) next() (key, val []byte, ok bool) {
	b, i := it.b, it.i
	if it.bad || i >= len(b)-1 {
		return nil, nil, false
	}
	if i > 1 {
		if b[i] != ',' {
			it.bad = true
			return nil, nil, false
		}
		i++
	}
	if i >= len(b) || b[i] != '"' {
		it.bad = true
		return nil, nil, false
	}
	kEnd, ok := skipString(b, i)
	if !ok || kEnd >= len(b) || b[kEnd] != ':' {
		it.bad = true
		return nil, nil, false
	}
	vEnd, ok := skipValue(b, kEnd+1)
	if !ok || vEnd > len(b)-1 {
		it.bad = true
		return nil, nil, false
	}
	it.i = vEnd
	return b[i+1 : kEnd-1], b[kEnd+1 : vEnd], true
}

// getMember returns the value of key in a canonical object, or nil.
func getMember(obj []byte, key string) []byte {
	it, ok := iterObject(obj)
	if !ok {
		return nil
	}
	for k, v, ok := it.next(); ok; k, v, ok = it.next() {
		if string(k) == key || bytes.IndexByte(k, '\\') >= 0 && decodeBody(k) == key {
			return v
		}
	}
	return nil
}

// appendWithout appends obj without the members whose (unescaped) key is in
// drop. Keys with escapes never match, which is right: every key we drop is
// plain ASCII.
func appendWithout(dst, obj []byte, drop ...string) ([]byte, error) {
	it, ok := iterObject(obj)
	if !ok {
		return dst, fmt.Errorf("%w: not a JSON object", ErrBadJSON)
	}
	dst = append(dst, '{')
	first := true
outer:
	for k, v, ok := it.next(); ok; k, v, ok = it.next() {
		for _, d := range drop {
			if string(k) == d {
				continue outer
			}
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = appendMember(dst, k, v)
	}
	if it.bad {
		return dst, fmt.Errorf("%w: malformed canonical object", ErrBadJSON)
	}
	return append(dst, '}'), nil
}

func appendMember(dst, encKey, val []byte) []byte {
	dst = append(dst, '"')
	dst = append(dst, encKey...)
	dst = append(dst, '"', ':')
	return append(dst, val...)
}

// setMember appends obj with key set to val (canonical JSON), replacing an
// existing member or inserting at the sorted position.
func setMember(dst, obj []byte, key string, val []byte) ([]byte, error) {
	it, ok := iterObject(obj)
	if !ok {
		return dst, fmt.Errorf("%w: not a JSON object", ErrBadJSON)
	}
	var kb [64]byte
	enc, err := appendString(kb[:0], key)
	if err != nil {
		return dst, err
	}
	enc = enc[1 : len(enc)-1]
	dst = append(dst, '{')
	first, done := true, false
	for k, v, ok := it.next(); ok; k, v, ok = it.next() {
		if !done {
			switch d := compareEncoded(k, enc); {
			case d == 0:
				v, done = val, true
			case d > 0:
				if !first {
					dst = append(dst, ',')
				}
				first = false
				dst = appendMember(dst, enc, val)
				done = true
			}
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = appendMember(dst, k, v)
	}
	if it.bad {
		return dst, fmt.Errorf("%w: malformed canonical object", ErrBadJSON)
	}
	if !done {
		if !first {
			dst = append(dst, ',')
		}
		dst = appendMember(dst, enc, val)
	}
	return append(dst, '}'), nil
}

// appendString appends s as a canonical JSON string. s must be valid UTF-8.
func appendString(dst []byte, s string) ([]byte, error) {
	if !utf8.ValidString(s) {
		return dst, fmt.Errorf("%w: string is not valid UTF-8: %q", ErrBadJSON, s)
	}
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		if b := s[i]; b < 0x20 || b == '"' || b == '\\' {
			dst = append(dst, s[start:i]...)
			dst, _ = appendStringRune(dst, rune(b))
			start = i + 1
		}
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"'), nil
}

// unquote decodes a canonical JSON string value (with quotes). It returns
// false if v is not a string.
func unquote(v []byte) (string, bool) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return "", false
	}
	body := v[1 : len(v)-1]
	if bytes.IndexByte(body, '\\') < 0 {
		return string(body), true
	}
	return decodeBody(body), true
}

func decodeBody(body []byte) string {
	var sb strings.Builder
	sb.Grow(len(body))
	for len(body) > 0 {
		c, n := decodeCanonByte(body)
		sb.WriteByte(c)
		body = body[n:]
	}
	return sb.String()
}
