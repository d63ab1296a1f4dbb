package projections

import (
	"github.com/vmihailenco/msgpack/v5"
)

// RegTokens folds the registration tokens made with the admin API:
//
//	't' ‖ token -> msgpack(RegToken)
//
// Tokens from the configuration file are not here: they are not state.
type RegTokens struct{}

// RegToken is a registration token's row. Pending uses (registrations that
// passed the token stage but have not finished) are kept in memory by the
// API: they are not worth a log record.
type RegToken struct {
	UsesAllowed *int64 `msgpack:"n,omitempty"`
	ExpiryTime  *int64 `msgpack:"x,omitempty"`
	Completed   int64  `msgpack:"c"`
}

func (RegTokens) ID() byte     { return 'g' }
func (RegTokens) Name() string { return "regtokens" }

func regTokenKey(token string) []byte { return append([]byte{'t'}, token...) }

// NeedsRead: updates and uses read the token's row.
func (RegTokens) NeedsRead(v any) bool {
	switch r := v.(type) {
	case *RegTokenRecord:
		return r.Op == RegTokenUpdate
	case *RegTokenUseRecord:
		return true
	}
	return false
}

func (RegTokens) Apply(tx *Tx, _ uint64, v any) error {
	switch r := v.(type) {
	case *RegTokenRecord:
		k := regTokenKey(r.Token)
		switch r.Op {
		case RegTokenCreate:
			return setMsgpack(tx, k, &RegToken{UsesAllowed: r.UsesAllowed, ExpiryTime: r.ExpiryTime})
		case RegTokenDelete:
			return tx.Delete(k)
		case RegTokenUpdate:
			return updateRegToken(tx, k, func(t *RegToken) {
				if r.SetUses {
					t.UsesAllowed = r.UsesAllowed
				}
				if r.SetExpiry {
					t.ExpiryTime = r.ExpiryTime
				}
			})
		}
	case *RegTokenUseRecord:
		return updateRegToken(tx, regTokenKey(r.Token), func(t *RegToken) { t.Completed++ })
	}
	return nil
}

func updateRegToken(tx *Tx, k []byte, change func(*RegToken)) error {
	old, ok, err := tx.Get(k)
	if err != nil || !ok {
		return err
	}
	var t RegToken
	if err := msgpack.Unmarshal(old, &t); err != nil {
		return err
	}
	change(&t)
	return setMsgpack(tx, k, &t)
}

// RegTokenInfo is a registration token with its name.
type RegTokenInfo struct {
	Token string
	RegToken
}

// RegToken returns an admin-made registration token.
func (s *Store) RegToken(token string) (*RegToken, error) {
	v, ok, err := s.get(row('g', regTokenKey(token)))
	if err != nil || !ok {
		return nil, orNotFound(err)
	}
	var t RegToken
	if err := msgpack.Unmarshal(v, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// RegTokens lists the admin-made registration tokens in token order.
func (s *Store) RegTokens() ([]RegTokenInfo, error) {
	var out []RegTokenInfo
	var derr error
	err := s.scan('g', []byte{'t'}, nil, false, func(k, v []byte) bool {
		var t RegTokenInfo
		if derr = msgpack.Unmarshal(v, &t.RegToken); derr != nil {
			return false
		}
		t.Token = string(k[1:])
		out = append(out, t)
		return true
	})
	if err == nil {
		err = derr
	}
	return out, err
}

func init() { register(RegTokens{}) }
