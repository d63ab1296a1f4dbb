package dag

import (
	"bytes"
	"unicode/utf8"
)

// The fast path of Canonical: nearly every input is canonical already (the
// events we build, and the ones other servers sign, are hashed and signed in
// canonical form), and for those the output is a copy of the input. Checking
// that takes one pass that writes nothing: no per-token appends, no member
// bookkeeping for a sort that will not happen. The check is conservative:
// it says yes only when Canonical would return the input unchanged in either
// mode, and leaves everything else, errors included, to the general path
// (FuzzCanonical holds it to that).

// alreadyCanonical reports whether in is canonical JSON that Canonical copies
// unchanged: no whitespace, keys strictly increasing with no escapes in them,
// integers in the safe range without fraction, exponent or "-0", and strings
// whose escapes are exactly the ones Canonical writes.
func alreadyCanonical(in []byte) bool {
	i, ok := checkValue(in, 0, 0)
	return ok && i == len(in)
}

func checkValue(in []byte, i, depth int) (int, bool) {
	if i >= len(in) {
		return i, false
	}
	switch in[i] {
	case '"':
		j, _, ok := checkString(in, i)
		return j, ok
	case '{':
		if depth >= MaxNesting {
			return i, false
		}
		return checkObject(in, i, depth+1)
	case '[':
		if depth >= MaxNesting {
			return i, false
		}
		return checkArray(in, i, depth+1)
	case 't':
		return i + 4, len(in)-i >= 4 && string(in[i:i+4]) == "true"
	case 'f':
		return i + 5, len(in)-i >= 5 && string(in[i:i+5]) == "false"
	case 'n':
		return i + 4, len(in)-i >= 4 && string(in[i:i+4]) == "null"
	default:
		return checkInt(in, i)
	}
}

func checkObject(in []byte, i, depth int) (int, bool) {
	i++
	if i < len(in) && in[i] == '}' {
		return i + 1, true
	}
	var prev []byte
	for first := true; ; first = false {
		if i >= len(in) || in[i] != '"' {
			return i, false
		}
		j, esc, ok := checkString(in, i)
		if !ok || esc {
			return j, false // escaped keys compare decoded: the general path
		}
		key := in[i+1 : j-1]
		if !first && bytes.Compare(prev, key) >= 0 {
			return j, false
		}
		prev = key
		if j >= len(in) || in[j] != ':' {
			return j, false
		}
		if i, ok = checkValue(in, j+1, depth); !ok || i >= len(in) {
			return i, false
		}
		switch in[i] {
		case ',':
			i++
		case '}':
			return i + 1, true
		default:
			return i, false
		}
	}
}

func checkArray(in []byte, i, depth int) (int, bool) {
	i++
	if i < len(in) && in[i] == ']' {
		return i + 1, true
	}
	for {
		var ok bool
		if i, ok = checkValue(in, i, depth); !ok || i >= len(in) {
			return i, false
		}
		switch in[i] {
		case ',':
			i++
		case ']':
			return i + 1, true
		default:
			return i, false
		}
	}
}

// checkInt accepts an integer as Canonical writes it: no leading zeros, no
// "-0", nothing after the digits but a delimiter, and within the safe range.
func checkInt(in []byte, i int) (int, bool) {
	if in[i] == '-' {
		i++
	}
	d := i
	for i < len(in) && in[i] >= '0' && in[i] <= '9' {
		i++
	}
	switch n := i - d; {
	case n == 0:
		return i, false
	case in[d] == '0' && (n > 1 || d > 0 && in[d-1] == '-'):
		return i, false // leading zero, or -0
	case !inSafeRange(in[d:i]):
		return i, false
	}
	if i < len(in) && (in[i] == '.' || in[i] == 'e' || in[i] == 'E') {
		return i, false
	}
	return i, true
}

// checkString checks the string at in[i] ('"') and returns the index after
// its closing quote, and whether it holds an escape.
func checkString(in []byte, i int) (int, bool, bool) {
	i++
	esc := false
	for {
		i = skipPlain(in, i)
		if i >= len(in) {
			return i, esc, false
		}
		switch b := in[i]; {
		case b == '"':
			return i + 1, esc, true
		case b == '\\':
			n := canonicalEscapeLen(in[i:])
			if n == 0 {
				return i, esc, false
			}
			esc = true
			i += n
		case b < 0x20:
			return i, esc, false
		default:
			r, size := utf8.DecodeRune(in[i:])
			if r == utf8.RuneError && size == 1 {
				return i, esc, false
			}
			i += size
		}
	}
}

// canonicalEscapeLen returns the length of the escape at s[0] ('\\') if it is
// one Canonical writes (appendStringRune), else 0.
func canonicalEscapeLen(s []byte) int {
	if len(s) < 2 {
		return 0
	}
	switch s[1] {
	case '"', '\\', 'b', 't', 'n', 'f', 'r':
		return 2
	case 'u':
		if len(s) < 6 || s[2] != '0' || s[3] != '0' || (s[4] != '0' && s[4] != '1') {
			return 0
		}
		c := s[5]
		var lo byte
		switch {
		case c >= '0' && c <= '9':
			lo = c - '0'
		case c >= 'a' && c <= 'f':
			lo = c - 'a' + 10
		default:
			return 0 // uppercase hex is not what Canonical writes
		}
		switch (s[4]-'0')<<4 | lo {
		case '\b', '\t', '\n', '\f', '\r':
			return 0 // written as the short escape
		}
		return 6
	}
	return 0
}
