package api

import (
	"encoding/json"
	"errors"
	"sort"

	"engram/dag/rooms"
	"engram/projections"
)

func (s *Server) aliasRoutes() {
	rt := &s.rt
	rt.client("PUT", "/directory/room/{roomAlias}", authed, s.putAlias)
	rt.client("GET", "/directory/room/{roomAlias}", public, s.getAlias)
	rt.client("DELETE", "/directory/room/{roomAlias}", authed, s.deleteAlias)
	rt.client("GET", "/rooms/{roomId}/aliases", authed, s.roomAliases)
}

// localAlias checks an alias path parameter: valid grammar (400
// M_INVALID_PARAM) and whether it is one of this server's.
func (s *Server) localAlias(alias string) (bool, *Error) {
	if !validAlias(alias) {
		return false, errInvalid("Room alias invalid")
	}
	return domainOf(alias) == s.cfg.ServerName, nil
}

func (s *Server) isAdmin(user string) bool {
	a, err := s.store.Account(user)
	return err == nil && a.Admin
}

// putAlias serves PUT /directory/room/{roomAlias}. Like Synapse, the alias
// must be local and the user must be in the room.
func (s *Server) putAlias(r *Req) error {
	alias := r.Param("roomAlias")
	var b struct {
		RoomID *string `json:"room_id"`
	}
	if e := r.decode(&b); e != nil {
		return e
	}
	if b.RoomID == nil {
		return errBadJSON("Missing room_id")
	}
	local, e := s.localAlias(alias)
	if e != nil {
		return e
	}
	if !local {
		return errInvalid("Room alias must be local")
	}
	room := *b.RoomID
	if !validRoomID(room) {
		return errInvalid("Invalid room ID")
	}
	if _, err := s.store.RoomVersion(room); err != nil {
		if errors.Is(err, projections.ErrNotFound) {
			return errNotFound("Room not found")
		}
		return err
	}
	if m, err := s.store.MemberOf(room, r.User); err != nil {
		return err
	} else if m.Membership != projections.MemberJoin && !s.isAdmin(r.User) {
		return errForbidden("You must be in the room to create an alias for it")
	}
	aliasMu.Lock()
	defer aliasMu.Unlock()
	if _, _, err := s.store.Alias(alias); err == nil {
		return merr(409, "M_UNKNOWN", "Room alias "+alias+" already exists.")
	} else if !errors.Is(err, projections.ErrNotFound) {
		return err
	}
	if err := s.appendRecord(&projections.AliasRecord{Alias: alias, RoomID: room, Creator: r.User}); err != nil {
		return err
	}
	return r.json(struct{}{})
}

// getAlias serves GET /directory/room/{roomAlias}: the room, and the
// servers that are in it (this one first).
func (s *Server) getAlias(r *Req) error {
	alias := r.Param("roomAlias")
	local, e := s.localAlias(alias)
	if e != nil {
		return e
	}
	if !local {
		if done, err := s.fedGetAlias(r, alias); done || err != nil {
			return err
		}
		return errNotFound("Room alias " + alias + " not found.")
	}
	room, _, err := s.store.Alias(alias)
	if errors.Is(err, projections.ErrNotFound) {
		return errNotFound("Room alias " + alias + " not found.")
	}
	if err != nil {
		return err
	}
	servers, err := s.roomServers(room)
	if err != nil {
		return err
	}
	return r.json(map[string]any{"room_id": room, "servers": servers})
}

// roomServers lists the servers with joined members in a room, this
// server first, then by name.
func (s *Server) roomServers(room string) ([]string, error) {
	ms, err := s.store.Members(room)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{s.cfg.ServerName: true}
	var others []string
	for _, m := range ms {
		if d := domainOf(m.UserID); m.Membership == projections.MemberJoin && !seen[d] {
			seen[d] = true
			others = append(others, d)
		}
	}
	sort.Strings(others)
	return append([]string{s.cfg.ServerName}, others...), nil
}

// deleteAlias serves DELETE /directory/room/{roomAlias}. As in Synapse, the
// alias's creator, a server admin, or a user who may send
// m.room.canonical_alias in the room may delete it; the room's canonical
// alias event then drops it, when the user may send that.
func (s *Server) deleteAlias(r *Req) error {
	alias := r.Param("roomAlias")
	local, e := s.localAlias(alias)
	if e != nil {
		return e
	}
	if !local {
		return errNotFound("Room alias " + alias + " not found.")
	}
	aliasMu.Lock()
	room, creator, err := s.store.Alias(alias)
	if errors.Is(err, projections.ErrNotFound) {
		aliasMu.Unlock()
		return errNotFound("Room alias " + alias + " not found.")
	}
	if err != nil {
		aliasMu.Unlock()
		return err
	}
	allowed := creator == r.User || s.isAdmin(r.User)
	if !allowed {
		if p, err := s.powerOf(room); err == nil {
			m, _ := s.store.MemberOf(room, r.User)
			allowed = m.Membership == projections.MemberJoin && p.canSend(r.User, "m.room.canonical_alias", true)
		}
	}
	if !allowed {
		aliasMu.Unlock()
		return errForbidden("You don't have permission to delete the alias.")
	}
	err = s.appendRecord(&projections.AliasRecord{Alias: alias})
	aliasMu.Unlock()
	if err != nil {
		return err
	}
	s.dropCanonicalAlias(room, r.User, alias)
	return r.json(struct{}{})
}

// dropCanonicalAlias removes alias from a room's m.room.canonical_alias
// event, sent as user; a user without the power to do so leaves it (the
// alias is deleted either way).
func (s *Server) dropCanonicalAlias(room, user, alias string) {
	content, err := s.stateContent(room, "m.room.canonical_alias", "")
	if err != nil {
		return
	}
	var c map[string]json.RawMessage
	if json.Unmarshal(content, &c) != nil {
		return
	}
	changed := false
	var a string
	if json.Unmarshal(c["alias"], &a) == nil && a == alias {
		delete(c, "alias")
		changed = true
	}
	var alts []any
	if json.Unmarshal(c["alt_aliases"], &alts) == nil && len(alts) > 0 {
		kept := alts[:0:0]
		for _, x := range alts {
			if x != alias {
				kept = append(kept, x)
			}
		}
		if len(kept) != len(alts) {
			c["alt_aliases"] = mustJSON(kept)
			changed = true
		}
	}
	if changed {
		s.rooms.Send(rooms.Event{Room: room, Sender: user, Type: "m.room.canonical_alias", StateKey: str(""), Content: mustJSON(c)})
	}
}

// roomAliases serves GET /rooms/{roomId}/aliases: for members, or anyone
// when the room is world_readable.
func (s *Server) roomAliases(r *Req) error {
	room := r.Param("roomId")
	if !validRoomID(room) {
		return errInvalid("Invalid room ID")
	}
	if _, err := s.readAccess(room, r.User, false); err != nil {
		return err
	}
	aliases, err := s.store.RoomAliases(room)
	if err != nil {
		return err
	}
	return r.json(map[string]any{"aliases": aliases})
}
