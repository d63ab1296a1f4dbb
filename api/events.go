package api

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"

	"engram/dag"
	"engram/projections"
)

// pduView is the part of a PDU a client sees.
type pduView struct {
	Type           string          `json:"type"`
	Content        json.RawMessage `json:"content"`
	Sender         string          `json:"sender"`
	OriginServerTS int64           `json:"origin_server_ts"`
	StateKey       *string         `json:"state_key"`
	Redacts        string          `json:"redacts"`
}

// appendClientEvent appends the client-format JSON of an event (the "client
// event" of the spec: no hashes, signatures, prev/auth events or depth).
// The viewer's own transaction ID goes in unsigned.
func appendClientEvent(b []byte, rec *projections.EventRecord, viewer, device string, now int64) []byte {
	return appendClientEventWith(b, rec, viewer, device, now, nil)
}

// appendClientEventWith is appendClientEvent with extra members of unsigned
// (already encoded, `"key":value` pairs separated by commas), such as
// redacted_because or prev_content.
func appendClientEventWith(b []byte, rec *projections.EventRecord, viewer, device string, now int64, unsigned []byte) []byte {
	c := clientBaseOf(rec)
	b = append(b, c.json...)
	b = strconv.AppendInt(b, max(0, now-c.ts), 10)
	if txn, ok := txnFor(rec.Txn, viewer, device); ok {
		b = append(b, `,"transaction_id":`...)
		b = appendJSONString(b, txn)
	}
	if len(unsigned) > 0 {
		b = append(b, ',')
		b = append(b, unsigned...)
	}
	return append(b, "}}"...)
}

// clientBase is the part of an event's client JSON that is the same for
// every viewer: everything up to the value of unsigned.age. It is built once
// per record and shared by all listeners through the event cache.
type clientBase struct {
	json []byte
	ts   int64
	// plainAt: the event was found unredacted and without served
	// aggregations as of this log position (0: not known); served.go.
	plainAt atomic.Uint64
	// plainGen: the tracker's generation when the event was last known
	// plain; while it has not moved, nothing can have changed (served.go).
	plainGen atomic.Uint64
}

func clientBaseOf(rec *projections.EventRecord) *clientBase {
	return rec.Memo(func() any { return buildClientBase(rec) }).(*clientBase)
}

// markPlain records that the event was plain as of position p, read with
// the tracker at generation gen.
func (c *clientBase) markPlain(p, gen uint64) {
	for {
		old := c.plainAt.Load()
		if p <= old || c.plainAt.CompareAndSwap(old, p) {
			break
		}
	}
	c.plainGen.Store(gen)
}

func buildClientBase(rec *projections.EventRecord) *clientBase {
	var v pduView
	if err := json.Unmarshal(rec.PDU, &v); err != nil {
		v.Content = json.RawMessage("{}")
	}
	if len(v.Content) == 0 {
		v.Content = json.RawMessage("{}")
	}
	b := make([]byte, 0, len(v.Content)+256)
	b = append(b, `{"content":`...)
	b = append(b, v.Content...)
	b = append(b, `,"event_id":`...)
	b = appendJSONString(b, rec.EventID)
	b = append(b, `,"origin_server_ts":`...)
	b = strconv.AppendInt(b, v.OriginServerTS, 10)
	if v.Redacts == "" && v.Type == "m.room.redaction" {
		// Room versions 11+ carry redacts in content; Synapse also serves it
		// at the top level so older clients keep working.
		var c struct {
			Redacts string `json:"redacts"`
		}
		if json.Unmarshal(v.Content, &c) == nil {
			v.Redacts = c.Redacts
		}
	}
	if v.Redacts != "" {
		b = append(b, `,"redacts":`...)
		b = appendJSONString(b, v.Redacts)
	}
	b = append(b, `,"room_id":`...)
	b = appendJSONString(b, rec.RoomID)
	b = append(b, `,"sender":`...)
	b = appendJSONString(b, v.Sender)
	if v.StateKey != nil {
		b = append(b, `,"state_key":`...)
		b = appendJSONString(b, *v.StateKey)
	}
	b = append(b, `,"type":`...)
	b = appendJSONString(b, v.Type)
	b = append(b, `,"unsigned":{"age":`...)
	return &clientBase{json: b, ts: v.OriginServerTS}
}

// txnKey builds the idempotency key of a client send: per device, room and
// transaction ID, so the same transaction ID in another room is a new send.
func txnKey(user, device, room, txn string) string {
	return user + "\x00" + device + "\x00" + room + "\x00" + txn
}

// txnFor returns the transaction ID of a send if viewer's device made it.
// It runs for every event of every response: no allocation.
func txnFor(key, viewer, device string) (string, bool) {
	if key == "" {
		return "", false
	}
	rest, ok := strings.CutPrefix(key, viewer)
	if !ok || len(rest) == 0 || rest[0] != 0 {
		return "", false
	}
	rest, ok = strings.CutPrefix(rest[1:], device)
	if !ok || len(rest) == 0 || rest[0] != 0 {
		return "", false
	}
	rest = rest[1:]
	i := strings.IndexByte(rest, 0) // end of the room ID
	if i < 0 {
		return "", false
	}
	return rest[i+1:], true
}

// appendEventList appends a JSON array of client events at positions seqs.
func (s *Server) appendEventList(b []byte, seqs []uint64, viewer, device string, now int64) ([]byte, error) {
	b = append(b, '[')
	for i, seq := range seqs {
		rec, err := s.store.Record(seq)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = s.appendServedEvent(b, rec, seq, viewer, device, now)
	}
	return append(b, ']'), nil
}

// appendServedEvent appends an event as this server serves it to clients:
// in its redacted form once an applicable redaction was accepted ("the
// server should ... send the redacted event" with
// unsigned.redacted_because), and for state events with what it replaced
// (unsigned.replaces_state, prev_content, prev_sender), as Synapse does. seq
// is the event's log position.
func (s *Server) appendServedEvent(b []byte, rec *projections.EventRecord, seq uint64, viewer, device string, now int64) []byte {
	if rec.StateKey == nil && s.hub != nil {
		return s.appendServedMessage(b, rec, viewer, device, now)
	}
	served, because := s.servedRecord(rec)
	var unsigned []byte
	if because != nil {
		unsigned = append(unsigned, `"redacted_because":`...)
		unsigned = appendClientEventWith(unsigned, because, viewer, device, now, nil)
	}
	if rec.StateKey != nil && rec.Status == projections.Accepted && seq > 1 {
		if prevID, _, err := s.store.StateEventAt(rec.RoomID, rec.Type, *rec.StateKey, seq-1); err == nil && prevID != rec.EventID {
			if prev, _, err := s.store.Event(prevID); err == nil {
				prev, _ = s.servedRecord(prev)
				var pv pduView
				if json.Unmarshal(prev.PDU, &pv) == nil && len(pv.Content) > 0 {
					if len(unsigned) > 0 {
						unsigned = append(unsigned, ',')
					}
					unsigned = append(unsigned, `"prev_content":`...)
					unsigned = append(unsigned, pv.Content...)
					unsigned = append(unsigned, `,"prev_sender":`...)
					unsigned = appendJSONString(unsigned, pv.Sender)
					unsigned = append(unsigned, `,"replaces_state":`...)
					unsigned = appendJSONString(unsigned, prevID)
				}
			}
		}
	}
	unsigned = s.appendBundledRelations(unsigned, rec, because != nil, viewer, device, now) // relations.go
	return appendClientEventWith(b, served, viewer, device, now, unsigned)
}

// appendServedMessage is appendServedEvent for a non-state event. An event
// found unredacted and without served aggregations is marked so in its
// shared client form, and served from it without reads while nothing
// relating to it happens (served.go): every listener of a busy room serves
// the same new events.
func (s *Server) appendServedMessage(b []byte, rec *projections.EventRecord, viewer, device string, now int64) []byte {
	t := &s.hub.served
	t.advance(s, s.log.Last())
	base := clientBaseOf(rec)
	if t.stillPlain(rec, base) {
		return appendClientEventWith(b, rec, viewer, device, now, nil)
	}
	gen := t.gen.Load()
	from := t.scanned.Load() // the reads below reflect at least this position
	if t.roomPlain(s, rec.RoomID) {
		base.markPlain(from, gen)
		return appendClientEventWith(b, rec, viewer, device, now, nil)
	}
	served, because, row := s.servedRecordRow(rec)
	bundle := false
	if rec.Status == projections.Accepted {
		// appendBundledRelations adds nothing without these children.
		sum, err := s.store.RelationSummary(rec.RoomID, rec.EventID)
		bundle = err == nil && (sum.Edits > 0 || sum.Threads > 0 || sum.Refs > 0)
	}
	if !row && !bundle {
		// A redaction that does not apply now may after a power level
		// change: only the absence of any is plain.
		base.markPlain(from, gen)
		return appendClientEventWith(b, rec, viewer, device, now, nil)
	}
	var unsigned []byte
	if because != nil {
		unsigned = append(unsigned, `"redacted_because":`...)
		unsigned = appendClientEventWith(unsigned, because, viewer, device, now, nil)
	}
	if bundle {
		unsigned = s.appendBundledRelations(unsigned, rec, because != nil, viewer, device, now) // relations.go
	}
	return appendClientEventWith(b, served, viewer, device, now, unsigned)
}

// servedRecord returns the record as served: a copy holding the redacted
// PDU, and the redaction, when a redaction applies to it; rec itself
// otherwise.
func (s *Server) servedRecord(rec *projections.EventRecord) (*projections.EventRecord, *projections.EventRecord) {
	served, because, _ := s.servedRecordRow(rec)
	return served, because
}

// servedRecordRow is servedRecord that also reports whether a redaction row
// exists for the event (applicable or not).
func (s *Server) servedRecordRow(rec *projections.EventRecord) (*projections.EventRecord, *projections.EventRecord, bool) {
	rid, _, err := s.store.RedactedBy(rec.RoomID, rec.EventID)
	if err != nil {
		return rec, nil, !errors.Is(err, projections.ErrNotFound)
	}
	red, _, err := s.store.Event(rid)
	if err != nil || !s.redactionApplies(rec, red) {
		return rec, nil, true
	}
	ver := dag.Version(rec.RoomVersion)
	if ver == nil {
		return rec, nil, true
	}
	pdu, err := dag.Redact(rec.PDU, ver)
	if err != nil {
		return rec, nil, true
	}
	return rec.WithPDU(pdu), red, true
}
