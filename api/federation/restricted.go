package federation

import (
	"encoding/json"
	"sort"
	"strconv"

	"engram/dag"
	"engram/projections"
)

// Restricted joins, the resident side (server-server-api, "Restricted
// rooms"): "A resident server processing a request to join a restricted
// room must ensure that the joining server satisfies at least one of the
// conditions specified by m.room.join_rules." When it does, make_join
// names a local user with the power to invite in
// join_authorised_via_users_server, and send_join adds this server's
// signature, which the auth rules require of that user's server.

// restrictedJoin returns the local user who authorises user's join to
// room: "" when no authorisation is needed (another join rule, a room
// version without restricted joins, or a user already joined or invited),
// or the error the spec names: 400 M_UNABLE_TO_AUTHORISE_JOIN when none of
// the allowed rooms is known here, 403 M_FORBIDDEN when the user is in none
// of them, 400 M_UNABLE_TO_GRANT_JOIN when no local member may invite.
func (f *Federation) restrictedJoin(room, user string, ver *dag.RoomVersion) (string, error) {
	if ver == nil || !ver.RestrictedJoins {
		return "", nil
	}
	var rules struct {
		JoinRule string `json:"join_rule"`
		Allow    []struct {
			Type   string `json:"type"`
			RoomID string `json:"room_id"`
		} `json:"allow"`
	}
	if !f.stateContent(room, "m.room.join_rules", &rules) {
		return "", nil
	}
	if rules.JoinRule != "restricted" && !(rules.JoinRule == "knock_restricted" && ver.KnockRestricted) {
		return "", nil
	}
	if m, err := f.store.MemberOf(room, user); err == nil && (m.Membership == projections.MemberJoin || m.Membership == projections.MemberInvite) {
		return "", nil
	}
	known, allowed := false, false
	for _, a := range rules.Allow {
		if a.Type != "m.room_membership" || a.RoomID == "" {
			continue
		}
		if _, err := f.store.RoomVersion(a.RoomID); err != nil {
			continue
		}
		known = true
		if m, err := f.store.MemberOf(a.RoomID, user); err == nil && m.Membership == projections.MemberJoin {
			allowed = true
			break
		}
	}
	switch {
	case !allowed && !known:
		return "", ferr(400, "M_UNABLE_TO_AUTHORISE_JOIN", "This server cannot check the rooms the join rules allow")
	case !allowed:
		return "", ferr(403, "M_FORBIDDEN", "The user is not in any room the join rules allow")
	}
	if via := f.inviter(room, ver); via != "" {
		return via, nil
	}
	return "", ferr(400, "M_UNABLE_TO_GRANT_JOIN", "No user of this server may invite to the room")
}

// inviter is a local joined member of room whose power level reaches the
// invite level ("the user ID denoted by join_authorised_via_users_server
// ... must have sufficient power to issue invites"), the most powerful one
// first (ties by user ID); "" if none.
func (f *Federation) inviter(room string, ver *dag.RoomVersion) string {
	var pl struct {
		Users        map[string]json.RawMessage `json:"users"`
		UsersDefault json.RawMessage            `json:"users_default"`
		Invite       json.RawMessage            `json:"invite"`
	}
	hasPL := f.stateContent(room, "m.room.power_levels", &pl)
	creators := f.creators(room, ver)
	level := func(raw json.RawMessage, def int64) int64 {
		var n json.Number
		if json.Unmarshal(raw, &n) == nil {
			if v, err := strconv.ParseInt(string(n), 10, 64); err == nil {
				return v
			}
		}
		var s string
		if json.Unmarshal(raw, &s) == nil { // before room version 10: a string may hold it
			if v, err := strconv.ParseInt(s, 10, 64); err == nil {
				return v
			}
		}
		return def
	}
	const infinite = int64(1) << 62
	power := func(u string) int64 {
		if creators[u] && ver.RoomIDFromCreate {
			return infinite // "creators have infinite power" (v12)
		}
		if !hasPL {
			if creators[u] {
				return 100
			}
			return 0
		}
		if raw, ok := pl.Users[u]; ok {
			return level(raw, 0)
		}
		return level(pl.UsersDefault, 0)
	}
	need := int64(0)
	if hasPL {
		need = level(pl.Invite, 0)
	}
	members, err := f.store.Members(room)
	if err != nil {
		return ""
	}
	type cand struct {
		user  string
		power int64
	}
	var cands []cand
	for _, m := range members {
		if m.Membership == projections.MemberJoin && dag.ServerName(m.UserID) == f.cfg.ServerName {
			if p := power(m.UserID); p >= need {
				cands = append(cands, cand{m.UserID, p})
			}
		}
	}
	sort.Slice(cands, func(i, j int) bool {
		if cands[i].power != cands[j].power {
			return cands[i].power > cands[j].power
		}
		return cands[i].user < cands[j].user
	})
	if len(cands) == 0 {
		return ""
	}
	return cands[0].user
}

// creators are a room's creators: the create event's sender (or creator
// before room version 11) and, in v12, its additional_creators.
func (f *Federation) creators(room string, ver *dag.RoomVersion) map[string]bool {
	out := map[string]bool{}
	id, err := f.store.StateEvent(room, "m.room.create", "")
	if err != nil {
		return out
	}
	rec, _, err := f.store.Event(id)
	if err != nil {
		return out
	}
	var c struct {
		Content struct {
			Creator    string   `json:"creator"`
			Additional []string `json:"additional_creators"`
		} `json:"content"`
	}
	_ = json.Unmarshal(rec.PDU, &c)
	if ver.CreatorIsSender {
		out[rec.Sender] = true
	} else if c.Content.Creator != "" {
		out[c.Content.Creator] = true
	}
	if ver.RoomIDFromCreate {
		for _, u := range c.Content.Additional {
			out[u] = true
		}
	}
	return out
}

// stateContent decodes the content of a room's current state event
// (type, "") into v; false if there is none.
func (f *Federation) stateContent(room, typ string, v any) bool {
	id, err := f.store.StateEvent(room, typ, "")
	if err != nil || id == "" {
		return false
	}
	rec, _, err := f.store.Event(id)
	if err != nil {
		return false
	}
	var ev struct {
		Content json.RawMessage `json:"content"`
	}
	return json.Unmarshal(rec.PDU, &ev) == nil && json.Unmarshal(ev.Content, v) == nil
}

// countersignJoin adds this server's signature to a join sent to
// send_join ("The resident homeserver then adds its signature to this
// event"), after checking, when the join names one of our users as its
// authoriser, that the restricted room's conditions still hold.
func (f *Federation) countersignJoin(ev *dag.Event) (*dag.Event, error) {
	var c struct {
		Via string `json:"join_authorised_via_users_server"`
	}
	_ = json.Unmarshal(ev.Content, &c)
	if c.Via != "" && dag.ServerName(c.Via) == f.cfg.ServerName {
		if _, err := f.restrictedJoin(ev.RoomID, ev.Sender, ev.Version); err != nil {
			return nil, err
		}
	}
	raw, err := dag.SignEvent(ev.Raw, ev.Version, f.cfg.ServerName, f.cfg.Key.ID, f.cfg.Key.Key)
	if err != nil {
		return nil, err
	}
	return dag.ParseEvent(raw, ev.Version)
}
