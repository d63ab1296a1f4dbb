package bench

import (
	"encoding/binary"
	"encoding/json"
	"math/bits"
)

// A listener reads every message of the run once per /sync answer, so the
// read is the load generator's largest per-message cost after the HTTP
// exchange itself. syncView is the listener's reading of an answer: the
// few members delivery accounting needs (next_batch; per joined room the
// timeline's events with their type, body and event ID, limited,
// prev_batch), as slices of the answer's bytes, in buffers reused from
// one answer to the next. Nothing is allocated per event.
//
// The result must equal what encoding/json makes of the answer (the
// decodeJSON path, fuzzed against it). The fast scan therefore handles
// only documents whose meaning is plain: it gives up (and the listener
// falls back to decodeJSON) on a repeated member of the objects it reads,
// a member name that encoding/json would match case-insensitively, an
// escaped member name, a value of the wrong type, or nesting deeper than
// maxSkipDepth. Skipped values are checked against the JSON grammar only:
// encoding/json ignores unknown members whatever they hold, as long as the
// document is valid.

// syncView is the reusable reading of one /sync answer.
type syncView struct {
	nextBatch []byte
	rooms     []roomView // joined rooms the listener watches, in answer order
	events    []eventView
}

// roomView is one watched joined room: its timeline events are
// view.events[first:end].
type roomView struct {
	room       int // index in the listener's rooms
	first, end int
	limited    bool
	prevBatch  []byte
}

// eventView is one timeline event. A missing or null member is empty.
type eventView struct {
	typ, body, eventID []byte
}

func (v *syncView) reset() {
	v.nextBatch = nil
	v.rooms = v.rooms[:0]
	v.events = v.events[:0]
}

// roomEvents returns the timeline events of room i of the view.
func (v *syncView) roomEvents(i int) []eventView {
	return v.events[v.rooms[i].first:v.rooms[i].end]
}

// parse reads data into v. watch maps a room ID to its index in the
// listener's rooms, or -1 for a room it does not watch. The error is
// encoding/json's when the answer is not a valid sync answer.
func (v *syncView) parse(data []byte, watch func(roomID []byte) int) error {
	if v.scan(data, watch) {
		return nil
	}
	var a syncAnswer
	if err := a.decodeJSON(data); err != nil {
		v.reset()
		return err
	}
	v.fromAnswer(&a, watch)
	return nil
}

// fromAnswer fills v from an answer decoded by decodeJSON.
func (v *syncView) fromAnswer(a *syncAnswer, watch func(roomID []byte) int) {
	v.reset()
	v.nextBatch = []byte(a.NextBatch)
	for id, jr := range a.Rooms.Join {
		ri := watch([]byte(id))
		if ri < 0 {
			continue
		}
		rv := roomView{room: ri, first: len(v.events), limited: jr.Timeline.Limited, prevBatch: []byte(jr.Timeline.PrevBatch)}
		for _, ev := range jr.Timeline.Events {
			v.events = append(v.events, eventView{typ: []byte(ev.Type), body: []byte(ev.Content.Body), eventID: []byte(ev.EventID)})
		}
		rv.end = len(v.events)
		v.rooms = append(v.rooms, rv)
	}
}

// maxSkipDepth bounds the nesting the fast scan follows (encoding/json
// allows 10000); deeper documents are left to encoding/json.
const maxSkipDepth = 500

// scan is the fast path of parse; false means "ask encoding/json".
func (v *syncView) scan(data []byte, watch func([]byte) int) bool {
	v.reset()
	p := scanner{b: data}
	if !p.open('{') {
		return false
	}
	var seen uint8
	for first := true; ; {
		k, done, ok := p.vkey(&first)
		if !ok {
			return false
		}
		if done {
			break
		}
		switch string(k) {
		case "next_batch":
			if seen&1 != 0 {
				return false
			}
			seen |= 1
			if !p.null() {
				if v.nextBatch, ok = p.vstr(); !ok {
					return false
				}
			}
		case "rooms":
			if seen&2 != 0 {
				return false
			}
			seen |= 2
			if !p.null() && !p.vrooms(v, watch) {
				return false
			}
		default:
			if !p.skipMember(k) {
				return false
			}
		}
	}
	return p.end()
}

func (p *scanner) vrooms(v *syncView, watch func([]byte) int) bool {
	if !p.open('{') {
		return false
	}
	seenJoin := false
	for first := true; ; {
		k, done, ok := p.vkey(&first)
		if !ok {
			return false
		}
		if done {
			return true
		}
		if string(k) != "join" {
			if !p.skipMember(k) {
				return false
			}
			continue
		}
		if seenJoin {
			return false
		}
		seenJoin = true
		if p.null() {
			continue
		}
		if !p.open('{') {
			return false
		}
		for first := true; ; {
			// Room IDs are map keys: matched exactly, never folded.
			if done, ok := p.elemSep('}', &first); !ok {
				return false
			} else if done {
				break
			}
			id, esc, ok := p.vrawString()
			if !ok || esc || p.peek() != ':' {
				return false
			}
			p.i++
			ri := watch(id)
			if ri >= 0 {
				for _, rv := range v.rooms {
					if rv.room == ri {
						return false // a repeated room: encoding/json keeps the last
					}
				}
			}
			mark := len(v.events)
			rv := roomView{room: ri, first: mark}
			if !p.vjoinedRoom(v, &rv) {
				return false
			}
			rv.end = len(v.events)
			if ri >= 0 {
				v.rooms = append(v.rooms, rv)
			} else {
				// Read (encoding/json type-checks it) but not kept.
				v.events = v.events[:mark]
			}
		}
	}
}

func (p *scanner) vjoinedRoom(v *syncView, rv *roomView) bool {
	if !p.open('{') {
		return false
	}
	var seen uint8
	for first := true; ; {
		k, done, ok := p.vkey(&first)
		if !ok {
			return false
		}
		if done {
			return true
		}
		switch string(k) {
		case "timeline":
			if seen&1 != 0 {
				return false
			}
			seen |= 1
			ok = p.null() || p.vtimeline(v, rv)
		case "state":
			if seen&2 != 0 {
				return false
			}
			seen |= 2
			ok = p.null() || p.vstate()
		default:
			ok = p.skipMember(k)
		}
		if !ok {
			return false
		}
	}
}

// vstate checks a state section: an object whose events member, if
// present, is an array or null (its elements are raw JSON to
// encoding/json, so any value).
func (p *scanner) vstate() bool {
	if !p.open('{') {
		return false
	}
	seen := false
	for first := true; ; {
		k, done, ok := p.vkey(&first)
		if !ok {
			return false
		}
		if done {
			return true
		}
		if string(k) != "events" {
			if !p.skipMember(k) {
				return false
			}
			continue
		}
		if seen {
			return false
		}
		seen = true
		if c := p.peek(); c != '[' && c != 'n' {
			return false
		}
		if !p.skipv(0) {
			return false
		}
	}
}

func (p *scanner) vtimeline(v *syncView, rv *roomView) bool {
	if !p.open('{') {
		return false
	}
	var seen uint8
	for first := true; ; {
		k, done, ok := p.vkey(&first)
		if !ok {
			return false
		}
		if done {
			return true
		}
		switch string(k) {
		case "events":
			if seen&1 != 0 {
				return false
			}
			seen |= 1
			if p.null() {
				continue
			}
			if !p.open('[') {
				return false
			}
			for first := true; ; {
				if done, ok := p.elemSep(']', &first); !ok {
					return false
				} else if done {
					break
				}
				v.events = append(v.events, eventView{})
				if !p.null() && !p.vevent(&v.events[len(v.events)-1]) {
					return false
				}
			}
		case "limited":
			if seen&2 != 0 {
				return false
			}
			seen |= 2
			p.ws()
			switch {
			case p.lit("true"):
				rv.limited = true
			case p.lit("false"), p.null():
			default:
				return false
			}
		case "prev_batch":
			if seen&4 != 0 {
				return false
			}
			seen |= 4
			if !p.null() {
				if rv.prevBatch, ok = p.vstr(); !ok {
					return false
				}
			}
		default:
			if !p.skipMember(k) {
				return false
			}
		}
	}
}

func (p *scanner) vevent(ev *eventView) bool {
	if !p.open('{') {
		return false
	}
	var seen uint8
	for first := true; ; {
		k, done, ok := p.vkey(&first)
		if !ok {
			return false
		}
		if done {
			return true
		}
		var bit uint8
		var dst *[]byte
		switch string(k) {
		case "event_id":
			bit, dst = 1, &ev.eventID
		case "type":
			bit, dst = 2, &ev.typ
		case "sender":
			bit = 4
		case "state_key":
			bit = 8
		case "content":
			if seen&16 != 0 {
				return false
			}
			seen |= 16
			if !p.null() && !p.vcontent(ev) {
				return false
			}
			continue
		default:
			if !p.skipMember(k) {
				return false
			}
			continue
		}
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		if p.null() {
			continue
		}
		s, ok := p.vstr()
		if !ok {
			return false
		}
		if dst != nil {
			*dst = s
		}
	}
}

func (p *scanner) vcontent(ev *eventView) bool {
	if !p.open('{') {
		return false
	}
	seen := false
	for first := true; ; {
		k, done, ok := p.vkey(&first)
		if !ok {
			return false
		}
		if done {
			return true
		}
		if string(k) != "body" {
			if !p.skipMember(k) {
				return false
			}
			continue
		}
		if seen {
			return false
		}
		seen = true
		if !p.null() {
			if ev.body, ok = p.vstr(); !ok {
				return false
			}
		}
	}
}

// elemSep moves to the next member or element of an object or array
// whose opening bracket was consumed; done reports the closing bracket
// (consumed).
func (p *scanner) elemSep(closing byte, first *bool) (done, ok bool) {
	c := p.peek()
	if c == closing {
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

// vkey reads the next member name of a struct-like object. Escaped names
// are refused (fallback); callers pass names they do not read to
// skipMember.
func (p *scanner) vkey(first *bool) (k []byte, done, ok bool) {
	if done, ok := p.elemSep('}', first); !ok || done {
		return nil, done, ok
	}
	k, esc, ok := p.vrawString()
	if !ok || esc || p.peek() != ':' {
		return nil, false, false
	}
	p.i++
	return k, false, true
}

// skipMember skips the value of a member the bench does not read. A name
// that encoding/json would fold onto a member the bench reads ("Type")
// is refused instead (fallback).
func (p *scanner) skipMember(k []byte) bool {
	if len(k) < len(knownByLen) && len(knownByLen[len(k)]) > 0 {
		for _, c := range k {
			if c-'A' < 26 {
				if foldsToKnown(k) {
					return false
				}
				break
			}
		}
	}
	return p.skipv(0)
}

// vstr reads a string value. Strings with escapes or non-ASCII bytes are
// decoded by encoding/json (which also replaces invalid UTF-8).
func (p *scanner) vstr() ([]byte, bool) {
	start := p.i
	raw, esc, ok := p.vrawString()
	if !ok {
		return nil, false
	}
	if !esc {
		return raw, true
	}
	var s string
	if json.Unmarshal(p.b[start:p.i], &s) != nil {
		return nil, false
	}
	return []byte(s), true
}

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// vrawString reads a string after optional white space and returns its
// bytes between the quotes; esc reports an escape or a non-ASCII byte.
// Eight bytes are examined at a time: the usual strings (IDs, bodies)
// have neither, and only the closing quote stops the loop.
func (p *scanner) vrawString() (raw []byte, esc, ok bool) {
	if p.peek() != '"' {
		return nil, false, false
	}
	start := p.i + 1
	end, esc, ok := stringEnd(p.b, start, true)
	if !ok {
		return nil, false, false
	}
	p.i = end + 1
	return p.b[start:end], esc, true
}

// stringEnd returns the index of the closing quote of the string whose
// content starts at b[j]. It checks the grammar (no control bytes, valid
// escapes); esc reports an escape, or with high set a byte >= 0x80.
func stringEnd(b []byte, j int, high bool) (end int, esc, ok bool) {
	var hm uint64
	if high {
		hm = msb
	}
	for j+8 <= len(b) {
		w := binary.LittleEndian.Uint64(b[j:])
		q := w ^ (lsb * '"')
		s := w ^ (lsb * '\\')
		// A byte is flagged if it is '"', '\\', < 0x20, or (high)
		// >= 0x80. The tests can also flag bytes above a flagged one
		// (borrows), never below, so the lowest flag is exact.
		m := ((q-lsb)&^q | (s-lsb)&^s | (w-lsb*0x20)&^w) & msb
		if m |= w & hm; m != 0 {
			j += bits.TrailingZeros64(m) >> 3
			if b[j] == '"' {
				return j, false, true
			}
			break
		}
		j += 8
	}
	return stringEndSlow(b, j, high)
}

// stringEndSlow is stringEnd from an escape, a byte it must look at, or
// the last 7 bytes of the document.
func stringEndSlow(b []byte, j int, high bool) (end int, esc, ok bool) {
	for ; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return j, esc, true
		case c == '\\':
			esc = true
			j++
			if j >= len(b) {
				return 0, false, false
			}
			switch b[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if j+4 >= len(b) || !isHex(b[j+1]) || !isHex(b[j+2]) || !isHex(b[j+3]) || !isHex(b[j+4]) {
					return 0, false, false
				}
				j += 4
			default:
				return 0, false, false
			}
		case c < 0x20:
			return 0, false, false
		case c >= 0x80 && high:
			esc = true
		}
	}
	return 0, false, false
}

// skipv consumes any value, checking only the grammar.
func (p *scanner) skipv(depth int) bool {
	switch c := p.peek(); {
	case c == '"':
		end, _, ok := stringEnd(p.b, p.i+1, false)
		p.i = end + 1
		return ok
	case c == '{':
		if depth >= maxSkipDepth {
			return false
		}
		p.i++
		for first := true; ; {
			if done, ok := p.elemSep('}', &first); !ok {
				return false
			} else if done {
				return true
			}
			if p.peek() != '"' {
				return false
			}
			end, _, ok := stringEnd(p.b, p.i+1, false)
			if !ok {
				return false
			}
			p.i = end + 1
			if p.peek() != ':' {
				return false
			}
			p.i++
			if !p.skipv(depth + 1) {
				return false
			}
		}
	case c == '[':
		if depth >= maxSkipDepth {
			return false
		}
		p.i++
		for first := true; ; {
			if done, ok := p.elemSep(']', &first); !ok {
				return false
			} else if done {
				return true
			}
			if !p.skipv(depth + 1) {
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

// checkSendAnswer fails where decoding the answer of PUT /send into
// struct{ EventID string `json:"event_id"` } with encoding/json would.
func checkSendAnswer(data []byte) error {
	p := scanner{b: data}
	if p.sendAnswer() && p.end() {
		return nil
	}
	var ans struct {
		EventID string `json:"event_id"`
	}
	return json.Unmarshal(data, &ans)
}

func (p *scanner) sendAnswer() bool {
	if !p.open('{') {
		return false
	}
	for first := true; ; {
		if done, ok := p.elemSep('}', &first); !ok {
			return false
		} else if done {
			return true
		}
		k, esc, ok := p.vrawString()
		if !ok || esc || p.peek() != ':' {
			return false
		}
		p.i++
		switch {
		case string(k) == "event_id":
			if !p.null() {
				if _, _, ok := p.vrawString(); !ok {
					return false
				}
			}
		case len(k) == len("event_id") && asciiLowerEqual(k, "event_id"):
			return false // encoding/json would fold it onto event_id
		default:
			if !p.skipv(0) {
				return false
			}
		}
	}
}
