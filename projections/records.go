package projections

import (
	"fmt"
	"reflect"
	"sync"

	"github.com/vmihailenco/msgpack/v5"

	"engram/log"
)

// Record kinds. The log never interprets a body; projections do, by kind and
// version. A kind's number and every version of its body are forever: old
// records stay readable (ARCHITECTURE.md, rule 4). Ranges by area, so
// features can add kinds without colliding:
//
//	1-9    core (events, accounts, devices, filters)
//	10-19  accounts and devices (refresh tokens, deactivation, profiles, ...)
//	20-29  rooms (aliases, directory, reports, ...)
//	30-39  per-user data and ephemeral-but-kept streams (account data, receipts, push rules, pushers, ...)
//	40-49  end-to-end encryption (device keys, one-time keys, to-device, backups)
//	50-59  federation (outbound queue positions, remote keys, ...)
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

	// memo holds what readers derived from PDU (never encoded): records are
	// shared through the event cache, so each is parsed once, not once per
	// listener. A copy with another PDU must drop it (WithPDU).
	memo *recordMemo
}

type recordMemo struct {
	once sync.Once
	v    any
}

// Memo returns a value derived from the record, computed by build on first
// use and shared by every later reader of this record.
func (e *EventRecord) Memo(build func() any) any {
	m := e.memo
	if m == nil {
		return build() // not shared through the cache: nothing to keep
	}
	m.once.Do(func() { m.v = build() })
	return m.v
}

// WithPDU returns a copy of the record holding another PDU (a redacted one),
// without the original's derived values.
func (e *EventRecord) WithPDU(pdu []byte) *EventRecord {
	cp := *e
	cp.PDU, cp.memo = pdu, nil
	return &cp
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
	// RefreshHash and ExpiresTS are set for a login with a refresh token
	// (spec 1.3): the access token stops working at ExpiresTS (ms).
	RefreshHash []byte `msgpack:"r,omitempty"`
	ExpiresTS   int64  `msgpack:"x,omitempty"`
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

// The record registry: each record body type is registered once, with its
// kind, by the file that defines it (init). Kind numbers are forever.
var (
	newBody = map[log.Kind]func() any{}
	kindOf  = map[reflect.Type]log.Kind{}
)

// registerKind binds a kind to its body type; new returns a fresh pointer.
func registerKind(k log.Kind, new func() any) {
	if _, dup := newBody[k]; dup {
		panic(fmt.Sprintf("projections: record kind %d registered twice", k))
	}
	newBody[k] = new
	kindOf[reflect.TypeOf(new())] = k
}

func init() {
	registerKind(KindEvent, func() any { return new(EventRecord) })
	registerKind(KindAccount, func() any { return new(AccountRecord) })
	registerKind(KindLogin, func() any { return new(LoginRecord) })
	registerKind(KindLogout, func() any { return new(LogoutRecord) })
	registerKind(KindPassword, func() any { return new(PasswordRecord) })
	registerKind(KindFilter, func() any { return new(FilterRecord) })
}

// Encode builds a log record (version 1) for a registered body value.
func Encode(v any) (log.Record, error) {
	k, ok := kindOf[reflect.TypeOf(v)]
	if !ok {
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
	mk, ok := newBody[rec.Kind]
	if !ok {
		return nil, nil
	}
	if rec.Version != 1 {
		return nil, fmt.Errorf("projections: kind %d version %d unknown", rec.Kind, rec.Version)
	}
	if rec.Kind == KindEvent {
		e, err := decodeEvent(rec.Body, allPDUs) // codec_fast.go
		if err != nil {
			return nil, fmt.Errorf("projections: decode kind %d: %w", rec.Kind, err)
		}
		return e, nil
	}
	v := mk()
	if err := msgpack.Unmarshal(rec.Body, v); err != nil {
		return nil, fmt.Errorf("projections: decode kind %d: %w", rec.Kind, err)
	}
	return v, nil
}
