package api

import (
	"encoding/json"
	"errors"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"engram/projections"
)

// The client API's side of federation. The federation package does not
// import this one (nor this one it): cmd/engram wires them together with
// SetFederation, and registers the Fed* functions below as the federation's
// EDU handlers. Everything here tolerates a nil federation (single-server
// mode and the API tests).

// Federation is what the client API asks of the server-server API.
type Federation interface {
	// SendEDU queues an EDU for each destination server (best effort,
	// not persisted: typing and presence are ephemeral).
	SendEDU(dests []string, eduType string, content any)
	// QueryAlias resolves a remote room alias with /query/directory.
	QueryAlias(alias string) (room string, servers []string, err error)
	// QueryProfile asks a remote user's server for their profile (field
	// "" for all of it).
	QueryProfile(user, field string) (map[string]any, error)
	// Invite invites a remote user: the event is built, sent to the
	// invitee's server with /invite v2, and appended once countersigned.
	Invite(room, sender, target string, content json.RawMessage) (string, error)
	// RejectInvite leaves a room this server does not take part in (an
	// invite from another server): make_leave/send_leave through the
	// inviting server. done is false if the room is not such a room.
	RejectInvite(room, user string) (done bool, err error)
	// PublicRooms asks another server for its room directory; body is the
	// POST body (nil for GET).
	PublicRooms(server string, query map[string]string, body []byte) (json.RawMessage, error)
}

// SetFederation installs the federation and starts the watcher that sends
// local typing and presence changes to the servers that share a room.
func (s *Server) SetFederation(f Federation) {
	s.fed = f
	if f == nil || s.hub == nil {
		return
	}
	s.hub.wg.Add(1)
	go s.fedEphemeralLoop()
}

// fedEphemeralLoop follows the hub's ephemeral stream and turns changes of
// local users into m.typing and m.presence EDUs.
func (s *Server) fedEphemeralLoop() {
	h := s.hub
	defer h.wg.Done()
	pos := h.ephPos()
	typing := map[string]map[string]bool{} // room -> local users typing (as last sent)
	for {
		ch := h.changed()
		upto := h.ephPos()
		if upto > pos {
			s.fedTypingChanges(typing, h.typingChanges(pos, upto))
			if !s.cfg.DisablePresence {
				s.fedPresenceChanges(pos, upto)
			}
			pos = upto
		}
		select {
		case <-h.stop:
			return
		case <-ch:
		case <-time.After(10 * time.Second):
		}
	}
}

// remoteServers lists the servers other than this one with joined members
// in a room.
func (s *Server) remoteServers(room string) []string {
	ms, err := s.store.Members(room)
	if err != nil {
		return nil
	}
	seen := map[string]bool{s.cfg.ServerName: true, "": true}
	var out []string
	for _, m := range ms {
		if d := domainOf(m.UserID); m.Membership == projections.MemberJoin && !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	sort.Strings(out)
	return out
}

func (s *Server) fedTypingChanges(sent map[string]map[string]bool, rooms []string) {
	for _, room := range rooms {
		users, _ := s.hub.typingIn(room)
		now := map[string]bool{}
		for _, u := range users {
			if s.accounts.isLocal(u) {
				now[u] = true
			}
		}
		prev := sent[room]
		var changes []map[string]any
		for u := range now {
			if !prev[u] {
				changes = append(changes, map[string]any{"room_id": room, "user_id": u, "typing": true})
			}
		}
		for u := range prev {
			if !now[u] {
				changes = append(changes, map[string]any{"room_id": room, "user_id": u, "typing": false})
			}
		}
		if len(now) == 0 {
			delete(sent, room)
		} else {
			sent[room] = now
		}
		if len(changes) == 0 {
			continue
		}
		dests := s.remoteServers(room)
		if len(dests) == 0 {
			continue
		}
		sort.Slice(changes, func(i, j int) bool { return changes[i]["user_id"].(string) < changes[j]["user_id"].(string) })
		for _, c := range changes {
			s.fed.SendEDU(dests, "m.typing", c)
		}
	}
}

func (s *Server) fedPresenceChanges(after, upto uint64) {
	h := s.hub
	h.mu.Lock()
	users, _ := h.presenceLog.since(after, upto)
	h.mu.Unlock()
	now := nowMS()
	for _, u := range users {
		if !s.accounts.isLocal(u) {
			continue
		}
		p, ok := h.presenceOf(u)
		if !ok {
			continue
		}
		dests := map[string]bool{}
		if urs, err := s.store.UserRooms(u); err == nil {
			for _, ur := range urs {
				if ur.Membership != projections.MemberJoin {
					continue
				}
				for _, d := range s.remoteServers(ur.RoomID) {
					dests[d] = true
				}
			}
		}
		if len(dests) == 0 {
			continue
		}
		c := presenceContent(p, now)
		c["user_id"] = u
		ds := make([]string, 0, len(dests))
		for d := range dests {
			ds = append(ds, d)
		}
		sort.Strings(ds)
		s.fed.SendEDU(ds, "m.presence", map[string]any{"push": []any{c}})
	}
}

// fedJoined reports whether a user of origin is joined to room here.
func (s *Server) fedJoined(origin, room, user string) bool {
	if domainOf(user) != origin || origin == s.cfg.ServerName {
		return false
	}
	m, err := s.store.MemberOf(room, user)
	return err == nil && m.Membership == projections.MemberJoin
}

// remoteTypingTimeout is how long a remote user's typing lasts without a
// renewal or a "typing": false from their server.
const remoteTypingTimeout = 30 * time.Second

// FedTyping takes an inbound m.typing EDU: "room_id", "user_id",
// "typing". The user must belong to the sending server and be joined to
// the room.
func (s *Server) FedTyping(origin string, content json.RawMessage) {
	var c struct {
		RoomID string `json:"room_id"`
		UserID string `json:"user_id"`
		Typing bool   `json:"typing"`
	}
	if json.Unmarshal(content, &c) != nil || !s.fedJoined(origin, c.RoomID, c.UserID) {
		return
	}
	s.hub.setTyping(c.RoomID, c.UserID, c.Typing, remoteTypingTimeout)
}

// FedPresence takes an inbound m.presence EDU: {"push": [{user_id,
// presence, status_msg, last_active_ago, currently_active}]}. Updates for
// users of other servers than the origin are dropped. A remote user stays
// in the state their server last sent (their server reports offline):
// they count as "syncing" here so the local sync timeout does not apply.
func (s *Server) FedPresence(origin string, content json.RawMessage) {
	if s.cfg.DisablePresence {
		return
	}
	var c struct {
		Push []struct {
			UserID        string  `json:"user_id"`
			Presence      string  `json:"presence"`
			StatusMsg     *string `json:"status_msg"`
			LastActiveAgo int64   `json:"last_active_ago"`
		} `json:"push"`
	}
	if json.Unmarshal(content, &c) != nil {
		return
	}
	h := s.hub
	now := nowMS()
	for _, p := range c.Push {
		if domainOf(p.UserID) != origin || origin == s.cfg.ServerName || !validUserID(p.UserID) {
			continue
		}
		switch p.Presence {
		case "online", "unavailable", "offline":
		default:
			continue
		}
		h.mu.Lock()
		st := h.presenceLocked(p.UserID)
		st.state, st.statusMsg = p.Presence, p.StatusMsg
		st.lastActive = now - max(0, min(p.LastActiveAgo, now))
		st.lastSync = now
		st.syncing = 0
		if p.Presence != "offline" {
			st.syncing = 1
		}
		h.presenceChangedLocked(p.UserID, st)
		h.mu.Unlock()
	}
}

// FedReceipt takes an inbound m.receipt EDU: {roomId: {receiptType:
// {userId: {"event_ids": [...], "data": {"ts", "thread_id"}}}}}. Only
// m.read receipts of joined users of the origin, on events this server
// holds, are kept (as local receipts are: log records, never backwards).
func (s *Server) FedReceipt(origin string, content json.RawMessage) {
	var c map[string]map[string]map[string]struct {
		EventIDs []string `json:"event_ids"`
		Data     struct {
			TS       int64  `json:"ts"`
			ThreadID string `json:"thread_id"`
		} `json:"data"`
	}
	if json.Unmarshal(content, &c) != nil {
		return
	}
	for room, types := range c {
		for typ, users := range types {
			if typ != projections.ReceiptRead {
				continue
			}
			for user, r := range users {
				if !s.fedJoined(origin, room, user) || len(r.EventIDs) == 0 {
					continue
				}
				id := r.EventIDs[len(r.EventIDs)-1]
				seq, e := s.receiptTarget(room, id)
				if e != nil {
					continue
				}
				if err := s.putReceipt(user, room, typ, r.Data.ThreadID, id, seq); err != nil {
					s.logger.Warn("federation receipt not stored", "room", room, "user", user, "err", err)
				}
			}
		}
	}
}

// ---- seams used by the client API's handlers ----

// isRemote reports whether an ID belongs to another server and federation
// runs.
func (s *Server) isRemote(id string) bool {
	d := domainOf(id)
	return s.fed != nil && d != "" && d != s.cfg.ServerName
}

// fedJoinAlias joins through a remote room alias: /query/directory gives
// the room and the servers to join through.
func (s *Server) fedJoinAlias(r *Req, alias string) (bool, error) {
	if !strings.HasPrefix(alias, "#") || !s.isRemote(alias) || s.remoteJoin == nil {
		return false, nil
	}
	room, servers, err := s.fed.QueryAlias(alias)
	if err != nil {
		return true, errNotFound("Room alias " + alias + " not found")
	}
	if _, err := s.store.RoomVersion(room); err == nil {
		return false, nil // a room we take part in: a local join
	}
	id, err := s.remoteJoin(room, r.User, servers)
	if err != nil {
		s.logger.Info("remote join failed", "room", room, "err", err)
		return true, errForbidden("Could not join the room over federation")
	}
	return true, r.json(map[string]string{"room_id": id})
}

// fedGetAlias answers GET /directory/room/{alias} for a remote alias.
func (s *Server) fedGetAlias(r *Req, alias string) (bool, error) {
	if !s.isRemote(alias) {
		return false, nil
	}
	room, servers, err := s.fed.QueryAlias(alias)
	if err != nil {
		return true, errNotFound("Room alias " + alias + " not found.")
	}
	return true, r.json(map[string]any{"room_id": room, "servers": servers})
}

// fedInvite invites a remote user (membership "invite" of another
// server's user).
func (s *Server) fedInvite(r *Req, room, target string, extra map[string]any) (bool, error) {
	if !s.isRemote(target) {
		return false, nil
	}
	c := map[string]any{"membership": "invite"}
	for k, v := range extra {
		c[k] = v
	}
	if _, err := s.fed.Invite(room, r.User, target, mustJSON(c)); err != nil {
		s.logger.Info("remote invite failed", "room", room, "target", target, "err", err)
		if e := roomError(err); e != err {
			return true, e
		}
		return true, errForbidden("The invitee's server refused the invite")
	}
	return true, r.json(struct{}{})
}

// fedLeave rejects a remote invite (leave of a room this server does not
// take part in).
func (s *Server) fedLeave(r *Req, room string) (bool, error) {
	if s.fed == nil {
		return false, nil
	}
	done, err := s.fed.RejectInvite(room, r.User)
	if !done {
		return false, nil
	}
	if err != nil {
		s.logger.Info("rejecting remote invite failed", "room", room, "err", err)
		return true, merr(502, "M_UNKNOWN", "Could not reach the inviting server")
	}
	return true, r.json(struct{}{})
}

// fedProfile answers profile lookups of remote users (field "" for the
// whole profile).
func (s *Server) fedProfile(r *Req, user, field string) (bool, error) {
	if !s.isRemote(user) {
		return false, nil
	}
	p, err := s.fed.QueryProfile(user, field)
	if err != nil || len(p) == 0 {
		return true, errNotFound("Profile not found")
	}
	if field != "" {
		v, ok := p[field]
		if !ok {
			return true, errNotFound("Profile field not found")
		}
		return true, r.json(map[string]any{field: v})
	}
	return true, r.json(p)
}

// fedPublicRooms forwards /publicRooms?server= to another server.
func (s *Server) fedPublicRooms(r *Req, q *publicRoomsQuery, post bool) (bool, error) {
	if q.server == "" || q.server == s.cfg.ServerName || s.fed == nil {
		return false, nil
	}
	query := map[string]string{"since": q.Since}
	if q.Limit != nil {
		query["limit"] = strconv.Itoa(*q.Limit)
	}
	var body []byte
	if post {
		body, _ = r.body()
		if len(body) == 0 {
			body = []byte("{}")
		}
	}
	out, err := s.fed.PublicRooms(q.server, query, body)
	if err != nil {
		return true, errNotFound("Cannot reach server " + q.server)
	}
	r.raw(200, out)
	return true, nil
}

// FedPublicRooms serves /publicRooms to other servers from the client
// API's directory code: the query parameters (GET) or body (POST) in, the
// JSON answer and status out.
func (s *Server) FedPublicRooms(query map[string]string, body []byte) ([]byte, int) {
	ctx := &fasthttp.RequestCtx{}
	q := &publicRoomsQuery{Since: query["since"]}
	if l := query["limit"]; l != "" {
		if n, err := strconv.Atoi(l); err == nil && n >= 0 {
			q.Limit = &n
		}
	}
	if body != nil {
		if err := json.Unmarshal(body, q); err != nil {
			return []byte(`{"errcode":"M_BAD_JSON","error":"Invalid body"}`), 400
		}
		var probe struct {
			Filter map[string]json.RawMessage `json:"filter"`
		}
		json.Unmarshal(body, &probe)
		_, present := probe.Filter["room_types"]
		q.roomTypesFilterActive = present && len(q.Filter.RoomTypes) > 0
	}
	r := &Req{ctx: ctx, s: s}
	if err := s.publicRooms(r, q); err != nil {
		var e *Error
		if errors.As(err, &e) {
			b, _ := json.Marshal(map[string]string{"errcode": e.Code, "error": e.Message})
			return b, e.Status
		}
		return []byte(`{"errcode":"M_UNKNOWN","error":"Internal error"}`), 500
	}
	return append([]byte(nil), ctx.Response.Body()...), ctx.Response.StatusCode()
}
