package projections

import (
	"github.com/vmihailenco/msgpack/v5"
)

// Backup version operations.
const (
	BackupCreate uint8 = 1
	BackupUpdate uint8 = 2
	BackupDelete uint8 = 3
)

// BackupVersionRecord is the body of KindBackupVersion, version 1.
type BackupVersionRecord struct {
	UserID    string `msgpack:"u"`
	Version   uint64 `msgpack:"v"`
	Op        uint8  `msgpack:"o"`
	Algorithm string `msgpack:"a,omitempty"`
	AuthData  []byte `msgpack:"d,omitempty"`
}

// BackupKey is one session key of a backup: the KeyBackupData JSON as the
// client sent it, with the fields the replacement rule compares.
type BackupKey struct {
	RoomID            string `msgpack:"r"`
	SessionID         string `msgpack:"s"`
	FirstMessageIndex int64  `msgpack:"f"`
	ForwardedCount    int64  `msgpack:"c"`
	IsVerified        bool   `msgpack:"v,omitempty"`
	Data              []byte `msgpack:"j"`
}

// BackupKeysRecord is the body of KindBackupKeys, version 1: keys to store,
// or (Delete) the keys to remove: all of the version's, a room's
// (SessionID ""), or one session's.
type BackupKeysRecord struct {
	UserID    string      `msgpack:"u"`
	Version   uint64      `msgpack:"v"`
	Keys      []BackupKey `msgpack:"k,omitempty"`
	Delete    bool        `msgpack:"del,omitempty"`
	RoomID    string      `msgpack:"r,omitempty"`
	SessionID string      `msgpack:"s,omitempty"`
}

// BackupVersion is a backup version's row.
type BackupVersion struct {
	Algorithm string `msgpack:"a"`
	AuthData  []byte `msgpack:"d"`
	Etag      uint64 `msgpack:"e"`
	Count     uint64 `msgpack:"c"`
	Deleted   bool   `msgpack:"x,omitempty"`
}

// Backups holds server-side key backups:
//
//	'v' ‖ str(user) ‖ version u64                         -> msgpack(BackupVersion)
//	'k' ‖ str(user) ‖ version u64 ‖ str(room) ‖ session    -> msgpack(BackupKey)
//
// The replacement rule is applied in the fold, which reads the stored key,
// so concurrent uploads resolve in log order.
type Backups struct{}

func (Backups) ID() byte     { return 'B' }
func (Backups) Name() string { return "backups" }

func backupVersionPrefix(user string) []byte { return appendStr([]byte{'v'}, user) }
func backupVersionKey(user string, v uint64) []byte {
	return appendU64(backupVersionPrefix(user), v)
}
func backupKeysPrefix(user string, v uint64) []byte {
	return appendU64(appendStr([]byte{'k'}, user), v)
}
func backupRoomPrefix(user string, v uint64, room string) []byte {
	return appendStr(backupKeysPrefix(user, v), room)
}

// NeedsRead: every backup record reads the version row.
func (Backups) NeedsRead(v any) bool {
	switch v.(type) {
	case *BackupVersionRecord, *BackupKeysRecord:
		return true
	}
	return false
}

// BackupKeyBetter reports whether key n replaces the stored key o, by the
// spec's rule: "if the keys have different values for is_verified, then it
// will keep the key that has is_verified set to true; if they have the same
// values for is_verified, then it will keep the key with a lower
// first_message_index; and finally, if is_verified and first_message_index
// are equal, then it will keep the key with a lower forwarded_count."
func BackupKeyBetter(n, o *BackupKey) bool {
	if n.IsVerified != o.IsVerified {
		return n.IsVerified
	}
	if n.FirstMessageIndex != o.FirstMessageIndex {
		return n.FirstMessageIndex < o.FirstMessageIndex
	}
	return n.ForwardedCount < o.ForwardedCount
}

func (Backups) Apply(tx *Tx, seq uint64, v any) error {
	switch r := v.(type) {
	case *BackupVersionRecord:
		vk := backupVersionKey(r.UserID, r.Version)
		var bv BackupVersion
		old, found, err := tx.Get(vk)
		if err != nil {
			return err
		}
		if found && msgpack.Unmarshal(old, &bv) != nil {
			bv = BackupVersion{}
		}
		switch r.Op {
		case BackupCreate:
			bv = BackupVersion{Algorithm: r.Algorithm, AuthData: r.AuthData}
		case BackupUpdate:
			if !found || bv.Deleted {
				return nil
			}
			bv.Algorithm, bv.AuthData = r.Algorithm, r.AuthData
		case BackupDelete:
			if !found {
				return nil
			}
			bv.Deleted, bv.Count = true, 0
			p := backupKeysPrefix(r.UserID, r.Version)
			if err := tx.deleteRange(p, prefixEnd(p)); err != nil {
				return err
			}
		}
		return setMsgpack(tx, vk, &bv)
	case *BackupKeysRecord:
		vk := backupVersionKey(r.UserID, r.Version)
		old, found, err := tx.Get(vk)
		if err != nil || !found {
			return err
		}
		var bv BackupVersion
		if msgpack.Unmarshal(old, &bv) != nil || bv.Deleted {
			return nil
		}
		changed := false
		if r.Delete {
			var p []byte
			switch {
			case r.RoomID == "":
				p = backupKeysPrefix(r.UserID, r.Version)
			case r.SessionID == "":
				p = backupRoomPrefix(r.UserID, r.Version, r.RoomID)
			default:
				p = append(backupRoomPrefix(r.UserID, r.Version, r.RoomID), r.SessionID...)
			}
			keys, err := tx.scanKeys(p)
			if err != nil {
				return err
			}
			for _, k := range keys {
				if r.SessionID != "" && len(k) != len(p) {
					continue
				}
				if err := tx.Delete(k); err != nil {
					return err
				}
				bv.Count--
				changed = true
			}
		}
		for i := range r.Keys {
			n := &r.Keys[i]
			k := append(backupRoomPrefix(r.UserID, r.Version, n.RoomID), n.SessionID...)
			cur, ok, err := tx.Get(k)
			if err != nil {
				return err
			}
			if ok {
				var o BackupKey
				if msgpack.Unmarshal(cur, &o) == nil && !BackupKeyBetter(n, &o) {
					continue
				}
			} else {
				bv.Count++
			}
			if err := setMsgpack(tx, k, n); err != nil {
				return err
			}
			changed = true
		}
		if !changed {
			return nil
		}
		bv.Etag++
		return setMsgpack(tx, vk, &bv)
	}
	return nil
}

func init() {
	registerKind(KindBackupVersion, func() any { return new(BackupVersionRecord) })
	registerKind(KindBackupKeys, func() any { return new(BackupKeysRecord) })
	register(Backups{})
}

// BackupVersionInfo returns a backup version (deleted ones too: check Deleted).
func (s *Store) BackupVersionInfo(user string, version uint64) (*BackupVersion, error) {
	v, ok, err := s.get(row('B', backupVersionKey(user, version)))
	if err != nil || !ok {
		return nil, orNotFound(err)
	}
	var bv BackupVersion
	if err := msgpack.Unmarshal(v, &bv); err != nil {
		return nil, err
	}
	return &bv, nil
}

// BackupVersions returns the highest version number ever created (0 if
// none) and the highest one not deleted (0 if none).
func (s *Store) BackupVersions(user string) (highest, current uint64, err error) {
	p := backupVersionPrefix(user)
	var derr error
	err = s.scan('B', p, nil, true, func(k, v []byte) bool {
		if len(k) != len(p)+8 {
			return true
		}
		n := uint64(0)
		for _, c := range k[len(p):] {
			n = n<<8 | uint64(c)
		}
		if highest == 0 {
			highest = n
		}
		var bv BackupVersion
		if derr = msgpack.Unmarshal(v, &bv); derr != nil {
			return false
		}
		if !bv.Deleted {
			current = n
			return false
		}
		return true
	})
	if err == nil {
		err = derr
	}
	return highest, current, err
}

// BackupKeys calls fn for the keys of a backup version, for one room when
// room is set, and one session when session is set too, by room and session.
func (s *Store) BackupKeys(user string, version uint64, room, session string, fn func(*BackupKey) bool) error {
	p := backupKeysPrefix(user, version)
	if room != "" {
		p = backupRoomPrefix(user, version, room)
		if session != "" {
			p = append(p, session...)
		}
	}
	var derr error
	err := s.scan('B', p, nil, false, func(k, v []byte) bool {
		if session != "" && len(k) != len(p) {
			return true
		}
		var bk BackupKey
		if derr = msgpack.Unmarshal(v, &bk); derr != nil {
			return false
		}
		return fn(&bk)
	})
	if err == nil {
		err = derr
	}
	return err
}
