package api

import (
	_ "embed"
	"strings"

	"engram/dag"
)

// The server-default push rules, as the spec defines them ("Predefined
// Rules"), with @USER@ standing for the user's ID. User-defined rules and
// rule changes come with the push rules work; until then every user has the
// defaults.
//
//go:embed pushrules_default.json
var defaultPushRules string

func (s *Server) pushRules(r *Req) error {
	body := strings.ReplaceAll(defaultPushRules, "@USER@", r.User)
	r.raw(200, []byte(body))
	return nil
}

func (s *Server) capabilities(r *Req) error {
	avail := map[string]string{}
	for _, v := range []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"} {
		if dag.Version(v) != nil {
			avail[v] = "stable"
		}
	}
	return r.json(map[string]any{"capabilities": map[string]any{
		"m.room_versions":   map[string]any{"default": s.cfg.DefaultRoomVersion, "available": avail},
		"m.change_password": map[string]bool{"enabled": false},
		"m.set_displayname": map[string]bool{"enabled": false},
		"m.set_avatar_url":  map[string]bool{"enabled": false},
		"m.3pid_changes":    map[string]bool{"enabled": false},
		"m.get_login_token": map[string]bool{"enabled": false},
	}})
}
