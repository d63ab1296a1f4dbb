package projections

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"strings"
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

func searchKey(room string, field byte, tok string, seq uint64) []byte {
	k := append(searchRoomPrefix(room, field), tok...)
	return appendU64(append(k, 0), seq)
}

// searchable returns the field and text an event is indexed under.
func searchable(r *EventRecord) (byte, string, bool) {
	var field byte
	var member string
	switch {
	case r.Type == "m.room.message" && r.StateKey == nil:
		field, member = SearchBody, "body"
	case r.Type == "m.room.name" && r.StateKey != nil && *r.StateKey == "":
		field, member = SearchName, "name"
	case r.Type == "m.room.topic" && r.StateKey != nil && *r.StateKey == "":
		field, member = SearchTopic, "topic"
	default:
		return 0, "", false
	}
	if !bytes.Contains(r.PDU, []byte(`"`+member+`"`)) {
		return 0, "", false
	}
	var ev struct {
		Content map[string]json.RawMessage `json:"content"`
	}
	if json.Unmarshal(r.PDU, &ev) != nil {
		return 0, "", false
	}
	var text string
	if json.Unmarshal(ev.Content[member], &text) != nil || text == "" {
		return 0, "", false
	}
	return field, text, true
}

func (Search) Apply(tx *Tx, seq uint64, v any) error {
	r, ok := v.(*EventRecord)
	if !ok || r.Status != Accepted {
		return nil
	}
	field, text, ok := searchable(r)
	if !ok {
		return nil
	}
	toks := SearchTokens(text)
	counts := make(map[string]uint16, len(toks))
	order := toks[:0:0]
	for _, t := range toks {
		if counts[t] == 0 {
			order = append(order, t)
		}
		if counts[t] < 0xffff {
			counts[t]++
		}
	}
	// Written in token order of first appearance (never map order).
	for _, t := range order {
		var n [2]byte
		binary.BigEndian.PutUint16(n[:], counts[t])
		if err := tx.Set(searchKey(r.RoomID, field, t, seq), n[:]); err != nil {
			return err
		}
	}
	return nil
}

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
