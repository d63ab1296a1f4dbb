package api

import (
	"encoding/json"
	"sort"
	"strconv"
	"sync"
	"time"

	"engram/dag"
	"engram/projections"
)

// Spaces: GET /_matrix/client/v1/rooms/{roomId}/hierarchy (client-server
// API, "Discovering rooms within spaces") and its federation counterpart,
// FedHierarchy, which the federation package calls for GET
// /_matrix/federation/v1/hierarchy/{roomId} (wired in cmd/engram).
//
// "The GET /hierarchy API works in a depth-first manner": the rooms are
// walked from a stack, a space's children pushed in reverse so the first
// child (in the spec's ordering) comes next. A room this server takes part
// in is summarised from local state; any other room is asked of the
// servers in its m.space.child "via" list over federation ("Where a child
// room is unknown to the local server, federation is used to fill in the
// details"), and the answer cached for a minute. Pagination sessions (the
// rest of the stack and the rooms already seen) are kept in memory for
// five minutes: a lost session only means the client starts over.

const (
	hierDefaultLimit  = 50
	hierMaxLimit      = 100
	hierMaxDepth      = 50 // default and ceiling of max_depth
	hierFedMaxPerRoom = 50 // children summarised per space for another server
	hierSessionTTL    = 5 * time.Minute
	hierRemoteTTL     = time.Minute
)

// hierarchyFederation is the federation's side of spaces (implemented by
// *federation.Federation; absent in single-server mode).
type hierarchyFederation interface {
	Hierarchy(servers []string, room string, suggestedOnly bool) (json.RawMessage, error)
}

// spaceOpenIDRoutes registers the space hierarchy and the OpenID token
// endpoint (openid.go): the client halves of two federation features.
func (s *Server) spaceOpenIDRoutes() {
	s.rt.handle("GET", "/_matrix/client/v1/rooms/{roomId}/hierarchy", authed, s.roomHierarchy)
	s.rt.client("POST", "/user/{userId}/openid/request_token", authed, s.openIDRequestToken)
}

// hierChild is an m.space.child event as the hierarchy shows it: "Stripped
// State Events with an added origin_server_ts key".
type hierChild struct {
	Type           string          `json:"type"`
	StateKey       string          `json:"state_key"`
	Content        json.RawMessage `json:"content"`
	Sender         string          `json:"sender"`
	OriginServerTS int64           `json:"origin_server_ts"`

	via       []string
	order     string // "" when absent or invalid
	suggested bool
}

// hierRoom is one room of a hierarchy: a room summary and, for a space,
// its children ("If the room is not a space-room, this should be empty").
type hierRoom struct {
	roomChunk
	ChildrenState []hierChild `json:"children_state"`
}

func (h *hierRoom) isSpace() bool { return h.RoomType != nil && *h.RoomType == "m.space" }

// parseChildContent validates an m.space.child content: "Child rooms can
// be removed from a space by omitting the via key of content", so a child
// needs a non-empty via list of strings. order is kept only when valid: a
// string of at most 50 characters in \x20-\x7E.
func parseChildContent(c json.RawMessage) (via []string, order string, suggested, ok bool) {
	var v struct {
		Via       json.RawMessage `json:"via"`
		Order     json.RawMessage `json:"order"`
		Suggested json.RawMessage `json:"suggested"`
	}
	if json.Unmarshal(c, &v) != nil || json.Unmarshal(v.Via, &via) != nil || len(via) == 0 {
		return nil, "", false, false
	}
	if json.Unmarshal(v.Order, &order) != nil || len(order) > 50 {
		order = ""
	}
	for i := 0; i < len(order); i++ {
		if order[i] < 0x20 || order[i] > 0x7e {
			order = ""
			break
		}
	}
	_ = json.Unmarshal(v.Suggested, &suggested)
	return via, order, suggested, true
}

// validChildren keeps the children with a valid via (and, with
// suggestedOnly, "suggested": true) and orders them as "Ordering of
// children within a space" says: those with a valid order first, by order,
// then by origin_server_ts, then by room ID.
func validChildren(in []hierChild, suggestedOnly bool) []hierChild {
	out := []hierChild{}
	for _, c := range in {
		if c.Type != "m.space.child" || !validRoomID(c.StateKey) {
			continue
		}
		via, order, sugg, ok := parseChildContent(c.Content)
		if !ok || (suggestedOnly && !sugg) {
			continue
		}
		c.via, c.order, c.suggested = via, order, sugg
		out = append(out, c)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if (a.order != "") != (b.order != "") {
			return a.order != ""
		}
		if a.order != b.order {
			return a.order < b.order
		}
		if a.OriginServerTS != b.OriginServerTS {
			return a.OriginServerTS < b.OriginServerTS
		}
		return a.StateKey < b.StateKey
	})
	return out
}

// hostedHere reports whether this server takes part in the room (a local
// user is joined), i.e. whether its current state is ours to describe.
func (s *Server) hostedHere(room string) bool {
	if _, err := s.store.RoomVersion(room); err != nil {
		return false
	}
	ms, err := s.store.Members(room)
	if err != nil {
		return false
	}
	for _, m := range ms {
		if m.Membership == projections.MemberJoin && domainOf(m.UserID) == s.cfg.ServerName {
			return true
		}
	}
	return false
}

// localHierRoom summarises a room from local state.
func (s *Server) localHierRoom(room string, suggestedOnly bool) (*hierRoom, error) {
	c, err := s.roomInfo(room)
	if err != nil {
		return nil, err
	}
	if _, err := s.store.StateEvent(room, "m.room.create", ""); err != nil {
		return nil, err // known only as an invite or a stub
	}
	h := &hierRoom{roomChunk: *c, ChildrenState: []hierChild{}}
	h.Membership = ""
	if !h.isSpace() {
		return h, nil
	}
	entries, err := s.store.CurrentState(room, "m.space.child")
	if err != nil {
		return nil, err
	}
	var children []hierChild
	for _, e := range entries {
		rec, _, err := s.store.Event(e.EventID)
		if err != nil {
			continue
		}
		rec, _ = s.servedRecord(rec)
		var v pduView
		if json.Unmarshal(rec.PDU, &v) != nil || v.StateKey == nil {
			continue
		}
		children = append(children, hierChild{Type: v.Type, StateKey: *v.StateKey, Content: v.Content,
			Sender: v.Sender, OriginServerTS: v.OriginServerTS})
	}
	h.ChildrenState = validChildren(children, suggestedOnly)
	return h, nil
}

// knockable reports whether a join rule lets anyone knock in the room's
// version (unknown versions, from remote summaries, are given the benefit
// of the doubt: the knock itself is checked by the room's servers).
func knockable(joinRule, version string) bool {
	v := dag.Version(version)
	switch joinRule {
	case "knock":
		return v == nil || v.Knocking
	case "knock_restricted":
		return v == nil || v.KnockRestricted
	}
	return false
}

// userMaySee applies the client endpoint's rule: "The server should return
// any rooms where at least one of the following conditions is true: the
// requesting user is currently a member [...]; already has permission to
// join [invite, public, restricted with a condition met]; the room is
// knockable; the history visibility is world_readable." A banned user
// sees none of it.
func (s *Server) userMaySee(user string, h *hierRoom) bool {
	m, _ := s.store.MemberOf(h.RoomID, user)
	switch m.Membership {
	case projections.MemberJoin, projections.MemberInvite:
		return true
	case projections.MemberBan:
		return false
	}
	if h.WorldReadable || knockable(h.JoinRule, h.RoomVersion) {
		return true
	}
	switch h.JoinRule {
	case "public", "": // "When not present, the room is assumed to be public."
		return true
	case "restricted", "knock_restricted":
		for _, a := range h.AllowedRoomIDs {
			if am, err := s.store.MemberOf(a, user); err == nil && am.Membership == projections.MemberJoin {
				return true
			}
		}
	}
	return false
}

// serverMaySee is the federation endpoint's rule: the rooms "the
// requesting server could feasibly peek/join": world_readable, public or
// knockable rooms, rooms where the server has a joined or invited user,
// and restricted rooms when the server has a user joined to an allowed
// room (the requesting server filters further for its user).
func (s *Server) serverMaySee(origin string, h *hierRoom) bool {
	if h.WorldReadable || h.JoinRule == "public" || knockable(h.JoinRule, h.RoomVersion) {
		return true
	}
	hasUser := func(room string, invited bool) bool {
		ms, err := s.store.Members(room)
		if err != nil {
			return false
		}
		for _, m := range ms {
			if domainOf(m.UserID) == origin && (m.Membership == projections.MemberJoin || invited && m.Membership == projections.MemberInvite) {
				return true
			}
		}
		return false
	}
	if hasUser(h.RoomID, true) {
		return true
	}
	if h.JoinRule == "restricted" || h.JoinRule == "knock_restricted" {
		for _, a := range h.AllowedRoomIDs {
			if hasUser(a, false) {
				return true
			}
		}
	}
	return false
}

// FedHierarchy answers GET /_matrix/federation/v1/hierarchy/{roomId} for
// another server: the room, the children it could peek or join, and the
// children it could not ("inaccessible_children"). Children this server
// does not take part in are left out ("Rooms which the responding server
// cannot provide details on will be outright excluded"). A room this
// server is not in, or one the requester could not peek or join, is 404.
func (s *Server) FedHierarchy(origin, room string, suggestedOnly bool) ([]byte, int) {
	notFound := []byte(`{"errcode":"M_NOT_FOUND","error":"Room does not exist."}`)
	if !validRoomID(room) || !s.hostedHere(room) {
		return notFound, 404
	}
	h, err := s.localHierRoom(room, suggestedOnly)
	if err != nil || !s.serverMaySee(origin, h) {
		return notFound, 404
	}
	children := []*hierRoom{}
	inaccessible := []string{}
	for i, c := range h.ChildrenState {
		if i == hierFedMaxPerRoom {
			break
		}
		if !s.hostedHere(c.StateKey) {
			continue
		}
		ch, err := s.localHierRoom(c.StateKey, suggestedOnly)
		if err != nil {
			continue
		}
		if !s.serverMaySee(origin, ch) {
			inaccessible = append(inaccessible, c.StateKey)
			continue
		}
		children = append(children, ch)
	}
	b, err := json.Marshal(map[string]any{"room": h, "children": children, "inaccessible_children": inaccessible})
	if err != nil {
		return []byte(`{"errcode":"M_UNKNOWN","error":"Internal error"}`), 500
	}
	return b, 200
}

// fedHierAnswer is another server's /hierarchy answer.
type fedHierAnswer struct {
	Room         *hierRoom   `json:"room"`
	Children     []*hierRoom `json:"children"`
	Inaccessible []string    `json:"inaccessible_children"`
}

// sanitize keeps what a remote summary may say about room: the room ID
// must match, membership is ours to say, children are revalidated.
func (h *hierRoom) sanitize(room string, suggestedOnly bool) bool {
	if h == nil || h.RoomID != room {
		return false
	}
	h.Membership = ""
	if h.isSpace() {
		h.ChildrenState = validChildren(h.ChildrenState, suggestedOnly)
	} else {
		h.ChildrenState = []hierChild{}
	}
	return true
}

type hierCacheKey struct {
	srv       *Server
	room      string
	suggested bool
}

type hierCached struct {
	ans     *fedHierAnswer // nil: the lookup failed
	expires time.Time
}

// hierSession is a pagination session: the rest of the walk.
type hierSession struct {
	srv       *Server
	user      string
	room      string
	suggested bool
	maxDepth  int
	stack     []hierEntry
	seen      map[string]bool
	expires   time.Time
}

type hierEntry struct {
	room   string
	via    []string
	depth  int
	remote *hierRoom // the summary a parent's federation answer gave
}

var hierMem = struct {
	sync.Mutex
	sessions map[string]*hierSession
	remote   map[hierCacheKey]hierCached
}{sessions: map[string]*hierSession{}, remote: map[hierCacheKey]hierCached{}}

// remoteHierarchy asks the via servers about a room, through a one-minute
// cache (failures are cached too, so a dead server is not waited for on
// every page).
func (s *Server) remoteHierarchy(room string, via []string, suggestedOnly bool) *fedHierAnswer {
	hf, ok := s.fed.(hierarchyFederation)
	if s.fed == nil || !ok {
		return nil
	}
	key := hierCacheKey{s, room, suggestedOnly}
	now := time.Now()
	hierMem.Lock()
	c, hit := hierMem.remote[key]
	hierMem.Unlock()
	if hit && now.Before(c.expires) {
		return c.ans
	}
	var ans *fedHierAnswer
	if raw, err := hf.Hierarchy(via, room, suggestedOnly); err == nil {
		var a fedHierAnswer
		if json.Unmarshal(raw, &a) == nil && a.Room.sanitize(room, suggestedOnly) {
			kept := a.Children[:0]
			for _, c := range a.Children {
				if c != nil && validRoomID(c.RoomID) && c.sanitize(c.RoomID, suggestedOnly) {
					kept = append(kept, c)
				}
			}
			a.Children = kept
			ans = &a
		}
	} else {
		s.logger.Info("space hierarchy over federation failed", "room", room, "err", err)
	}
	hierMem.Lock()
	for k, v := range hierMem.remote {
		if now.After(v.expires) {
			delete(hierMem.remote, k)
		}
	}
	hierMem.remote[key] = hierCached{ans, now.Add(hierRemoteTTL)}
	hierMem.Unlock()
	return ans
}

// hierVisit summarises one room of the walk for user: nil when the room
// is unknown or not visible to them. children are the summaries a remote
// answer gave for the room's children; inaccessible the children it said
// are out of reach.
func (s *Server) hierVisit(user string, e hierEntry, suggestedOnly bool, maxDepth int) (h *hierRoom, children map[string]*hierRoom, inaccessible map[string]bool) {
	if s.hostedHere(e.room) {
		h, err := s.localHierRoom(e.room, suggestedOnly)
		if err != nil || !s.userMaySee(user, h) {
			return nil, nil, nil
		}
		return h, nil, nil
	}
	// A child the parent's answer described needs no request of its own
	// unless we are to walk into it.
	if e.remote != nil && (!e.remote.isSpace() || e.depth >= maxDepth) {
		h = e.remote
	} else {
		via := e.via
		if len(via) == 0 {
			if d := domainOf(e.room); d != "" {
				via = []string{d} // the root of the walk: only its ID to go by
			}
		}
		if ans := s.remoteHierarchy(e.room, via, suggestedOnly); ans != nil {
			h = ans.Room
			children, inaccessible = map[string]*hierRoom{}, map[string]bool{}
			for _, c := range ans.Children {
				children[c.RoomID] = c
			}
			for _, id := range ans.Inaccessible {
				inaccessible[id] = true
			}
		} else if e.remote != nil {
			h = e.remote
		} else if local, err := s.localHierRoom(e.room, suggestedOnly); err == nil {
			h = local // known here (we left, or were invited): stale but better than nothing
		}
	}
	if h == nil || !s.userMaySee(user, h) {
		return nil, nil, nil
	}
	cp := *h
	return &cp, children, inaccessible
}

// parseHierParams reads suggested_only, limit and max_depth.
func parseHierParams(r *Req) (suggested bool, limit, maxDepth int, e *Error) {
	switch v := r.Query("suggested_only"); v {
	case "", "false":
	case "true":
		suggested = true
	default:
		return false, 0, 0, errInvalid("suggested_only must be true or false")
	}
	limit, maxDepth = hierDefaultLimit, hierMaxDepth
	if v := r.Query("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return false, 0, 0, errInvalid("limit must be an integer greater than zero")
		}
		limit = min(n, hierMaxLimit)
	}
	if v := r.Query("max_depth"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return false, 0, 0, errInvalid("max_depth must be a non-negative integer")
		}
		maxDepth = min(n, hierMaxDepth)
	}
	return suggested, limit, maxDepth, nil
}

// roomHierarchy serves GET /_matrix/client/v1/rooms/{roomId}/hierarchy.
func (s *Server) roomHierarchy(r *Req) error {
	room := r.Param("roomId")
	suggested, limit, maxDepth, e := parseHierParams(r)
	if e != nil {
		return e
	}
	forbidden := errForbidden("You are not allowed to view this room.")
	var sess *hierSession
	if from := r.Query("from"); from != "" {
		// The session is taken out while it is used (a concurrent request
		// with the same token finds nothing), but only by a valid request.
		hierMem.Lock()
		sess = hierMem.sessions[from]
		var e *Error
		switch {
		case sess == nil || sess.srv != s || sess.user != r.User || sess.room != room || time.Now().After(sess.expires):
			e = errInvalid("Unknown pagination token")
		case sess.suggested != suggested || sess.maxDepth != maxDepth:
			e = errInvalid("suggested_only and max_depth cannot change on paginated requests")
		default:
			delete(hierMem.sessions, from)
		}
		hierMem.Unlock()
		if e != nil {
			return e
		}
	} else {
		if !validRoomID(room) {
			return forbidden
		}
		sess = &hierSession{srv: s, user: r.User, room: room, suggested: suggested, maxDepth: maxDepth,
			stack: []hierEntry{{room: room}}, seen: map[string]bool{}}
	}
	rooms := []*hierRoom{}
	for len(sess.stack) > 0 && len(rooms) < limit {
		ent := sess.stack[len(sess.stack)-1]
		sess.stack = sess.stack[:len(sess.stack)-1]
		if sess.seen[ent.room] {
			continue // loops and repeated grandchildren
		}
		sess.seen[ent.room] = true
		h, children, inaccessible := s.hierVisit(r.User, ent, suggested, maxDepth)
		if h == nil {
			if ent.room == room && ent.depth == 0 {
				return forbidden
			}
			continue
		}
		rooms = append(rooms, h)
		if ent.depth >= maxDepth {
			continue // "When reached, no further child rooms will be returned."
		}
		for i := len(h.ChildrenState) - 1; i >= 0; i-- {
			c := h.ChildrenState[i]
			if inaccessible[c.StateKey] || sess.seen[c.StateKey] {
				continue
			}
			sess.stack = append(sess.stack, hierEntry{room: c.StateKey, via: c.via, depth: ent.depth + 1, remote: children[c.StateKey]})
		}
	}
	out := map[string]any{"rooms": rooms}
	if len(sess.stack) > 0 {
		tok := randomToken()
		now := time.Now()
		sess.expires = now.Add(hierSessionTTL)
		hierMem.Lock()
		for k, v := range hierMem.sessions {
			if now.After(v.expires) {
				delete(hierMem.sessions, k)
			}
		}
		hierMem.sessions[tok] = sess
		hierMem.Unlock()
		out["next_batch"] = tok
	}
	return r.json(out)
}
