package projections

import (
	"fmt"

	"github.com/vmihailenco/msgpack/v5"

	"engram/log"
)

// Record kinds. The log never interprets a body; projections do, by kind and
// version. A kind's number and every version of its body are forever: old
// records stay readable (ARCHITECTURE.md, rule 4).
const (
	KindEvent    log.Kind = 1 // a PDU with the sequencer's verdict
	KindAccount  log.Kind = 2 // a user account was created
	KindLogin    log.Kind = 3 // an access token was issued for a device
	KindLogout   log.Kind = 4 // a device's tokens (or one token) were revoked
	KindPassword log.Kind = 5 // a user's password hash changed
	KindFilter   log.Kind = 6 // a user uploaded a sync filter
)

// Status is the sequencer's verdict on an event, captured in the record so
// replay never re-runs auth checks or state resolution.
type Status uint8

const (
	Accepted   Status = 1
	SoftFailed Status = 2 // stored, auth-valid, but not part of the timeline or state
	Rejected   Status = 3 // stored for the record, never served
	Outlier    Status = 4 // known (e.g. fetched for an auth chain), not in the timeline
)

// StateEntry is one change to a room's current state: the event now current
// for (Type, StateKey), or EventID "" when the key was removed by resolution.
type StateEntry struct {
	Type       string `msgpack:"t"`
	StateKey   string `msgpack:"k"`
	EventID    string `msgpack:"e"`
	Membership string `msgpack:"m,omitempty"` // for m.room.member: the membership of EventID
}

// EventRecord is the body of KindEvent, version 1. PDU holds the exact bytes of
// the event; the other fields are derived from it (or from the sequencer's
// decision) at append time so projections never parse JSON during replay.
type EventRecord struct {
	RoomID      string   `msgpack:"r"`
	EventID     string   `msgpack:"i"`
	RoomVersion string   `msgpack:"v"`
	Type        string   `msgpack:"t"`
	StateKey    *string  `msgpack:"k,omitempty"`
	Sender      string   `msgpack:"s"`
	Membership  string   `msgpack:"m,omitempty"`
	Redacts     string   `msgpack:"rd,omitempty"`
	PrevEvents  []string `msgpack:"p,omitempty"`
	Depth       int64    `msgpack:"d"`
	Status      Status   `msgpack:"st"`
	Reason      string   `msgpack:"why,omitempty"`
	// Txn is the client transaction this event answers ("user\x00device\x00txnID"), for idempotent sends.
	Txn string `msgpack:"x,omitempty"`
	// State, when set, replaces the simple rule "an accepted state event becomes
	// current" with the outcome of state resolution: these entries change.
	State []StateEntry `msgpack:"rs,omitempty"`
	PDU   []byte       `msgpack:"j"`
}

// IsState reports whether the event is a state event.
func (e *EventRecord) IsState() bool { return e.StateKey != nil }

// AccountRecord is the body of KindAccount, version 1.
type AccountRecord struct {
	UserID       string `msgpack:"u"`
	PasswordHash string `msgpack:"h,omitempty"`
	Admin        bool   `msgpack:"a,omitempty"`
	Guest        bool   `msgpack:"g,omitempty"`
	TS           int64  `msgpack:"ts"`
}

// LoginRecord is the body of KindLogin, version 1. Tokens are kept as SHA-256
// hashes: the log never holds a usable credential.
type LoginRecord struct {
	UserID      string `msgpack:"u"`
	DeviceID    string `msgpack:"d"`
	TokenHash   []byte `msgpack:"t"`
	DisplayName string `msgpack:"n,omitempty"`
	TS          int64  `msgpack:"ts"`
}

// LogoutRecord is the body of KindLogout, version 1: revokes the devices'
// tokens and deletes the devices. All means every device of the user.
type LogoutRecord struct {
	UserID   string `msgpack:"u"`
	DeviceID string `msgpack:"d,omitempty"`
	All      bool   `msgpack:"all,omitempty"`
}

// PasswordRecord is the body of KindPassword, version 1.
type PasswordRecord struct {
	UserID       string `msgpack:"u"`
	PasswordHash string `msgpack:"h"`
}

// FilterRecord is the body of KindFilter, version 1.
type FilterRecord struct {
	UserID   string `msgpack:"u"`
	FilterID string `msgpack:"i"`
	JSON     []byte `msgpack:"j"`
}

// Encode builds a log record for a body value.
func Encode(v any) (log.Record, error) {
	var k log.Kind
	switch v.(type) {
	case *EventRecord:
		k = KindEvent
	case *AccountRecord:
		k = KindAccount
	case *LoginRecord:
		k = KindLogin
	case *LogoutRecord:
		k = KindLogout
	case *PasswordRecord:
		k = KindPassword
	case *FilterRecord:
		k = KindFilter
	default:
		return log.Record{}, fmt.Errorf("projections: no record kind for %T", v)
	}
	b, err := msgpack.Marshal(v)
	if err != nil {
		return log.Record{}, fmt.Errorf("projections: encode %T: %w", v, err)
	}
	return log.Record{Kind: k, Version: 1, Body: b}, nil
}

// Decode returns the typed body of a record. Unknown kinds decode to nil with
// no error: a newer server's records are skipped by an older projection set.
func Decode(rec log.Record) (any, error) {
	var v any
	switch rec.Kind {
	case KindEvent:
		v = new(EventRecord)
	case KindAccount:
		v = new(AccountRecord)
	case KindLogin:
		v = new(LoginRecord)
	case KindLogout:
		v = new(LogoutRecord)
	case KindPassword:
		v = new(PasswordRecord)
	case KindFilter:
		v = new(FilterRecord)
	default:
		return nil, nil
	}
	if rec.Version != 1 {
		return nil, fmt.Errorf("projections: kind %d version %d unknown", rec.Kind, rec.Version)
	}
	if err := msgpack.Unmarshal(rec.Body, v); err != nil {
		return nil, fmt.Errorf("projections: decode kind %d: %w", rec.Kind, err)
	}
	return v, nil
}
