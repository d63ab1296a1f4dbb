package projections

import (
	"encoding/binary"

	"engram/log"
)

// KindOpenID: a user requested an OpenID token (client-server API,
// "OpenID"). Tokens are credentials a user hands to third parties, so they
// live in the accounts range and survive restarts.
const KindOpenID log.Kind = 19

// OpenIDRecord is the body of KindOpenID, version 1. As for access tokens,
// only the SHA-256 of the token is kept. TS is the issue time (ms): the
// fold uses it, not the clock, to forget tokens that expired before it.
type OpenIDRecord struct {
	UserID    string `msgpack:"u"`
	TokenHash []byte `msgpack:"t"`
	ExpiresTS int64  `msgpack:"x"`
	TS        int64  `msgpack:"ts"`
}

func init() {
	registerKind(KindOpenID, func() any { return new(OpenIDRecord) })
	register(OpenID{})
}

// OpenID folds OpenID tokens:
//
//	'h' ‖ hash -> expires u64 ‖ user
//	'x' ‖ expires u64 ‖ hash -> ""      (expiry order, for pruning)
//
// Each new token removes the tokens that had expired when it was issued,
// so the keyspace holds about one hour of tokens whatever the uptime.
type OpenID struct{}

func (OpenID) ID() byte     { return 'O' }
func (OpenID) Name() string { return "openid" }

func openIDKey(hash []byte) []byte { return append([]byte{'h'}, hash...) }

// NeedsRead: pruning scans the expiry index.
func (OpenID) NeedsRead(v any) bool {
	_, ok := v.(*OpenIDRecord)
	return ok
}

func (OpenID) Apply(tx *Tx, _ uint64, v any) error {
	r, ok := v.(*OpenIDRecord)
	if !ok || len(r.TokenHash) == 0 {
		return nil
	}
	// Tokens with expires <= TS are dead: drop them and their index rows.
	var dead [][]byte
	hi := appendU64([]byte{'x'}, uint64(max(r.TS, 0))+1)
	err := tx.scanRange([]byte{'x'}, hi, func(k, _ []byte) bool {
		dead = append(dead, append([]byte(nil), k...))
		return true
	})
	if err != nil {
		return err
	}
	for _, k := range dead {
		if err := tx.Delete(k); err != nil {
			return err
		}
		if len(k) > 9 {
			if err := tx.Delete(openIDKey(k[9:])); err != nil {
				return err
			}
		}
	}
	exp := uint64(max(r.ExpiresTS, 0))
	if err := tx.Set(openIDKey(r.TokenHash), append(appendU64(nil, exp), r.UserID...)); err != nil {
		return err
	}
	return tx.Set(append(appendU64([]byte{'x'}, exp), r.TokenHash...), nil)
}

// OpenIDUser returns the user an OpenID token hash was issued to and when
// it expires (ms). ErrNotFound if unknown; the caller compares the expiry
// with its clock.
func (s *Store) OpenIDUser(hash []byte) (user string, expires int64, err error) {
	v, ok, err := s.get(row('O', openIDKey(hash)))
	if err != nil || !ok {
		return "", 0, orNotFound(err)
	}
	if len(v) < 8 {
		return "", 0, ErrNotFound
	}
	return string(v[8:]), int64(binary.BigEndian.Uint64(v[:8])), nil
}
