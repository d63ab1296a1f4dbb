package stateres

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"sort"
	"strings"
	"unicode/utf8"
)

// verifySigned implements "If any signature in signed matches any public key
// in the m.room.third_party_invite event, allow." The signed object is
// verified as signed JSON (appendices, "Signing JSON"): its canonical form
// without "signatures" and "unsigned", against each ed25519 signature in
// signed.signatures. stateres keeps its own small canonical encoder for this
// one object so that it depends on nothing but the event struct.
func verifySigned(signed json.RawMessage, keys [][]byte) bool {
	if len(keys) == 0 {
		return false
	}
	obj, ok := object(signed)
	if !ok {
		return false
	}
	sigsRaw, ok := obj["signatures"]
	if !ok {
		return false
	}
	sigs, ok := object(sigsRaw)
	if !ok {
		return false
	}
	delete(obj, "signatures")
	delete(obj, "unsigned")
	var buf bytes.Buffer
	if !canonicalObject(&buf, obj) {
		return false
	}
	msg := buf.Bytes()
	servers := make([]string, 0, len(sigs))
	for s := range sigs {
		servers = append(servers, s)
	}
	sort.Strings(servers)
	for _, server := range servers {
		block, ok := object(sigs[server])
		if !ok {
			continue
		}
		for keyID, sigRaw := range block {
			if !strings.HasPrefix(keyID, "ed25519:") {
				continue
			}
			s, ok := jsonString(sigRaw)
			if !ok {
				continue
			}
			sig := decodeBase64(s)
			if len(sig) != ed25519.SignatureSize {
				continue
			}
			for _, k := range keys {
				if ed25519.Verify(ed25519.PublicKey(k), msg, sig) {
					return true
				}
			}
		}
	}
	return false
}

// canonicalValue writes raw as canonical JSON (appendices, "Canonical
// JSON"): no insignificant whitespace, object keys sorted by code point,
// strings as UTF-8 with only the mandatory escapes. It reports false for
// input it cannot encode.
func canonicalValue(buf *bytes.Buffer, raw json.RawMessage, depth int) bool {
	if depth > 64 {
		return false
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return false
	}
	switch raw[0] {
	case '{':
		o, ok := object(raw)
		if !ok {
			return false
		}
		return canonicalObjectDepth(buf, o, depth)
	case '[':
		var arr []json.RawMessage
		if json.Unmarshal(raw, &arr) != nil {
			return false
		}
		buf.WriteByte('[')
		for i, e := range arr {
			if i > 0 {
				buf.WriteByte(',')
			}
			if !canonicalValue(buf, e, depth+1) {
				return false
			}
		}
		buf.WriteByte(']')
		return true
	case '"':
		s, ok := jsonString(raw)
		if !ok {
			return false
		}
		canonicalString(buf, s)
		return true
	default:
		// Numbers, true, false, null: validate and keep the literal.
		var v any
		if json.Unmarshal(raw, &v) != nil {
			return false
		}
		buf.Write(raw)
		return true
	}
}

func canonicalObject(buf *bytes.Buffer, o map[string]json.RawMessage) bool {
	return canonicalObjectDepth(buf, o, 0)
}

func canonicalObjectDepth(buf *bytes.Buffer, o map[string]json.RawMessage, depth int) bool {
	keys := make([]string, 0, len(o))
	for k := range o {
		keys = append(keys, k)
	}
	sort.Strings(keys) // byte order of UTF-8 is code point order
	buf.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			buf.WriteByte(',')
		}
		canonicalString(buf, k)
		buf.WriteByte(':')
		if !canonicalValue(buf, o[k], depth+1) {
			return false
		}
	}
	buf.WriteByte('}')
	return true
}

func canonicalString(buf *bytes.Buffer, s string) {
	const hex = "0123456789abcdef"
	buf.WriteByte('"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				buf.WriteString("\ufffd")
			} else {
				buf.WriteString(s[i : i+size])
			}
			i += size
			continue
		}
		switch c {
		case '"':
			buf.WriteString(`\"`)
		case '\\':
			buf.WriteString(`\\`)
		case '\b':
			buf.WriteString(`\b`)
		case '\f':
			buf.WriteString(`\f`)
		case '\n':
			buf.WriteString(`\n`)
		case '\r':
			buf.WriteString(`\r`)
		case '\t':
			buf.WriteString(`\t`)
		default:
			if c < 0x20 {
				buf.WriteString(`\u00`)
				buf.WriteByte(hex[c>>4])
				buf.WriteByte(hex[c&0xf])
			} else {
				buf.WriteByte(c)
			}
		}
		i++
	}
	buf.WriteByte('"')
}
