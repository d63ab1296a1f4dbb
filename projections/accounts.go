package projections

import (
	"encoding/binary"

	"github.com/vmihailenco/msgpack/v5"
)

// Accounts folds account records into user rows:
//
//	'u' ‖ userID -> msgpack(Account)
//
// Account creation (KindAccount), password changes (KindPassword) and
// deactivation (KindDeactivate) change the row; a deactivated account keeps
// its row so its user ID can never be registered again (as in Synapse).
type Accounts struct{}

// Account is a user's row.
type Account struct {
	PasswordHash string `msgpack:"h,omitempty"`
	Admin        bool   `msgpack:"a,omitempty"`
	Guest        bool   `msgpack:"g,omitempty"`
	CreatedTS    int64  `msgpack:"ts"`
	Deactivated  bool   `msgpack:"x,omitempty"`
}

func (Accounts) ID() byte     { return 'a' }
func (Accounts) Name() string { return "accounts" }

func accountKey(user string) []byte { return append([]byte{'u'}, user...) }

// NeedsRead: password changes and deactivations read the account row.
func (Accounts) NeedsRead(v any) bool {
	switch v.(type) {
	case *PasswordRecord, *DeactivateRecord:
		return true
	}
	return false
}

func (Accounts) Apply(tx *Tx, _ uint64, v any) error {
	switch r := v.(type) {
	case *AccountRecord:
		return setMsgpack(tx, accountKey(r.UserID), &Account{PasswordHash: r.PasswordHash, Admin: r.Admin, Guest: r.Guest, CreatedTS: r.TS})
	case *PasswordRecord:
		return updateAccount(tx, r.UserID, func(a *Account) { a.PasswordHash = r.PasswordHash })
	case *DeactivateRecord:
		return updateAccount(tx, r.UserID, func(a *Account) {
			a.Deactivated = true
			a.PasswordHash = ""
		})
	}
	return nil
}

// updateAccount rewrites an existing account row; a missing row is left alone.
func updateAccount(tx *Tx, user string, change func(*Account)) error {
	old, ok, err := tx.Get(accountKey(user))
	if err != nil || !ok {
		return err
	}
	var a Account
	if err := msgpack.Unmarshal(old, &a); err != nil {
		return err
	}
	change(&a)
	return setMsgpack(tx, accountKey(user), &a)
}

func setMsgpack(tx *Tx, k []byte, v any) error {
	b, err := msgpack.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Set(k, b)
}

// Devices folds logins, refreshes and logouts into devices and tokens:
//
//	't' ‖ sha256(access token)   -> str(userID) ‖ deviceID
//	'x' ‖ sha256(access token)   -> expiry ms u64 (only for expiring tokens)
//	'r' ‖ sha256(refresh token)  -> str(userID) ‖ deviceID
//	'd' ‖ str(userID) ‖ deviceID -> msgpack(Device)
//
// A device holds at most two access tokens and two refresh tokens: the
// current pair and, after a refresh, the previous one. The spec keeps the old
// refresh token valid "until the new access token or refresh token is used"
// so a client that lost the refresh response can repeat it; engram keeps it
// until the new refresh token is used (first use of the new access token
// is not tracked: it would need a write on the read path). The previous
// access token stays valid until it expires, so requests in flight during a
// refresh do not fail.
type Devices struct{}

// Device is a device row.
type Device struct {
	DisplayName     string `msgpack:"n,omitempty"`
	TokenHash       []byte `msgpack:"t,omitempty"`
	LastSeenTS      int64  `msgpack:"ts"`
	RefreshHash     []byte `msgpack:"r,omitempty"`
	PrevTokenHash   []byte `msgpack:"pt,omitempty"`
	PrevRefreshHash []byte `msgpack:"pr,omitempty"`
}

func (Devices) ID() byte     { return 'd' }
func (Devices) Name() string { return "devices" }

func tokenKey(hash []byte) []byte   { return append([]byte{'t'}, hash...) }
func expiryKey(hash []byte) []byte  { return append([]byte{'x'}, hash...) }
func refreshKey(hash []byte) []byte { return append([]byte{'r'}, hash...) }

func deviceKey(user, device string) []byte {
	return append(appendStr([]byte{'d'}, user), device...)
}

// NeedsRead: these records read device rows (to revoke or rotate tokens).
func (Devices) NeedsRead(v any) bool {
	switch v.(type) {
	case *LoginRecord, *LogoutRecord, *RefreshRecord, *DeviceNameRecord, *DeactivateRecord:
		return true
	}
	return false
}

func (d Devices) Apply(tx *Tx, _ uint64, v any) error {
	switch r := v.(type) {
	case *LoginRecord:
		dk := deviceKey(r.UserID, r.DeviceID)
		// A login to an existing device replaces its tokens.
		if err := d.revoke(tx, dk); err != nil {
			return err
		}
		dev := Device{DisplayName: r.DisplayName, TokenHash: r.TokenHash, RefreshHash: r.RefreshHash, LastSeenTS: r.TS}
		if err := setMsgpack(tx, dk, &dev); err != nil {
			return err
		}
		return d.issue(tx, dk[1:], r.TokenHash, r.RefreshHash, r.ExpiresTS)
	case *RefreshRecord:
		return d.refresh(tx, r)
	case *DeviceNameRecord:
		dk := deviceKey(r.UserID, r.DeviceID)
		dev, ok, err := getDevice(tx, dk)
		if err != nil || !ok {
			return err
		}
		dev.DisplayName = r.DisplayName
		return setMsgpack(tx, dk, dev)
	case *LogoutRecord:
		if !r.All {
			dk := deviceKey(r.UserID, r.DeviceID)
			if err := d.revoke(tx, dk); err != nil {
				return err
			}
			return tx.Delete(dk)
		}
		return d.logoutAll(tx, r.UserID)
	case *DeactivateRecord:
		return d.logoutAll(tx, r.UserID)
	}
	return nil
}

// issue writes the token rows of a device (owner = str(user) ‖ device).
func (Devices) issue(tx *Tx, owner, token, refresh []byte, expires int64) error {
	if len(token) > 0 {
		if err := tx.Set(tokenKey(token), owner); err != nil {
			return err
		}
		if expires > 0 {
			if err := tx.Set(expiryKey(token), binary.BigEndian.AppendUint64(nil, uint64(expires))); err != nil {
				return err
			}
		}
	}
	if len(refresh) > 0 {
		return tx.Set(refreshKey(refresh), owner)
	}
	return nil
}

func dropAccess(tx *Tx, h []byte) error {
	if len(h) == 0 {
		return nil
	}
	if err := tx.Delete(tokenKey(h)); err != nil {
		return err
	}
	return tx.Delete(expiryKey(h))
}

func dropRefresh(tx *Tx, h []byte) error {
	if len(h) == 0 {
		return nil
	}
	return tx.Delete(refreshKey(h))
}

func getDevice(tx *Tx, dk []byte) (*Device, bool, error) {
	old, ok, err := tx.Get(dk)
	if err != nil || !ok {
		return nil, false, err
	}
	var dev Device
	if err := msgpack.Unmarshal(old, &dev); err != nil {
		return nil, false, err
	}
	return &dev, true, nil
}

// refresh rotates a device's tokens. Using the current refresh token retires
// the previous pair and keeps the current one as previous; using the previous
// refresh token again (the client lost the answer) replaces the current pair.
// Any other token changes nothing: the API checked it, so it lost a race
// with a logout or another refresh.
func (d Devices) refresh(tx *Tx, r *RefreshRecord) error {
	dk := deviceKey(r.UserID, r.DeviceID)
	dev, ok, err := getDevice(tx, dk)
	if err != nil || !ok {
		return err
	}
	switch {
	case len(dev.RefreshHash) > 0 && string(r.OldRefreshHash) == string(dev.RefreshHash):
		if err := dropAccess(tx, dev.PrevTokenHash); err != nil {
			return err
		}
		if err := dropRefresh(tx, dev.PrevRefreshHash); err != nil {
			return err
		}
		dev.PrevTokenHash, dev.PrevRefreshHash = dev.TokenHash, dev.RefreshHash
	case len(dev.PrevRefreshHash) > 0 && string(r.OldRefreshHash) == string(dev.PrevRefreshHash):
		if err := dropAccess(tx, dev.TokenHash); err != nil {
			return err
		}
		if err := dropRefresh(tx, dev.RefreshHash); err != nil {
			return err
		}
	default:
		return nil
	}
	dev.TokenHash, dev.RefreshHash = r.TokenHash, r.RefreshHash
	if err := setMsgpack(tx, dk, dev); err != nil {
		return err
	}
	return d.issue(tx, dk[1:], r.TokenHash, r.RefreshHash, r.ExpiresTS)
}

// revoke deletes every token of the device at dk, if any.
func (Devices) revoke(tx *Tx, dk []byte) error {
	dev, ok, err := getDevice(tx, dk)
	if err != nil || !ok {
		return err
	}
	for _, h := range [][]byte{dev.TokenHash, dev.PrevTokenHash} {
		if err := dropAccess(tx, h); err != nil {
			return err
		}
	}
	for _, h := range [][]byte{dev.RefreshHash, dev.PrevRefreshHash} {
		if err := dropRefresh(tx, h); err != nil {
			return err
		}
	}
	return nil
}

func (d Devices) logoutAll(tx *Tx, user string) error {
	prefix := appendStr([]byte{'d'}, user)
	keys, err := tx.scanKeys(prefix)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := d.revoke(tx, k); err != nil {
			return err
		}
		if err := tx.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
