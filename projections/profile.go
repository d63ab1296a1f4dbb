package projections

import (
	"strings"
)

// Profiles folds profile changes into one row per field:
//
//	'f' ‖ str(userID) ‖ key -> the field's JSON value
//
// A new (non-guest) account starts with its localpart as display name, as
// Synapse does. Deactivation with erase removes every field.
type Profiles struct{}

func (Profiles) ID() byte     { return 'p' }
func (Profiles) Name() string { return "profiles" }

func profilePrefix(user string) []byte     { return appendStr([]byte{'f'}, user) }
func profileKey(user, field string) []byte { return append(profilePrefix(user), field...) }

// NeedsRead: erasing a profile scans its rows.
func (Profiles) NeedsRead(v any) bool {
	r, ok := v.(*DeactivateRecord)
	return ok && r.Erase
}

func (Profiles) Apply(tx *Tx, _ uint64, v any) error {
	switch r := v.(type) {
	case *AccountRecord:
		if r.Guest {
			return nil
		}
		return tx.Set(profileKey(r.UserID, "displayname"), jsonString(localpart(r.UserID)))
	case *ProfileRecord:
		if r.Delete {
			return tx.Delete(profileKey(r.UserID, r.Key))
		}
		return tx.Set(profileKey(r.UserID, r.Key), r.Value)
	case *DeactivateRecord:
		if !r.Erase {
			return nil
		}
		keys, err := tx.scanKeys(profilePrefix(r.UserID))
		if err != nil {
			return err
		}
		for _, k := range keys {
			if err := tx.Delete(k); err != nil {
				return err
			}
		}
	}
	return nil
}

// localpart returns the part of "@local:server" between '@' and ':'.
func localpart(user string) string {
	l := strings.TrimPrefix(user, "@")
	if i := strings.IndexByte(l, ':'); i >= 0 {
		l = l[:i]
	}
	return l
}

// jsonString encodes a localpart as a JSON string. Localparts are limited to
// a-z 0-9 and ._=-/+ (and historical IDs to printable ASCII), but escape
// anyway so any byte yields valid JSON.
func jsonString(s string) []byte {
	const hex = "0123456789abcdef"
	b := make([]byte, 0, len(s)+2)
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// ProfileField is one field of a user's profile.
type ProfileField struct {
	Key   string
	Value []byte // JSON
}

// Profile returns a user's profile fields in key order.
func (s *Store) Profile(user string) ([]ProfileField, error) {
	prefix := profilePrefix(user)
	var out []ProfileField
	err := s.scan('p', prefix, nil, false, func(k, v []byte) bool {
		out = append(out, ProfileField{Key: string(k[len(prefix):]), Value: append([]byte(nil), v...)})
		return true
	})
	return out, err
}

// ProfileValue returns one profile field's JSON value.
func (s *Store) ProfileValue(user, key string) ([]byte, error) {
	v, ok, err := s.get(row('p', profileKey(user, key)))
	if err != nil || !ok {
		return nil, orNotFound(err)
	}
	return v, nil
}

func init() { register(Profiles{}) }
