package api

import (
	"sort"
	"strings"

	"engram/projections"
)

const (
	userDirDefaultLimit = 10 // "Defaults to 10."
	userDirMaxLimit     = 1000
)

type userDirEntry struct {
	UserID      string `json:"user_id"`
	DisplayName string `json:"display_name,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
	shared      bool
}

// userDirectorySearch serves POST /user_directory/search with Synapse's
// default scope (search_all_users off): users who share a room with the
// searcher, or who are joined to a public room ("The homeserver may
// determine which subset of users are searched. However, the homeserver
// MUST at a minimum consider users who are visible to the requester based
// on their membership in rooms known to the homeserver."). Every word of
// the search term must start a word of the user's ID or display name.
// Users who share a room come first. Display names and avatars come from
// membership events (a room the searcher shares first).
func (s *Server) userDirectorySearch(r *Req) error {
	var req struct {
		SearchTerm *string `json:"search_term"`
		Limit      *int    `json:"limit"`
	}
	if e := r.decode(&req); e != nil {
		return e
	}
	if req.SearchTerm == nil {
		return errBadJSON("Missing search_term")
	}
	limit := userDirDefaultLimit
	if req.Limit != nil {
		if *req.Limit < 0 {
			return errInvalid("limit must not be negative")
		}
		limit = min(*req.Limit, userDirMaxLimit)
	}
	terms := projections.SearchTokens(*req.SearchTerm)
	results := []userDirEntry{}
	if len(terms) == 0 {
		return r.json(map[string]any{"results": results, "limited": false})
	}

	// Rooms to look in: shared rooms first, so a shared room decides both
	// the "shared" flag and the profile shown.
	urs, err := s.store.UserRooms(r.User)
	if err != nil {
		return err
	}
	var rooms []string
	sharedRoom := map[string]bool{}
	for _, ur := range urs {
		if ur.Membership == projections.MemberJoin {
			rooms = append(rooms, ur.RoomID)
			sharedRoom[ur.RoomID] = true
		}
	}
	public, err := s.store.PublicRooms()
	if err != nil {
		return err
	}
	for _, p := range public {
		if !sharedRoom[p] {
			rooms = append(rooms, p)
		}
	}
	seen := map[string]bool{}
	for _, room := range rooms {
		members, err := s.store.Members(room)
		if err != nil {
			return err
		}
		for _, m := range members {
			if m.Membership != projections.MemberJoin || seen[m.UserID] {
				continue
			}
			seen[m.UserID] = true
			e := userDirEntry{UserID: m.UserID, shared: sharedRoom[room]}
			if rec, _, err := s.store.Event(m.EventID); err == nil {
				e.DisplayName, e.AvatarURL = memberProfile(rec)
			}
			if userDirMatch(terms, e.UserID, e.DisplayName) {
				results = append(results, e)
			}
		}
	}
	sort.SliceStable(results, func(i, j int) bool {
		a, b := results[i], results[j]
		if a.shared != b.shared {
			return a.shared
		}
		if (a.DisplayName != "") != (b.DisplayName != "") {
			return a.DisplayName != ""
		}
		return a.UserID < b.UserID
	})
	limited := len(results) > limit
	results = results[:min(limit, len(results))]
	return r.json(map[string]any{"results": results, "limited": limited})
}

// userDirMatch reports whether every term starts some word of the user ID
// or display name.
func userDirMatch(terms []string, user, name string) bool {
	words := append(projections.SearchTokens(user), projections.SearchTokens(name)...)
	for _, t := range terms {
		ok := false
		for _, w := range words {
			if strings.HasPrefix(w, t) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}
