package projections

import (
	"github.com/vmihailenco/msgpack/v5"
)

// Accounts folds KindAccount and KindPassword into user rows:
//
//	'u' ‖ userID -> msgpack(Account)
type Accounts struct{}

// Account is a user's row.
type Account struct {
	PasswordHash string `msgpack:"h,omitempty"`
	Admin        bool   `msgpack:"a,omitempty"`
	Guest        bool   `msgpack:"g,omitempty"`
	CreatedTS    int64  `msgpack:"ts"`
}

func (Accounts) ID() byte     { return 'a' }
func (Accounts) Name() string { return "accounts" }

func accountKey(user string) []byte { return append([]byte{'u'}, user...) }

// NeedsRead: a password change reads the account row.
func (Accounts) NeedsRead(v any) bool { _, ok := v.(*PasswordRecord); return ok }

func (Accounts) Apply(tx *Tx, _ uint64, v any) error {
	switch r := v.(type) {
	case *AccountRecord:
		b, err := msgpack.Marshal(&Account{PasswordHash: r.PasswordHash, Admin: r.Admin, Guest: r.Guest, CreatedTS: r.TS})
		if err != nil {
			return err
		}
		return tx.Set(accountKey(r.UserID), b)
	case *PasswordRecord:
		old, ok, err := tx.Get(accountKey(r.UserID))
		if err != nil || !ok {
			return err
		}
		var a Account
		if err := msgpack.Unmarshal(old, &a); err != nil {
			return err
		}
		a.PasswordHash = r.PasswordHash
		b, err := msgpack.Marshal(&a)
		if err != nil {
			return err
		}
		return tx.Set(accountKey(r.UserID), b)
	}
	return nil
}

// Devices folds logins and logouts into devices and access tokens:
//
//	't' ‖ sha256(token)                  -> str(userID) ‖ deviceID
//	'd' ‖ str(userID) ‖ deviceID         -> msgpack(Device)
type Devices struct{}

// Device is a device row.
type Device struct {
	DisplayName string `msgpack:"n,omitempty"`
	TokenHash   []byte `msgpack:"t,omitempty"`
	LastSeenTS  int64  `msgpack:"ts"`
}

func (Devices) ID() byte     { return 'd' }
func (Devices) Name() string { return "devices" }

func tokenKey(hash []byte) []byte { return append([]byte{'t'}, hash...) }

func deviceKey(user, device string) []byte {
	return append(appendStr([]byte{'d'}, user), device...)
}

// NeedsRead: logins and logouts read device rows to revoke old tokens.
func (Devices) NeedsRead(v any) bool {
	switch v.(type) {
	case *LoginRecord, *LogoutRecord:
		return true
	}
	return false
}

func (d Devices) Apply(tx *Tx, _ uint64, v any) error {
	switch r := v.(type) {
	case *LoginRecord:
		dk := deviceKey(r.UserID, r.DeviceID)
		// A login to an existing device replaces its token.
		if err := d.revoke(tx, dk); err != nil {
			return err
		}
		b, err := msgpack.Marshal(&Device{DisplayName: r.DisplayName, TokenHash: r.TokenHash, LastSeenTS: r.TS})
		if err != nil {
			return err
		}
		if err := tx.Set(dk, b); err != nil {
			return err
		}
		return tx.Set(tokenKey(r.TokenHash), dk[1:])
	case *LogoutRecord:
		if !r.All {
			dk := deviceKey(r.UserID, r.DeviceID)
			if err := d.revoke(tx, dk); err != nil {
				return err
			}
			return tx.Delete(dk)
		}
		return d.logoutAll(tx, r.UserID)
	}
	return nil
}

// revoke deletes the token of the device at dk, if any.
func (Devices) revoke(tx *Tx, dk []byte) error {
	old, ok, err := tx.Get(dk)
	if err != nil || !ok {
		return err
	}
	var dev Device
	if err := msgpack.Unmarshal(old, &dev); err != nil {
		return err
	}
	if len(dev.TokenHash) > 0 {
		return tx.Delete(tokenKey(dev.TokenHash))
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
