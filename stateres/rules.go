package stateres

import (
	"strconv"

	"engram/dag"
)

// rule names one clause of the authorisation rules independently of room
// version. ruleNumber turns it into the number that clause has in a given
// version's list, so a denial cites the text the reader will find in
// rooms/v<N>.md.
type rule uint8

const (
	rFormat rule = iota // not a rule: the event is malformed before the rules apply

	// 1. If type is m.room.create
	rCreatePrev       // 1.1 it has any prev_events
	rCreateRoomID     // 1.2 room_id domain != sender domain (v1-v11); has a room_id (v12)
	rCreateVersion    // 1.3 content.room_version not recognised
	rCreateCreator    // 1.4 content has no creator (v1-v10)
	rCreateAdditional // 1.4 additional_creators malformed (v12)

	rRoomIDCreate // v12: 2. room_id is not the ID of an accepted create event

	// 2. (3. in v12) Considering the event's auth_events
	rAuthDup        // .1 duplicate (type, state_key)
	rAuthUnexpected // .2 entry not chosen by auth events selection
	rAuthRejected   // .3 entry was rejected
	rAuthNoCreate   // .4 no m.room.create among them (v1-v11)
	rAuthRoom       // .5 (.4 in v12) entry in another room

	rFederate // 3. (4. in v12) m.federate is false and the sender is foreign

	// 4. If type is m.room.aliases (v1-v5)
	rAliasNoStateKey
	rAliasDomain
	rAliasAllow

	// If type is m.room.member
	rMemberMissing // .1 no state_key or no membership
	rMemberJAUS    // .2 join_authorised_via_users_server not validly signed (v8+)
	// membership is join
	rJoinCreator
	rJoinSender
	rJoinBanned
	rJoinInvite
	rJoinRestrictedMember     // restricted .1
	rJoinRestrictedAuthoriser // restricted .2
	rJoinRestrictedAllow      // restricted .3
	rJoinPublic
	rJoinOtherwise
	// membership is invite with third_party_invite
	rTPIBanned
	rTPINoSigned
	rTPINoMxidToken
	rTPIMxid
	rTPINoEvent
	rTPISender
	rTPISignature
	rTPIOtherwise
	// membership is invite
	rInviteSenderJoined
	rInviteTarget
	rInviteLevel
	rInviteOtherwise
	// membership is leave
	rLeaveSelf
	rLeaveSenderJoined
	rLeaveUnban
	rLeaveKick
	rLeaveOtherwise
	// membership is ban
	rBanSenderJoined
	rBanLevel
	rBanOtherwise
	// membership is knock (v7+)
	rKnockJoinRule
	rKnockSender
	rKnockMembership
	rKnockOtherwise
	rMemberUnknown

	rSenderJoined     // If the sender's current membership state is not join, reject.
	rThirdPartyInvite // If type is m.room.third_party_invite: allow iff invite level
	rRequiredLevel    // required power level > sender's
	rStateKeyUser     // state_key starts with @ and is not the sender

	// If type is m.room.power_levels
	rPLFieldsInt    // (v10+) top-level levels not integers
	rPLMapsInt      // (v10+) events/notifications not objects of integers
	rPLUsers        // users not an object of user IDs to integers
	rPLCreators     // (v12) users names a creator
	rPLNoPrevious   // no previous power levels: allow
	rPLFields       // a top-level level altered beyond the sender's level
	rPLMapsRemoved  // events/notifications entry changed or removed
	rPLMapsAdded    // events/notifications entry added or changed
	rPLUsersRemoved // users entry (not the sender's own) changed or removed
	rPLUsersAdded   // users entry added or changed
	rPLAllow

	// If type is m.room.redaction (v1, v2)
	rRedactLevel
	rRedactDomain
	rRedactOtherwise

	rOtherwise // final "Otherwise, allow."
)

// ruleNumber is the number of r in ver's rendered list of authorisation
// rules. The spec's markdown lists are numbered sequentially when rendered,
// which is the numbering used here (v12's "3., 5." under auth_events renders
// as 3.3, 3.4).
func ruleNumber(ver *dag.RoomVersion, r rule) string {
	if r == rFormat {
		return "format"
	}
	v12 := ver.RoomIDFromCreate
	aliases := ver.SpecialCaseAliases
	redaction := ver.EventIDFormat == 1 // v1, v2: rule 11 on m.room.redaction
	early := 0                          // rules 2, 3 move down one in v12
	if v12 {
		early = 1
	}
	late := 0 // rules from m.room.member on move down one in v1-v5 and v12
	if aliases || v12 {
		late = 1
	}
	jaus := 0 // v8+ insert 4.2 join_authorised_via_users_server
	if ver.RestrictedJoins {
		jaus = 1
	}
	knock := 0
	if ver.Knocking {
		knock = 1
	}
	member := 4 + late
	pl := 9 + late

	n := func(parts ...int) string {
		b := make([]byte, 0, 12)
		for i, p := range parts {
			if i > 0 {
				b = append(b, '.')
			}
			b = strconv.AppendInt(b, int64(p), 10)
		}
		return string(b)
	}
	join := func(sub ...int) string { return n(append([]int{member, 2 + jaus}, sub...)...) }
	invite := func(sub ...int) string { return n(append([]int{member, 3 + jaus}, sub...)...) }
	plSub := func(i int) string {
		if !ver.IntegerPowerLevels {
			return n(pl, i)
		}
		// v10+: three validation rules come first, v12 adds a fourth.
		if i >= 2 && v12 {
			i++
		}
		return n(pl, i+2)
	}

	switch r {
	case rCreatePrev:
		return "1.1"
	case rCreateRoomID:
		return "1.2"
	case rCreateVersion:
		return "1.3"
	case rCreateCreator, rCreateAdditional:
		return "1.4"
	case rRoomIDCreate:
		return "2"
	case rAuthDup:
		return n(2+early, 1)
	case rAuthUnexpected:
		return n(2+early, 2)
	case rAuthRejected:
		return n(2+early, 3)
	case rAuthNoCreate:
		return n(2+early, 4)
	case rAuthRoom:
		return n(2+early, 5-early)
	case rFederate:
		return n(3 + early)
	case rAliasNoStateKey:
		return "4.1"
	case rAliasDomain:
		return "4.2"
	case rAliasAllow:
		return "4.3"
	case rMemberMissing:
		return n(member, 1)
	case rMemberJAUS:
		return n(member, 2, 1)
	case rJoinCreator:
		return join(1)
	case rJoinSender:
		return join(2)
	case rJoinBanned:
		return join(3)
	case rJoinInvite:
		return join(4)
	case rJoinRestrictedMember:
		return join(5, 1)
	case rJoinRestrictedAuthoriser:
		return join(5, 2)
	case rJoinRestrictedAllow:
		return join(5, 3)
	case rJoinPublic:
		return join(5 + jaus)
	case rJoinOtherwise:
		return join(6 + jaus)
	case rTPIBanned:
		return invite(1, 1)
	case rTPINoSigned:
		return invite(1, 2)
	case rTPINoMxidToken:
		return invite(1, 3)
	case rTPIMxid:
		return invite(1, 4)
	case rTPINoEvent:
		return invite(1, 5)
	case rTPISender:
		return invite(1, 6)
	case rTPISignature:
		return invite(1, 7)
	case rTPIOtherwise:
		return invite(1, 8)
	case rInviteSenderJoined:
		return invite(2)
	case rInviteTarget:
		return invite(3)
	case rInviteLevel:
		return invite(4)
	case rInviteOtherwise:
		return invite(5)
	case rLeaveSelf:
		return n(member, 4+jaus, 1)
	case rLeaveSenderJoined:
		return n(member, 4+jaus, 2)
	case rLeaveUnban:
		return n(member, 4+jaus, 3)
	case rLeaveKick:
		return n(member, 4+jaus, 4)
	case rLeaveOtherwise:
		return n(member, 4+jaus, 5)
	case rBanSenderJoined:
		return n(member, 5+jaus, 1)
	case rBanLevel:
		return n(member, 5+jaus, 2)
	case rBanOtherwise:
		return n(member, 5+jaus, 3)
	case rKnockJoinRule:
		return n(member, 6+jaus, 1)
	case rKnockSender:
		return n(member, 6+jaus, 2)
	case rKnockMembership:
		return n(member, 6+jaus, 3)
	case rKnockOtherwise:
		return n(member, 6+jaus, 4)
	case rMemberUnknown:
		return n(member, 6+jaus+knock)
	case rSenderJoined:
		return n(5 + late)
	case rThirdPartyInvite:
		return n(6+late, 1)
	case rRequiredLevel:
		return n(7 + late)
	case rStateKeyUser:
		return n(8 + late)
	case rPLFieldsInt:
		return n(pl, 1)
	case rPLMapsInt:
		return n(pl, 2)
	case rPLUsers:
		if ver.IntegerPowerLevels {
			return n(pl, 3)
		}
		return n(pl, 1)
	case rPLCreators:
		return n(pl, 4)
	case rPLNoPrevious:
		return plSub(2)
	case rPLFields:
		return plSub(3)
	case rPLMapsRemoved:
		return plSub(4)
	case rPLMapsAdded:
		return plSub(5)
	case rPLUsersRemoved:
		return plSub(6)
	case rPLUsersAdded:
		return plSub(7)
	case rPLAllow:
		return plSub(8)
	case rRedactLevel:
		return "11.1"
	case rRedactDomain:
		return "11.2"
	case rRedactOtherwise:
		return "11.3"
	case rOtherwise:
		o := 10 + late
		if redaction {
			o++
		}
		return n(o)
	}
	return "?"
}
