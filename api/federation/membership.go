package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	"engram/dag"
	"engram/projections"
)

// Invites (v2), knocks, rejecting remote invites, and the queries the
// client API makes of other servers.

// strippedTypes are the state events sent with an invite or a knock (the
// spec's recommended stripped state).
var strippedTypes = []string{"m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar",
	"m.room.canonical_alias", "m.room.encryption", "m.room.topic"}

// strippedState is the stripped state of a room this server takes part in,
// plus extra events (the sender's own membership).
func (f *Federation) strippedState(room string, extra ...string) []map[string]any {
	var ids []string
	for _, t := range strippedTypes {
		if id, err := f.store.StateEvent(room, t, ""); err == nil {
			ids = append(ids, id)
		}
	}
	ids = append(ids, extra...)
	out := []map[string]any{}
	for _, id := range ids {
		rec, _, err := f.store.Event(id)
		if err != nil {
			continue
		}
		var v struct {
			Type     string          `json:"type"`
			StateKey *string         `json:"state_key"`
			Sender   string          `json:"sender"`
			Content  json.RawMessage `json:"content"`
		}
		if json.Unmarshal(rec.PDU, &v) != nil || v.StateKey == nil {
			continue
		}
		out = append(out, map[string]any{"type": v.Type, "state_key": *v.StateKey, "sender": v.Sender, "content": v.Content})
	}
	return out
}

// signTemplate completes an event template for this server: timestamp,
// content hash, signature.
func (f *Federation) signTemplate(tmplJSON []byte, ver *dag.RoomVersion, stamp bool) (*dag.Event, error) {
	var tmpl map[string]json.RawMessage
	if err := json.Unmarshal(tmplJSON, &tmpl); err != nil {
		return nil, fmt.Errorf("federation: event template: %w", err)
	}
	if stamp {
		tmpl["origin_server_ts"], _ = json.Marshal(time.Now().UnixMilli())
	}
	delete(tmpl, "signatures")
	delete(tmpl, "hashes")
	delete(tmpl, "unsigned")
	raw, err := json.Marshal(tmpl)
	if err != nil {
		return nil, err
	}
	if raw, err = dag.AddContentHash(raw, ver); err != nil {
		return nil, err
	}
	if raw, err = dag.SignEvent(raw, ver, f.cfg.ServerName, f.cfg.Key.ID, f.cfg.Key.Key); err != nil {
		return nil, err
	}
	return dag.ParseEvent(raw, ver)
}

// Invite invites a user of another server: the invite is built against
// the room's current state and signed, sent to the invitee's server with
// PUT /_matrix/federation/v2/invite, and appended (countersigned) only if
// that server accepts it.
func (f *Federation) Invite(room, sender, target string, content json.RawMessage) (string, error) {
	dest := dag.ServerName(target)
	if dest == "" || dest == f.cfg.ServerName {
		return "", errors.New("federation: invitee is not remote")
	}
	tmpl, vid, err := f.rooms.MakeTemplate(room, sender, "m.room.member", &target, content)
	if err != nil {
		return "", err
	}
	ver := dag.Version(vid)
	ev, err := f.signTemplate(tmpl, ver, false)
	if err != nil {
		return "", err
	}
	var extra []string
	if id, err := f.store.StateEvent(room, "m.room.member", sender); err == nil {
		extra = append(extra, id)
	}
	body := map[string]any{"room_version": vid, "event": json.RawMessage(ev.Raw), "invite_room_state": f.strippedState(room, extra...)}
	var resp struct {
		Event json.RawMessage `json:"event"`
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := f.client.Do(ctx, dest, "PUT", "/_matrix/federation/v2/invite/"+pathEscape(room)+"/"+pathEscape(ev.ID), body, &resp); err != nil {
		return "", fmt.Errorf("federation: invite refused by %s: %w", dest, err)
	}
	signed, err := dag.ParseEvent(resp.Event, ver)
	if err != nil || signed.ID != ev.ID {
		return "", errors.New("federation: the invitee's server returned another event")
	}
	if signed, err = f.keys.VerifyEvent(signed); err != nil {
		return "", fmt.Errorf("federation: countersigned invite: %w", err)
	}
	res, err := f.rooms.Receive(signed)
	if err != nil {
		return "", err
	}
	if res.Status != projections.Accepted {
		return "", fmt.Errorf("federation: invite not accepted: %s", res.Reason)
	}
	f.sender.wake("")
	return ev.ID, nil
}

// handleInvite is PUT /_matrix/federation/v2/invite/{roomId}/{eventId}: a
// user of the origin invites one of ours. We check it, sign it and return
// it; the invite shows in the invitee's /sync.
func (f *Federation) handleInvite(r *req) error {
	var body struct {
		RoomVersion string            `json:"room_version"`
		Event       json.RawMessage   `json:"event"`
		State       []json.RawMessage `json:"invite_room_state"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil || len(body.Event) == 0 {
		return ferr(400, "M_BAD_JSON", "Invalid invite")
	}
	ver := dag.Version(body.RoomVersion)
	if ver == nil {
		b, _ := json.Marshal(map[string]string{"errcode": "M_INCOMPATIBLE_ROOM_VERSION", "error": "Unsupported room version", "room_version": body.RoomVersion})
		r.raw(400, b)
		return nil
	}
	ev, err := dag.ParseEvent(body.Event, ver)
	if err != nil {
		return ferr(400, "M_BAD_JSON", err.Error())
	}
	if ev.ID != r.param("eventId") || ev.RoomID != r.param("roomId") {
		return ferr(400, "M_BAD_JSON", "Event ID or room ID does not match the path")
	}
	if ev.Type != "m.room.member" || ev.StateKey == nil || membershipOf(ev.Content) != "invite" {
		return ferr(400, "M_BAD_JSON", "Not an invite")
	}
	target := *ev.StateKey
	if dag.ServerName(target) != f.cfg.ServerName {
		return ferr(400, "M_BAD_JSON", "The invitee is not a user of this server")
	}
	if dag.ServerName(ev.Sender) != r.origin {
		return ferr(403, "M_FORBIDDEN", "The inviter is not from the requesting server")
	}
	if _, err := f.store.Account(target); err != nil {
		return ferr(404, "M_NOT_FOUND", "Unknown user")
	}
	if f.store.InvitesBlocked(target) {
		return ferr(403, "M_INVITE_BLOCKED", "The user does not accept invites")
	}
	if !f.ServerAllowed(ev.RoomID, r.origin) {
		return ferr(403, "M_FORBIDDEN", "Server is banned from the room by its ACL")
	}
	if ev, err = f.keys.VerifyEvent(ev); err != nil {
		return ferr(403, "M_FORBIDDEN", "Bad signature: "+err.Error())
	}
	raw, err := dag.SignEvent(ev.Raw, ver, f.cfg.ServerName, f.cfg.Key.ID, f.cfg.Key.Key)
	if err != nil {
		return err
	}
	signed, err := dag.ParseEvent(raw, ver)
	if err != nil {
		return err
	}
	if _, err := f.store.RoomVersion(ev.RoomID); err == nil {
		// A room we take part in: the invite arrives as a PDU too; take it
		// now if it passes, and answer either way.
		if _, err := f.rooms.Receive(signed); err != nil {
			f.logger.Debug("invite not sequenced", "event", ev.ID, "err", err)
		}
	} else if _, err := f.rooms.RecordRemoteMembership(withStrippedState(signed, "invite_room_state", body.State)); err != nil {
		return roomErr(err)
	}
	return r.json(map[string]any{"event": json.RawMessage(signed.Raw)})
}

// inviterServer is the server that invited user to room (from the invite
// event this server holds), or "".
func (f *Federation) inviterServer(room, user string) string {
	m, err := f.store.MemberOf(room, user)
	if err != nil || m.EventID == "" {
		return ""
	}
	rec, _, err := f.store.Event(m.EventID)
	if err != nil {
		return ""
	}
	if s := dag.ServerName(rec.Sender); s != f.cfg.ServerName {
		return s
	}
	return ""
}

// RejectInvite leaves a room this server does not take part in (rejects a
// remote invite, or withdraws a knock): make_leave and send_leave through
// the inviting server, then the leave is recorded here.
func (f *Federation) RejectInvite(room, user string) (bool, error) {
	if _, err := f.store.RoomVersion(room); err == nil {
		return false, nil
	}
	m, err := f.store.MemberOf(room, user)
	if err != nil || (m.Membership != projections.MemberInvite && m.Membership != projections.MemberKnock) {
		return false, nil
	}
	srv := f.inviterServer(room, user)
	if srv == "" {
		srv = dag.ServerName(room)
	}
	if srv == "" || srv == f.cfg.ServerName {
		return true, errors.New("federation: no server to leave through")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var mk struct {
		Event       json.RawMessage `json:"event"`
		RoomVersion string          `json:"room_version"`
	}
	if err := f.client.Do(ctx, srv, "GET", "/_matrix/federation/v1/make_leave/"+pathEscape(room)+"/"+pathEscape(user), nil, &mk); err != nil {
		return true, err
	}
	ver := dag.Version(mk.RoomVersion)
	if ver == nil {
		return true, fmt.Errorf("federation: unsupported room version %q", mk.RoomVersion)
	}
	ev, err := f.signTemplate(mk.Event, ver, true)
	if err != nil {
		return true, err
	}
	if ev.RoomID != room || ev.Sender != user || ev.StateKey == nil || *ev.StateKey != user || membershipOf(ev.Content) != "leave" {
		return true, errors.New("federation: make_leave template is not our leave")
	}
	if err := f.client.Do(ctx, srv, "PUT", "/_matrix/federation/v2/send_leave/"+pathEscape(room)+"/"+pathEscape(ev.ID), json.RawMessage(ev.Raw), nil); err != nil {
		return true, err
	}
	if _, err := f.rooms.RecordRemoteMembership(ev); err != nil {
		return true, err
	}
	return true, nil
}

// handleMakeKnock is GET /make_knock/{roomId}/{userId}.
func (f *Federation) handleMakeKnock(r *req) error {
	room, user := r.param("roomId"), r.param("userId")
	if dag.ServerName(user) != r.origin {
		return ferr(403, "M_FORBIDDEN", "User is not from the requesting server")
	}
	vid, err := f.store.RoomVersion(room)
	if err != nil {
		return ferr(404, "M_NOT_FOUND", "Unknown room")
	}
	if v := dag.Version(vid); v == nil || !v.Knocking {
		b, _ := json.Marshal(map[string]string{"errcode": "M_INCOMPATIBLE_ROOM_VERSION", "error": "The room version does not support knocking", "room_version": vid})
		r.raw(400, b)
		return nil
	}
	vers := r.ctx.QueryArgs().PeekMulti("ver")
	ok := false
	for _, v := range vers {
		ok = ok || string(v) == vid
	}
	if !ok {
		b, _ := json.Marshal(map[string]string{"errcode": "M_INCOMPATIBLE_ROOM_VERSION", "error": "Your server does not support the room version", "room_version": vid})
		r.raw(400, b)
		return nil
	}
	content, _ := json.Marshal(map[string]string{"membership": "knock"})
	tmpl, vid, err := f.rooms.MakeTemplate(room, user, "m.room.member", &user, content)
	if err != nil {
		return roomErr(err)
	}
	return r.json(map[string]any{"event": json.RawMessage(tmpl), "room_version": vid})
}

// handleSendKnock is PUT /send_knock/{roomId}/{eventId}: the knock is
// sequenced and the room's stripped state returned.
func (f *Federation) handleSendKnock(r *req) error {
	ev, err := f.acceptMembership(r, "knock")
	if err != nil {
		return err
	}
	if err := f.receiveMembership(ev, "Knock"); err != nil {
		return err
	}
	return r.json(map[string]any{"knock_room_state": f.strippedState(ev.RoomID)})
}

// QueryAlias resolves a room alias of another server with
// /query/directory.
func (f *Federation) QueryAlias(alias string) (string, []string, error) {
	srv := dag.ServerName(alias)
	if srv == "" || srv == f.cfg.ServerName {
		return "", nil, errors.New("federation: alias is not remote")
	}
	var resp struct {
		RoomID  string   `json:"room_id"`
		Servers []string `json:"servers"`
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.client.Do(ctx, srv, "GET", "/_matrix/federation/v1/query/directory?room_alias="+url.QueryEscape(alias), nil, &resp); err != nil {
		return "", nil, err
	}
	if !strings.HasPrefix(resp.RoomID, "!") {
		return "", nil, errors.New("federation: invalid directory answer")
	}
	return resp.RoomID, resp.Servers, nil
}

// QueryProfile asks a user's server for their profile (or one field).
func (f *Federation) QueryProfile(user, field string) (map[string]any, error) {
	srv := dag.ServerName(user)
	if srv == "" || srv == f.cfg.ServerName {
		return nil, errors.New("federation: user is not remote")
	}
	q := "/_matrix/federation/v1/query/profile?user_id=" + url.QueryEscape(user)
	if field != "" {
		q += "&field=" + url.QueryEscape(field)
	}
	out := map[string]any{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.client.Do(ctx, srv, "GET", q, nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// PublicRooms asks another server for its published rooms (GET without a
// body, POST with one).
func (f *Federation) PublicRooms(server string, query map[string]string, body []byte) (json.RawMessage, error) {
	if server == "" || server == f.cfg.ServerName {
		return nil, errors.New("federation: server is not remote")
	}
	keys := make([]string, 0, len(query))
	for k := range query {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	vals := url.Values{}
	for _, k := range keys {
		if query[k] != "" {
			vals.Set(k, query[k])
		}
	}
	path := "/_matrix/federation/v1/publicRooms"
	if e := vals.Encode(); e != "" {
		path += "?" + e
	}
	var out json.RawMessage
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	method, b := "GET", any(nil)
	if body != nil {
		method, b = "POST", json.RawMessage(body)
	}
	if err := f.client.Do(ctx, server, method, path, b, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// SetPublicRooms installs what serves /publicRooms to other servers (the
// client API's directory): query parameters (GET) or body (POST) in, the
// answer's JSON and status out.
func (f *Federation) SetPublicRooms(fn func(query map[string]string, body []byte) ([]byte, int)) {
	f.publicRooms = fn
}

func (f *Federation) handlePublicRooms(r *req) error {
	if f.publicRooms == nil {
		return r.json(map[string]any{"chunk": []any{}, "total_room_count_estimate": 0})
	}
	q := map[string]string{}
	for _, k := range []string{"limit", "since", "include_all_networks", "third_party_instance_id"} {
		if v := r.query(k); v != "" {
			q[k] = v
		}
	}
	var body []byte
	if string(r.ctx.Method()) == "POST" {
		body = r.body
		if len(body) == 0 {
			body = []byte("{}")
		}
	}
	b, status := f.publicRooms(q, body)
	r.raw(status, b)
	return nil
}

// maxStrippedState bounds the stripped state kept with a membership of a
// room this server is not in (the spec's list has six types; a few
// servers send more).
const maxStrippedState = 50

// withStrippedState keeps the stripped state another server sent with an
// invite or a knock in the event's unsigned, where /sync finds it for the
// invite_state or knock_state of a room this server is not in (unsigned is
// covered by neither the hashes nor the signatures). Entries that are not
// stripped state events are dropped; ev is returned as it was if nothing
// is kept.
func withStrippedState(ev *dag.Event, key string, state []json.RawMessage) *dag.Event {
	var kept []json.RawMessage
	for _, e := range state {
		var v struct {
			Type     string          `json:"type"`
			StateKey *string         `json:"state_key"`
			Sender   string          `json:"sender"`
			Content  json.RawMessage `json:"content"`
		}
		if json.Unmarshal(e, &v) != nil || v.Type == "" || v.StateKey == nil || len(v.Content) == 0 || v.Content[0] != '{' {
			continue
		}
		if b, err := json.Marshal(v); err == nil {
			kept = append(kept, b)
		}
		if len(kept) == maxStrippedState {
			break
		}
	}
	if len(kept) == 0 {
		return ev
	}
	var top map[string]json.RawMessage
	if json.Unmarshal(ev.Raw, &top) != nil {
		return ev
	}
	unsigned := map[string]json.RawMessage{}
	if u, ok := top["unsigned"]; ok {
		_ = json.Unmarshal(u, &unsigned)
	}
	unsigned[key], _ = json.Marshal(kept)
	top["unsigned"], _ = json.Marshal(unsigned)
	raw, err := json.Marshal(top)
	if err != nil {
		return ev
	}
	out, err := dag.ParseEvent(raw, ev.Version)
	if err != nil || out.ID != ev.ID {
		return ev
	}
	return out
}
