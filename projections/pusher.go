package projections

import (
	"github.com/vmihailenco/msgpack/v5"
)

// PusherKey names a pusher: "the pusher with this app_id and pushkey for
// this user".
type PusherKey struct {
	UserID  string `msgpack:"u"`
	AppID   string `msgpack:"a"`
	PushKey string `msgpack:"k"`
}

// PusherRecord is the body of KindPusher, version 1. Kind "" deletes the
// pusher. Remove lists other users' pushers with the same app ID and
// pushkey that a non-append set removes ("Otherwise, the homeserver must
// remove any other pushers with the same App ID and pushkey for different
// users"), decided when the record was made. StartSeq is the log position
// a new pusher starts pushing after.
type PusherRecord struct {
	PusherKey
	Kind              string      `msgpack:"kind,omitempty"`
	AppDisplayName    string      `msgpack:"an,omitempty"`
	DeviceDisplayName string      `msgpack:"dn,omitempty"`
	ProfileTag        string      `msgpack:"pt,omitempty"`
	Lang              string      `msgpack:"l,omitempty"`
	Data              []byte      `msgpack:"d,omitempty"` // JSON object
	DeviceID          string      `msgpack:"dev,omitempty"`
	TS                int64       `msgpack:"ts"`
	StartSeq          uint64      `msgpack:"s"`
	Remove            []PusherKey `msgpack:"rm,omitempty"`
}

// PusherPosRecord is the body of KindPusherPos, version 1: the pusher
// handled every notification up to Seq, so after a restart it resumes
// after it.
type PusherPosRecord struct {
	PusherKey
	Seq uint64 `msgpack:"s"`
}

// Pusher is a stored pusher.
type Pusher struct {
	Kind              string `msgpack:"kind"`
	AppDisplayName    string `msgpack:"an,omitempty"`
	DeviceDisplayName string `msgpack:"dn,omitempty"`
	ProfileTag        string `msgpack:"pt,omitempty"`
	Lang              string `msgpack:"l,omitempty"`
	Data              []byte `msgpack:"d,omitempty"`
	DeviceID          string `msgpack:"dev,omitempty"`
	TS                int64  `msgpack:"ts"`
	Pos               uint64 `msgpack:"pos"` // notifications after Pos are still to push
}

// Pushers holds the pushers of every user:
//
//	'p' ‖ str(userID) ‖ str(appID) ‖ pushkey -> msgpack(Pusher)
//
// Setting a pusher again keeps its position; a position record moves it
// (never backwards). Logging out a device removes the pushers it set, as
// Synapse does.
type Pushers struct{}

func (Pushers) ID() byte     { return 'x' }
func (Pushers) Name() string { return "pushers" }

func pusherPrefix(user string) []byte { return appendStr([]byte{'p'}, user) }
func pusherKey(k PusherKey) []byte {
	return append(appendStr(pusherPrefix(k.UserID), k.AppID), k.PushKey...)
}

// NeedsRead: sets keep the position, positions check the pusher, logouts
// scan the user's pushers.
func (Pushers) NeedsRead(v any) bool {
	switch v.(type) {
	case *PusherRecord, *PusherPosRecord, *LogoutRecord:
		return true
	}
	return false
}

func (Pushers) Apply(tx *Tx, _ uint64, v any) error {
	switch r := v.(type) {
	case *PusherRecord:
		for _, k := range r.Remove {
			if err := tx.Delete(pusherKey(k)); err != nil {
				return err
			}
		}
		k := pusherKey(r.PusherKey)
		if r.Kind == "" {
			return tx.Delete(k)
		}
		p := Pusher{Kind: r.Kind, AppDisplayName: r.AppDisplayName, DeviceDisplayName: r.DeviceDisplayName,
			ProfileTag: r.ProfileTag, Lang: r.Lang, Data: r.Data, DeviceID: r.DeviceID, TS: r.TS, Pos: r.StartSeq}
		old, found, err := tx.Get(k)
		if err != nil {
			return err
		}
		if found {
			var op Pusher
			if msgpack.Unmarshal(old, &op) == nil {
				p.Pos = op.Pos
			}
		}
		return setMsgpack(tx, k, &p)
	case *PusherPosRecord:
		k := pusherKey(r.PusherKey)
		old, found, err := tx.Get(k)
		if err != nil || !found {
			return err
		}
		var p Pusher
		if err := msgpack.Unmarshal(old, &p); err != nil || r.Seq <= p.Pos {
			return err
		}
		p.Pos = r.Seq
		return setMsgpack(tx, k, &p)
	case *LogoutRecord:
		prefix := pusherPrefix(r.UserID)
		var drop [][]byte
		err := tx.scanRange(prefix, nil, func(k, v []byte) bool {
			var p Pusher
			if msgpack.Unmarshal(v, &p) == nil && p.DeviceID != "" && (r.All || p.DeviceID == r.DeviceID) {
				drop = append(drop, append([]byte(nil), k...))
			}
			return true
		})
		if err != nil {
			return err
		}
		for _, k := range drop {
			if err := tx.Delete(k); err != nil {
				return err
			}
		}
	}
	return nil
}

func init() {
	registerKind(KindPusher, func() any { return new(PusherRecord) })
	registerKind(KindPusherPos, func() any { return new(PusherPosRecord) })
	register(Pushers{})
}

// StoredPusher is a pusher with its key.
type StoredPusher struct {
	PusherKey
	Pusher
}

// UserPushers lists a user's pushers ("" lists every user's).
func (s *Store) UserPushers(user string) ([]StoredPusher, error) {
	prefix := []byte{'p'}
	if user != "" {
		prefix = pusherPrefix(user)
	}
	var out []StoredPusher
	var derr error
	err := s.scan('x', prefix, nil, false, func(k, v []byte) bool {
		u, rest, ok1 := readStr(k[1:])
		app, key, ok2 := readStr(rest)
		if !ok1 || !ok2 {
			return true
		}
		sp := StoredPusher{PusherKey: PusherKey{UserID: u, AppID: app, PushKey: string(key)}}
		if derr = msgpack.Unmarshal(v, &sp.Pusher); derr != nil {
			return false
		}
		out = append(out, sp)
		return true
	})
	if err == nil {
		err = derr
	}
	return out, err
}

// PusherByKey returns one pusher.
func (s *Store) PusherByKey(k PusherKey) (Pusher, error) {
	v, ok, err := s.get(row('x', pusherKey(k)))
	if err != nil || !ok {
		return Pusher{}, orNotFound(err)
	}
	var p Pusher
	err = msgpack.Unmarshal(v, &p)
	return p, err
}
