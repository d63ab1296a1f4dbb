package api

import (
	"encoding/json"
	"errors"
	"strings"

	"engram/dag"
	"engram/dag/rooms"
	"engram/projections"
)

func (s *Server) roomRoutes() {
	rt := &s.rt
	rt.client("POST", "/createRoom", authed, s.createRoom)
	rt.client("POST", "/join/{roomIdOrAlias}", authed, s.join)
	rt.client("POST", "/rooms/{roomId}/join", authed, s.join)
	rt.client("POST", "/rooms/{roomId}/leave", authed, s.leave)
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
	rt.client("GET", "/joined_rooms", authed, s.joinedRooms)
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
	Name                      *string           `json:"name"`
	Topic                     *string           `json:"topic"`
	Invite                    []string          `json:"invite"`
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
	preset := b.Preset
	if preset == "" {
		if b.Visibility == "public" {
			preset = "public_chat"
		} else {
			preset = "private_chat"
		}
	}
	joinRule, guest := "invite", "can_join"
	switch preset {
	case "public_chat":
		joinRule, guest = "public", "forbidden"
	case "private_chat", "trusted_private_chat":
	default:
		return errInvalid("Unknown preset " + preset)
	}
	for _, u := range b.Invite {
		if !validUserID(u) {
			return errInvalid("Invalid user ID to invite: " + u)
		}
	}

	create := map[string]any{"room_version": version}
	if !ver.CreatorIsSender {
		create["creator"] = r.User
	}
	if err := mergeObject(create, b.CreationContent); err != nil {
		return errBadJSON("creation_content must be an object")
	}
	create["room_version"] = version

	users := map[string]any{}
	if !ver.RoomIDFromCreate {
		users[r.User] = 100 // v12: creators have infinite power and are not listed
	}
	if preset == "trusted_private_chat" {
		for _, u := range b.Invite {
			users[u] = 100
		}
	}
	invite := 0
	if preset == "public_chat" {
		invite = 50
	}
	pl := map[string]any{
		"users": users, "users_default": 0, "events_default": 0, "state_default": 50,
		"ban": 50, "kick": 50, "redact": 50, "invite": invite, "historical": 100,
		"events": map[string]any{
			"m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
			"m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
			"m.room.server_acl": 100, "m.room.encryption": 100,
		},
		"notifications": map[string]any{"room": 50},
	}
	if err := mergeObject(pl, b.PowerLevelContentOverride); err != nil {
		return errBadJSON("power_level_content_override must be an object")
	}

	evs := []rooms.Event{
		{Type: "m.room.create", StateKey: str(""), Content: mustJSON(create)},
		{Type: "m.room.member", StateKey: str(r.User), Content: mustJSON(map[string]any{"membership": "join"})},
		{Type: "m.room.power_levels", StateKey: str(""), Content: mustJSON(pl)},
		{Type: "m.room.join_rules", StateKey: str(""), Content: mustJSON(map[string]any{"join_rule": joinRule})},
		{Type: "m.room.history_visibility", StateKey: str(""), Content: mustJSON(map[string]any{"history_visibility": "shared"})},
	}
	if preset != "public_chat" {
		evs = append(evs, rooms.Event{Type: "m.room.guest_access", StateKey: str(""), Content: mustJSON(map[string]any{"guest_access": guest})})
	}
	for _, st := range b.InitialState {
		if st.Type == "" || len(st.Content) == 0 {
			return merr(400, "M_INVALID_ROOM_STATE", "initial_state events need type and content")
		}
		evs = append(evs, rooms.Event{Type: st.Type, StateKey: str(st.StateKey), Content: st.Content})
	}
	if b.Name != nil {
		evs = append(evs, rooms.Event{Type: "m.room.name", StateKey: str(""), Content: mustJSON(map[string]any{"name": *b.Name})})
	}
	if b.Topic != nil {
		evs = append(evs, rooms.Event{Type: "m.room.topic", StateKey: str(""), Content: mustJSON(map[string]any{"topic": *b.Topic})})
	}
	for _, u := range b.Invite {
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
		return roomError(err)
	}
	return r.json(map[string]string{"room_id": id})
}

// validUserID checks the shape @localpart:server.
func validUserID(u string) bool {
	return len(u) <= 255 && strings.HasPrefix(u, "@") && strings.IndexByte(u, ':') > 1
}

func validRoomID(id string) bool {
	return len(id) <= 255 && strings.HasPrefix(id, "!") && len(id) > 1
}

// setMembership sends a membership event for target, sent by r.User.
func (s *Server) setMembership(r *Req, room, target, membership string, extra map[string]any) (string, error) {
	c := map[string]any{"membership": membership}
	for k, v := range extra {
		c[k] = v
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

func (s *Server) join(r *Req) error {
	room := r.Param("roomIdOrAlias")
	if r.Param("roomId") != "" {
		room = r.Param("roomId")
	}
	var b membershipBody
	if e := r.decode(&b); e != nil {
		return e
	}
	if strings.HasPrefix(room, "#") {
		return errNotFound("Room alias not found")
	}
	if !validRoomID(room) {
		return errInvalid("Invalid room ID")
	}
	extra := map[string]any{}
	if b.Reason != "" {
		extra["reason"] = b.Reason
	}
	if _, err := s.setMembership(r, room, r.User, "join", extra); err != nil {
		return err
	}
	return r.json(map[string]string{"room_id": room})
}

func (s *Server) leave(r *Req) error {
	var b membershipBody
	if e := r.decode(&b); e != nil {
		return e
	}
	extra := map[string]any{}
	if b.Reason != "" {
		extra["reason"] = b.Reason
	}
	if _, err := s.setMembership(r, r.Param("roomId"), r.User, "leave", extra); err != nil {
		return err
	}
	return r.json(struct{}{})
}

// targetMembership serves invite, kick, ban and unban: membership events about another user.
func (s *Server) targetMembership(membership string) handler {
	return func(r *Req) error {
		var b membershipBody
		if e := r.decode(&b); e != nil {
			return e
		}
		if !validUserID(b.UserID) {
			return errInvalid("Missing or invalid user_id")
		}
		extra := map[string]any{}
		if b.Reason != "" {
			extra["reason"] = b.Reason
		}
		if _, err := s.setMembership(r, r.Param("roomId"), b.UserID, membership, extra); err != nil {
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
	m, err := s.store.MemberOf(r.Param("roomId"), b.UserID)
	if err != nil {
		return err
	}
	if m.Membership != projections.MemberBan {
		return errForbidden("User is not banned")
	}
	if _, err := s.setMembership(r, r.Param("roomId"), b.UserID, "leave", nil); err != nil {
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
	return json.RawMessage(b), nil
}

func (s *Server) sendEvent(r *Req) error {
	content, e := r.eventBody()
	if e != nil {
		return e
	}
	room := r.Param("roomId")
	res, err := s.rooms.Send(rooms.Event{
		Room: room, Sender: r.User, Type: r.Param("eventType"), Content: content,
		Txn: txnKey(r.User, r.Device, room, r.Param("txnId")),
	})
	if err != nil {
		return roomError(err)
	}
	return r.json(map[string]string{"event_id": res.EventID})
}

func (s *Server) putState(r *Req) error {
	content, e := r.eventBody()
	if e != nil {
		return e
	}
	typ := r.Param("eventType")
	if typ == "m.room.member" {
		// Membership has its own endpoints and rules; Synapse refuses it here too.
		var c struct {
			Membership string `json:"membership"`
		}
		json.Unmarshal(content, &c)
		if c.Membership == "" {
			return errBadJSON("m.room.member needs a membership")
		}
	}
	res, err := s.rooms.Send(rooms.Event{Room: r.Param("roomId"), Sender: r.User, Type: typ, StateKey: str(r.Param("stateKey")), Content: content})
	if err != nil {
		return roomError(err)
	}
	return r.json(map[string]string{"event_id": res.EventID})
}

// canSeeRoom reports whether the user may read a room's state now: a current
// member, or a former one (who then sees it as of leaving; not yet modelled).
func (s *Server) membership(room, user string) (projections.Member, error) {
	return s.store.MemberOf(room, user)
}

func (s *Server) getState(r *Req) error {
	room := r.Param("roomId")
	m, err := s.membership(room, r.User)
	if err != nil {
		return err
	}
	if m.Membership != projections.MemberJoin {
		return errForbidden("You are not in this room")
	}
	entries, err := s.store.CurrentState(room, "")
	if err != nil {
		return err
	}
	now := nowMS()
	b := []byte{'['}
	for i, e := range entries {
		rec, _, err := s.store.Event(e.EventID)
		if err != nil {
			return err
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = appendClientEvent(b, rec, r.User, r.Device, now)
	}
	r.raw(200, append(b, ']'))
	return nil
}

func (s *Server) getStateEvent(r *Req) error {
	room := r.Param("roomId")
	m, err := s.membership(room, r.User)
	if err != nil {
		return err
	}
	if m.Membership != projections.MemberJoin {
		return errForbidden("You are not in this room")
	}
	id, err := s.store.StateEvent(room, r.Param("eventType"), r.Param("stateKey"))
	if errors.Is(err, projections.ErrNotFound) {
		return errNotFound("Event not found")
	}
	if err != nil {
		return err
	}
	rec, _, err := s.store.Event(id)
	if err != nil {
		return err
	}
	var v pduView
	if err := json.Unmarshal(rec.PDU, &v); err != nil {
		return err
	}
	r.raw(200, v.Content)
	return nil
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
