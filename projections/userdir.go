package projections

import (
	"encoding/json"
)

// UserDir keeps what the user directory needs beyond memberships: which
// rooms are public now (their current m.room.join_rules is "public"), since
// Synapse's default directory lists "users who share a room with the
// searcher or are in public rooms":
//
//	'j' ‖ eventID -> public u8 (every m.room.join_rules event, whatever its status)
//	'p' ‖ roomID  -> ∅         (the room's current join rule is public)
//
// Every join_rules event is remembered because state resolution may make
// an older one current later; only these (rare) events are parsed.
type UserDir struct{}

func (UserDir) ID() byte     { return 'U' }
func (UserDir) Name() string { return "userdir" }

func udJoinRuleKey(id string) []byte  { return append([]byte{'j'}, id...) }
func udPublicKey(room string) []byte  { return append([]byte{'p'}, room...) }
func isJoinRules(typ, sk string) bool { return typ == "m.room.join_rules" && sk == "" }

// NeedsRead: a resolved state that makes another join_rules event current
// looks up that event's rule.
func (UserDir) NeedsRead(v any) bool {
	r, ok := v.(*EventRecord)
	if !ok || r.State == nil || r.Status != Accepted {
		return false
	}
	for _, c := range r.State {
		if isJoinRules(c.Type, c.StateKey) && c.EventID != "" && c.EventID != r.EventID {
			return true
		}
	}
	return false
}

func (UserDir) Apply(tx *Tx, _ uint64, v any) error {
	r, ok := v.(*EventRecord)
	if !ok {
		return nil
	}
	var own byte
	if r.StateKey != nil && isJoinRules(r.Type, *r.StateKey) {
		var ev struct {
			Content struct {
				JoinRule any `json:"join_rule"`
			} `json:"content"`
		}
		if json.Unmarshal(r.PDU, &ev) == nil && ev.Content.JoinRule == "public" {
			own = 1
		}
		if err := tx.Set(udJoinRuleKey(r.EventID), []byte{own}); err != nil {
			return err
		}
	}
	for _, c := range stateChanges(r) {
		if !isJoinRules(c.Type, c.StateKey) {
			continue
		}
		public := false
		switch {
		case c.EventID == "":
		case c.EventID == r.EventID:
			public = own == 1
		default:
			b, found, err := tx.Get(udJoinRuleKey(c.EventID))
			if err != nil {
				return err
			}
			public = found && len(b) == 1 && b[0] == 1
		}
		var err error
		if public {
			err = tx.Set(udPublicKey(r.RoomID), nil)
		} else {
			err = tx.Delete(udPublicKey(r.RoomID))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func init() {
	register(UserDir{})
	pduTypes["m.room.join_rules"] = true
}

// PublicRooms lists the rooms whose current join rule is public, in room
// ID order.
func (s *Store) PublicRooms() ([]string, error) {
	var out []string
	err := s.scan('U', []byte{'p'}, nil, false, func(k, _ []byte) bool {
		out = append(out, string(k[1:]))
		return true
	})
	return out, err
}
