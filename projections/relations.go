package projections

import (
	"bytes"
	"encoding/binary"
	"encoding/json"

	"github.com/vmihailenco/msgpack/v5"
)

// Relations indexes the relationships between room events ("Forming
// relationships between events": a child names its parent in
// content."m.relates_to") and keeps what bundled aggregations need, so
// serving an event costs one point read when it has no children:
//
//	'c' ‖ childID                                             -> RelChild (msgpack)
//	'a' ‖ str(roomID) ‖ str(parentID) ‖ seq u64                -> childID (every relation)
//	'b' ‖ str(roomID) ‖ str(parentID) ‖ str(relType) ‖ seq      -> childID
//	'd' ‖ str(roomID) ‖ str(parentID) ‖ str(relType) ‖ str(type) ‖ seq -> childID
//	'e' ‖ str(roomID) ‖ str(parentID) ‖ str(sender) ‖ str(type) ‖ ts u64 ‖ childID -> seq (edits)
//	'g' ‖ str(roomID) ‖ parentID                              -> RelSummary (msgpack)
//	'h' ‖ str(roomID) ‖ latestSeq u64 ‖ rootID                -> ∅ (threads by latest reply)
//	'i' ‖ str(roomID) ‖ str(rootID) ‖ userID                  -> replies u64 (thread participants)
//	'k' ‖ str(roomID) ‖ str(parentID) ‖ str(type) ‖ key        -> count u64 (annotations)
//	'n' ‖ str(roomID) ‖ str(parentID) ‖ str(type) ‖ str(key) ‖ sender -> count u64 (annotations by sender)
//	'x' ‖ eventID                                             -> ∅ (redacted before it was seen)
//
// Only accepted events count, and only relationships within one room (the
// parent row is keyed by the child's room: "both events are in the same
// room"). Edits ('e') are kept only when the replacement itself is valid
// on its own ("must not have a state_key", "must have an m.new_content
// property"); the rules that need the original (same sender, same type,
// not itself an edit) are applied when reading, by looking up the
// original's sender and type in the key, because the original may arrive
// after its edits over federation. Keys order edits by origin_server_ts
// then event ID, which is the spec's "most recent" ("if two or more
// replacement events have identical origin_server_ts, the event with the
// lexicographically largest event_id is treated as more recent").
//
// "When a child event is redacted then the relationship is broken": an
// accepted m.room.redaction of a child removes its rows and de-aggregates
// it, as Synapse does when it persists a redaction.
type Relations struct{}

func (Relations) ID() byte     { return 'R' }
func (Relations) Name() string { return "relations" }

// Relationship types with server behaviour.
const (
	RelReplace    = "m.replace"
	RelThread     = "m.thread"
	RelAnnotation = "m.annotation"
	RelReference  = "m.reference"
)

// RelChild is what the index keeps about one child event.
type RelChild struct {
	Room   string `msgpack:"r"`
	Parent string `msgpack:"p"`
	Rel    string `msgpack:"t"`
	Type   string `msgpack:"y"`
	Sender string `msgpack:"s"`
	TS     int64  `msgpack:"ts"`
	Key    string `msgpack:"k,omitempty"`
	Seq    uint64 `msgpack:"q"`
	Edit   bool   `msgpack:"e,omitempty"` // indexed as a replacement ('e' row)
}

// RelSummary is the aggregate of one parent's children.
type RelSummary struct {
	Edits   uint64 `msgpack:"e,omitempty"` // valid-shaped m.replace children
	Threads uint64 `msgpack:"t,omitempty"` // m.thread children
	Latest  uint64 `msgpack:"l,omitempty"` // position of the latest m.thread child
	Refs    uint64 `msgpack:"r,omitempty"` // m.reference children
	Annots  uint64 `msgpack:"a,omitempty"` // m.annotation children
	Other   uint64 `msgpack:"o,omitempty"` // any other rel_type
}

func (s *RelSummary) empty() bool { return *s == RelSummary{} }

func relChildKey(id string) []byte { return append([]byte{'c'}, id...) }
func relParent(tag byte, room, parent string) []byte {
	return appendStr(appendStr([]byte{tag}, room), parent)
}
func relAllKey(room, parent string, seq uint64) []byte {
	return appendU64(relParent('a', room, parent), seq)
}
func relTypeKey(room, parent, rel string, seq uint64) []byte {
	return appendU64(appendStr(relParent('b', room, parent), rel), seq)
}
func relEvTypeKey(room, parent, rel, typ string, seq uint64) []byte {
	return appendU64(appendStr(appendStr(relParent('d', room, parent), rel), typ), seq)
}
func relEditGroup(room, parent, sender, typ string) []byte {
	return appendStr(appendStr(relParent('e', room, parent), sender), typ)
}
func relEditKey(c *RelChild, id string) []byte {
	return append(appendU64(relEditGroup(c.Room, c.Parent, c.Sender, c.Type), uint64(c.TS)^(1<<63)), id...)
}
func relSummaryKey(room, parent string) []byte {
	return append(appendStr([]byte{'g'}, room), parent...)
}
func relThreadKey(room string, latest uint64, root string) []byte {
	return append(appendU64(appendStr([]byte{'h'}, room), latest), root...)
}
func relParticipantKey(room, root, user string) []byte {
	return append(relParent('i', room, root), user...)
}
func relAnnotKey(room, parent, typ, key string) []byte {
	return append(appendStr(relParent('k', room, parent), typ), key...)
}
func relAnnotSenderKey(c *RelChild) []byte {
	return append(appendStr(appendStr(relParent('n', c.Room, c.Parent), c.Type), c.Key), c.Sender...)
}
func relRedactedKey(id string) []byte { return append([]byte{'x'}, id...) }

// relatesTo is the part of a PDU the index reads.
type relatesTo struct {
	OriginServerTS int64 `json:"origin_server_ts"`
	Content        struct {
		RelatesTo *struct {
			RelType string `json:"rel_type"`
			EventID string `json:"event_id"`
			Key     string `json:"key"`
		} `json:"m.relates_to"`
		NewContent json.RawMessage `json:"m.new_content"`
	} `json:"content"`
}

// parseRelatesTo decodes what the index reads of a PDU, as json.Unmarshal
// into relatesTo would (false: it fails); scanRelatesTo (jsonscan.go) reads
// the usual shapes without it.
func parseRelatesTo(pdu []byte) (relatesTo, bool) {
	ev, status := scanRelatesTo(pdu)
	switch status {
	case scanOK:
		return ev, true
	case scanInvalid:
		return relatesTo{}, false
	}
	ev = relatesTo{}
	return ev, json.Unmarshal(pdu, &ev) == nil
}

// relationOf parses a child's relationship; ok is false for events without
// a well-formed one ("Relationships which don't match the schema ... are
// simply ignored").
func relationOf(r *EventRecord) (RelChild, bool) {
	if !bytes.Contains(r.PDU, []byte(`"m.relates_to"`)) {
		return RelChild{}, false
	}
	ev, ok := parseRelatesTo(r.PDU)
	if !ok || ev.Content.RelatesTo == nil {
		return RelChild{}, false
	}
	rt := ev.Content.RelatesTo
	if rt.RelType == "" || rt.EventID == "" || rt.EventID == r.EventID {
		return RelChild{}, false
	}
	c := RelChild{Room: r.RoomID, Parent: rt.EventID, Rel: rt.RelType, Type: r.Type, Sender: r.Sender, TS: ev.OriginServerTS}
	switch rt.RelType {
	case RelAnnotation:
		if rt.Key == "" {
			return RelChild{}, false
		}
		c.Key = rt.Key
	case RelReplace:
		// "The replacement event (once decrypted, if appropriate) must have
		// an m.new_content property": an encrypted one is checked by clients.
		newContent := len(ev.Content.NewContent) > 0 && ev.Content.NewContent[0] == '{'
		c.Edit = r.StateKey == nil && (newContent || r.Type == "m.room.encrypted")
	}
	return c, true
}

// NeedsRead: a relation updates its parent's summary, and a redaction looks
// up the child it breaks.
func (Relations) NeedsRead(v any) bool {
	r, ok := v.(*EventRecord)
	if !ok || r.Status != Accepted {
		return false
	}
	if r.Type == "m.room.redaction" && r.Redacts != "" {
		return true
	}
	return bytes.Contains(r.PDU, []byte(`"m.relates_to"`))
}

func (Relations) Apply(tx *Tx, seq uint64, v any) error {
	r, ok := v.(*EventRecord)
	if !ok || r.Status != Accepted {
		return nil
	}
	if r.Type == "m.room.redaction" && r.Redacts != "" {
		return unrelate(tx, r.Redacts)
	}
	rc, ok := relationOf(r)
	if !ok {
		return nil
	}
	if _, gone, err := tx.Get(relRedactedKey(r.EventID)); err != nil || gone {
		return err
	}
	c := rc // on the heap (relate keeps a pointer): only for relations
	c.Seq = seq
	return relate(tx, r.EventID, &c)
}

func getSummary(tx *Tx, room, parent string) (RelSummary, error) {
	var s RelSummary
	b, ok, err := tx.Get(relSummaryKey(room, parent))
	if err != nil || !ok {
		return s, err
	}
	return s, msgpack.Unmarshal(b, &s)
}

func putSummary(tx *Tx, room, parent string, s *RelSummary) error {
	if s.empty() {
		return tx.Delete(relSummaryKey(room, parent))
	}
	b, err := msgpack.Marshal(s)
	if err != nil {
		return err
	}
	return tx.Set(relSummaryKey(room, parent), b)
}

func addCount(tx *Tx, k []byte, delta int64) error {
	var n uint64
	b, ok, err := tx.Get(k)
	if err != nil {
		return err
	}
	if ok && len(b) == 8 {
		n = binary.BigEndian.Uint64(b)
	}
	if delta < 0 && n <= uint64(-delta) {
		return tx.Delete(k)
	}
	return tx.Set(k, appendU64(nil, uint64(int64(n)+delta)))
}

func relate(tx *Tx, id string, c *RelChild) error {
	b, err := msgpack.Marshal(c)
	if err != nil {
		return err
	}
	if err := tx.Set(relChildKey(id), b); err != nil {
		return err
	}
	for _, k := range [][]byte{
		relAllKey(c.Room, c.Parent, c.Seq),
		relTypeKey(c.Room, c.Parent, c.Rel, c.Seq),
		relEvTypeKey(c.Room, c.Parent, c.Rel, c.Type, c.Seq),
	} {
		if err := tx.Set(k, []byte(id)); err != nil {
			return err
		}
	}
	s, err := getSummary(tx, c.Room, c.Parent)
	if err != nil {
		return err
	}
	switch c.Rel {
	case RelReplace:
		if c.Edit {
			s.Edits++
			if err := tx.Set(relEditKey(c, id), appendU64(nil, c.Seq)); err != nil {
				return err
			}
		} else {
			s.Other++
		}
	case RelThread:
		if s.Latest != 0 {
			if err := tx.Delete(relThreadKey(c.Room, s.Latest, c.Parent)); err != nil {
				return err
			}
		}
		s.Threads++
		s.Latest = max(s.Latest, c.Seq)
		if err := tx.Set(relThreadKey(c.Room, s.Latest, c.Parent), nil); err != nil {
			return err
		}
		if err := addCount(tx, relParticipantKey(c.Room, c.Parent, c.Sender), 1); err != nil {
			return err
		}
	case RelReference:
		s.Refs++
	case RelAnnotation:
		s.Annots++
		if err := addCount(tx, relAnnotKey(c.Room, c.Parent, c.Type, c.Key), 1); err != nil {
			return err
		}
		if err := addCount(tx, relAnnotSenderKey(c), 1); err != nil {
			return err
		}
	default:
		s.Other++
	}
	return putSummary(tx, c.Room, c.Parent, &s)
}

// unrelate removes a redacted child from the index, or remembers the
// redaction for a child not seen yet.
func unrelate(tx *Tx, id string) error {
	b, ok, err := tx.Get(relChildKey(id))
	if err != nil {
		return err
	}
	if !ok {
		return tx.Set(relRedactedKey(id), nil)
	}
	var c RelChild
	if err := msgpack.Unmarshal(b, &c); err != nil {
		return err
	}
	for _, k := range [][]byte{
		relChildKey(id),
		relAllKey(c.Room, c.Parent, c.Seq),
		relTypeKey(c.Room, c.Parent, c.Rel, c.Seq),
		relEvTypeKey(c.Room, c.Parent, c.Rel, c.Type, c.Seq),
	} {
		if err := tx.Delete(k); err != nil {
			return err
		}
	}
	if err := tx.Set(relRedactedKey(id), nil); err != nil {
		return err
	}
	s, err := getSummary(tx, c.Room, c.Parent)
	if err != nil {
		return err
	}
	dec := func(n *uint64) {
		if *n > 0 {
			*n--
		}
	}
	switch c.Rel {
	case RelReplace:
		if c.Edit {
			dec(&s.Edits)
			if err := tx.Delete(relEditKey(&c, id)); err != nil {
				return err
			}
		} else {
			dec(&s.Other)
		}
	case RelThread:
		dec(&s.Threads)
		if err := addCount(tx, relParticipantKey(c.Room, c.Parent, c.Sender), -1); err != nil {
			return err
		}
		if s.Latest == c.Seq {
			if err := tx.Delete(relThreadKey(c.Room, s.Latest, c.Parent)); err != nil {
				return err
			}
			// The thread's latest reply is now the newest one left.
			s.Latest = 0
			keys, err := tx.scanKeys(appendStr(relParent('b', c.Room, c.Parent), RelThread))
			if err != nil {
				return err
			}
			// (In a replay batch the scan reads the database beneath the
			// batch, which still holds this child's row: skip it.)
			for i := len(keys) - 1; i >= 0; i-- {
				if len(keys[i]) < 8 {
					continue
				}
				if q := binary.BigEndian.Uint64(keys[i][len(keys[i])-8:]); q != c.Seq {
					s.Latest = q
					break
				}
			}
			if s.Latest != 0 {
				if err := tx.Set(relThreadKey(c.Room, s.Latest, c.Parent), nil); err != nil {
					return err
				}
			}
		}
	case RelReference:
		dec(&s.Refs)
	case RelAnnotation:
		dec(&s.Annots)
		if err := addCount(tx, relAnnotKey(c.Room, c.Parent, c.Type, c.Key), -1); err != nil {
			return err
		}
		if err := addCount(tx, relAnnotSenderKey(&c), -1); err != nil {
			return err
		}
	default:
		dec(&s.Other)
	}
	return putSummary(tx, c.Room, c.Parent, &s)
}

// relationTypes are the event types whose PDUs the fold reads for
// m.relates_to (apply skips the PDU bytes of other types, codec.go): the
// spec's messages, reactions, stickers and polls, and encrypted events.
// A relation carried by another event type is not indexed.
var relationTypes = []string{
	"m.room.message", "m.room.encrypted", "m.reaction", "m.sticker",
	"m.poll.start", "m.poll.response", "m.poll.end",
	"org.matrix.msc3381.poll.start", "org.matrix.msc3381.poll.response", "org.matrix.msc3381.poll.end",
	"m.key.verification.ready", "m.key.verification.start", "m.key.verification.cancel",
	"m.key.verification.accept", "m.key.verification.key", "m.key.verification.mac", "m.key.verification.done",
}

func init() {
	register(Relations{})
	for _, t := range relationTypes {
		pduTypes[t] = true
	}
}

// RelationSummary returns the aggregate of a parent's children in a room
// (the zero summary when it has none): one point read.
func (s *Store) RelationSummary(room, parent string) (RelSummary, error) {
	var sum RelSummary
	b, ok, err := s.get(row('R', relSummaryKey(room, parent)))
	if err != nil || !ok {
		return sum, err
	}
	err = msgpack.Unmarshal(b, &sum)
	return sum, err
}

// RelationChild returns what the index knows about a child event.
func (s *Store) RelationChild(id string) (RelChild, error) {
	var c RelChild
	b, ok, err := s.get(row('R', relChildKey(id)))
	if err != nil || !ok {
		return c, orNotFound(err)
	}
	err = msgpack.Unmarshal(b, &c)
	return c, err
}

// Relation is one child of a parent, by log position.
type Relation struct {
	Seq     uint64
	EventID string
}

// Relations calls fn for the children of a parent in a room with
// positions in (after, before), oldest first or newest first when
// backwards; relType and evType narrow it when not empty (evType needs
// relType). fn returns false to stop.
func (s *Store) Relations(room, parent, relType, evType string, after, before uint64, backwards bool, fn func(Relation) bool) error {
	var prefix []byte
	switch {
	case relType == "":
		prefix = relParent('a', room, parent)
	case evType == "":
		prefix = appendStr(relParent('b', room, parent), relType)
	default:
		prefix = appendStr(appendStr(relParent('d', room, parent), relType), evType)
	}
	if before <= after+1 {
		return nil
	}
	lo := appendU64(append([]byte(nil), prefix...), after+1)
	hi := appendU64(append([]byte(nil), prefix...), before)
	return s.scan('R', lo, hi, backwards, func(k, v []byte) bool {
		if len(k) != len(prefix)+8 {
			return true
		}
		return fn(Relation{Seq: binary.BigEndian.Uint64(k[len(prefix):]), EventID: string(v)})
	})
}

// LatestEdit returns the position of the most recent valid-shaped
// replacement of parent sent by sender with event type typ (ErrNotFound if
// none): one seek.
func (s *Store) LatestEdit(room, parent, sender, typ string) (uint64, error) {
	var seq uint64
	found := false
	err := s.scan('R', relEditGroup(room, parent, sender, typ), nil, true, func(_, v []byte) bool {
		if len(v) == 8 {
			seq, found = binary.BigEndian.Uint64(v), true
		}
		return !found
	})
	if err == nil && !found {
		err = ErrNotFound
	}
	return seq, err
}

// ThreadParticipant reports whether user sent a reply in the thread of root.
func (s *Store) ThreadParticipant(room, root, user string) (bool, error) {
	_, ok, err := s.get(row('R', relParticipantKey(room, root, user)))
	return ok, err
}

// Thread is a thread root of a room with its latest reply's position.
type Thread struct {
	Root   string
	Latest uint64
}

// Threads calls fn for a room's thread roots whose latest reply is before
// position before, most recently active first. fn returns false to stop.
func (s *Store) Threads(room string, before uint64, fn func(Thread) bool) error {
	prefix := appendStr([]byte{'h'}, room)
	hi := appendU64(append([]byte(nil), prefix...), before)
	return s.scan('R', prefix, hi, true, func(k, _ []byte) bool {
		if len(k) < len(prefix)+8 {
			return true
		}
		return fn(Thread{Latest: binary.BigEndian.Uint64(k[len(prefix):]), Root: string(k[len(prefix)+8:])})
	})
}

// AnnotationCount is the number of annotations with one key.
type AnnotationCount struct {
	Type, Key string
	Count     uint64
}

// Annotations returns the annotation counts of a parent, by type and key.
func (s *Store) Annotations(room, parent string) ([]AnnotationCount, error) {
	prefix := relParent('k', room, parent)
	var out []AnnotationCount
	err := s.scan('R', prefix, nil, false, func(k, v []byte) bool {
		typ, rest, ok := readStr(k[len(prefix):])
		if ok && len(v) == 8 {
			out = append(out, AnnotationCount{Type: typ, Key: string(rest), Count: binary.BigEndian.Uint64(v)})
		}
		return true
	})
	return out, err
}

// HasAnnotation reports whether sender has an (unredacted) annotation of
// parent with event type typ and key: "Homeservers should prevent users
// from sending a second annotation for a given event with identical event
// type and annotation key (unless the first event has been redacted)."
func (s *Store) HasAnnotation(room, parent, typ, key, sender string) (bool, error) {
	_, ok, err := s.get(row('R', relAnnotSenderKey(&RelChild{Room: room, Parent: parent, Type: typ, Key: key, Sender: sender})))
	return ok, err
}
