package projections

import (
	"encoding/binary"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"

	"engram/log"
)

// Record kinds of the accounts area (10-19). Numbers are forever.
const (
	KindDeviceName  log.Kind = 10 // a device's display name changed
	KindRefresh     log.Kind = 11 // a refresh token was exchanged for new tokens
	KindDeactivate  log.Kind = 12 // an account was deactivated
	KindProfile     log.Kind = 13 // a profile field was set or removed
	KindRegToken    log.Kind = 14 // a registration token was created, changed or deleted
	KindRegTokenUse log.Kind = 15 // a registration completed with a registration token
)

// DeviceNameRecord is the body of KindDeviceName, version 1.
type DeviceNameRecord struct {
	UserID      string `msgpack:"u"`
	DeviceID    string `msgpack:"d"`
	DisplayName string `msgpack:"n"`
}

// RefreshRecord is the body of KindRefresh, version 1: OldRefreshHash was
// exchanged for a new access token (expiring at ExpiresTS) and refresh token.
type RefreshRecord struct {
	UserID         string `msgpack:"u"`
	DeviceID       string `msgpack:"d"`
	OldRefreshHash []byte `msgpack:"o"`
	TokenHash      []byte `msgpack:"t"`
	RefreshHash    []byte `msgpack:"r"`
	ExpiresTS      int64  `msgpack:"x,omitempty"`
	TS             int64  `msgpack:"ts"`
}

// DeactivateRecord is the body of KindDeactivate, version 1: the account can
// no longer log in, every device and token is gone, and with Erase the
// profile is cleared. Leaving rooms is done with ordinary membership events.
type DeactivateRecord struct {
	UserID string `msgpack:"u"`
	Erase  bool   `msgpack:"e,omitempty"`
	TS     int64  `msgpack:"ts"`
}

// ProfileRecord is the body of KindProfile, version 1: Key of the user's
// profile becomes Value (JSON), or is removed when Delete.
type ProfileRecord struct {
	UserID string `msgpack:"u"`
	Key    string `msgpack:"k"`
	Value  []byte `msgpack:"v,omitempty"`
	Delete bool   `msgpack:"del,omitempty"`
	TS     int64  `msgpack:"ts"`
}

// Registration token operations (RegTokenRecord.Op).
const (
	RegTokenCreate byte = 1
	RegTokenUpdate byte = 2
	RegTokenDelete byte = 3
)

// RegTokenRecord is the body of KindRegToken, version 1 (Synapse's admin API
// for registration tokens). On update, only the Set* fields change.
type RegTokenRecord struct {
	Token       string `msgpack:"t"`
	Op          byte   `msgpack:"op"`
	UsesAllowed *int64 `msgpack:"n,omitempty"`
	ExpiryTime  *int64 `msgpack:"x,omitempty"`
	SetUses     bool   `msgpack:"sn,omitempty"`
	SetExpiry   bool   `msgpack:"sx,omitempty"`
}

// RegTokenUseRecord is the body of KindRegTokenUse, version 1. It is appended
// in the same batch as the AccountRecord it authorised.
type RegTokenUseRecord struct {
	Token  string `msgpack:"t"`
	UserID string `msgpack:"u"`
}

func init() {
	registerKind(KindDeviceName, func() any { return new(DeviceNameRecord) })
	registerKind(KindRefresh, func() any { return new(RefreshRecord) })
	registerKind(KindDeactivate, func() any { return new(DeactivateRecord) })
	registerKind(KindProfile, func() any { return new(ProfileRecord) })
	registerKind(KindRegToken, func() any { return new(RegTokenRecord) })
	registerKind(KindRegTokenUse, func() any { return new(RegTokenUseRecord) })
}

// TokenExpiry returns when an access token expires (ms); ok is false for a
// token that does not expire.
func (s *Store) TokenExpiry(hash []byte) (expires int64, ok bool, err error) {
	v, ok, err := s.get(row('d', expiryKey(hash)))
	if err != nil || !ok {
		return 0, false, err
	}
	if len(v) != 8 {
		return 0, false, fmt.Errorf("projections: bad token expiry row")
	}
	return int64(binary.BigEndian.Uint64(v)), true, nil
}

// RefreshOwner returns the user and device a refresh token hash belongs to.
func (s *Store) RefreshOwner(hash []byte) (user, device string, err error) {
	v, ok, err := s.get(row('d', refreshKey(hash)))
	if err != nil || !ok {
		return "", "", orNotFound(err)
	}
	user, rest, ok := readStr(v)
	if !ok {
		return "", "", fmt.Errorf("projections: bad refresh token row")
	}
	return user, string(rest), nil
}

// Device returns one of a user's devices.
func (s *Store) Device(user, device string) (*Device, error) {
	v, ok, err := s.get(row('d', deviceKey(user, device)))
	if err != nil || !ok {
		return nil, orNotFound(err)
	}
	var d Device
	if err := msgpack.Unmarshal(v, &d); err != nil {
		return nil, err
	}
	return &d, nil
}
