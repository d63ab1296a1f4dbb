package bench

import (
	"bytes"
	"encoding/json"
	"strings"
)

// The listeners of a delivery scenario read every event of every /sync
// answer, and the load generator runs on the machine it measures: with
// encoding/json, reading the answers cost the generator about as much CPU
// as the homeserver spent writing them. decodeJSON reads a /sync answer
// with a scanner that looks only at the members the scenarios use and
// skips the rest without building anything. It accepts any member order
// and any extra members; on anything it does not expect (the cases are
// those of the listeners' scan, syncview.go, with which it shares the
// object walk) it falls back to encoding/json, so the result is the same
// for every server.

// decodeJSON fills a from a /sync answer.
func (a *syncAnswer) decodeJSON(data []byte) error {
	// The strings of the answer are cut from one copy of it, not
	// allocated one by one.
	p := scanner{b: data, s: string(data)}
	if p.syncAnswer(a) && p.end() {
		return nil
	}
	*a = syncAnswer{}
	return json.Unmarshal(data, a)
}

// jsonDecoder is implemented by answers with their own decoder.
type jsonDecoder interface{ decodeJSON([]byte) error }

// scanner is a cursor over a JSON document. Its methods report false on
// anything unexpected; the caller then falls back to encoding/json.
type scanner struct {
	b []byte
	s string // b as a string: decoded strings without escapes are cut from it
	i int
}

func (p *scanner) ws() {
	// Servers write compact JSON: the next byte is rarely white space.
	if p.i < len(p.b) && p.b[p.i] > ' ' {
		return
	}
	p.wsSlow()
}

func (p *scanner) wsSlow() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *scanner) end() bool {
	p.ws()
	return p.i == len(p.b)
}

// peek returns the next non-space byte (0 at the end).
func (p *scanner) peek() byte {
	p.ws()
	if p.i < len(p.b) {
		return p.b[p.i]
	}
	return 0
}

func (p *scanner) lit(s string) bool {
	if len(p.b)-p.i < len(s) || string(p.b[p.i:p.i+len(s)]) != s {
		return false
	}
	p.i += len(s)
	return true
}

// str reads a string value. A string without escapes or non-ASCII bytes
// is cut from s when the scanner has it.
func (p *scanner) str() (string, bool) {
	p.ws() // start must be the opening quote
	start := p.i
	raw, escaped, ok := p.vrawString()
	if !ok {
		return "", false
	}
	if !escaped {
		if p.s != "" {
			return p.s[start+1 : p.i-1], true
		}
		return string(raw), true
	}
	var s string
	if json.Unmarshal(p.b[start:p.i], &s) != nil {
		return "", false
	}
	return s, true
}

// nstr reads a string or null into *dst (left as it is for null).
func (p *scanner) nstr(dst *string) bool {
	if p.null() {
		return true
	}
	s, ok := p.str()
	*dst = s
	return ok
}

func (p *scanner) open(c byte) bool {
	if p.peek() != c {
		return false
	}
	p.i++
	return true
}

// number consumes a JSON number (the grammar, exactly).
func (p *scanner) number() bool {
	b, i := p.b, p.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i]-'1' < 9:
		for i++; i < len(b) && b[i]-'0' < 10; i++ {
		}
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		d := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == d {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		d := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == d {
			return false
		}
	}
	p.i = i
	return true
}

// raw consumes a value and returns its bytes.
func (p *scanner) raw() (json.RawMessage, bool) {
	p.ws()
	start := p.i
	if !p.skipv(0) {
		return nil, false
	}
	// A copy, as encoding/json makes: the answer's buffer is reused by
	// the next request.
	return json.RawMessage(bytes.Clone(p.b[start:p.i])), true
}

// null consumes a null and reports it; otherwise it leaves the cursor.
func (p *scanner) null() bool {
	if p.peek() == 'n' {
		return p.lit("null")
	}
	return false
}

// knownKeys are the member names the scanner looks for.
var knownKeys = []string{"next_batch", "rooms", "join", "timeline", "events", "limited", "prev_batch", "state",
	"event_id", "type", "sender", "state_key", "content", "body"}

// knownByLen[n] are the known names of n bytes.
var knownByLen = func() (l [16][]string) {
	for _, n := range knownKeys {
		l[len(n)] = append(l[len(n)], n)
	}
	return l
}()

// foldsToKnown reports a name that encoding/json would match to a known
// member only case-insensitively; the scanner leaves such documents to it.
func foldsToKnown(k []byte) bool {
	for _, c := range k {
		if c >= 0x80 {
			// The Kelvin sign and the long s fold to ASCII letters.
			for _, n := range knownKeys {
				if len(k) > len(n) && strings.EqualFold(string(k), n) {
					return true
				}
			}
			return false
		}
	}
	// ASCII folds only to a name of the same length.
	if len(k) >= len(knownByLen) {
		return false
	}
	for _, n := range knownByLen[len(k)] {
		if string(k) != n && asciiLowerEqual(k, n) {
			return true
		}
	}
	return false
}

// asciiLowerEqual reports whether k lowercased is n (lowercase ASCII).
func asciiLowerEqual(k []byte, n string) bool {
	for i := range len(k) {
		c := k[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != n[i] {
			return false
		}
	}
	return true
}

func (p *scanner) syncAnswer(a *syncAnswer) bool {
	o := p.vobject()
	for p.next(&o) {
		switch string(o.k) {
		case "next_batch":
			o.read(0, p.nstr(&a.NextBatch))
		case "rooms":
			o.read(1, p.null() || p.vfield("join", func() bool { return p.null() || p.rooms(a) }))
		default:
			o.skip(p)
		}
	}
	return o.ok
}

// rooms reads rooms.join.
func (p *scanner) rooms(a *syncAnswer) bool {
	a.Rooms.Join = map[string]joinedRoomAnswer{}
	return p.vmap(func(id []byte) bool {
		// A repeated room: the last one counts, as with encoding/json.
		var jr joinedRoomAnswer
		ok := p.joinedRoom(&jr)
		a.Rooms.Join[string(id)] = jr
		return ok
	})
}

func (p *scanner) joinedRoom(jr *joinedRoomAnswer) bool {
	o := p.vobject()
	for p.next(&o) {
		switch string(o.k) {
		case "timeline":
			o.read(0, p.null() || p.timeline(&jr.Timeline))
		case "state":
			o.read(1, p.null() || p.vfield("events", func() bool {
				if p.null() {
					return true
				}
				jr.State.Events = []json.RawMessage{}
				return p.varray(func() bool {
					r, ok := p.raw()
					jr.State.Events = append(jr.State.Events, r)
					return ok
				})
			}))
		default:
			o.skip(p)
		}
	}
	return o.ok
}

func (p *scanner) timeline(tl *timeline) bool {
	o := p.vobject()
	for p.next(&o) {
		switch string(o.k) {
		case "events":
			o.read(0, p.null() || p.events(tl))
		case "limited":
			o.read(1, p.vbool(&tl.Limited))
		case "prev_batch":
			o.read(2, p.nstr(&tl.PrevBatch))
		default:
			o.skip(p)
		}
	}
	return o.ok
}

func (p *scanner) events(tl *timeline) bool {
	tl.Events = []clientEvent{}
	return p.varray(func() bool {
		tl.Events = append(tl.Events, clientEvent{})
		return p.null() || p.event(&tl.Events[len(tl.Events)-1])
	})
}

func (p *scanner) event(ev *clientEvent) bool {
	o := p.vobject()
	for p.next(&o) {
		switch string(o.k) {
		case "event_id":
			o.read(0, p.nstr(&ev.EventID))
		case "type":
			o.read(1, p.nstr(&ev.Type))
		case "sender":
			o.read(2, p.nstr(&ev.Sender))
		case "state_key":
			o.read(3, p.null() || p.strPtr(&ev.StateKey))
		case "content":
			o.read(4, p.null() || p.vfield("body", func() bool { return p.nstr(&ev.Content.Body) }))
		default:
			o.skip(p)
		}
	}
	return o.ok
}

// strPtr reads a string into a new *dst.
func (p *scanner) strPtr(dst **string) bool {
	s, ok := p.str()
	*dst = &s
	return ok
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}
