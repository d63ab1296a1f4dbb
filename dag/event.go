package dag

import "encoding/json"

// Event is a parsed PDU. Raw holds the exact bytes it was parsed from: those
// bytes are what is stored and served, never a re-encoding, so signatures
// verify forever. The other fields are read-only views used by auth rules,
// state resolution and projections.
type Event struct {
	Raw     []byte
	Version *RoomVersion

	ID             string // computed for v3+ (reference hash), carried for v1/v2
	RoomID         string // for v12 create events: derived from the event ID
	Sender         string
	Origin         string // deprecated field, kept if present
	Type           string
	StateKey       *string // nil for message events
	Content        json.RawMessage
	PrevEvents     []string
	AuthEvents     []string
	Depth          int64
	OriginServerTS int64
	Redacts        string // top-level redacts (v1-v10); v11+ reads content.redacts, also copied here
	Unsigned       json.RawMessage
}

// IsState reports whether the event is a state event.
func (e *Event) IsState() bool { return e.StateKey != nil }

// StateKeyTuple is the (type, state_key) pair that identifies a piece of room state.
type StateKeyTuple struct {
	Type     string
	StateKey string
}

// Key returns the event's state tuple; only meaningful for state events.
func (e *Event) Key() StateKeyTuple {
	if e.StateKey == nil {
		return StateKeyTuple{Type: e.Type}
	}
	return StateKeyTuple{Type: e.Type, StateKey: *e.StateKey}
}
