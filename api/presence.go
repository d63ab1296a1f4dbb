package api

import (
	"encoding/json"
	"sort"
	"time"

	"engram/projections"
)

// Presence (client-server-api, "Presence"). Presence is ephemeral: it lives
// in the sync hub's memory on the ephemeral stream, and a restart forgets
// it (everyone is offline until they sync again). Users see the presence of
// the users they share a room with, and their own.
//
// A sync marks its user online (set_presence, default online) if they were
// offline, and counts as activity; a user who stops syncing goes offline
// after the sync timeout, and an online user without activity (syncs,
// presence updates, typing, receipts) goes unavailable after the idle
// timeout, as in Synapse.

func (s *Server) presenceRoutes() {
	rt := &s.rt
	rt.client("GET", "/presence/{userId}/status", authed, s.getPresence)
	rt.client("PUT", "/presence/{userId}/status", authed, s.putPresence)
}

// presenceState is one user's presence.
type presenceState struct {
	state      string  // online, unavailable or offline
	statusMsg  *string // nil: none
	lastActive int64   // ms
	lastSync   int64   // ms, when their last sync ended
	syncing    int     // syncs in progress
	pos        uint64  // ephemeral position of the last change
}

func (s *Server) putPresence(r *Req) error {
	if r.Param("userId") != r.User {
		return errForbidden("You cannot set the presence state of another user")
	}
	var body struct {
		Presence  *string `json:"presence"`
		StatusMsg *string `json:"status_msg"`
	}
	if e := r.decode(&body); e != nil {
		return e
	}
	if body.Presence == nil {
		return errMissing("Missing presence")
	}
	switch *body.Presence {
	case "online", "offline", "unavailable":
	default:
		return errInvalid("presence must be online, offline or unavailable")
	}
	if !s.cfg.DisablePresence {
		s.hub.setPresence(r.User, *body.Presence, body.StatusMsg)
	}
	return r.json(struct{}{})
}

func (s *Server) getPresence(r *Req) error {
	user := r.Param("userId")
	if !validUserID(user) {
		return errInvalid("Invalid user ID")
	}
	if user != r.User {
		ok, err := s.sharesRoom(r.User, user)
		if err != nil {
			return err
		}
		if !ok {
			return errForbidden("You are not allowed to see their presence")
		}
	}
	if s.cfg.DisablePresence {
		return r.json(map[string]any{"presence": "offline"})
	}
	p, ok := s.hub.presenceOf(user)
	if !ok {
		return r.json(map[string]any{"presence": "offline"})
	}
	return r.json(presenceContent(p, nowMS()))
}

// presenceContent is the content of an m.presence event.
func presenceContent(p presenceState, now int64) map[string]any {
	c := map[string]any{"presence": p.state}
	if p.lastActive > 0 {
		c["last_active_ago"] = max(0, now-p.lastActive)
	}
	if p.state == "online" {
		c["currently_active"] = now-p.lastActive < 60_000
	}
	if p.statusMsg != nil {
		c["status_msg"] = *p.statusMsg
	}
	return c
}

// sharesRoom reports whether a and b are both joined to some room.
func (s *Server) sharesRoom(a, b string) (bool, error) {
	if a == b {
		return true, nil
	}
	urs, err := s.store.UserRooms(b)
	if err != nil {
		return false, err
	}
	for _, u := range urs {
		if u.Membership != projections.MemberJoin {
			continue
		}
		m, err := s.store.MemberOf(u.RoomID, a)
		if err != nil {
			return false, err
		}
		if m.Membership == projections.MemberJoin {
			return true, nil
		}
	}
	return false, nil
}

// presenceSyncing notes that a sync of user started.
func (s *Server) presenceSyncing(user, set string) {
	if s.cfg.DisablePresence {
		return
	}
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.presenceLocked(user)
	p.syncing++
	now := nowMS()
	switch set {
	case "", "online":
		// Syncing online counts as activity; it does not override an
		// explicit unavailable.
		p.lastActive = now
		if p.state == "offline" {
			p.state = "online"
			h.presenceChangedLocked(user, p)
		}
	case "unavailable":
		if p.state != "unavailable" {
			p.state = "unavailable"
			h.presenceChangedLocked(user, p)
		}
	}
}

// presenceSyncDone notes that a sync of user ended.
func (s *Server) presenceSyncDone(user string) {
	if s.cfg.DisablePresence {
		return
	}
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	if p := h.presence[user]; p != nil {
		p.syncing--
		p.lastSync = nowMS()
	}
}

// presenceActive notes activity of user (typing, receipts): an
// unavailable user who is online again, and the idle timer restarts.
func (s *Server) presenceActive(user string) {
	if s.cfg.DisablePresence {
		return
	}
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.presenceLocked(user)
	p.lastActive = nowMS()
	if p.state != "online" {
		p.state = "online"
		h.presenceChangedLocked(user, p)
	}
}

func (h *syncHub) presenceLocked(user string) *presenceState {
	p := h.presence[user]
	if p == nil {
		p = &presenceState{state: "offline"}
		h.presence[user] = p
	}
	return p
}

func (h *syncHub) presenceChangedLocked(user string, p *presenceState) {
	p.pos = h.bumpLocked()
	h.presenceLog.add(p.pos, user)
}

// setPresence sets a user's presence explicitly (PUT /presence).
func (h *syncHub) setPresence(user, state string, msg *string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.presenceLocked(user)
	p.state, p.statusMsg, p.lastActive = state, msg, nowMS()
	p.lastSync = p.lastActive
	h.presenceChangedLocked(user, p)
}

func (h *syncHub) presenceOf(user string) (presenceState, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.presence[user]
	if p == nil {
		return presenceState{}, false
	}
	return *p, true
}

// presenceJanitor applies the timeouts.
func (h *syncHub) presenceJanitor() {
	defer h.wg.Done()
	t := time.NewTicker(h.janitorEvery)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		h.presenceSweep(nowMS())
	}
}

// presenceSweep applies the timeouts as of now (ms).
func (h *syncHub) presenceSweep(now int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for user, p := range h.presence {
		switch {
		case p.state != "offline" && p.syncing == 0 && now-max(p.lastSync, p.lastActive) > h.syncTimeout.Milliseconds():
			p.state = "offline"
			h.presenceChangedLocked(user, p)
		case p.state == "online" && now-p.lastActive > h.idleTimeout.Milliseconds():
			p.state = "unavailable"
			h.presenceChangedLocked(user, p)
		case p.state == "offline" && p.syncing == 0 && p.statusMsg == nil && now-p.lastSync > 24*3600*1000:
			delete(h.presence, user) // forget long-gone users
		}
	}
}

// presenceChanges returns the users whose presence changed in (after,
// upto] that the syncing user may see. If the bounded change log no longer
// covers the window, every known user is considered.
func (st *syncState) presenceChanges(after, upto uint64) ([]string, error) {
	if st.s.cfg.DisablePresence || !st.presenceWanted() {
		return nil, nil
	}
	h := st.s.hub
	h.mu.Lock()
	users, complete := h.presenceLog.since(after, upto)
	if !complete {
		users = users[:0]
		for u, p := range h.presence {
			if p.pos > after {
				users = append(users, u)
			}
		}
	}
	h.mu.Unlock()
	sort.Strings(users)
	return st.visiblePresence(users)
}

func (st *syncState) presenceWanted() bool {
	pf := &st.f.Presence
	return listAllows(pf.Types, pf.NotTypes, "m.presence", true) && pf.limit(1) != 0
}

func (st *syncState) visiblePresence(users []string) ([]string, error) {
	out := users[:0:0]
	pf := &st.f.Presence
	for _, u := range users {
		if !listAllows(pf.Senders, pf.NotSenders, u, false) || st.ignoredUsers()[u] {
			continue
		}
		ok, seen := st.shares[u]
		if !seen && !st.sharesComplete {
			var err error
			if ok, err = st.s.sharesRoom(st.user, u); err != nil {
				return nil, err
			}
			st.shares[u] = ok
		}
		if ok {
			out = append(out, u)
		}
	}
	return out, nil
}

// loadCoMembers fills the shared-room memo with every user joined to one
// of the syncing user's rooms (others then share none).
func (st *syncState) loadCoMembers() error {
	urs, err := st.s.store.UserRooms(st.user)
	if err != nil {
		return err
	}
	co := map[string]bool{st.user: true}
	for _, u := range urs {
		if u.Membership != projections.MemberJoin {
			continue
		}
		ms, err := st.s.store.Members(u.RoomID)
		if err != nil {
			return err
		}
		for _, m := range ms {
			if m.Membership == projections.MemberJoin {
				co[m.UserID] = true
			}
		}
	}
	st.shares = co
	st.sharesComplete = true
	return nil
}

// appendPresence appends the presence section's events: every known
// presence the user may see on an initial sync, the changes otherwise.
func (st *syncState) appendPresence(b []byte) ([]byte, bool, error) {
	if st.s.cfg.DisablePresence || !st.presenceWanted() {
		return append(b, "[]"...), false, nil
	}
	users := st.presence
	if st.initial || st.req.fullState {
		h := st.s.hub
		h.mu.Lock()
		all := make([]string, 0, len(h.presence))
		for u := range h.presence {
			all = append(all, u)
		}
		h.mu.Unlock()
		sort.Strings(all)
		if len(all) > 64 {
			// Many known users: one pass over the user's rooms' members
			// beats a shared-room check per known user.
			if err := st.loadCoMembers(); err != nil {
				return nil, false, err
			}
		}
		var err error
		if users, err = st.visiblePresence(all); err != nil {
			return nil, false, err
		}
	}
	if l := st.f.Presence.limit(-1); l >= 0 && len(users) > l {
		users = users[:l]
	}
	now := nowMS()
	b = append(b, '[')
	n := 0
	for _, u := range users {
		p, ok := st.s.hub.presenceOf(u)
		if !ok {
			continue
		}
		ev, _ := json.Marshal(map[string]any{"type": "m.presence", "sender": u, "content": presenceContent(p, now)})
		if n > 0 {
			b = append(b, ',')
		}
		b = append(b, ev...)
		n++
	}
	return append(b, ']'), n > 0, nil
}
