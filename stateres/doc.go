// Package stateres decides what a room's state is: the authorisation rules
// of room versions 1 to 12 and the state resolution algorithms (v1 for room
// version 1, v2 for versions 2 to 11, v2.1 for version 12), as specified in
// rooms/v1.md to rooms/v12.md and server-server-api.md ("Checks performed on
// receipt of a PDU", "Auth events selection", "Rejection", "Soft failure").
//
// # Contract
//
// Every function is pure: it reads the events and state it is given and the
// events its fetcher returns, and nothing else. No I/O, no clock, no
// randomness. Results never depend on Go map iteration order or on the order
// of input state sets; every ordering the algorithms need breaks its ties on
// event IDs, as the spec says. Nothing panics on any input; malformed events
// and state are handled by the rules (usually: rejected with a reason). All
// functions are safe for concurrent use.
//
// Fetchers have the form func(eventID string) (*dag.Event, error) and return
// ErrNotFound, or an error wrapping it, for events they do not have.
//
// # Verdicts and failures
//
// A rejection is a value: *DeniedError, naming the rule by its number in the
// room version's own list (rule numbers differ between versions), e.g. rule
// "4.3.2" of room version 10, "If the sender does not match state_key,
// reject." Every other error means the question could not be answered and
// must not be recorded as a rejection: a *MissingEventsError (errors.Is
// ErrNotFound) lists events to fetch first; anything else is a fetch failure
// or a programming error (nil event, no room version).
//
// # What is where
//
//   - Allowed applies the authorisation rules to an event against a given
//     state (AuthState): its auth events, the state before it, or the
//     current state.
//   - AuthEventsNeeded and SelectAuthEvents are the auth events selection
//     for building events; CheckAuthEvents applies the rules on an event's
//     own auth_events list (rule 2, rules 2 and 3 in v12) and returns the
//     state they describe.
//   - CheckReceipt runs receipt checks 4 to 6 for the sequencer and returns
//     Accepted, Rejected or SoftFailed.
//   - Resolve and ResolveWith compute the resolution of a set of states.
//
// # What the caller does
//
// Signatures and hashes (receipt checks 1 to 3) are the caller's: stateres
// holds no keys. In particular "If the event is not validly signed by the
// homeserver of the user ID denoted by the key [join_authorised_via_users_server],
// reject" (v8+) must be enforced by the signature check, which has to
// require that server's signature on such joins; Allowed only rejects a key
// that names no valid server. The caller also says which events were
// rejected (for CheckAuthEvents and Options.Rejected).
//
// # Room version 12
//
// The create event is not listed in auth_events: "The room_id (being the
// m.room.create event's ID) implies this instead." CheckAuthEvents fetches
// it by room ID and checks it was accepted (v12 rule 2); Resolve treats it
// as an auth event of every other event, so auth chains, sender power
// levels and the iterative auth checks see it. Room creators (the create
// sender and content.additional_creators) have infinite power level.
//
// # Where the spec is silent
//
// Where the spec leaves a case open, stateres does what the major
// implementations (Synapse, ruma, gomatrixserverlib) agree on, so that it
// reaches the same state as the rest of the federation:
//
//   - With no m.room.join_rules event the join rule is taken to be invite.
//   - In state resolution v2, each state's "full auth chain" includes the
//     state's own events; m.room.create counts as a power event; the auth
//     chain of a power event is followed through full-conflicted-set events
//     only when building the set to sort; events on an auth_events cycle
//     (only possible with the sender-chosen event IDs of v1 and v2) are left
//     out of the power ordering.
//   - Events reported rejected (Options.Rejected) never enter the resolved
//     state and are never used as auth events.
//   - In v1 to v9, a power_levels change that involves a level which is not
//     a number (nor a numeric string) cannot be compared and is rejected;
//     unreadable levels in the current power levels count as unset.
//   - State resolution v1 follows Synapse: keys some states lack are not
//     conflicts; if no event of an ordinary conflict passes, the last in
//     order is kept.
//
// By default Resolve fails with a *MissingEventsError when an event it
// needs is missing, rather than skipping it as Synapse does, because servers
// with different holes in their DAG would otherwise reach different states;
// Options.AllowMissing restores the lenient behaviour.
//
// # Performance
//
// Event content is parsed once per event ID (power levels, memberships,
// join rules, create and third-party-invite content) into a bounded,
// process-wide cache; a cache hit is only used if the event's type and
// content bytes are those that were parsed, so events sharing an ID never
// see each other's content. Resolution interns event IDs to integers and
// walks the common part of the states' auth chains once.
package stateres
