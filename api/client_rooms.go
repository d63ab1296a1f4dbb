package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"sync"

	"engram/dag"
	"engram/dag/rooms"
	"engram/projections"
)

func (s *Server) roomRoutes() {
	rt := &s.rt
	rt.client("POST", "/createRoom", authed, s.createRoom)
	rt.client("POST", "/join/{roomIdOrAlias}", authed, s.join)
	rt.client("POST", "/rooms/{roomId}/join", authed, s.join)
	rt.client("POST", "/knock/{roomIdOrAlias}", authed, s.knock)
	rt.client("POST", "/rooms/{roomId}/leave", authed, s.leave)
	rt.client("POST", "/rooms/{roomId}/forget", authed, s.forget)
	rt.client("POST", "/rooms/{roomId}/invite", authed, s.targetMembership("invite"))
	rt.client("POST", "/rooms/{roomId}/kick", authed, s.targetMembership("leave"))
	rt.client("POST", "/rooms/{roomId}/ban", authed, s.targetMembership("ban"))
	rt.client("POST", "/rooms/{roomId}/unban", authed, s.unban)
	rt.client("PUT", "/rooms/{roomId}/send/{eventType}/{txnId}", authed, s.sendEvent)
	rt.client("PUT", "/rooms/{roomId}/state/{eventType}/{stateKey}", authed, s.putState)
	rt.client("PUT", "/rooms/{roomId}/state/{eventType}", authed, s.putState)
	rt.client("GET", "/rooms/{roomId}/state", authed, s.getState)
	rt.client("GET", "/rooms/{roomId}/state/{eventType}/{stateKey}", authed, s.getStateEvent)
	rt.client("GET", "/rooms/{roomId}/state/{eventType}", authed, s.getStateEvent)
	rt.client("GET", "/rooms/{roomId}/messages", authed, s.messages)
	rt.client("GET", "/rooms/{roomId}/context/{eventId}", authed, s.eventContext)
	rt.client("GET", "/rooms/{roomId}/event/{eventId}", authed, s.getEvent)
	rt.client("GET", "/rooms/{roomId}/members", authed, s.members)
	rt.client("GET", "/rooms/{roomId}/joined_members", authed, s.joinedMembers)
	rt.client("GET", "/joined_rooms", authed, s.joinedRooms)
	s.redactRoutes()
	s.aliasRoutes()
	s.directoryRoutes()
	s.upgradeRoutes()
	s.roomInfoRoutes()
}

// roomError maps sequencer errors to Matrix errors.
func roomError(err error) error {
	var fe *rooms.ForbiddenError
	switch {
	case errors.As(err, &fe):
		return errForbidden(fe.Err.Error())
	case errors.Is(err, rooms.ErrUnknownRoom):
		return errNotFound("Unknown room")
	case errors.Is(err, rooms.ErrBadEvent):
		if strings.Contains(err.Error(), "too large") {
			return merr(413, "M_TOO_LARGE", err.Error())
		}
		return errBadJSON(err.Error())
	}
	return err
}

type createRoomBody struct {
	Preset                    string            `json:"preset"`
	Visibility                string            `json:"visibility"`
	RoomVersion               string            `json:"room_version"`
	RoomAliasName             *string           `json:"room_alias_name"`
	Name                      *string           `json:"name"`
	Topic                     *string           `json:"topic"`
	Invite                    []string          `json:"invite"`
	Invite3PID                []json.RawMessage `json:"invite_3pid"`
	IsDirect                  bool              `json:"is_direct"`
	CreationContent           json.RawMessage   `json:"creation_content"`
	PowerLevelContentOverride json.RawMessage   `json:"power_level_content_override"`
	InitialState              []initialStateEvt `json:"initial_state"`
}

type initialStateEvt struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

func str(s string) *string { return &s }

func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

// isObject reports whether raw is a JSON object.
func isObject(raw json.RawMessage) bool {
	t := strings.TrimSpace(string(raw))
	return len(t) > 0 && t[0] == '{'
}

// mergeObject overlays the keys of override (a JSON object) on base.
func mergeObject(base map[string]any, override json.RawMessage) error {
	if len(override) == 0 || string(override) == "null" {
		return nil
	}
	var o map[string]any
	if err := json.Unmarshal(override, &o); err != nil {
		return err
	}
	for k, v := range o {
		base[k] = v
	}
	return nil
}

// aliasMu serialises "is this alias free?" with the record that takes it.
var aliasMu sync.Mutex

// topicContent is the content of an m.room.topic for a plain-text topic:
// "an m.room.topic event with a text/plain mimetype" (createRoom).
func topicContent(topic string) json.RawMessage {
	return mustJSON(map[string]any{"topic": topic, "m.topic": map[string]any{
		"m.text": []map[string]string{{"mimetype": "text/plain", "body": topic}}}})
}

// defaultPowerLevels is the m.room.power_levels content a new room starts
// with (Synapse's defaults), before power_level_content_override.
func defaultPowerLevels(ver *dag.RoomVersion, creator string, preset string, invitees []string) map[string]any {
	users := map[string]any{}
	if !ver.RoomIDFromCreate {
		users[creator] = 100 // v12: creators have infinite power and are not listed
		if preset == "trusted_private_chat" {
			for _, u := range invitees {
				users[u] = 100
			}
		}
	}
	invite := 50
	if preset != "public_chat" {
		invite = 0
	}
	tombstone := 100
	if ver.RoomIDFromCreate {
		tombstone = 150 // "MUST explicitly be higher than state_default"
	}
	return map[string]any{
		"users": users, "users_default": 0, "events_default": 0, "state_default": 50,
		"ban": 50, "kick": 50, "redact": 50, "invite": invite, "historical": 100,
		"events": map[string]any{
			"m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
			"m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": tombstone,
			"m.room.server_acl": 100, "m.room.encryption": 100,
		},
		"notifications": map[string]any{"room": 50},
	}
}

// createRoom serves POST /createRoom. The events follow the order the spec
// requires: create, the creator's join, power levels, the canonical alias,
// the preset's join rules / history visibility / guest access (each
// skipped when initial_state sets it, as Synapse does), initial_state,
// name, topic, invites.
func (s *Server) createRoom(r *Req) error {
	var b createRoomBody
	if e := r.decode(&b); e != nil {
		return e
	}
	version := b.RoomVersion
	if version == "" {
		version = s.cfg.DefaultRoomVersion
	}
	ver := dag.Version(version)
	if ver == nil {
		return merr(400, "M_UNSUPPORTED_ROOM_VERSION", "Unsupported room version "+version)
	}
	switch b.Visibility {
	case "", "public", "private":
	default:
		return errInvalid("visibility must be public or private")
	}
	preset := b.Preset
	if preset == "" {
		if b.Visibility == "public" {
			preset = "public_chat"
		} else {
			preset = "private_chat"
		}
	}
	joinRule, guestCanJoin := "invite", true
	switch preset {
	case "public_chat":
		joinRule, guestCanJoin = "public", false
	case "private_chat", "trusted_private_chat":
	default:
		return errInvalid("Unknown preset " + preset)
	}
	for _, u := range b.Invite {
		if !validUserID(u) {
			return errInvalid("Invalid user ID to invite: " + u)
		}
	}
	if len(b.CreationContent) > 0 && string(b.CreationContent) != "null" && !isObject(b.CreationContent) {
		return errBadJSON("creation_content must be an object")
	}
	if len(b.PowerLevelContentOverride) > 0 && string(b.PowerLevelContentOverride) != "null" && !isObject(b.PowerLevelContentOverride) {
		return errBadJSON("power_level_content_override must be an object")
	}
	// initial_state, last one per (type, state_key) wins.
	type stKey struct{ typ, sk string }
	initial := map[stKey]json.RawMessage{}
	var initialOrder []stKey
	for _, st := range b.InitialState {
		if st.Type == "" || !isObject(st.Content) {
			return merr(400, "M_INVALID_ROOM_STATE", "initial_state events need a type and an object content")
		}
		if st.Type == "m.room.create" {
			return merr(400, "M_INVALID_ROOM_STATE", "m.room.create cannot be set in initial_state; use creation_content")
		}
		k := stKey{st.Type, st.StateKey}
		if _, dup := initial[k]; !dup {
			initialOrder = append(initialOrder, k)
		}
		initial[k] = st.Content
	}
	// name and topic overwrite initial_state's.
	if b.Name != nil {
		delete(initial, stKey{"m.room.name", ""})
	}
	if b.Topic != nil {
		delete(initial, stKey{"m.room.topic", ""})
	}
	var alias string
	if b.RoomAliasName != nil {
		local := *b.RoomAliasName
		if local == "" || strings.ContainsAny(local, ":\x00") || strings.ContainsFunc(local, isSpace) {
			return errInvalid("Invalid characters in room alias")
		}
		alias = "#" + local + ":" + s.cfg.ServerName
		if !validAlias(alias) {
			return errInvalid("Invalid room alias")
		}
		aliasMu.Lock()
		defer aliasMu.Unlock()
		if _, _, err := s.store.Alias(alias); err == nil {
			return merr(400, "M_ROOM_IN_USE", "Room alias already taken")
		} else if !errors.Is(err, projections.ErrNotFound) {
			return err
		}
	}

	create := map[string]any{}
	if err := mergeObject(create, b.CreationContent); err != nil {
		return errBadJSON("creation_content must be an object")
	}
	delete(create, "creator")
	if !ver.CreatorIsSender {
		create["creator"] = r.User
	}
	create["room_version"] = version
	if ver.RoomIDFromCreate && preset == "trusted_private_chat" && len(b.Invite) > 0 {
		// "the users specified in the invite parameter SHOULD also be
		// appended to additional_creators ... deduplicating".
		seen := map[string]bool{}
		var extra []string
		if list, ok := create["additional_creators"].([]any); ok {
			for _, v := range list {
				if u, ok := v.(string); ok && !seen[u] {
					seen[u] = true
					extra = append(extra, u)
				}
			}
		}
		for _, u := range b.Invite {
			if !seen[u] && u != r.User {
				seen[u] = true
				extra = append(extra, u)
			}
		}
		create["additional_creators"] = extra
	}

	evs := []rooms.Event{
		{Type: "m.room.create", StateKey: str(""), Content: mustJSON(create)},
		{Type: "m.room.member", StateKey: str(r.User), Content: mustJSON(s.selfMemberContent(r.User, "join", nil))},
	}
	if pl, ok := initial[stKey{"m.room.power_levels", ""}]; ok {
		evs = append(evs, rooms.Event{Type: "m.room.power_levels", StateKey: str(""), Content: pl})
		delete(initial, stKey{"m.room.power_levels", ""})
	} else {
		pl := defaultPowerLevels(ver, r.User, preset, b.Invite)
		if err := mergeObject(pl, b.PowerLevelContentOverride); err != nil {
			return errBadJSON("power_level_content_override must be an object")
		}
		evs = append(evs, rooms.Event{Type: "m.room.power_levels", StateKey: str(""), Content: mustJSON(pl)})
	}
	presetState := func(typ string, content any) {
		if _, ok := initial[stKey{typ, ""}]; !ok {
			evs = append(evs, rooms.Event{Type: typ, StateKey: str(""), Content: mustJSON(content)})
		}
	}
	if alias != "" {
		presetState("m.room.canonical_alias", map[string]any{"alias": alias})
	}
	presetState("m.room.join_rules", map[string]any{"join_rule": joinRule})
	presetState("m.room.history_visibility", map[string]any{"history_visibility": "shared"})
	if guestCanJoin {
		presetState("m.room.guest_access", map[string]any{"guest_access": "can_join"})
	}
	for _, k := range initialOrder {
		if c, ok := initial[k]; ok {
			evs = append(evs, rooms.Event{Type: k.typ, StateKey: str(k.sk), Content: c})
		}
	}
	if b.Name != nil {
		evs = append(evs, rooms.Event{Type: "m.room.name", StateKey: str(""), Content: mustJSON(map[string]any{"name": *b.Name})})
	}
	if b.Topic != nil {
		evs = append(evs, rooms.Event{Type: "m.room.topic", StateKey: str(""), Content: topicContent(*b.Topic)})
	}
	// Users of other servers are invited once the room exists, over
	// federation (invite v2, as POST /invite does): an invite sequenced here
	// alone would never reach their server.
	var remoteInvites []string
	for _, u := range b.Invite {
		if s.inviteBlocked(u) {
			continue // the room is still created; this invitee is skipped (spec)
		}
		if s.isRemote(u) {
			remoteInvites = append(remoteInvites, u)
			continue
		}
		c := map[string]any{"membership": "invite"}
		if b.IsDirect {
			c["is_direct"] = true
		}
		evs = append(evs, rooms.Event{Type: "m.room.member", StateKey: str(u), Content: mustJSON(c)})
	}
	for i := range evs {
		evs[i].Sender = r.User
	}
	id, err := s.rooms.CreateRoom(version, evs)
	if err != nil {
		// "The initial state implied by the parameters to the request is
		// invalid ... M_INVALID_ROOM_STATE".
		var fe *rooms.ForbiddenError
		if errors.As(err, &fe) {
			return merr(400, "M_INVALID_ROOM_STATE", fe.Err.Error())
		}
		if errors.Is(err, rooms.ErrBadEvent) && !strings.Contains(err.Error(), "too large") {
			return merr(400, "M_INVALID_ROOM_STATE", err.Error())
		}
		return roomError(err)
	}
	if alias != "" {
		if err := s.appendRecord(&projections.AliasRecord{Alias: alias, RoomID: id, Creator: r.User}); err != nil {
			return err
		}
	}
	if b.Visibility == "public" {
		if err := s.appendRecord(&projections.DirectoryRecord{RoomID: id, Public: true, UserID: r.User}); err != nil {
			return err
		}
	}
	for _, u := range remoteInvites {
		c := map[string]any{"membership": "invite"}
		if b.IsDirect {
			c["is_direct"] = true
		}
		// The room exists whatever the invitee's server says: a refusal
		// or an unreachable server is logged, not an error of createRoom
		// (the client would not learn the new room's ID).
		if _, err := s.fed.Invite(id, r.User, u, mustJSON(c)); err != nil {
			s.logger.Info("createRoom: remote invite failed", "room", id, "invitee", u, "err", err)
		}
	}
	return r.json(map[string]string{"room_id": id})
}

// appendRecord appends one non-event record and waits until it is durable.
func (s *Server) appendRecord(v any) error {
	rec, err := projections.Encode(v)
	if err != nil {
		return err
	}
	_, err = s.log.Append(rec)
	return err
}

func isSpace(r rune) bool {
	return r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\f' || r == '\v' || r == 0x85 || r == 0xa0
}

// validUserID checks the shape @localpart:server.
func validUserID(u string) bool {
	return len(u) <= 255 && strings.HasPrefix(u, "@") && strings.IndexByte(u, ':') > 1
}

func validRoomID(id string) bool {
	return len(id) <= 255 && strings.HasPrefix(id, "!") && len(id) > 1
}

// validAlias checks the room alias grammar: "#" localpart ":" server name,
// at most 255 bytes, the localpart without ':' or NUL ("Room aliases").
func validAlias(a string) bool {
	if len(a) > 255 || len(a) < 4 || a[0] != '#' {
		return false
	}
	i := strings.IndexByte(a, ':')
	if i < 2 || i == len(a)-1 || strings.IndexByte(a, 0) >= 0 {
		return false
	}
	for _, c := range a[i+1:] {
		ok := c == '.' || c == '-' || c == ':' || c == '[' || c == ']' ||
			(c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
		if !ok {
			return false
		}
	}
	return true
}

// selfMemberContent is the content of a membership event the user sends about
// themselves: with their profile's displayname and avatar_url, as Synapse
// sends them.
func (s *Server) selfMemberContent(user, membership string, extra map[string]any) map[string]any {
	c := map[string]any{"membership": membership}
	if membership == "join" || membership == "knock" {
		for _, k := range []string{"displayname", "avatar_url"} {
			if v, err := s.store.ProfileValue(user, k); err == nil {
				var x any
				if json.Unmarshal(v, &x) == nil && x != nil {
					c[k] = x
				}
			}
		}
	}
	for k, v := range extra {
		c[k] = v
	}
	return c
}

// setMembership sends a membership event for target, sent by r.User.
func (s *Server) setMembership(r *Req, room, target, membership string, extra map[string]any) (string, error) {
	var c map[string]any
	if target == r.User {
		c = s.selfMemberContent(r.User, membership, extra)
	} else {
		c = map[string]any{"membership": membership}
		for k, v := range extra {
			c[k] = v
		}
	}
	res, err := s.rooms.Send(rooms.Event{Room: room, Sender: r.User, Type: "m.room.member", StateKey: str(target), Content: mustJSON(c)})
	if err != nil {
		return "", roomError(err)
	}
	return res.EventID, nil
}

type membershipBody struct {
	UserID string `json:"user_id"`
	Reason string `json:"reason"`
}

func reasonExtra(reason string) map[string]any {
	if reason == "" {
		return nil
	}
	return map[string]any{"reason": reason}
}

// resolveRoom turns a room ID or alias into a room ID. Aliases of other
// servers cannot be resolved until federation queries exist: they are
// not found.
func (s *Server) resolveRoom(idOrAlias string) (string, error) {
	switch {
	case strings.HasPrefix(idOrAlias, "#"):
		if !validAlias(idOrAlias) {
			return "", errInvalid("Invalid room alias")
		}
		room, _, err := s.store.Alias(idOrAlias)
		if errors.Is(err, projections.ErrNotFound) {
			return "", errNotFound("Room alias " + idOrAlias + " not found")
		}
		return room, err
	case validRoomID(idOrAlias):
		return idOrAlias, nil
	}
	return "", errInvalid("Invalid room ID or alias")
}

// join serves POST /join/{roomIdOrAlias} and POST /rooms/{roomId}/join.
func (s *Server) join(r *Req) error {
	target := r.Param("roomIdOrAlias")
	if r.Param("roomId") != "" {
		target = r.Param("roomId")
	}
	var b membershipBody
	if e := r.decode(&b); e != nil {
		return e
	}
	if done, err := s.fedJoinAlias(r, target); done || err != nil {
		return err
	}
	room, err := s.resolveRoom(target)
	if err != nil {
		return err
	}
	if done, err := s.joinRemote(r, room); done || err != nil {
		return err
	}
	if m, err := s.store.MemberOf(room, r.User); err == nil && m.Membership == projections.MemberJoin && b.Reason == "" {
		// Joining again changes nothing: Synapse answers without a new event.
		return r.json(map[string]string{"room_id": room})
	}
	if _, err := s.setMembership(r, room, r.User, "join", reasonExtra(b.Reason)); err != nil {
		return err
	}
	return r.json(map[string]string{"room_id": room})
}

// knock serves POST /knock/{roomIdOrAlias} (room versions 7 and later; the
// authorization rules refuse a knock elsewhere).
func (s *Server) knock(r *Req) error {
	var b membershipBody
	if e := r.decode(&b); e != nil {
		return e
	}
	target := r.Param("roomIdOrAlias")
	var room string
	var via []string
	if strings.HasPrefix(target, "#") && s.isRemote(target) {
		id, servers, err := s.fed.QueryAlias(target)
		if err != nil {
			return errNotFound("Room alias " + target + " not found")
		}
		room, via = id, servers
	} else {
		id, err := s.resolveRoom(target)
		if err != nil {
			return err
		}
		room = id
	}
	vid, err := s.store.RoomVersion(room)
	if errors.Is(err, projections.ErrNotFound) {
		if done, err := s.fedKnock(r, room, via, b.Reason); done || err != nil {
			return err
		}
		return errNotFound("That room does not appear to exist")
	}
	if err != nil {
		return err
	}
	if v := dag.Version(vid); v == nil || !v.Knocking {
		return errForbidden("This room version does not support knocking")
	}
	if _, err := s.setMembership(r, room, r.User, "knock", reasonExtra(b.Reason)); err != nil {
		return err
	}
	return r.json(map[string]string{"room_id": room})
}

// fedKnock knocks on a room this server does not take part in, through
// the via / server_name servers (and those an alias named) and the room
// ID's own server: make_knock and send_knock (api/federation/knock.go).
// done reports whether it answered the request.
func (s *Server) fedKnock(r *Req, room string, via []string, reason string) (done bool, err error) {
	k, ok := s.fed.(fedKnocker)
	if !ok {
		return false, nil
	}
	for _, key := range []string{"via", "server_name"} {
		for _, v := range r.ctx.QueryArgs().PeekMulti(key) {
			via = append(via, string(v))
		}
	}
	extra := s.selfMemberContent(r.User, "knock", reasonExtra(reason))
	if _, err := k.Knock(room, r.User, via, mustJSON(extra)); err != nil {
		s.logger.Info("remote knock failed", "room", room, "err", err)
		var he interface{ StatusCode() int }
		if errors.As(err, &he) {
			switch he.StatusCode() {
			case 404:
				return true, errNotFound("That room does not appear to exist")
			case 400:
				return true, errForbidden("The room does not accept knocks from this server's room versions")
			}
		}
		return true, errForbidden("Could not knock on the room over federation")
	}
	return true, r.json(map[string]string{"room_id": room})
}

func (s *Server) leave(r *Req) error {
	var b membershipBody
	if e := r.decode(&b); e != nil {
		return e
	}
	room := r.Param("roomId")
	if m, err := s.store.MemberOf(room, r.User); err == nil && m.Membership == projections.MemberLeave {
		return r.json(struct{}{}) // already left: nothing to do
	}
	if done, err := s.fedLeave(r, room); done || err != nil {
		return err
	}
	if _, err := s.setMembership(r, room, r.User, "leave", reasonExtra(b.Reason)); err != nil {
		return err
	}
	return r.json(struct{}{})
}

// forget serves POST /rooms/{roomId}/forget: "If the user is currently
// joined to the room, they must leave the room before calling this API."
// Like Synapse, an invite or knock must be withdrawn first too.
func (s *Server) forget(r *Req) error {
	room := r.Param("roomId")
	m, err := s.store.MemberOf(room, r.User)
	if err != nil {
		return err
	}
	switch m.Membership {
	case 0:
		return r.json(struct{}{}) // nothing to forget
	case projections.MemberLeave, projections.MemberBan:
	default:
		return merr(400, "M_UNKNOWN", "User "+r.User+" is in room "+room)
	}
	if err := s.appendRecord(&projections.ForgetRecord{UserID: r.User, RoomID: room}); err != nil {
		return err
	}
	return r.json(struct{}{})
}

// targetMembership serves invite, kick and ban: membership events about
// another user.
func (s *Server) targetMembership(membership string) handler {
	return func(r *Req) error {
		var b membershipBody
		if e := r.decode(&b); e != nil {
			return e
		}
		if !validUserID(b.UserID) {
			return errInvalid("Missing or invalid user_id")
		}
		room := r.Param("roomId")
		if membership == "leave" && b.UserID != r.User {
			// A kick of someone not in the room changes nothing (Synapse
			// refuses it).
			m, err := s.store.MemberOf(room, b.UserID)
			if err != nil {
				return err
			}
			if _, err := s.store.RoomVersion(room); errors.Is(err, projections.ErrNotFound) {
				return errNotFound("Unknown room")
			}
			switch m.Membership {
			case projections.MemberJoin, projections.MemberInvite, projections.MemberKnock:
			default:
				return errForbidden("The target user is not in the room")
			}
		}
		if membership == "invite" {
			if s.inviteBlocked(b.UserID) {
				return errInviteBlocked
			}
			if done, err := s.fedInvite(r, room, b.UserID, reasonExtra(b.Reason)); done || err != nil {
				return err
			}
		}
		if _, err := s.setMembership(r, room, b.UserID, membership, reasonExtra(b.Reason)); err != nil {
			return err
		}
		return r.json(struct{}{})
	}
}

func (s *Server) unban(r *Req) error {
	var b membershipBody
	if e := r.decode(&b); e != nil {
		return e
	}
	if !validUserID(b.UserID) {
		return errInvalid("Missing or invalid user_id")
	}
	room := r.Param("roomId")
	if _, err := s.store.RoomVersion(room); errors.Is(err, projections.ErrNotFound) {
		return errNotFound("Unknown room")
	}
	m, err := s.store.MemberOf(room, b.UserID)
	if err != nil {
		return err
	}
	if m.Membership != projections.MemberBan {
		return errForbidden("User is not banned")
	}
	if _, err := s.setMembership(r, room, b.UserID, "leave", reasonExtra(b.Reason)); err != nil {
		return err
	}
	return r.json(struct{}{})
}

// eventBody reads a JSON object body as raw content.
func (r *Req) eventBody() (json.RawMessage, *Error) {
	var m map[string]json.RawMessage
	if e := r.decode(&m); e != nil {
		return nil, e
	}
	b, _ := r.body()
	if len(strings.TrimSpace(string(b))) == 0 {
		return json.RawMessage("{}"), nil
	}
	return json.RawMessage(b), nil
}

func (s *Server) sendEvent(r *Req) error {
	// eventBody without its decode into a map: the content is checked to
	// be a JSON object (the same errors), and the sequencer parses it.
	body, e := r.body()
	if e != nil {
		return e
	}
	content := json.RawMessage(body)
	if t := bytes.TrimSpace(body); len(t) == 0 {
		content = json.RawMessage("{}")
	} else if !json.Valid(t) {
		return errNotJSON("Content not JSON.")
	} else if t[0] != '{' {
		return errBadJSON("Body must be a JSON object")
	}
	room, typ := r.Param("roomId"), r.Param("eventType")
	var redacts string
	if typ == "m.room.redaction" {
		// A redaction sent as a plain event gets the /redact checks.
		var c struct {
			Redacts string `json:"redacts"`
		}
		if json.Unmarshal(content, &c) != nil || c.Redacts == "" {
			return errBadJSON("m.room.redaction needs content.redacts (or use /redact)")
		}
		if err := s.checkRedaction(room, r.User, c.Redacts); err != nil {
			return err
		}
		redacts = c.Redacts
	}
	txn := txnKey(r.User, r.Device, room, r.Param("txnId"))
	if mayRelate(content) {
		// Unless it is a retry of a stored send, check its relation (a
		// retry of a send that already made an annotation must not count
		// as a duplicate). Without a relation there is nothing to check:
		// the sequencer alone recognises retries.
		if _, err := s.store.TxnEvent(txn); err != nil {
			if err := s.validateRelation(room, r.User, typ, content); err != nil {
				return err
			}
		}
	}
	res, err := s.rooms.Send(rooms.Event{
		Room: room, Sender: r.User, Type: typ, Content: content, Redacts: redacts, Txn: txn,
	})
	if err != nil {
		return roomError(err)
	}
	out := append(make([]byte, 0, 16+len(res.EventID)), `{"event_id":`...)
	r.raw(200, append(appendJSONString(out, res.EventID), '}'))
	return nil
}

func (s *Server) putState(r *Req) error {
	content, e := r.eventBody()
	if e != nil {
		return e
	}
	room, typ := r.Param("roomId"), r.Param("eventType")
	switch typ {
	case "m.room.member":
		// Membership has its own endpoints and rules; Synapse refuses it here too.
		var c struct {
			Membership string `json:"membership"`
		}
		json.Unmarshal(content, &c)
		if c.Membership == "" {
			return errBadJSON("m.room.member needs a membership")
		}
		if c.Membership == "invite" && s.inviteBlocked(r.Param("stateKey")) {
			return errInviteBlocked
		}
	case "m.room.canonical_alias":
		if r.Param("stateKey") == "" {
			if err := s.checkCanonicalAlias(room, content); err != nil {
				return err
			}
		}
	}
	res, err := s.rooms.Send(rooms.Event{Room: room, Sender: r.User, Type: typ, StateKey: str(r.Param("stateKey")), Content: content})
	if err != nil {
		return roomError(err)
	}
	return r.json(map[string]string{"event_id": res.EventID})
}

// checkCanonicalAlias validates the aliases an m.room.canonical_alias
// event adds: "servers SHOULD ensure that any new aliases being listed in
// the event are valid per their grammar/syntax (M_INVALID_PARAM) and that
// they point to the room ID where the state event is to be sent
// (M_BAD_ALIAS). Servers do not validate aliases which are being removed
// or are already present in the state event."
func (s *Server) checkCanonicalAlias(room string, content json.RawMessage) error {
	var c struct {
		Alias      *string         `json:"alias"`
		AltAliases json.RawMessage `json:"alt_aliases"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return errInvalid("alias must be a string")
	}
	var alts []string
	if len(c.AltAliases) > 0 && string(c.AltAliases) != "null" {
		if err := json.Unmarshal(c.AltAliases, &alts); err != nil {
			return errInvalid("The alt_aliases property must be a list of strings")
		}
	}
	var old struct {
		Alias      string `json:"alias"`
		AltAliases []any  `json:"alt_aliases"`
	}
	if prev, err := s.stateContent(room, "m.room.canonical_alias", ""); err == nil {
		json.Unmarshal(prev, &old)
	}
	oldAlts := map[string]bool{}
	for _, a := range old.AltAliases {
		if s, ok := a.(string); ok {
			oldAlts[s] = true
		}
	}
	var fresh []string
	if c.Alias != nil && *c.Alias != "" && *c.Alias != old.Alias {
		fresh = append(fresh, *c.Alias)
	}
	for _, a := range alts {
		if !oldAlts[a] {
			fresh = append(fresh, a)
		}
	}
	for _, a := range fresh {
		if !validAlias(a) {
			return errInvalid("Invalid alias: " + a)
		}
		target, _, err := s.store.Alias(a)
		if err != nil && !errors.Is(err, projections.ErrNotFound) {
			return err
		}
		if target != room {
			return merr(400, "M_BAD_ALIAS", "The alias '"+a+"' does not point to this room.")
		}
	}
	return nil
}

// stateView returns the state a user reads of a room: the current state
// when joined (or peeking into a world_readable room), the state when they
// left otherwise. typ limits it to one event type when not empty.
func (s *Server) stateView(acc roomAccess, room, typ string) ([]projections.StateEntry, error) {
	if acc.current {
		return s.store.CurrentState(room, typ)
	}
	return s.store.StateAt(room, typ, acc.upto)
}

// getState serves GET /rooms/{roomId}/state: "If the user has left the room
// then this will be the state of the room when they left."
func (s *Server) getState(r *Req) error {
	room := r.Param("roomId")
	acc, err := s.readAccess(room, r.User, true)
	if err != nil {
		return err
	}
	entries, err := s.stateView(acc, room, "")
	if err != nil {
		return err
	}
	seqs := make([]uint64, 0, len(entries))
	for _, e := range entries {
		pos, _, err := s.store.EventPos(e.EventID)
		if err != nil {
			return err
		}
		seqs = append(seqs, pos)
	}
	b, err := s.appendEventList(make([]byte, 0, 256*len(seqs)), seqs, r.User, r.Device, nowMS())
	if err != nil {
		return err
	}
	r.raw(200, b)
	return nil
}

// getStateEvent serves GET /rooms/{roomId}/state/{eventType}/{stateKey}:
// the content, or with ?format=event the whole client event.
func (s *Server) getStateEvent(r *Req) error {
	room, typ, sk := r.Param("roomId"), r.Param("eventType"), r.Param("stateKey")
	format := r.Query("format")
	if format != "" && format != "content" && format != "event" {
		return errInvalid("format must be content or event")
	}
	acc, err := s.readAccess(room, r.User, true)
	if err != nil {
		return err
	}
	var id string
	if acc.current {
		id, err = s.store.StateEvent(room, typ, sk)
	} else {
		id, _, err = s.store.StateEventAt(room, typ, sk, acc.upto)
	}
	if errors.Is(err, projections.ErrNotFound) {
		return errNotFound("Event not found")
	}
	if err != nil {
		return err
	}
	rec, seq, err := s.store.Event(id)
	if err != nil {
		return err
	}
	if format == "event" {
		r.raw(200, s.appendServedEvent(nil, rec, seq, r.User, r.Device, nowMS()))
		return nil
	}
	served, _ := s.servedRecord(rec)
	var v pduView
	if err := json.Unmarshal(served.PDU, &v); err != nil {
		return err
	}
	r.raw(200, v.Content)
	return nil
}

// members serves GET /rooms/{roomId}/members: the membership events at
// the token given in at (or now; or when the user left), filtered by
// membership and not_membership ("either the membership is the same as
// membership or is not the same as not_membership").
func (s *Server) members(r *Req) error {
	room := r.Param("roomId")
	want, notWant := r.Query("membership"), r.Query("not_membership")
	for _, m := range []string{want, notWant} {
		if m != "" && projections.MembershipCode(m) == 0 {
			return errInvalid("Unknown membership " + m)
		}
	}
	acc, err := s.readAccess(room, r.User, true)
	if err != nil {
		return err
	}
	var entries []projections.StateEntry
	if at := r.Query("at"); at != "" {
		p, ok := parseToken(at)
		if !ok {
			return errInvalid("Invalid at token")
		}
		entries, err = s.store.StateAt(room, "m.room.member", min(p, acc.upto))
	} else {
		entries, err = s.stateView(acc, room, "m.room.member")
	}
	if err != nil {
		return err
	}
	seqs := make([]uint64, 0, len(entries))
	for _, e := range entries {
		pos, _, err := s.store.EventPos(e.EventID)
		if err != nil {
			return err
		}
		if want != "" || notWant != "" {
			m := e.Membership
			if m == "" {
				rec, err := s.store.Record(pos)
				if err != nil {
					return err
				}
				m = rec.Membership
			}
			if !((want != "" && m == want) || (notWant != "" && m != notWant)) {
				continue
			}
		}
		seqs = append(seqs, pos)
	}
	b := append(make([]byte, 0, 256*len(seqs)), `{"chunk":`...)
	if b, err = s.appendEventList(b, seqs, r.User, r.Device, nowMS()); err != nil {
		return err
	}
	r.raw(200, append(b, '}'))
	return nil
}

// joinedMembers serves GET /rooms/{roomId}/joined_members.
func (s *Server) joinedMembers(r *Req) error {
	room := r.Param("roomId")
	if _, err := s.readAccess(room, r.User, false); err != nil {
		return err
	}
	ms, err := s.store.Members(room)
	if err != nil {
		return err
	}
	type member struct {
		DisplayName *string `json:"display_name,omitempty"`
		AvatarURL   *string `json:"avatar_url,omitempty"`
	}
	joined := map[string]member{}
	for _, m := range ms {
		if m.Membership != projections.MemberJoin {
			continue
		}
		var out member
		if rec, _, err := s.store.Event(m.EventID); err == nil {
			rec, _ = s.servedRecord(rec)
			var v struct {
				Content struct {
					DisplayName any `json:"displayname"`
					AvatarURL   any `json:"avatar_url"`
				} `json:"content"`
			}
			json.Unmarshal(rec.PDU, &v)
			if d, ok := v.Content.DisplayName.(string); ok {
				out.DisplayName = &d
			}
			if a, ok := v.Content.AvatarURL.(string); ok {
				out.AvatarURL = &a
			}
		}
		joined[m.UserID] = out
	}
	return r.json(map[string]any{"joined": joined})
}

func (s *Server) joinedRooms(r *Req) error {
	urs, err := s.store.UserRooms(r.User)
	if err != nil {
		return err
	}
	ids := []string{}
	for _, u := range urs {
		if u.Membership == projections.MemberJoin {
			ids = append(ids, u.RoomID)
		}
	}
	return r.json(map[string]any{"joined_rooms": ids})
}

// SetRemoteJoin installs the federation's join, used for rooms this server
// does not know: through the via / server_name servers and the room ID's
// own server.
func (s *Server) SetRemoteJoin(f func(room, user string, via []string) (string, error)) {
	s.remoteJoin = f
}

// joinRemote joins a room this server does not know over federation; done
// reports whether it answered the request.
func (s *Server) joinRemote(r *Req, room string) (done bool, err error) {
	if s.remoteJoin == nil {
		return false, nil
	}
	if _, err := s.store.RoomVersion(room); err == nil {
		return false, nil
	}
	var via []string
	for _, k := range []string{"via", "server_name"} {
		for _, v := range r.ctx.QueryArgs().PeekMulti(k) {
			via = append(via, string(v))
		}
	}
	id, err := s.remoteJoin(room, r.User, via)
	if err != nil {
		s.logger.Info("remote join failed", "room", room, "err", err)
		return true, errForbidden("Could not join the room over federation")
	}
	return true, r.json(map[string]string{"room_id": id})
}
