package projections

import "encoding/binary"

// Redactions indexes which accepted m.room.redaction redacts which event, so
// serving an event asks one point read whether to serve its redacted form:
//
//	'b' ‖ str(roomID) ‖ targetEventID -> seq u64 ‖ redactionEventID
//
// The first accepted redaction of an event is kept (later ones change
// nothing a client sees). A redaction may arrive before its target (over
// federation); the row waits for it. Whether the redaction may be applied
// ("the power level of the redaction event's sender is greater than or
// equal to the redact level", or the senders' domains match; rooms v3
// "Handling redactions") is decided when serving, from the two events.
type Redactions struct{}

func (Redactions) ID() byte     { return 'k' }
func (Redactions) Name() string { return "redactions" }

func redactedKey(room, target string) []byte { return append(appendStr([]byte{'b'}, room), target...) }

func isRedaction(v any) (*EventRecord, bool) {
	r, ok := v.(*EventRecord)
	if !ok || r.Type != "m.room.redaction" || r.StateKey != nil || r.Status != Accepted || r.Redacts == "" {
		return nil, false
	}
	return r, true
}

// NeedsRead: the first redaction wins, so a redaction checks for an earlier one.
func (Redactions) NeedsRead(v any) bool {
	_, ok := isRedaction(v)
	return ok
}

func (Redactions) Apply(tx *Tx, seq uint64, v any) error {
	r, ok := isRedaction(v)
	if !ok {
		return nil
	}
	k := redactedKey(r.RoomID, r.Redacts)
	_, found, err := tx.Get(k)
	if err != nil || found {
		return err
	}
	return tx.Set(k, append(appendU64(nil, seq), r.EventID...))
}

func init() { register(Redactions{}) }

// RedactedBy returns the redaction event (ID and position) recorded against
// an event of a room, or ErrNotFound.
func (s *Store) RedactedBy(room, eventID string) (string, uint64, error) {
	v, ok, err := s.get(row('k', redactedKey(room, eventID)))
	if err != nil || !ok {
		return "", 0, orNotFound(err)
	}
	if len(v) < 9 {
		return "", 0, ErrNotFound
	}
	return string(v[8:]), binary.BigEndian.Uint64(v), nil
}
