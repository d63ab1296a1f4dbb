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
	o := p.vobject()
	for p.next(&o) {
		switch string(o.k) {
		case "next_batch":
			o.read(0, p.vnstr(&v.nextBatch))
		case "rooms":
			o.read(1, p.null() || p.vfield("join", func() bool { return p.null() || p.vjoin(v, watch) }))
		default:
			o.skip(&p)
		}
	}
	return o.ok && p.end()
}

// vjoin reads rooms.join, keeping the rooms watch knows.
func (p *scanner) vjoin(v *syncView, watch func([]byte) int) bool {
	return p.vmap(func(id []byte) bool {
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
		return true
	})
}

func (p *scanner) vjoinedRoom(v *syncView, rv *roomView) bool {
	o := p.vobject()
	for p.next(&o) {
		switch string(o.k) {
		case "timeline":
			o.read(0, p.null() || p.vtimeline(v, rv))
		case "state":
			// The state events are raw JSON to encoding/json: any
			// values, in an array or null.
			o.read(1, p.null() || p.vfield("events", func() bool {
				c := p.peek()
				return (c == '[' || c == 'n') && p.skipv(0)
			}))
		default:
			o.skip(p)
		}
	}
	return o.ok
}

func (p *scanner) vtimeline(v *syncView, rv *roomView) bool {
	o := p.vobject()
	for p.next(&o) {
		switch string(o.k) {
		case "events":
			o.read(0, p.null() || p.varray(func() bool {
				v.events = append(v.events, eventView{})
				return p.null() || p.vevent(&v.events[len(v.events)-1])
			}))
		case "limited":
			o.read(1, p.vbool(&rv.limited))
		case "prev_batch":
			o.read(2, p.vnstr(&rv.prevBatch))
		default:
			o.skip(p)
		}
	}
	return o.ok
}

func (p *scanner) vevent(ev *eventView) bool {
	o := p.vobject()
	for p.next(&o) {
		switch string(o.k) {
		case "event_id":
			o.read(0, p.vnstr(&ev.eventID))
		case "type":
			o.read(1, p.vnstr(&ev.typ))
		case "sender":
			o.read(2, p.vnstr(nil)) // type-checked only
		case "state_key":
			o.read(3, p.vnstr(nil))
		case "content":
			o.read(4, p.null() || p.vfield("body", func() bool { return p.vnstr(&ev.body) }))
		default:
			o.skip(p)
		}
	}
	return o.ok
}

// vobj walks the members of a struct-like object for a reader that
// switches on their names:
//
//	o := p.vobject()
//	for p.next(&o) {
//		switch string(o.k) {
//		case "body":
//			o.read(0, p.vnstr(&ev.body))
//		default:
//			o.skip(p)
//		}
//	}
//	return o.ok
//
// A wanted member met twice gives up (encoding/json keeps the last, the
// scan has read the first), as do escaped names (next) and names
// encoding/json would fold onto a wanted one (skip: every name a reader
// wants must be in knownKeys).
type vobj struct {
	k     []byte // the current member's name
	first bool
	ok    bool
	seen  uint32
}

// vobject opens a struct-like object for next.
func (p *scanner) vobject() vobj {
	return vobj{first: true, ok: p.open('{')}
}

// next moves to the next member of o, its name in o.k, and reports
// false at the end of the object or on an error (o.ok tells which).
// Escaped names are refused (fallback).
func (p *scanner) next(o *vobj) bool {
	if !o.ok {
		return false
	}
	if done, ok := p.elemSep('}', &o.first); !ok || done {
		o.ok = ok
		return false
	}
	k, esc, ok := p.vrawString()
	if o.k, o.ok = k, ok && !esc && p.peek() == ':'; !o.ok {
		return false
	}
	p.i++
	return true
}

// read records that the member numbered id (0 to 31, one per name) was
// read, ok telling whether its value was valid.
func (o *vobj) read(id int, ok bool) {
	if !ok || o.seen&(1<<id) != 0 {
		o.ok = false
	}
	o.seen |= 1 << id
}

// skip skips the value of a member the reader does not want.
func (o *vobj) skip(p *scanner) {
	o.ok = p.skipMember(o.k)
}

// vfield reads a struct-like object of which the scan wants one member,
// name (read reads its value).
func (p *scanner) vfield(name string, read func() bool) bool {
	o := p.vobject()
	for p.next(&o) {
		if string(o.k) == name {
			o.read(0, read())
		} else {
			o.skip(p)
		}
	}
	return o.ok
}

// vmap reads an object used as a map: entry reads the value of the
// member named id. Map keys are matched exactly, never folded; escaped
// ones give up (next).
func (p *scanner) vmap(entry func(id []byte) bool) bool {
	o := p.vobject()
	for p.next(&o) {
		o.ok = entry(o.k)
	}
	return o.ok
}

// varray reads an array, elem reading each element.
func (p *scanner) varray(elem func() bool) bool {
	if !p.open('[') {
		return false
	}
	for first := true; ; {
		if done, ok := p.elemSep(']', &first); !ok || done {
			return ok
		}
		if !elem() {
			return false
		}
	}
}

// vnstr reads a string or null into *dst (left as it is for null); a nil
// dst only checks the value.
func (p *scanner) vnstr(dst *[]byte) bool {
	if p.null() {
		return true
	}
	if dst == nil {
		_, _, ok := p.vrawString()
		return ok
	}
	s, ok := p.vstr()
	*dst = s
	return ok
}

// vbool reads a bool or null into *dst (left as it is for null).
func (p *scanner) vbool(dst *bool) bool {
	p.ws()
	switch {
	case p.lit("true"):
		*dst = true
	case p.lit("false"):
		*dst = false
	default:
		return p.null()
	}
	return true
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
		return p.skipString()
	case c == '{' || c == '[':
		if depth >= maxSkipDepth {
			return false
		}
		p.i++
		for first := true; ; {
			// '}' and ']' follow their opening brackets by two.
			if done, ok := p.elemSep(c+2, &first); !ok || done {
				return ok
			}
			if c == '{' && (p.peek() != '"' || !p.skipString() || !p.open(':')) {
				return false
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

// skipString consumes the string that starts at the cursor.
func (p *scanner) skipString() (ok bool) {
	p.i, _, ok = stringEnd(p.b, p.i+1, false)
	p.i++
	return ok
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
	return p.vfield("event_id", func() bool { return p.vnstr(nil) })
}
