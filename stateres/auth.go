package stateres

import (
	"errors"
	"strings"

	"engram/dag"
)

// AuthState is the room state an event is checked against: the event's own
// auth events, the state before it, or the current state. Get returns the
// state event for (type, state_key), or nil.
type AuthState interface {
	Get(key dag.StateKeyTuple) *dag.Event
}

// StateEvents is an AuthState held in a map.
type StateEvents map[dag.StateKeyTuple]*dag.Event

// Get implements AuthState.
func (s StateEvents) Get(key dag.StateKeyTuple) *dag.Event { return s[key] }

// AuthStateFunc adapts a function to AuthState.
type AuthStateFunc func(dag.StateKeyTuple) *dag.Event

// Get implements AuthState.
func (f AuthStateFunc) Get(key dag.StateKeyTuple) *dag.Event { return f(key) }

// NewStateEvents indexes state events by (type, state_key); a later event
// replaces an earlier one with the same key, and message events are skipped.
func NewStateEvents(events ...*dag.Event) StateEvents {
	s := make(StateEvents, len(events))
	for _, ev := range events {
		if ev != nil && ev.StateKey != nil {
			s[ev.Key()] = ev
		}
	}
	return s
}

// Allowed applies the authorisation rules of ev.Version to ev against the
// given state, and returns nil if they allow it. A *DeniedError names the
// rule that rejected it; any other error (ErrNoVersion, a nil event) means
// the rules could not be applied.
//
// These are the rules that depend on state (server-server-api, "A given
// event is checked multiple times against different sets of state"). The
// rules on the event's auth_events list itself (rule 2, rule 3 in v12) and
// v12's rule 2 need the auth events and are applied by CheckAuthEvents; the
// create event rules (1) need nothing and are applied here.
//
// Signatures are not checked here: stateres holds no keys. Rule "If content
// has a join_authorised_via_users_server key: If the event is not validly
// signed by the homeserver of the user ID denoted by the key, reject." (v8+)
// is enforced by the caller's signature check (receipt check 2), which must
// require that server's signature on such joins; Allowed only rejects a
// value that names no server at all.
func Allowed(ev *dag.Event, auth AuthState) error {
	if ev == nil {
		return errors.New("stateres: nil event")
	}
	return allowed(ev.Version, ev, auth)
}

func allowed(ver *dag.RoomVersion, ev *dag.Event, auth AuthState) error {
	if ver == nil {
		return ErrNoVersion
	}
	if auth == nil {
		auth = StateEvents(nil)
	}
	c := checker{ver: ver, ev: ev, auth: auth}
	return c.check()
}

type checker struct {
	ver  *dag.RoomVersion
	ev   *dag.Event
	auth AuthState

	createEv *dag.Event
	create   *createInfo
	plLoaded bool
	plEv     *dag.Event
	pl       *powerLevels // nil if there is no power levels event
}

func (c *checker) deny(r rule, reason string) error {
	return &DeniedError{Rule: ruleNumber(c.ver, r), Reason: reason}
}

// powerLevels loads the current m.room.power_levels event.
func (c *checker) powerLevels() *powerLevels {
	if !c.plLoaded {
		c.plLoaded = true
		if ev := c.auth.Get(plKey); ev != nil && ev.Type == typePowerLevels {
			c.plEv = ev
			c.pl = parsed(ev).pl
		}
	}
	return c.pl
}

// membership is a user's current membership, "" if they have none.
func (c *checker) membership(user string) string {
	ev := c.auth.Get(dag.StateKeyTuple{Type: typeMember, StateKey: user})
	if ev == nil || ev.Type != typeMember {
		return ""
	}
	return parsed(ev).member.membership
}

// joinRule is the current join rule. With no m.room.join_rules event the
// rule is taken to be "invite", as Synapse, Dendrite and ruma do.
func (c *checker) joinRule() string {
	ev := c.auth.Get(jrKey)
	if ev == nil || ev.Type != typeJoinRules {
		return jrInvite
	}
	return parsed(ev).joinRule
}

// creator is the user the "state_key is the creator" join rule names:
// content.creator up to v10, the create event's sender from v11 ("the
// state_key is the sender of the m.room.create").
func (c *checker) creator() string {
	if c.ver.CreatorIsSender {
		return c.createEv.Sender
	}
	return c.create.creator
}

// isCreator: in v12 "Room creators include: The user ID denoted by the
// sender of the m.room.create event in the room. Any user IDs contained in
// the additional_creators array".
func isCreator(createEv *dag.Event, create *createInfo, user string) bool {
	if createEv.Sender == user {
		return true
	}
	for _, u := range create.additional {
		if u == user {
			return true
		}
	}
	return false
}

// userLevel is a user's power level: "If a user_id is in the users list,
// then that user_id has the associated power level. Otherwise they have the
// default level users_default. [...] If the room contains no
// m.room.power_levels event, the room's creator has a power level of 100,
// and all other users have a power level of 0." In v12 creators have an
// infinite level whatever the power levels say.
func (c *checker) userLevel(user string) int64 {
	if c.ver.RoomIDFromCreate && isCreator(c.createEv, c.create, user) {
		return levelInfinite
	}
	pl := c.powerLevels()
	if pl == nil {
		if !c.ver.RoomIDFromCreate && user == c.creator() {
			return 100
		}
		return 0
	}
	if l, ok := pl.users.get(user); ok && l.usable() {
		return l.v
	}
	return pl.fieldLevel(fUsersDefault)
}

func (c *checker) check() error {
	ev := c.ev
	if !looseUserID(ev.Sender) {
		return c.deny(rFormat, "sender is not a user ID")
	}
	// 1. If type is m.room.create
	if ev.Type == typeCreate {
		return c.checkCreate()
	}
	createEv := c.auth.Get(createKey)
	if createEv != nil && createEv.Type != typeCreate {
		createEv = nil
	}
	if c.ver.RoomIDFromCreate {
		// 2. If the event's room_id is not an event ID for an accepted (not
		// rejected) m.room.create event, with the sigil ! instead of $,
		// reject.
		if createEv == nil || !createIDForRoom(createEv.ID, ev.RoomID) {
			return c.deny(rRoomIDCreate, "room_id does not name the room's m.room.create event")
		}
	} else if createEv == nil {
		// 2.4 If there is no m.room.create event among the entries, reject.
		return c.deny(rAuthNoCreate, "no m.room.create event")
	}
	c.createEv = createEv
	c.create = &parsed(createEv).create

	// 3. If the content of the m.room.create event in the room state has the
	// property m.federate set to false, and the sender domain of the event
	// does not match the sender domain of the create event, reject.
	if c.create.noFederate && domainOf(ev.Sender) != domainOf(createEv.Sender) {
		return c.deny(rFederate, "room is not federated and the sender is on another server")
	}

	// 4. If type is m.room.aliases (v1-v5)
	if c.ver.SpecialCaseAliases && ev.Type == typeAliases {
		if ev.StateKey == nil {
			return c.deny(rAliasNoStateKey, "m.room.aliases has no state_key")
		}
		if *ev.StateKey != domainOf(ev.Sender) {
			return c.deny(rAliasDomain, "sender's domain does not match state_key")
		}
		return nil
	}

	// If type is m.room.member
	if ev.Type == typeMember {
		return c.checkMember()
	}

	// If the sender's current membership state is not join, reject.
	if c.membership(ev.Sender) != mJoin {
		return c.deny(rSenderJoined, "sender is not joined")
	}

	// If type is m.room.third_party_invite: Allow if and only if sender's
	// current power level is greater than or equal to the invite level.
	if ev.Type == typeThirdPartyInvite {
		if c.userLevel(ev.Sender) >= c.powerLevels().fieldLevel(fInvite) {
			return nil
		}
		return c.deny(rThirdPartyInvite, "sender's level is below the invite level")
	}

	// If the event type's required power level is greater than the sender's
	// power level, reject.
	senderLevel := c.userLevel(ev.Sender)
	if c.powerLevels().requiredLevel(ev.Type, ev.StateKey != nil) > senderLevel {
		return c.deny(rRequiredLevel, "sender's level is below the level required for "+ev.Type)
	}

	// If the event has a state_key that starts with an @ and does not match
	// the sender, reject.
	if ev.StateKey != nil && len(*ev.StateKey) > 0 && (*ev.StateKey)[0] == '@' && *ev.StateKey != ev.Sender {
		return c.deny(rStateKeyUser, "state_key names another user")
	}

	if ev.Type == typePowerLevels {
		return c.checkPowerLevels(senderLevel)
	}

	// 11. If type is m.room.redaction (v1, v2)
	if c.ver.EventIDFormat == 1 && ev.Type == typeRedaction {
		// 1. If the sender's power level is greater than or equal to the
		// redact level, allow.
		if senderLevel >= c.powerLevels().fieldLevel(fRedact) {
			return nil
		}
		// 2. If the domain of the event_id of the event being redacted is
		// the same as the domain of the event_id of the m.room.redaction,
		// allow.
		if d := domainOf(ev.ID); d != "" && d == domainOf(ev.Redacts) {
			return nil
		}
		return c.deny(rRedactOtherwise, "sender may not redact events of other servers")
	}
	return nil
}

// checkCreate applies rule 1.
func (c *checker) checkCreate() error {
	ev := c.ev
	in := parsed(ev)
	create := &in.create
	// 1. If it has any prev_events, reject.
	if len(ev.PrevEvents) > 0 {
		return c.deny(rCreatePrev, "m.room.create has prev_events")
	}
	if c.ver.RoomIDFromCreate {
		// 2. If the event has a room_id, reject.
		if hasRoomIDField(ev) {
			return c.deny(rCreateRoomID, "m.room.create has a room_id")
		}
	} else if d := domainOf(ev.RoomID); d == "" || d != domainOf(ev.Sender) {
		// 2. If the domain of the room_id does not match the domain of the
		// sender, reject.
		return c.deny(rCreateRoomID, "room_id domain does not match the sender's")
	}
	if !create.objectOK {
		return c.deny(rFormat, "m.room.create content is not an object")
	}
	// 3. If content.room_version is present and is not a recognised
	// version, reject.
	if create.hasRoomVersion && (!create.roomVersionStr || dag.Version(create.roomVersion) == nil) {
		return c.deny(rCreateVersion, "content.room_version is not a recognised version")
	}
	if !c.ver.CreatorIsSender && !create.hasCreator {
		// 4. If content has no creator property, reject. (v1-v10)
		return c.deny(rCreateCreator, "content has no creator")
	}
	if c.ver.RoomIDFromCreate && create.hasAdditional && !create.additionalValid {
		// 4. If additional_creators is present in content and is not an
		// array of strings where each string passes the same user ID
		// validation applied to sender, reject.
		return c.deny(rCreateAdditional, "additional_creators is not an array of user IDs")
	}
	return nil
}

// hasRoomIDField reports whether a v12 create event carried a room_id. The
// parsed event holds the room ID derived from its own ID; any other value,
// or a room_id key in the raw PDU, means one was sent.
func hasRoomIDField(ev *dag.Event) bool {
	if ev.RoomID != "" && !createIDForRoom(ev.ID, ev.RoomID) {
		return true
	}
	if len(ev.Raw) > 0 {
		if m, ok := object(ev.Raw); ok {
			_, has := m["room_id"]
			return has
		}
	}
	return false
}

// checkMember applies the rules under "If type is m.room.member".
func (c *checker) checkMember() error {
	ev := c.ev
	m := &parsed(ev).member
	// 1. If there is no state_key property, or no membership property in
	// content, reject.
	if ev.StateKey == nil || !m.hasMembership {
		return c.deny(rMemberMissing, "no state_key or no membership")
	}
	// 2. If content has a join_authorised_via_users_server key: If the event
	// is not validly signed by the homeserver of the user ID denoted by the
	// key, reject. (v8+; the signature itself is the caller's check.)
	if c.ver.RestrictedJoins && m.hasJAUS && !validUserID(m.jaus) {
		return c.deny(rMemberJAUS, "join_authorised_via_users_server is not a user ID")
	}
	target := *ev.StateKey
	switch m.membership {
	case mJoin:
		return c.checkJoin(m, target)
	case mInvite:
		return c.checkInvite(m, target)
	case mLeave:
		return c.checkLeave(target)
	case mBan:
		return c.checkBan(target)
	case mKnock:
		if c.ver.Knocking {
			return c.checkKnock(target)
		}
	}
	// Otherwise, the membership is unknown. Reject.
	return c.deny(rMemberUnknown, "unknown membership "+m.membership)
}

func (c *checker) checkJoin(m *memberInfo, target string) error {
	ev := c.ev
	// 1. If the only previous event is an m.room.create and the state_key is
	// the creator, allow.
	if len(ev.PrevEvents) == 1 && ev.PrevEvents[0] == c.createEv.ID && target == c.creator() {
		return nil
	}
	// 2. If the sender does not match state_key, reject.
	if ev.Sender != target {
		return c.deny(rJoinSender, "sender does not match state_key")
	}
	current := c.membership(ev.Sender)
	// 3. If the sender is banned, reject.
	if current == mBan {
		return c.deny(rJoinBanned, "sender is banned")
	}
	jr := c.joinRule()
	// 4. If the join_rule is invite or knock then allow if membership state
	// is invite or join. (knock from v7)
	if jr == jrInvite || (c.ver.Knocking && jr == jrKnock) {
		if current == mInvite || current == mJoin {
			return nil
		}
		return c.deny(rJoinInvite, "join rule is "+jr+" and the sender is not invited")
	}
	// 5. If the join_rule is restricted or knock_restricted: (v8, v10)
	if c.ver.RestrictedJoins && (jr == jrRestricted || (c.ver.KnockRestricted && jr == jrKnockRestricted)) {
		// 1. If membership state is join or invite, allow.
		if current == mJoin || current == mInvite {
			return nil
		}
		// 2. If the join_authorised_via_users_server key in content is not a
		// user with sufficient permission to invite other users or is not a
		// joined member of the room, reject.
		if !m.hasJAUS || m.jaus == "" {
			return c.deny(rJoinRestrictedAuthoriser, "restricted join without join_authorised_via_users_server")
		}
		if c.membership(m.jaus) != mJoin {
			return c.deny(rJoinRestrictedAuthoriser, "join_authorised_via_users_server is not joined")
		}
		if c.userLevel(m.jaus) < c.powerLevels().fieldLevel(fInvite) {
			return c.deny(rJoinRestrictedAuthoriser, "join_authorised_via_users_server may not invite")
		}
		// 3. Otherwise, allow.
		return nil
	}
	// 6. If the join_rule is public, allow.
	if jr == jrPublic {
		return nil
	}
	// 7. Otherwise, reject.
	return c.deny(rJoinOtherwise, "join rule "+jr+" does not admit the sender")
}

func (c *checker) checkInvite(m *memberInfo, target string) error {
	ev := c.ev
	// 1. If content has a third_party_invite property:
	if m.hasTPI {
		// 1. If target user is banned, reject.
		if c.membership(target) == mBan {
			return c.deny(rTPIBanned, "target is banned")
		}
		// 2. If content.third_party_invite does not have a signed property,
		// reject.
		if m.tpiSigned == nil {
			return c.deny(rTPINoSigned, "third_party_invite has no signed object")
		}
		// 3. If signed does not have mxid and token properties, reject.
		if !m.hasMxid || !m.hasToken {
			return c.deny(rTPINoMxidToken, "signed has no mxid or token")
		}
		// 4. If mxid does not match state_key, reject.
		if m.mxid != target {
			return c.deny(rTPIMxid, "mxid does not match state_key")
		}
		// 5. If there is no m.room.third_party_invite event in the current
		// room state with state_key matching token, reject.
		var tpiEv *dag.Event
		if m.tokenIsValid {
			tpiEv = c.auth.Get(dag.StateKeyTuple{Type: typeThirdPartyInvite, StateKey: m.token})
		}
		if tpiEv == nil || tpiEv.Type != typeThirdPartyInvite {
			return c.deny(rTPINoEvent, "no m.room.third_party_invite for the token")
		}
		// 6. If sender does not match sender of the
		// m.room.third_party_invite, reject.
		if tpiEv.Sender != ev.Sender {
			return c.deny(rTPISender, "sender did not send the m.room.third_party_invite")
		}
		// 7. If any signature in signed matches any public key in the
		// m.room.third_party_invite event, allow.
		if verifySigned(m.tpiSigned, parsed(tpiEv).tpi.keys) {
			return nil
		}
		// 8. Otherwise, reject.
		return c.deny(rTPIOtherwise, "no signature in signed matches the invite's public keys")
	}
	// 2. If the sender's current membership state is not join, reject.
	if c.membership(ev.Sender) != mJoin {
		return c.deny(rInviteSenderJoined, "sender is not joined")
	}
	// 3. If target user's current membership state is join or ban, reject.
	if t := c.membership(target); t == mJoin || t == mBan {
		return c.deny(rInviteTarget, "target is "+t)
	}
	// 4. If the sender's power level is greater than or equal to the invite
	// level, allow.
	if c.userLevel(ev.Sender) >= c.powerLevels().fieldLevel(fInvite) {
		return nil
	}
	// 5. Otherwise, reject.
	return c.deny(rInviteOtherwise, "sender's level is below the invite level")
}

func (c *checker) checkLeave(target string) error {
	ev := c.ev
	// 1. If the sender matches state_key, allow if and only if that user's
	// current membership state is invite, join, or knock. (knock from v7)
	if ev.Sender == target {
		t := c.membership(target)
		if t == mInvite || t == mJoin || (c.ver.Knocking && t == mKnock) {
			return nil
		}
		return c.deny(rLeaveSelf, "sender may not leave from membership "+quoteMembership(t))
	}
	// 2. If the sender's current membership state is not join, reject.
	if c.membership(ev.Sender) != mJoin {
		return c.deny(rLeaveSenderJoined, "sender is not joined")
	}
	senderLevel := c.userLevel(ev.Sender)
	pl := c.powerLevels()
	// 3. If the target user's current membership state is ban, and the
	// sender's power level is less than the ban level, reject.
	if c.membership(target) == mBan && senderLevel < pl.fieldLevel(fBan) {
		return c.deny(rLeaveUnban, "sender's level is below the ban level")
	}
	// 4. If the sender's power level is greater than or equal to the kick
	// level, and the target user's power level is less than the sender's
	// power level, allow.
	if senderLevel >= pl.fieldLevel(fKick) && c.userLevel(target) < senderLevel {
		return nil
	}
	// 5. Otherwise, reject.
	return c.deny(rLeaveOtherwise, "sender may not kick the target")
}

func (c *checker) checkBan(target string) error {
	ev := c.ev
	// 1. If the sender's current membership state is not join, reject.
	if c.membership(ev.Sender) != mJoin {
		return c.deny(rBanSenderJoined, "sender is not joined")
	}
	// 2. If the sender's power level is greater than or equal to the ban
	// level, and the target user's power level is less than the sender's
	// power level, allow.
	senderLevel := c.userLevel(ev.Sender)
	if senderLevel >= c.powerLevels().fieldLevel(fBan) && c.userLevel(target) < senderLevel {
		return nil
	}
	// 3. Otherwise, reject.
	return c.deny(rBanOtherwise, "sender may not ban the target")
}

func (c *checker) checkKnock(target string) error {
	ev := c.ev
	// 1. If the join_rule is anything other than knock (or knock_restricted
	// from v10), reject.
	jr := c.joinRule()
	if jr != jrKnock && !(c.ver.KnockRestricted && jr == jrKnockRestricted) {
		return c.deny(rKnockJoinRule, "join rule "+jr+" does not allow knocking")
	}
	// 2. If sender does not match state_key, reject.
	if ev.Sender != target {
		return c.deny(rKnockSender, "sender does not match state_key")
	}
	// 3. If the sender's current membership is not ban, invite, or join,
	// allow.
	switch t := c.membership(ev.Sender); t {
	case mBan, mInvite, mJoin:
		// 4. Otherwise, reject.
		return c.deny(rKnockOtherwise, "sender's membership is "+t)
	}
	return nil
}

func quoteMembership(m string) string {
	if m == "" {
		return "none"
	}
	return m
}

// checkPowerLevels applies the rules under "If type is m.room.power_levels".
func (c *checker) checkPowerLevels(senderLevel int64) error {
	ev := c.ev
	nw := parsed(ev).pl
	if err := validatePowerLevels(c, nw); err != nil {
		return err
	}
	if c.ver.RoomIDFromCreate {
		// 4. If the users property in content contains the sender of the
		// m.room.create event or any of the additional_creators array (if
		// present) from the content of the m.room.create event, reject.
		for _, e := range nw.users.entries {
			if isCreator(c.createEv, c.create, e.key) {
				return c.deny(rPLCreators, "users names room creator "+e.key)
			}
		}
	}
	// If there is no previous m.room.power_levels event in the room, allow.
	old := c.powerLevels()
	if old == nil {
		return nil
	}

	// For the properties users_default, events_default, state_default, ban,
	// redact, kick, invite check if they were added, changed or removed. For
	// each found alteration: If the current value is greater than the
	// sender's current power level, reject. If the new value is greater than
	// the sender's current power level, reject.
	for i := 0; i < numFields; i++ {
		o, n := old.fields[i], nw.fields[i]
		if !o.present() && !n.present() {
			continue
		}
		if (o.present() && !o.usable()) || (n.present() && !n.usable()) {
			// Not in the spec text: a level that is not a number cannot be
			// compared, and every implementation refuses the event.
			return c.deny(rPLFields, fieldNames[i]+" is not a number")
		}
		if o.present() && n.present() && o.v == n.v {
			continue
		}
		if o.present() && o.v > senderLevel {
			return c.deny(rPLFields, "current "+fieldNames[i]+" is above the sender's level")
		}
		if n.present() && n.v > senderLevel {
			return c.deny(rPLFields, "new "+fieldNames[i]+" is above the sender's level")
		}
	}

	maps := []*levelMap{&old.events, &nw.events}
	if c.ver.NotificationsPowerLevel {
		maps = append(maps, &old.notifications, &nw.notifications)
	}
	// For each entry being changed in, or removed from, the events or
	// notifications properties: If the current value is greater than the
	// sender's current power level, reject.
	for i := 0; i < len(maps); i += 2 {
		if err := diffLevels(maps[i], maps[i+1], func(key string, o, n level) error {
			if !o.present() {
				return nil
			}
			if !o.usable() || (n.present() && !n.usable()) {
				return c.deny(rPLMapsRemoved, "level for "+key+" is not a number")
			}
			if o.v > senderLevel {
				return c.deny(rPLMapsRemoved, "current level for "+key+" is above the sender's level")
			}
			return nil
		}); err != nil {
			return err
		}
	}
	// For each entry being added to, or changed in, the events or
	// notifications properties: If the new value is greater than the
	// sender's current power level, reject.
	for i := 0; i < len(maps); i += 2 {
		if err := diffLevels(maps[i], maps[i+1], func(key string, o, n level) error {
			if !n.present() {
				return nil
			}
			if !n.usable() {
				return c.deny(rPLMapsAdded, "level for "+key+" is not a number")
			}
			if n.v > senderLevel {
				return c.deny(rPLMapsAdded, "new level for "+key+" is above the sender's level")
			}
			return nil
		}); err != nil {
			return err
		}
	}
	// For each entry being changed in, or removed from, the users property,
	// other than the sender's own entry: If the current value is greater
	// than or equal to the sender's current power level, reject.
	if err := diffLevels(&old.users, &nw.users, func(key string, o, n level) error {
		if !o.present() || key == ev.Sender {
			return nil
		}
		if !o.usable() {
			return c.deny(rPLUsersRemoved, "level of "+key+" is not a number")
		}
		if o.v >= senderLevel {
			return c.deny(rPLUsersRemoved, "current level of "+key+" is not below the sender's level")
		}
		return nil
	}); err != nil {
		return err
	}
	// For each entry being added to, or changed in, the users property: If
	// the new value is greater than the sender's current power level,
	// reject.
	return diffLevels(&old.users, &nw.users, func(key string, o, n level) error {
		if !n.present() {
			return nil
		}
		if n.v > senderLevel {
			return c.deny(rPLUsersAdded, "new level of "+key+" is above the sender's level")
		}
		return nil
	})
}

// diffLevels calls f, in key order, for every key whose entry was added,
// removed or changed between old and nw (absent entries are level{}).
func diffLevels(old, nw *levelMap, f func(key string, o, n level) error) error {
	a, b := old.entries, nw.entries
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		var key string
		var o, n level
		c := -1
		switch {
		case i >= len(a):
			c = 1
		case j < len(b):
			c = strings.Compare(a[i].key, b[j].key)
		}
		switch {
		case c < 0:
			key, o = a[i].key, a[i].level
			i++
		case c > 0:
			key, n = b[j].key, b[j].level
			j++
		default:
			key, o, n = a[i].key, a[i].level, b[j].level
			i++
			j++
			if o.usable() && n.usable() && o.v == n.v {
				continue
			}
		}
		if err := f(key, o, n); err != nil {
			return err
		}
	}
	return nil
}
