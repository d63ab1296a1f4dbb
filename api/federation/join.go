package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"engram/dag"
	"engram/dag/rooms"
	"engram/projections"
)

func roomErr(err error) error {
	var fe *rooms.ForbiddenError
	switch {
	case errors.Is(err, rooms.ErrUnknownRoom):
		return ferr(404, "M_NOT_FOUND", "Unknown room")
	case errors.As(err, &fe):
		return ferr(403, "M_FORBIDDEN", fe.Error())
	case errors.Is(err, rooms.ErrBadEvent):
		return ferr(400, "M_BAD_JSON", err.Error())
	}
	return err
}

// handleMakeMembership serves make_join and make_leave.
func (f *Federation) handleMakeMembership(membership string) func(*req) error {
	return func(r *req) error {
		room, user := r.param("roomId"), r.param("userId")
		if dag.ServerName(user) != r.origin {
			return ferr(403, "M_FORBIDDEN", "User is not from the requesting server")
		}
		if membership == "join" {
			vid, err := f.store.RoomVersion(room)
			if err != nil {
				return ferr(404, "M_NOT_FOUND", "Unknown room")
			}
			// "ver: The room versions the sending server has support for";
			// absent means only version 1.
			vers := r.ctx.QueryArgs().PeekMulti("ver")
			ok := len(vers) == 0 && vid == "1"
			for _, v := range vers {
				ok = ok || string(v) == vid
			}
			if !ok {
				b, _ := json.Marshal(map[string]string{"errcode": "M_INCOMPATIBLE_ROOM_VERSION", "error": "Your server does not support the room version", "room_version": vid})
				r.raw(400, b)
				return nil
			}
		}
		content, _ := json.Marshal(map[string]string{"membership": membership})
		tmpl, vid, err := f.rooms.MakeTemplate(room, user, "m.room.member", &user, content)
		if err != nil {
			return roomErr(err)
		}
		return r.json(map[string]any{"event": json.RawMessage(tmpl), "room_version": vid})
	}
}

// receiveMembership sequences a membership event another server sent to
// send_join, send_leave or send_knock; what names it in the refusal.
func (f *Federation) receiveMembership(ev *dag.Event, what string) error {
	res, err := f.rooms.Receive(ev)
	if err != nil {
		return roomErr(err)
	}
	if res.Status != projections.Accepted {
		return ferr(403, "M_FORBIDDEN", what+" not allowed: "+res.Reason)
	}
	return nil
}

// acceptMembership parses and verifies a signed membership event sent to
// send_join or send_leave.
func (f *Federation) acceptMembership(r *req, membership string) (*dag.Event, error) {
	room, id := r.param("roomId"), r.param("eventId")
	vid, err := f.store.RoomVersion(room)
	if err != nil {
		return nil, ferr(404, "M_NOT_FOUND", "Unknown room")
	}
	ev, err := dag.ParseEvent(r.body, dag.Version(vid))
	if err != nil {
		return nil, ferr(400, "M_BAD_JSON", err.Error())
	}
	if ev.ID != id || ev.RoomID != room {
		return nil, ferr(400, "M_BAD_JSON", "Event ID or room ID does not match the path")
	}
	if ev.Type != "m.room.member" || ev.StateKey == nil || *ev.StateKey != ev.Sender || membershipOf(ev.Content) != membership {
		return nil, ferr(400, "M_BAD_JSON", "Not a "+membership+" event of its sender")
	}
	if dag.ServerName(ev.Sender) != r.origin {
		return nil, ferr(403, "M_FORBIDDEN", "Sender is not from the requesting server")
	}
	if ev, err = f.keys.VerifyEvent(ev); err != nil {
		return nil, ferr(403, "M_FORBIDDEN", "Bad signature: "+err.Error())
	}
	return ev, nil
}

func (f *Federation) handleSendJoin(r *req) error {
	ev, err := f.acceptMembership(r, "join")
	if err != nil {
		return err
	}
	before, err := f.rooms.StateBefore(ev)
	if err != nil {
		return roomErr(err)
	}
	if err := f.receiveMembership(ev, "Join"); err != nil {
		return err
	}
	stateIDs := make([]string, 0, len(before))
	for _, id := range before {
		stateIDs = append(stateIDs, id)
	}
	sort.Strings(stateIDs)
	chainIDs, err := f.rooms.AuthChain(append(append([]string(nil), stateIDs...), ev.ID))
	if err != nil {
		return err
	}
	state, err := f.pdus(stateIDs)
	if err != nil {
		return err
	}
	chain, err := f.pdus(chainIDs)
	if err != nil {
		return err
	}
	servers := map[string]bool{f.cfg.ServerName: true}
	if ms, err := f.store.Members(ev.RoomID); err == nil {
		for _, m := range ms {
			if m.Membership == projections.MemberJoin {
				servers[dag.ServerName(m.UserID)] = true
			}
		}
	}
	var sl []string
	for s := range servers {
		sl = append(sl, s)
	}
	sort.Strings(sl)
	return r.json(map[string]any{
		"origin": f.cfg.ServerName, "state": state, "auth_chain": chain, "event": json.RawMessage(ev.Raw),
		"members_omitted": false, "servers_in_room": sl,
	})
}

func (f *Federation) handleSendLeave(r *req) error {
	ev, err := f.acceptMembership(r, "leave")
	if err != nil {
		return err
	}
	if err := f.receiveMembership(ev, "Leave"); err != nil {
		return err
	}
	return r.json(struct{}{})
}

// pdus returns the stored bytes of events.
func (f *Federation) pdus(ids []string) ([]json.RawMessage, error) {
	out := make([]json.RawMessage, 0, len(ids))
	for _, id := range ids {
		rec, _, err := f.store.Event(id)
		if err != nil {
			if errors.Is(err, projections.ErrNotFound) {
				continue
			}
			return nil, err
		}
		out = append(out, rec.PDU)
	}
	return out, nil
}

// Join makes a local user join a room through one of the via servers
// (make_join, sign, send_join v2) and records the room. It returns the
// room ID.
func (f *Federation) Join(room, user string, via []string) (string, error) {
	if s := dag.ServerName(room); s != "" && !slices.Contains(via, s) {
		via = append(via, s)
	}
	// Invited (or knocked) over federation: the inviting server is in
	// the room.
	if s := f.inviterServer(room, user); s != "" && !slices.Contains(via, s) {
		via = append(via, s)
	}
	var last error = errors.New("federation: no server to join through")
	for _, srv := range via {
		if srv == f.cfg.ServerName || srv == "" {
			continue
		}
		if err := f.joinVia(room, user, srv); err != nil {
			last = err
			f.logger.Info("join failed", "room", room, "via", srv, "err", err)
			continue
		}
		return room, nil
	}
	return "", last
}

func (f *Federation) joinVia(room, user, srv string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	q := make([]string, 0, 12)
	for v := 1; v <= 12; v++ {
		if dag.Version(fmt.Sprint(v)) != nil {
			q = append(q, fmt.Sprintf("ver=%d", v))
		}
	}
	var mk struct {
		Event       json.RawMessage `json:"event"`
		RoomVersion string          `json:"room_version"`
	}
	path := "/_matrix/federation/v1/make_join/" + pathEscape(room) + "/" + pathEscape(user) + "?" + strings.Join(q, "&")
	if err := f.client.Do(ctx, srv, "GET", path, nil, &mk); err != nil {
		return err
	}
	ver := dag.Version(mk.RoomVersion)
	if ver == nil {
		ver = dag.Version("1")
	}
	if ver == nil {
		return fmt.Errorf("federation: unsupported room version %q", mk.RoomVersion)
	}
	// Fill in what the template may lack and make the event ours.
	var tmpl map[string]json.RawMessage
	if err := json.Unmarshal(mk.Event, &tmpl); err != nil {
		return fmt.Errorf("federation: make_join template: %w", err)
	}
	if string(tmpl["sender"]) != fmt.Sprintf("%q", user) || string(tmpl["state_key"]) != fmt.Sprintf("%q", user) {
		return errors.New("federation: make_join template is for another user")
	}
	tmpl["origin_server_ts"], _ = json.Marshal(time.Now().UnixMilli())
	delete(tmpl, "signatures")
	delete(tmpl, "hashes")
	delete(tmpl, "unsigned")
	raw, err := json.Marshal(tmpl)
	if err != nil {
		return err
	}
	if raw, err = dag.AddContentHash(raw, ver); err != nil {
		return err
	}
	if raw, err = dag.SignEvent(raw, ver, f.cfg.ServerName, f.cfg.Key.ID, f.cfg.Key.Key); err != nil {
		return err
	}
	join, err := dag.ParseEvent(raw, ver)
	if err != nil {
		return err
	}
	if join.RoomID != room {
		return errors.New("federation: make_join template is for another room")
	}
	var sj struct {
		State     []json.RawMessage `json:"state"`
		AuthChain []json.RawMessage `json:"auth_chain"`
		Event     json.RawMessage   `json:"event"`
	}
	path = "/_matrix/federation/v2/send_join/" + pathEscape(room) + "/" + pathEscape(join.ID)
	if err := f.client.Do(ctx, srv, "PUT", path, json.RawMessage(join.Raw), &sj); err != nil {
		return err
	}
	// A restricted join comes back countersigned by the resident server.
	if len(sj.Event) > 0 {
		if ev, err := dag.ParseEvent(sj.Event, ver); err == nil && ev.ID == join.ID {
			join = ev
		}
	}
	parse := func(raws []json.RawMessage) []*dag.Event {
		evs := make([]*dag.Event, 0, len(raws))
		for _, raw := range raws {
			if ev, err := dag.ParseEvent(raw, ver); err == nil {
				evs = append(evs, ev)
			}
		}
		v, _ := f.verifyAll(evs)
		out := v[:0]
		for _, ev := range v {
			if ev != nil {
				out = append(out, ev)
			}
		}
		return out
	}
	state, chain := parse(sj.State), parse(sj.AuthChain)
	res, err := f.rooms.JoinRemote(join, state, chain)
	if err != nil {
		return err
	}
	if res.Status != projections.Accepted {
		return fmt.Errorf("federation: join not accepted: %s", res.Reason)
	}
	f.sender.wake("")
	return nil
}
