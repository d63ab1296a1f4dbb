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
// and any extra members; on anything it does not expect it falls back to
// encoding/json, so the result is the same for every server.

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

// rawString returns the bytes of a string between its quotes and whether
// they need more than a copy to decode (an escape, or non-ASCII bytes,
// which encoding/json checks for valid UTF-8).
func (p *scanner) rawString() (raw []byte, escaped, ok bool) {
	if p.peek() != '"' {
		return nil, false, false
	}
	start := p.i + 1
	b := p.b
	for j := start; j < len(b); j++ {
		c := b[j]
		if c >= 0x20 && c < 0x80 && c != '"' && c != '\\' {
			continue
		}
		switch {
		case c == '"':
			p.i = j + 1
			return b[start:j], escaped, true
		case c == '\\':
			escaped = true
			j++ // the escaped byte cannot end the string
			if j >= len(b) {
				return nil, false, false
			}
			switch b[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if j+4 >= len(b) || !isHex(b[j+1]) || !isHex(b[j+2]) || !isHex(b[j+3]) || !isHex(b[j+4]) {
					return nil, false, false
				}
				j += 4
			default:
				return nil, false, false
			}
		case c < 0x20:
			return nil, false, false
		default:
			escaped = true // non-ASCII: let encoding/json decide on the UTF-8
		}
	}
	return nil, false, false
}

func (p *scanner) str() (string, bool) {
	p.ws() // start must be the opening quote: the string is cut from s
	start := p.i
	raw, escaped, ok := p.rawString()
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

// key reads the next member name of an object whose '{' was consumed;
// done reports the closing '}' (consumed). first tracks the separator.
// The name is returned as bytes, valid until the next call; escaped names
// are decoded.
func (p *scanner) key(first *bool) (k []byte, done, ok bool) {
	c := p.peek()
	if c == '}' {
		p.i++
		return nil, true, true
	}
	if !*first {
		if c != ',' {
			return nil, false, false
		}
		p.i++
	}
	*first = false
	start := p.i
	raw, escaped, ok := p.rawString()
	if !ok || p.peek() != ':' {
		return nil, false, false
	}
	p.i++
	if escaped {
		var s string
		if json.Unmarshal(p.b[start:p.i-1], &s) != nil {
			return nil, false, false
		}
		raw = []byte(s)
	}
	if foldsToKnown(raw) {
		return nil, false, false
	}
	return raw, false, true
}

// elem moves to the next element of an array whose '[' was consumed; done
// reports the closing ']' (consumed).
func (p *scanner) elem(first *bool) (done, ok bool) {
	c := p.peek()
	if c == ']' {
		p.i++
		return true, true
	}
	if !*first {
		if c != ',' {
			return false, false
		}
		p.i++
	}
	*first = false
	return false, true
}

func (p *scanner) open(c byte) bool {
	if p.peek() != c {
		return false
	}
	p.i++
	return true
}

// skip consumes any value.
func (p *scanner) skip() bool {
	switch c := p.peek(); {
	case c == '"':
		_, _, ok := p.rawString()
		return ok
	case c == '{':
		p.i++
		for first := true; ; {
			_, done, ok := p.key(&first)
			if !ok {
				return false
			}
			if done {
				return true
			}
			if !p.skip() {
				return false
			}
		}
	case c == '[':
		p.i++
		for first := true; ; {
			done, ok := p.elem(&first)
			if !ok {
				return false
			}
			if done {
				return true
			}
			if !p.skip() {
				return false
			}
		}
	case c == 't':
		return p.lit("true")
	case c == 'f':
		return p.lit("false")
	case c == 'n':
		return p.lit("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	}
	return false
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
	if !p.skip() {
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
	if !p.open('{') {
		return false
	}
	for first := true; ; {
		k, done, ok := p.key(&first)
		if !ok {
			return false
		}
		if done {
			return true
		}
		switch string(k) {
		case "next_batch":
			if a.NextBatch, ok = p.str(); !ok {
				return false
			}
		case "rooms":
			if !p.null() && !p.rooms(a) {
				return false
			}
		default:
			if !p.skip() {
				return false
			}
		}
	}
}

func (p *scanner) rooms(a *syncAnswer) bool {
	if !p.open('{') {
		return false
	}
	for first := true; ; {
		k, done, ok := p.key(&first)
		if !ok {
			return false
		}
		if done {
			return true
		}
		if string(k) != "join" {
			if !p.skip() {
				return false
			}
			continue
		}
		if p.null() {
			a.Rooms.Join = nil
			continue
		}
		if !p.open('{') {
			return false
		}
		if a.Rooms.Join == nil {
			a.Rooms.Join = map[string]joinedRoomAnswer{}
		}
		for first := true; ; {
			room, done, ok := p.key(&first)
			if !ok {
				return false
			}
			if done {
				break
			}
			id := string(room)
			var jr joinedRoomAnswer
			if !p.joinedRoom(&jr) {
				return false
			}
			a.Rooms.Join[id] = jr
		}
	}
}

func (p *scanner) joinedRoom(jr *joinedRoomAnswer) bool {
	if !p.open('{') {
		return false
	}
	for first := true; ; {
		k, done, ok := p.key(&first)
		if !ok {
			return false
		}
		if done {
			return true
		}
		switch string(k) {
		case "timeline":
			ok = p.null() || p.timeline(&jr.Timeline)
		case "state":
			ok = p.null() || p.stateEvents(jr)
		default:
			ok = p.skip()
		}
		if !ok {
			return false
		}
	}
}

func (p *scanner) timeline(tl *timeline) bool {
	if !p.open('{') {
		return false
	}
	for first := true; ; {
		k, done, ok := p.key(&first)
		if !ok {
			return false
		}
		if done {
			return true
		}
		switch string(k) {
		case "events":
			tl.Events = nil
			if p.null() {
				continue
			}
			if !p.open('[') {
				return false
			}
			tl.Events = []clientEvent{}
			for first := true; ; {
				done, ok := p.elem(&first)
				if !ok {
					return false
				}
				if done {
					break
				}
				tl.Events = append(tl.Events, clientEvent{})
				if !p.event(&tl.Events[len(tl.Events)-1]) {
					return false
				}
			}
		case "limited":
			switch {
			case p.lit("true"):
				tl.Limited = true
			case p.lit("false"):
				tl.Limited = false
			case p.null():
			default:
				return false
			}
		case "prev_batch":
			if !p.null() {
				if tl.PrevBatch, ok = p.str(); !ok {
					return false
				}
			}
		default:
			if !p.skip() {
				return false
			}
		}
	}
}

func (p *scanner) stateEvents(jr *joinedRoomAnswer) bool {
	if !p.open('{') {
		return false
	}
	for first := true; ; {
		k, done, ok := p.key(&first)
		if !ok {
			return false
		}
		if done {
			return true
		}
		if string(k) != "events" {
			if !p.skip() {
				return false
			}
			continue
		}
		jr.State.Events = nil
		if p.null() {
			continue
		}
		if !p.open('[') {
			return false
		}
		jr.State.Events = []json.RawMessage{}
		for first := true; ; {
			done, ok := p.elem(&first)
			if !ok {
				return false
			}
			if done {
				break
			}
			r, ok := p.raw()
			if !ok {
				return false
			}
			jr.State.Events = append(jr.State.Events, r)
		}
	}
}

func (p *scanner) event(ev *clientEvent) bool {
	if !p.open('{') {
		return false
	}
	for first := true; ; {
		k, done, ok := p.key(&first)
		if !ok {
			return false
		}
		if done {
			return true
		}
		switch string(k) {
		case "event_id":
			ev.EventID, ok = p.str()
		case "type":
			ev.Type, ok = p.str()
		case "sender":
			ev.Sender, ok = p.str()
		case "state_key":
			if p.null() {
				ev.StateKey = nil
				continue
			}
			var sk string
			sk, ok = p.str()
			ev.StateKey = &sk
		case "content":
			ok = p.null() || p.content(ev)
		default:
			ok = p.skip()
		}
		if !ok {
			return false
		}
	}
}

func (p *scanner) content(ev *clientEvent) bool {
	if !p.open('{') {
		return false
	}
	for first := true; ; {
		k, done, ok := p.key(&first)
		if !ok {
			return false
		}
		if done {
			return true
		}
		if string(k) == "body" && !p.null() {
			ev.Content.Body, ok = p.str()
		} else if string(k) != "body" {
			ok = p.skip()
		}
		if !ok {
			return false
		}
	}
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}
