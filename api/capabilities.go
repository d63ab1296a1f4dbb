package api

import (
	"engram/dag"
)

func (s *Server) capabilities(r *Req) error {
	avail := map[string]string{}
	for _, v := range []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"} {
		if dag.Version(v) != nil {
			avail[v] = "stable"
		}
	}
	// What the account endpoints actually offer: password changes, profile
	// fields (all of them, spec 1.16), no 3PIDs, login tokens when enabled.
	return r.json(map[string]any{"capabilities": map[string]any{
		"m.room_versions":   map[string]any{"default": s.cfg.DefaultRoomVersion, "available": avail},
		"m.change_password": map[string]bool{"enabled": true},
		"m.set_displayname": map[string]bool{"enabled": true},
		"m.set_avatar_url":  map[string]bool{"enabled": true},
		"m.profile_fields":  map[string]bool{"enabled": true},
		"m.3pid_changes":    map[string]bool{"enabled": false},
		"m.get_login_token": map[string]bool{"enabled": s.cfg.Accounts.LoginToken},
	}})
}
