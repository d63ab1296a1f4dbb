package projections

import (
	"bytes"
	"encoding/binary"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// Search is the full-text index behind POST /search: lowercased word
// tokens of the searchable keys ("content.body", "content.name",
// "content.topic", the keys of the spec's room_events criteria, which
// Synapse indexes for m.room.message, m.room.name and m.room.topic events)
// to the events holding them:
//
//	'w' ‖ str(roomID) ‖ field u8 ‖ token ‖ 0x00 ‖ seq u64 -> occurrences u16
//
// A token never holds 0x00, so a prefix of a token scans every token it
// starts ("term:*", as Synapse's Postgres search matches). Keys by room
// first: a search runs over the rooms the user is in. Redacted events stay
// indexed and are dropped when read (their content is gone when served).
type Search struct{}

func (Search) ID() byte     { return 'S' }
func (Search) Name() string { return "search" }

// Search fields, as stored.
const (
	SearchBody  byte = 'b'
	SearchName  byte = 'n'
	SearchTopic byte = 't'
)

// maxTokenBytes bounds one token; longer words are cut (and still match by
// prefix).
const maxTokenBytes = 64

// SearchTokens splits text into lowercased tokens: runs of letters and
// digits. The index and the queries use the same split.
func SearchTokens(text string) []string {
	var out []string
	var cur strings.Builder
	flush := func() {
		if cur.Len() > 0 {
			out = append(out, cur.String())
			cur.Reset()
		}
	}
	for _, r := range text {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			r = unicode.ToLower(r)
			if cur.Len()+utf8.RuneLen(r) <= maxTokenBytes {
				cur.WriteRune(r)
			}
			continue
		}
		flush()
	}
	flush()
	return out
}

func searchRoomPrefix(room string, field byte) []byte {
	return append(appendStr([]byte{'w'}, room), field)
}

// searchField returns the field an event is indexed under and the member
// of its content that holds the text.
func searchField(r *EventRecord) (byte, string, bool) {
	switch {
	case r.Type == "m.room.message" && r.StateKey == nil:
		return SearchBody, "body", true
	case r.Type == "m.room.name" && r.StateKey != nil && *r.StateKey == "":
		return SearchName, "name", true
	case r.Type == "m.room.topic" && r.StateKey != nil && *r.StateKey == "":
		return SearchTopic, "topic", true
	}
	return 0, "", false
}

// searchScratch is one fold's reusable space: message after message, the
// index writes its rows without allocating.
type searchScratch struct {
	text   []byte
	toks   []byte // tokens, back to back
	ends   []int  // end of each token in toks
	first  []int  // index of each distinct token's first occurrence
	counts []uint16
	seen   map[string]int // distinct token -> index in first, for long texts
	key    []byte
}

var searchPool = sync.Pool{New: func() any { return new(searchScratch) }}

// appendTokens appends the tokens of text, split as SearchTokens splits
// them, to toks, recording where each ends.
func appendTokens(toks []byte, ends []int, text []byte) ([]byte, []int) {
	start := len(toks)
	for i := 0; i < len(text); {
		if c := text[i]; c < utf8.RuneSelf {
			i++
			switch {
			case 'a' <= c && c <= 'z' || '0' <= c && c <= '9':
			case 'A' <= c && c <= 'Z':
				c += 'a' - 'A'
			default:
				if len(toks) > start {
					ends = append(ends, len(toks))
					start = len(toks)
				}
				continue
			}
			if len(toks)-start < maxTokenBytes {
				toks = append(toks, c)
			}
			continue
		}
		r, n := utf8.DecodeRune(text[i:])
		i += n
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			r = unicode.ToLower(r)
			if len(toks)-start+utf8.RuneLen(r) <= maxTokenBytes {
				toks = utf8.AppendRune(toks, r)
			}
			continue
		}
		if len(toks) > start {
			ends = append(ends, len(toks))
			start = len(toks)
		}
	}
	if len(toks) > start {
		ends = append(ends, len(toks))
	}
	return toks, ends
}

// tok returns the i-th token of sc.toks.
func (sc *searchScratch) tok(i int) []byte {
	lo := 0
	if i > 0 {
		lo = sc.ends[i-1]
	}
	return sc.toks[lo:sc.ends[i]]
}

// count groups sc's tokens: sc.first lists each distinct token once, in
// order of first appearance, and sc.counts how often it occurs (at most
// 0xffff).
func (sc *searchScratch) count() {
	sc.first, sc.counts = sc.first[:0], sc.counts[:0]
	const linear = 32 // distinct tokens compared one by one before a map pays
	clear(sc.seen)
	for i := range sc.ends {
		t := sc.tok(i)
		j := -1
		if len(sc.first) <= linear {
			for k, f := range sc.first {
				if bytes.Equal(sc.tok(f), t) {
					j = k
					break
				}
			}
		} else {
			if sc.seen == nil {
				sc.seen = map[string]int{}
			}
			if len(sc.seen) == 0 {
				for k, f := range sc.first {
					sc.seen[string(sc.tok(f))] = k
				}
			}
			if k, ok := sc.seen[string(t)]; ok {
				j = k
			} else {
				sc.seen[string(t)] = len(sc.first)
			}
		}
		if j < 0 {
			sc.first = append(sc.first, i)
			sc.counts = append(sc.counts, 1)
		} else if sc.counts[j] < 0xffff {
			sc.counts[j]++
		}
	}
}

func (Search) Apply(tx *Tx, seq uint64, v any) error {
	r, ok := v.(*EventRecord)
	if !ok || r.Status != Accepted {
		return nil
	}
	field, member, ok := searchField(r)
	if !ok || !bytes.Contains(r.PDU, quotedMember(field)) {
		return nil
	}
	sc := searchPool.Get().(*searchScratch)
	defer searchPool.Put(sc)
	if sc.text, ok = contentString(sc.text[:0], r.PDU, member); !ok || len(sc.text) == 0 {
		return nil
	}
	sc.toks, sc.ends = appendTokens(sc.toks[:0], sc.ends[:0], sc.text)
	sc.count()
	// Written in token order of first appearance (never map order).
	sc.key = append(appendStr(append(sc.key[:0], 'w'), r.RoomID), field)
	prefix := len(sc.key)
	for j, i := range sc.first {
		sc.key = appendU64(append(append(sc.key[:prefix], sc.tok(i)...), 0), seq)
		var n [2]byte
		binary.BigEndian.PutUint16(n[:], sc.counts[j])
		if err := tx.Set(sc.key, n[:]); err != nil {
			return err
		}
	}
	return nil
}

// quotedMember is a field's member name in quotes: a PDU without it has
// nothing to index (a cheap test before scanning the JSON).
func quotedMember(field byte) []byte {
	switch field {
	case SearchBody:
		return quotedBody
	case SearchName:
		return quotedName
	}
	return quotedTopic
}

var (
	quotedBody  = []byte(`"body"`)
	quotedName  = []byte(`"name"`)
	quotedTopic = []byte(`"topic"`)
)

func init() {
	register(Search{})
	// The fold reads the PDUs of the searchable types (codec.go).
	for _, t := range []string{"m.room.message", "m.room.name", "m.room.topic"} {
		pduTypes[t] = true
	}
}

// SearchHit is one indexed token of one event.
type SearchHit struct {
	Seq   uint64
	Token string
	Count uint16
}

// SearchPrefix calls fn for every indexed token of a room's field that
// starts with prefix (in token order, then position). fn returns false to
// stop.
func (s *Store) SearchPrefix(room string, field byte, prefix string, fn func(SearchHit) bool) error {
	base := searchRoomPrefix(room, field)
	lo := append(append([]byte(nil), base...), prefix...)
	return s.scan('S', lo, nil, false, func(k, v []byte) bool {
		rest := k[len(base):]
		if len(rest) < 9 || rest[len(rest)-9] != 0 {
			return true
		}
		h := SearchHit{Token: string(rest[:len(rest)-9]), Seq: binary.BigEndian.Uint64(rest[len(rest)-8:])}
		if len(v) == 2 {
			h.Count = binary.BigEndian.Uint16(v)
		}
		return fn(h)
	})
}
