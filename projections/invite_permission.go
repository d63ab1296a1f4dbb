package projections

import "encoding/json"

// InvitesBlocked reports whether a user blocks all invites: global account
// data m.invite_permission_config with default_action "block" (spec v1.18,
// "Invite permission"). Callers check only their own server's users.
func (s *Store) InvitesBlocked(user string) bool {
	item, err := s.AccountData(user, "", "m.invite_permission_config")
	if err != nil {
		return false
	}
	var c struct {
		DefaultAction string `json:"default_action"`
	}
	return json.Unmarshal(item.Content, &c) == nil && c.DefaultAction == "block"
}
