package stateres

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"engram/dag"
)

// AuthEventsNeeded is the auth events selection (server-server-api, "Auth
// events selection"): the state keys whose current events a new event must
// list in auth_events.
//
//   - Depending on the room version, the m.room.create event (v1-v11; v12
//     "MUST NOT" select it, the room ID names it instead).
//   - The current m.room.power_levels event, if any.
//   - The sender's current m.room.member event, if any.
//   - If type is m.room.member: the target's current m.room.member event; if
//     membership is join, invite or knock, the current m.room.join_rules
//     event; if membership is invite and content contains a
//     third_party_invite property, the m.room.third_party_invite event with
//     state_key matching content.third_party_invite.signed.token; if
//     membership is join, content.join_authorised_via_users_server is present
//     and the room version supports restricted rooms, that user's
//     m.room.member event.
//
// "The auth_events for the m.room.create event in a room is empty", so for
// m.room.create it returns nil. The list has no duplicates and a fixed order.
func AuthEventsNeeded(ver *dag.RoomVersion, evType string, stateKey *string, sender string, content json.RawMessage) []dag.StateKeyTuple {
	if ver == nil || evType == typeCreate {
		return nil
	}
	var m *memberInfo
	if evType == typeMember {
		mi := parseMember(content)
		m = &mi
	}
	return neededKeys(ver, evType, stateKey, sender, m, make([]dag.StateKeyTuple, 0, 7))
}

// neededKeys appends the selection to dst; m is the parsed member content
// for m.room.member events.
func neededKeys(ver *dag.RoomVersion, evType string, stateKey *string, sender string, m *memberInfo, dst []dag.StateKeyTuple) []dag.StateKeyTuple {
	if evType == typeCreate {
		return dst
	}
	add := func(k dag.StateKeyTuple) {
		for _, e := range dst {
			if e == k {
				return
			}
		}
		dst = append(dst, k)
	}
	if !ver.RoomIDFromCreate {
		add(createKey)
	}
	add(plKey)
	add(dag.StateKeyTuple{Type: typeMember, StateKey: sender})
	if evType == typeMember && m != nil {
		if stateKey != nil {
			add(dag.StateKeyTuple{Type: typeMember, StateKey: *stateKey})
		}
		switch m.membership {
		case mJoin, mInvite, mKnock:
			add(jrKey)
		}
		if m.membership == mInvite && m.hasTPI && m.tokenIsValid {
			add(dag.StateKeyTuple{Type: typeThirdPartyInvite, StateKey: m.token})
		}
		if m.membership == mJoin && ver.RestrictedJoins && m.hasJAUS && m.jaus != "" {
			add(dag.StateKeyTuple{Type: typeMember, StateKey: m.jaus})
		}
	}
	return dst
}

// eventNeededKeys is neededKeys for an event, using the parse cache.
func eventNeededKeys(ver *dag.RoomVersion, ev *dag.Event, dst []dag.StateKeyTuple) []dag.StateKeyTuple {
	var m *memberInfo
	if ev.Type == typeMember {
		m = &parsed(ev).member
	}
	return neededKeys(ver, ev.Type, ev.StateKey, ev.Sender, m, dst)
}

// SelectAuthEvents picks the auth_events for a new event from the current
// state, in the order of AuthEventsNeeded.
func SelectAuthEvents(ver *dag.RoomVersion, evType string, stateKey *string, sender string, content json.RawMessage, current AuthState) []string {
	keys := AuthEventsNeeded(ver, evType, stateKey, sender, content)
	ids := make([]string, 0, len(keys))
	for _, k := range keys {
		if ev := current.Get(k); ev != nil {
			ids = append(ids, ev.ID)
		}
	}
	return ids
}

// CheckAuthEvents applies the rules on the event's auth_events list and
// returns the state they describe, which Allowed then checks the event
// against (receipt check 4, "Passes authorisation rules based on the
// event's auth events").
//
// In v1-v11 this is rule 2, in v12 rules 2 and 3:
//
//	(v12) 2. If the event's room_id is not an event ID for an accepted (not
//	   rejected) m.room.create event, with the sigil ! instead of $, reject.
//	Considering the event's auth_events:
//	1. If there are duplicate entries for a given type and state_key pair, reject.
//	2. If there are entries whose type and state_key don't match those
//	   specified by the auth events selection algorithm [...], reject.
//	3. If there are entries which were themselves rejected under the checks
//	   performed on receipt of a PDU, reject.
//	4. (v1-v11) If there is no m.room.create event among the entries, reject.
//	5. If any event in auth_events has a room_id which does not match that of
//	   the event being authorised, reject.
//
// fetch returns events by ID (ErrNotFound if it has none); rejected, if not
// nil, reports events that were rejected. For v12 the returned state also
// holds the create event the room ID names. An m.room.create event needs no
// auth events (rule 1 decides it) and gets an empty state.
//
// Errors: a *DeniedError is the verdict; a *MissingEventsError (errors.Is
// ErrNotFound) lists auth events to fetch before trying again; anything
// else is a fetch failure.
func CheckAuthEvents(ev *dag.Event, fetch func(eventID string) (*dag.Event, error), rejected func(eventID string) bool) (StateEvents, error) {
	if ev == nil {
		return nil, errors.New("stateres: nil event")
	}
	ver := ev.Version
	if ver == nil {
		return nil, ErrNoVersion
	}
	if fetch == nil {
		return nil, errors.New("stateres: nil fetcher")
	}
	if rejected == nil {
		rejected = func(string) bool { return false }
	}
	c := checker{ver: ver, ev: ev}
	state := StateEvents{}
	if ev.Type == typeCreate {
		return state, nil
	}
	if !looseUserID(ev.Sender) {
		return nil, c.deny(rFormat, "sender is not a user ID")
	}

	var missing []string
	get := func(id string) (*dag.Event, error) {
		e, err := fetch(id)
		if err != nil {
			if errors.Is(err, ErrNotFound) {
				missing = append(missing, id)
				return nil, nil
			}
			return nil, fmt.Errorf("stateres: fetch %s: %w", id, err)
		}
		if e == nil {
			missing = append(missing, id)
		}
		return e, nil
	}

	var create *dag.Event
	if ver.RoomIDFromCreate {
		id := createIDOfRoom(ev.RoomID)
		if id == "" {
			return nil, c.deny(rRoomIDCreate, "room_id is not a create event hash")
		}
		var err error
		if create, err = get(id); err != nil {
			return nil, err
		}
	}
	authEvs := make([]*dag.Event, len(ev.AuthEvents))
	for i, id := range ev.AuthEvents {
		e, err := get(id)
		if err != nil {
			return nil, err
		}
		authEvs[i] = e
	}
	if len(missing) > 0 {
		return nil, newMissing(missing)
	}

	if ver.RoomIDFromCreate {
		if create.Type != typeCreate || create.StateKey == nil || *create.StateKey != "" || rejected(create.ID) {
			return nil, c.deny(rRoomIDCreate, "room_id does not name an accepted m.room.create event")
		}
		state[createKey] = create
	}

	// 1. duplicates
	seen := make(map[dag.StateKeyTuple]bool, len(authEvs))
	for _, a := range authEvs {
		if a.StateKey == nil {
			continue // not state at all: rule 2 below rejects it
		}
		k := a.Key()
		if seen[k] {
			return nil, c.deny(rAuthDup, fmt.Sprintf("auth_events has two entries for (%s, %s)", k.Type, k.StateKey))
		}
		seen[k] = true
	}
	// 2. entries the selection would not pick
	needed := eventNeededKeys(ver, ev, make([]dag.StateKeyTuple, 0, 7))
	for _, a := range authEvs {
		ok := false
		if a.StateKey != nil {
			k := a.Key()
			for _, n := range needed {
				if n == k {
					ok = true
					break
				}
			}
		}
		if !ok {
			sk := "<none>"
			if a.StateKey != nil {
				sk = *a.StateKey
			}
			return nil, c.deny(rAuthUnexpected, fmt.Sprintf("auth event %s (%s, %s) is not one the selection picks", a.ID, a.Type, sk))
		}
	}
	// 3. rejected entries
	for _, a := range authEvs {
		if rejected(a.ID) {
			return nil, c.deny(rAuthRejected, "auth event "+a.ID+" was rejected")
		}
	}
	// 4. no create (v1-v11)
	if !ver.RoomIDFromCreate && !seen[createKey] {
		return nil, c.deny(rAuthNoCreate, "auth_events has no m.room.create event")
	}
	// 5. room mismatch
	for _, a := range authEvs {
		if a.RoomID != ev.RoomID {
			return nil, c.deny(rAuthRoom, "auth event "+a.ID+" is in another room")
		}
	}
	for _, a := range authEvs {
		state[a.Key()] = a
	}
	return state, nil
}

func newMissing(ids []string) *MissingEventsError {
	s := append([]string(nil), ids...)
	sort.Strings(s)
	out := s[:0]
	for i, id := range s {
		if i == 0 || id != s[i-1] {
			out = append(out, id)
		}
	}
	return &MissingEventsError{IDs: out}
}
