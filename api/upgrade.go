package api

import (
	"encoding/json"
	"errors"
	"reflect"

	"engram/dag"
	"engram/dag/rooms"
	"engram/projections"
)

func (s *Server) upgradeRoutes() {
	s.rt.client("POST", "/rooms/{roomId}/upgrade", authed, s.upgradeRoom)
}

// upgradeCopied are the state events an upgrade carries to the new room:
// the spec's recommended list ("Room Upgrades", server behaviour, 3).
// Membership is not copied, except bans (as Synapse does).
var upgradeCopied = []string{
	"m.room.server_acl", "m.room.encryption", "m.room.name", "m.room.avatar", "m.room.topic",
	"m.room.guest_access", "m.room.history_visibility", "m.room.join_rules",
}

// upgradeRoom serves POST /rooms/{roomId}/upgrade, following the spec's
// server behaviour: check the user may send m.room.tombstone; create the
// new room with a predecessor (and the old room's type); copy the
// transferable state and the power levels; move the local aliases (and the
// canonical alias, and the directory listing); tombstone the old room; and
// raise events_default and invite in the old room's power levels to
// "the greater of 50 and users_default + 1".
func (s *Server) upgradeRoom(r *Req) error {
	var b struct {
		NewVersion         *string  `json:"new_version"`
		AdditionalCreators []string `json:"additional_creators"`
	}
	if e := r.decode(&b); e != nil {
		return e
	}
	if b.NewVersion == nil {
		return errBadJSON("Missing new_version")
	}
	ver := dag.Version(*b.NewVersion)
	if ver == nil {
		return merr(400, "M_UNSUPPORTED_ROOM_VERSION", "This server does not support that room version")
	}
	for _, u := range b.AdditionalCreators {
		if !validUserID(u) {
			return errInvalid("Invalid user ID in additional_creators: " + u)
		}
	}
	old := r.Param("roomId")
	if err := s.knownRoom(old); err != nil {
		return err
	}
	m, err := s.store.MemberOf(old, r.User)
	if err != nil {
		return err
	}
	p, err := s.powerOf(old)
	if err != nil {
		return err
	}
	if m.Membership != projections.MemberJoin || !p.canSend(r.User, "m.room.tombstone", true) {
		return errForbidden("You cannot upgrade this room")
	}

	// The new room's create event.
	create := map[string]any{"room_version": ver.ID}
	if !ver.CreatorIsSender {
		create["creator"] = r.User
	}
	if oc, err := s.stateContent(old, "m.room.create", ""); err == nil {
		var c map[string]json.RawMessage
		json.Unmarshal(oc, &c)
		for _, k := range []string{"type", "m.federate"} {
			if v, ok := c[k]; ok {
				create[k] = v
			}
		}
	}
	pred := map[string]any{"room_id": old}
	if !ver.RoomIDFromCreate {
		// "The event ID of the last known event in the old room"; room
		// version 12 and later may omit it.
		last, err := s.store.Timeline(old, 0, s.log.Last()+1, true, 1)
		if err != nil {
			return err
		}
		if len(last) > 0 {
			rec, err := s.store.Record(last[0])
			if err != nil {
				return err
			}
			pred["event_id"] = rec.EventID
		}
	}
	create["predecessor"] = pred
	creators := map[string]bool{r.User: true}
	if ver.RoomIDFromCreate && len(b.AdditionalCreators) > 0 {
		var extra []string
		for _, u := range b.AdditionalCreators {
			if !creators[u] {
				creators[u] = true
				extra = append(extra, u)
			}
		}
		create["additional_creators"] = extra
	}

	// Power levels: the old room's, with the upgrader able to send the
	// copied state (Synapse raises them for the copy, then restores).
	pl := map[string]any{}
	if c, err := s.stateContent(old, "m.room.power_levels", ""); err == nil {
		json.Unmarshal(c, &pl)
	}
	users, _ := pl["users"].(map[string]any)
	if users == nil {
		users = map[string]any{}
	}
	final := map[string]any{}
	for k, v := range pl {
		final[k] = v
	}
	finalUsers := map[string]any{}
	for k, v := range users {
		finalUsers[k] = v
	}
	initial := map[string]any{}
	for k, v := range final {
		initial[k] = v
	}
	initialUsers := map[string]any{}
	if ver.RoomIDFromCreate {
		for u := range creators {
			delete(finalUsers, u) // creators may not be listed in v12
		}
		for k, v := range finalUsers {
			initialUsers[k] = v
		}
	} else {
		if p.infiniteCreators || !p.hasPL {
			// From a v12 room (or one without power levels) the upgrader's
			// power was implied.
			finalUsers[r.User] = max(plValue(mustJSON(finalUsers[r.User]), 0), 100)
		}
		needed := max(p.stateDefault, p.ban, int64(100))
		for _, l := range p.events {
			needed = max(needed, l)
		}
		for k, v := range finalUsers {
			initialUsers[k] = v
		}
		if plValue(mustJSON(initialUsers[r.User]), p.usersDefault) < needed {
			initialUsers[r.User] = needed
		}
	}
	final["users"], initial["users"] = finalUsers, initialUsers

	evs := []rooms.Event{
		{Type: "m.room.create", StateKey: str(""), Content: mustJSON(create)},
		{Type: "m.room.member", StateKey: str(r.User), Content: mustJSON(s.selfMemberContent(r.User, "join", nil))},
		{Type: "m.room.power_levels", StateKey: str(""), Content: mustJSON(initial)},
	}
	for _, typ := range upgradeCopied {
		if c, err := s.stateContent(old, typ, ""); err == nil {
			evs = append(evs, rooms.Event{Type: typ, StateKey: str(""), Content: c})
		}
	}
	if rt := s.stateString(old, "m.room.create", "type"); rt != nil && *rt == "m.space" {
		children, err := s.store.CurrentState(old, "m.space.child")
		if err != nil {
			return err
		}
		for _, e := range children {
			if c, err := s.stateContent(old, e.Type, e.StateKey); err == nil && string(c) != "{}" {
				evs = append(evs, rooms.Event{Type: e.Type, StateKey: str(e.StateKey), Content: c})
			}
		}
	}
	if p.userLevel(r.User) >= p.ban {
		ms, err := s.store.Members(old)
		if err != nil {
			return err
		}
		for _, mm := range ms {
			if mm.Membership == projections.MemberBan && !creators[mm.UserID] {
				c := map[string]any{"membership": "ban"}
				if rc, err := s.stateContent(old, "m.room.member", mm.UserID); err == nil {
					var x struct {
						Reason string `json:"reason"`
					}
					if json.Unmarshal(rc, &x) == nil && x.Reason != "" {
						c["reason"] = x.Reason
					}
				}
				evs = append(evs, rooms.Event{Type: "m.room.member", StateKey: str(mm.UserID), Content: mustJSON(c)})
			}
		}
	}
	if !reflect.DeepEqual(initial, final) {
		evs = append(evs, rooms.Event{Type: "m.room.power_levels", StateKey: str(""), Content: mustJSON(final)})
	}
	for i := range evs {
		evs[i].Sender = r.User
	}
	newRoom, err := s.rooms.CreateRoom(ver.ID, evs)
	if err != nil {
		return roomError(err)
	}

	if _, err := s.rooms.Send(rooms.Event{Room: old, Sender: r.User, Type: "m.room.tombstone", StateKey: str(""),
		Content: mustJSON(map[string]any{"body": "This room has been replaced", "replacement_room": newRoom})}); err != nil {
		return roomError(err)
	}
	if err := s.moveAliases(old, newRoom, r.User); err != nil {
		return err
	}
	if pub, err := s.store.RoomPublished(old); err == nil && pub {
		if err := s.appendRecord(&projections.DirectoryRecord{RoomID: newRoom, Public: true, UserID: r.User}); err != nil {
			return err
		}
		if err := s.appendRecord(&projections.DirectoryRecord{RoomID: old, UserID: r.User}); err != nil {
			return err
		}
	}
	s.restrictOldRoom(old, r.User)
	return r.json(map[string]string{"replacement_room": newRoom})
}

// moveAliases points the old room's local aliases at the new room and
// moves the canonical alias event across: removed from the old room,
// sent to the new one (Synapse's order, so the aliases are valid there).
func (s *Server) moveAliases(old, newRoom, user string) error {
	aliasMu.Lock()
	aliases, err := s.store.RoomAliases(old)
	if err == nil {
		for _, a := range aliases {
			_, creator, err2 := s.store.Alias(a)
			if err2 != nil && !errors.Is(err2, projections.ErrNotFound) {
				err = err2
				break
			}
			if err = s.appendRecord(&projections.AliasRecord{Alias: a, RoomID: newRoom, Creator: creator}); err != nil {
				break
			}
		}
	}
	aliasMu.Unlock()
	if err != nil {
		return err
	}
	content, err := s.stateContent(old, "m.room.canonical_alias", "")
	if err != nil || string(content) == "{}" {
		return nil
	}
	s.rooms.Send(rooms.Event{Room: old, Sender: user, Type: "m.room.canonical_alias", StateKey: str(""), Content: json.RawMessage("{}")})
	if s.checkCanonicalAlias(newRoom, content) == nil {
		s.rooms.Send(rooms.Event{Room: newRoom, Sender: user, Type: "m.room.canonical_alias", StateKey: str(""), Content: content})
	}
	return nil
}

// restrictOldRoom raises events_default and invite in the old room's power
// levels so it is no longer used: "setting events_default and invite to
// the greater of 50 and users_default + 1". A user without the power to
// change them leaves them (the upgrade stands).
func (s *Server) restrictOldRoom(old, user string) {
	content, err := s.stateContent(old, "m.room.power_levels", "")
	if err != nil {
		return
	}
	var pl map[string]json.RawMessage
	if json.Unmarshal(content, &pl) != nil {
		return
	}
	restricted := max(int64(50), plValue(pl["users_default"], 0)+1)
	changed := false
	for _, k := range []string{"events_default", "invite"} {
		if plValue(pl[k], 0) < restricted {
			pl[k] = mustJSON(restricted)
			changed = true
		}
	}
	if changed {
		s.rooms.Send(rooms.Event{Room: old, Sender: user, Type: "m.room.power_levels", StateKey: str(""), Content: mustJSON(pl)})
	}
}
