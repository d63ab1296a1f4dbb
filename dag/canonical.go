package dag

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"sync"
	"unicode/utf8"
)

// MaxNesting bounds how deeply arrays and objects may nest. Python's json
// module, which produced most of the federation's events, stops near 1000
// levels because of its recursion limit; nothing legitimate comes close.
const MaxNesting = 1000

// maxSafeInt is (2**53)-1, the bound of the canonical JSON integer range.
const maxSafeInt = 1<<53 - 1

// Canonical appends the canonical JSON encoding of the JSON value in to dst
// and returns the extended slice. dst and in must not overlap.
//
// The appendices define canonical JSON as "the shortest UTF-8 JSON encoding
// with dictionary keys lexicographically sorted by Unicode codepoint.
// Numbers in the JSON must be integers in the range [-(2**53)+1, (2**53)-1],
// represented without exponents or decimal places, and negative zero -0 MUST
// NOT appear." Concretely the output:
//   - has no insignificant whitespace;
//   - sorts object keys by their UTF-8 bytes (which is code point order);
//   - escapes only '"', '\\' and control characters, the latter as \b \t \n
//     \f \r or \u00XX with lowercase hex; everything else, DEL and non-ASCII
//     included, is written as raw UTF-8;
//   - writes -0 as 0.
//
// With strict set (room versions 6 and later: "Servers MUST strictly enforce
// the JSON format") a number with a fraction or exponent, or an integer
// outside [-(2**53)+1, (2**53)-1], is an error. Without it (versions 1-5,
// whose events "might not be fully compliant") any integer is kept, a number
// whose value is an integer below 2**53 in magnitude is written as that
// integer (the spec example: 1e10 becomes 10000000000), and any other number
// is written the way Python's repr writes the nearest float64, which is how
// Synapse, the origin of nearly all such events, encoded them.
//
// In both modes the input must be valid JSON (RFC 8259) in valid UTF-8;
// lone surrogates in \u escapes, duplicate object keys and nesting deeper
// than MaxNesting are rejected. Errors wrap ErrBadJSON; on error dst is
// returned unchanged.
func Canonical(dst, in []byte, strict bool) ([]byte, error) {
	if alreadyCanonical(in) {
		return append(dst, in...), nil
	}
	return canonicalise(dst, in, strict)
}

// canonicalise is Canonical's general path: it rewrites what is not
// canonical and reports what is not JSON.
func canonicalise(dst, in []byte, strict bool) ([]byte, error) {
	c := canonPool.Get().(*canonicaliser)
	c.in, c.strict, c.depth = in, strict, 0
	c.members = c.members[:0]
	n0 := len(dst)
	out, i, err := c.value(dst, skipWS(in, 0))
	if err == nil {
		if i = skipWS(in, i); i != len(in) {
			err = c.errAt(i, "unexpected data after the top-level value")
		}
	}
	c.in = nil
	if cap(c.scratch) > 256<<10 {
		c.scratch = nil // do not pin one huge input's buffer in the pool
	}
	if cap(c.members) > 8192 {
		c.members = nil
	}
	canonPool.Put(c)
	if err != nil {
		return dst[:n0], err
	}
	return out, nil
}

// CanonicalValue marshals a Go value with encoding/json and returns its
// strict canonical JSON encoding. It is meant for building our own objects
// (server key responses, request bodies to sign), not for hot paths.
func CanonicalValue(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadJSON, err)
	}
	return Canonical(make([]byte, 0, len(b)), b, true)
}

// IsCanonical reports whether b is already strict canonical JSON, byte for
// byte. Useful to check that stored bytes need no re-encoding.
func IsCanonical(b []byte) bool {
	buf := getBuf()
	out, err := Canonical((*buf)[:0], b, true)
	ok := err == nil && bytes.Equal(out, b)
	*buf = out
	putBuf(buf)
	return ok
}

// canonicaliser is the scanner state for one Canonical call. It writes each
// object's members in input order straight into the output and only when
// they turn out unsorted copies the object aside and writes them back in
// order; events we produce or receive are nearly always sorted already.
type canonicaliser struct {
	in      []byte
	strict  bool
	depth   int
	members []member // stack: each open object owns a suffix
	scratch []byte   // reorder buffer
}

// member locates one `"key":value` pair of an object in the output buffer.
type member struct {
	keyStart, keyEnd int // the encoded key, without quotes
	start, end       int // the whole member
	esc              bool
}

var canonPool = sync.Pool{New: func() any {
	return &canonicaliser{members: make([]member, 0, 64)}
}}

func (c *canonicaliser) errAt(i int, msg string) error {
	return fmt.Errorf("%w: %s at offset %d", ErrBadJSON, msg, i)
}

func skipWS(in []byte, i int) int {
	for i < len(in) {
		switch in[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

func (c *canonicaliser) value(dst []byte, i int) ([]byte, int, error) {
	in := c.in
	if i >= len(in) {
		return dst, i, c.errAt(i, "unexpected end of input")
	}
	switch b := in[i]; b {
	case '{':
		return c.object(dst, i)
	case '[':
		return c.array(dst, i)
	case '"':
		dst, i, _, err := c.str(dst, i)
		return dst, i, err
	case 't':
		return c.literal(dst, i, "true")
	case 'f':
		return c.literal(dst, i, "false")
	case 'n':
		return c.literal(dst, i, "null")
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return c.number(dst, i)
	default:
		return dst, i, c.errAt(i, fmt.Sprintf("invalid character %q", b))
	}
}

func (c *canonicaliser) literal(dst []byte, i int, lit string) ([]byte, int, error) {
	if len(c.in)-i < len(lit) || string(c.in[i:i+len(lit)]) != lit {
		return dst, i, c.errAt(i, "invalid literal")
	}
	return append(dst, lit...), i + len(lit), nil
}

func (c *canonicaliser) object(dst []byte, i int) ([]byte, int, error) {
	in := c.in
	if c.depth++; c.depth > MaxNesting {
		return dst, i, c.errAt(i, "nesting too deep")
	}
	dst = append(dst, '{')
	body := len(dst)
	i = skipWS(in, i+1)
	if i < len(in) && in[i] == '}' {
		c.depth--
		return append(dst, '}'), i + 1, nil
	}
	base := len(c.members)
	var err error
	for {
		if i >= len(in) || in[i] != '"' {
			return dst, i, c.errAt(i, "expected object key")
		}
		m := member{start: len(dst), keyStart: len(dst) + 1}
		if dst, i, m.esc, err = c.str(dst, i); err != nil {
			return dst, i, err
		}
		m.keyEnd = len(dst) - 1
		i = skipWS(in, i)
		if i >= len(in) || in[i] != ':' {
			return dst, i, c.errAt(i, "expected ':' after object key")
		}
		dst = append(dst, ':')
		if dst, i, err = c.value(dst, skipWS(in, i+1)); err != nil {
			return dst, i, err
		}
		m.end = len(dst)
		c.members = append(c.members, m)
		i = skipWS(in, i)
		if i >= len(in) {
			return dst, i, c.errAt(i, "unterminated object")
		}
		if in[i] == ',' {
			dst = append(dst, ',')
			i = skipWS(in, i+1)
			continue
		}
		if in[i] != '}' {
			return dst, i, c.errAt(i, "expected ',' or '}' in object")
		}
		i++
		break
	}

	ms := c.members[base:]
	sorted := true
	for k := 1; k < len(ms); k++ {
		d := compareMembers(dst, &ms[k-1], &ms[k])
		if d == 0 {
			return dst, i, c.errAt(i, "duplicate key "+strconv.Quote(string(dst[ms[k].keyStart:ms[k].keyEnd])))
		}
		if d > 0 {
			sorted = false
			break
		}
	}
	if !sorted {
		slices.SortFunc(ms, func(a, b member) int { return compareMembers(dst, &a, &b) })
		for k := 1; k < len(ms); k++ {
			if compareMembers(dst, &ms[k-1], &ms[k]) == 0 {
				return dst, i, c.errAt(i, "duplicate key "+strconv.Quote(string(dst[ms[k].keyStart:ms[k].keyEnd])))
			}
		}
		c.scratch = append(c.scratch[:0], dst[body:]...)
		dst = dst[:body]
		for k := range ms {
			if k > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, c.scratch[ms[k].start-body:ms[k].end-body]...)
		}
	}
	c.members = c.members[:base]
	c.depth--
	return append(dst, '}'), i, nil
}

func (c *canonicaliser) array(dst []byte, i int) ([]byte, int, error) {
	in := c.in
	if c.depth++; c.depth > MaxNesting {
		return dst, i, c.errAt(i, "nesting too deep")
	}
	dst = append(dst, '[')
	i = skipWS(in, i+1)
	if i < len(in) && in[i] == ']' {
		c.depth--
		return append(dst, ']'), i + 1, nil
	}
	var err error
	for {
		if dst, i, err = c.value(dst, i); err != nil {
			return dst, i, err
		}
		i = skipWS(in, i)
		if i >= len(in) {
			return dst, i, c.errAt(i, "unterminated array")
		}
		if in[i] == ',' {
			dst = append(dst, ',')
			i = skipWS(in, i+1)
			continue
		}
		if in[i] != ']' {
			return dst, i, c.errAt(i, "expected ',' or ']' in array")
		}
		c.depth--
		return append(dst, ']'), i + 1, nil
	}
}

const (
	lo8 = 0x0101010101010101
	hi8 = 0x8080808080808080
)

// special has the high bit set in each of the 8 bytes of x (little-endian)
// that is a control character, '"', '\\' or non-ASCII, the bytes a string
// scan stops at, and possibly in bytes above such a one (a subtraction's
// borrow runs upward only from a lane that is itself special). So the
// lowest set bit marks the first special byte exactly.
func special(x uint64) uint64 {
	q, s := x^(lo8*'"'), x^(lo8*'\\')
	return ((x - lo8*0x20) | x | (q - lo8) | (s - lo8)) & hi8
}

// skipPlain returns the index of the first byte at or after i that a string
// carries with a change or ends at: a control character, '"', '\\' or a
// non-ASCII byte (len(in) if none).
func skipPlain(in []byte, i int) int {
	for i+8 <= len(in) {
		if m := special(binary.LittleEndian.Uint64(in[i:])); m != 0 {
			return i + bits.TrailingZeros64(m)>>3
		}
		i += 8
	}
	for i < len(in) && safeASCII[in[i]] {
		i++
	}
	return i
}

// safeASCII[b] is true for ASCII bytes a canonical string carries unchanged.
var safeASCII = func() (t [256]bool) {
	for b := 0x20; b < 0x80; b++ {
		t[b] = b != '"' && b != '\\'
	}
	return t
}()

// str canonicalises the string starting at in[i] (the opening quote). esc
// reports whether the output contains a backslash escape, which matters for
// key comparison.
func (c *canonicaliser) str(dst []byte, i int) ([]byte, int, bool, error) {
	in := c.in
	i++
	dst = append(dst, '"')
	esc := false
	start := i
	for {
		i = skipPlain(in, i)
		if i >= len(in) {
			return dst, i, esc, c.errAt(i, "unterminated string")
		}
		switch b := in[i]; {
		case b == '"':
			dst = append(dst, in[start:i]...)
			return append(dst, '"'), i + 1, esc, nil
		case b == '\\':
			dst = append(dst, in[start:i]...)
			r, next, err := c.escape(i)
			if err != nil {
				return dst, i, esc, err
			}
			var e bool
			dst, e = appendStringRune(dst, r)
			esc = esc || e
			i, start = next, next
		case b < 0x20:
			return dst, i, esc, c.errAt(i, "control character in string")
		default:
			r, size := utf8.DecodeRune(in[i:])
			if r == utf8.RuneError && size == 1 {
				return dst, i, esc, c.errAt(i, "invalid UTF-8")
			}
			i += size
		}
	}
}

// escape decodes the escape sequence at in[i] ('\\'), joining surrogate
// pairs, and returns the rune and the index after the sequence.
func (c *canonicaliser) escape(i int) (rune, int, error) {
	in := c.in
	if i+1 >= len(in) {
		return 0, i, c.errAt(i, "unterminated escape")
	}
	switch in[i+1] {
	case '"':
		return '"', i + 2, nil
	case '\\':
		return '\\', i + 2, nil
	case '/':
		return '/', i + 2, nil
	case 'b':
		return '\b', i + 2, nil
	case 'f':
		return '\f', i + 2, nil
	case 'n':
		return '\n', i + 2, nil
	case 'r':
		return '\r', i + 2, nil
	case 't':
		return '\t', i + 2, nil
	case 'u':
		r, ok := hex4(in, i+2)
		if !ok {
			return 0, i, c.errAt(i, "invalid \\u escape")
		}
		switch {
		case r >= 0xDC00 && r <= 0xDFFF:
			return 0, i, c.errAt(i, "lone low surrogate in \\u escape")
		case r >= 0xD800 && r <= 0xDBFF:
			if i+7 >= len(in) || in[i+6] != '\\' || in[i+7] != 'u' {
				return 0, i, c.errAt(i, "lone high surrogate in \\u escape")
			}
			lo, ok := hex4(in, i+8)
			if !ok || lo < 0xDC00 || lo > 0xDFFF {
				return 0, i, c.errAt(i, "lone high surrogate in \\u escape")
			}
			return 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00), i + 12, nil
		}
		return r, i + 6, nil
	default:
		return 0, i, c.errAt(i, "invalid escape")
	}
}

func hex4(in []byte, i int) (rune, bool) {
	if i+4 > len(in) {
		return 0, false
	}
	var r rune
	for _, b := range in[i : i+4] {
		var d byte
		switch {
		case b >= '0' && b <= '9':
			d = b - '0'
		case b >= 'a' && b <= 'f':
			d = b - 'a' + 10
		case b >= 'A' && b <= 'F':
			d = b - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(d)
	}
	return r, true
}

const hexDigits = "0123456789abcdef"

// appendStringRune appends r as it appears inside a canonical string and
// reports whether it needed an escape. r must be a valid scalar value.
func appendStringRune(dst []byte, r rune) ([]byte, bool) {
	switch {
	case r == '"':
		return append(dst, '\\', '"'), true
	case r == '\\':
		return append(dst, '\\', '\\'), true
	case r < 0x20:
		switch r {
		case '\b':
			return append(dst, '\\', 'b'), true
		case '\t':
			return append(dst, '\\', 't'), true
		case '\n':
			return append(dst, '\\', 'n'), true
		case '\f':
			return append(dst, '\\', 'f'), true
		case '\r':
			return append(dst, '\\', 'r'), true
		}
		return append(dst, '\\', 'u', '0', '0', hexDigits[r>>4], hexDigits[r&0xF]), true
	case r < utf8.RuneSelf:
		return append(dst, byte(r)), false
	default:
		return utf8.AppendRune(dst, r), false
	}
}

func (c *canonicaliser) number(dst []byte, i int) ([]byte, int, error) {
	in := c.in
	start := i
	if in[i] == '-' {
		i++
	}
	digits := i
	switch {
	case i < len(in) && in[i] == '0':
		i++
	case i < len(in) && in[i] >= '1' && in[i] <= '9':
		for i < len(in) && in[i] >= '0' && in[i] <= '9' {
			i++
		}
	default:
		return dst, i, c.errAt(i, "invalid number")
	}
	intEnd := i
	if i < len(in) && in[i] == '.' {
		i++
		d := i
		for i < len(in) && in[i] >= '0' && in[i] <= '9' {
			i++
		}
		if i == d {
			return dst, i, c.errAt(i, "invalid number: no digits after '.'")
		}
	}
	if i < len(in) && (in[i] == 'e' || in[i] == 'E') {
		i++
		if i < len(in) && (in[i] == '+' || in[i] == '-') {
			i++
		}
		d := i
		for i < len(in) && in[i] >= '0' && in[i] <= '9' {
			i++
		}
		if i == d {
			return dst, i, c.errAt(i, "invalid number: no digits in exponent")
		}
	}

	if i == intEnd { // plain integer
		if intEnd-digits == 1 && in[digits] == '0' {
			return append(dst, '0'), i, nil // also turns -0 into 0
		}
		if c.strict && !inSafeRange(in[digits:intEnd]) {
			return dst, i, c.errAt(start, "integer outside [-(2**53)+1, (2**53)-1]")
		}
		return append(dst, in[start:intEnd]...), i, nil
	}
	if c.strict {
		return dst, i, c.errAt(start, "number with fraction or exponent")
	}
	f, err := strconv.ParseFloat(string(in[start:i]), 64)
	if err != nil || math.IsInf(f, 0) {
		return dst, i, c.errAt(start, "number out of range")
	}
	if f == math.Trunc(f) && math.Abs(f) <= maxSafeInt {
		return strconv.AppendInt(dst, int64(f), 10), i, nil
	}
	return appendPyFloat(dst, f), i, nil
}

// inSafeRange reports whether the decimal digits d (no sign, no leading
// zeros) are at most (2**53)-1.
func inSafeRange(d []byte) bool {
	const max = "9007199254740991"
	if len(d) != len(max) {
		return len(d) < len(max)
	}
	return string(d) <= max
}

// appendPyFloat writes f like Python's float repr (what json.dumps emits):
// the shortest round-tripping digits, positional when the decimal exponent
// is in [-4, 16), otherwise scientific with a signed two-digit exponent.
func appendPyFloat(dst []byte, f float64) []byte {
	var tmp [32]byte
	s := strconv.AppendFloat(tmp[:0], f, 'e', -1, 64) // [-]d[.ddd]e±XX
	if s[0] == '-' {
		dst = append(dst, '-')
		s = s[1:]
	}
	e := bytes.IndexByte(s, 'e')
	var dig [24]byte
	nd := 0
	for _, b := range s[:e] {
		if b != '.' {
			dig[nd] = b
			nd++
		}
	}
	digits := dig[:nd]
	exp := 0
	for _, b := range s[e+2:] {
		exp = exp*10 + int(b-'0')
	}
	if s[e+1] == '-' {
		exp = -exp
	}
	switch {
	case exp < -4 || exp >= 16:
		dst = append(dst, digits[0])
		if len(digits) > 1 {
			dst = append(dst, '.')
			dst = append(dst, digits[1:]...)
		}
		dst = append(dst, 'e')
		if exp < 0 {
			dst = append(dst, '-')
			exp = -exp
		} else {
			dst = append(dst, '+')
		}
		if exp < 10 {
			dst = append(dst, '0')
		}
		return strconv.AppendInt(dst, int64(exp), 10)
	case exp >= 0:
		if len(digits) <= exp+1 {
			dst = append(dst, digits...)
			for k := len(digits); k <= exp; k++ {
				dst = append(dst, '0')
			}
			return append(dst, '.', '0')
		}
		dst = append(dst, digits[:exp+1]...)
		dst = append(dst, '.')
		return append(dst, digits[exp+1:]...)
	default:
		dst = append(dst, '0', '.')
		for k := 0; k < -exp-1; k++ {
			dst = append(dst, '0')
		}
		return append(dst, digits...)
	}
}

// compareMembers orders two members of one object by decoded key.
func compareMembers(buf []byte, a, b *member) int {
	ka, kb := buf[a.keyStart:a.keyEnd], buf[b.keyStart:b.keyEnd]
	if !a.esc && !b.esc {
		return bytes.Compare(ka, kb)
	}
	return compareEncoded(ka, kb)
}

// compareEncoded compares two canonical string bodies (between the quotes)
// by their decoded bytes. Escapes only ever stand for single ASCII bytes, so
// decoded byte order is code point order.
func compareEncoded(a, b []byte) int {
	for {
		if len(a) == 0 {
			if len(b) == 0 {
				return 0
			}
			return -1
		}
		if len(b) == 0 {
			return 1
		}
		ca, na := decodeCanonByte(a)
		cb, nb := decodeCanonByte(b)
		if ca != cb {
			if ca < cb {
				return -1
			}
			return 1
		}
		a, b = a[na:], b[nb:]
	}
}

// decodeCanonByte decodes the first byte of a canonical string body.
func decodeCanonByte(s []byte) (byte, int) {
	if s[0] != '\\' || len(s) < 2 {
		return s[0], 1
	}
	switch s[1] {
	case 'b':
		return '\b', 2
	case 't':
		return '\t', 2
	case 'n':
		return '\n', 2
	case 'f':
		return '\f', 2
	case 'r':
		return '\r', 2
	case 'u':
		if len(s) >= 6 {
			return unhex(s[4])<<4 | unhex(s[5]), 6
		}
	}
	return s[1], 2 // \" and \\
}

func unhex(b byte) byte {
	switch {
	case b >= '0' && b <= '9':
		return b - '0'
	case b >= 'a' && b <= 'f':
		return b - 'a' + 10
	case b >= 'A' && b <= 'F':
		return b - 'A' + 10
	}
	return 0
}

// Pooled scratch buffers for canonical intermediates (redacted copies, bytes
// to hash or sign) that never outlive a call.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) > 256<<10 {
		return
	}
	*b = (*b)[:0]
	bufPool.Put(b)
}
