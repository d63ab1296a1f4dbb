package projections

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/cockroachdb/pebble"
	"github.com/vmihailenco/msgpack/v5"

	"engram/dag"
)

// PushRulesRecord is the body of KindPushRules, version 1: a user's whole
// stored push rules state (UserPushRules as JSON) after a change. Whole
// states, not edits, so the fold needs no read and a record is readable
// on its own.
type PushRulesRecord struct {
	UserID string `msgpack:"u"`
	Rules  []byte `msgpack:"j"`
}

// Push evaluates push rules on every accepted room event for the room's
// local members and keeps what that produces: one notification entry per
// event, and the read positions that clear them. It folds in the append
// batch like every view ("The updated notification count from a new event
// MUST appear in the same /sync response as the event itself" holds by
// construction), deterministically, and evaluation sees the room as it was
// when the event was appended (member count, power levels, display names),
// not as it is when someone syncs.
//
// An entry is per event, not per member: it holds the outcome of the
// server-default rules for a member who is not mentioned (the same for all
// such members: the default rules depend on the user only through
// "@USER@", which matches a state_key or an m.mentions user ID), and the
// members whose outcome differs (mentioned, invited, or with rules of
// their own). A message in a room of 200 local members is one row, not
// 600; unread counts are folded from the entries at read time
// (push_reads.go), from the user's read positions onwards.
//
// A projection reads only its own rows, so this one keeps its own copy of
// what evaluation needs:
//
//	'a' ‖ userID                      -> ∅   a local account
//	'p' ‖ userID                      -> UserPushRules JSON (absent: server defaults only)
//	'i' ‖ roomID                      -> msgpack(pushRoomInfo): member counts, power levels, creators
//	'm' ‖ str(roomID) ‖ userID        -> membership code u8 (every member)
//	'l' ‖ str(roomID) ‖ userID        -> join position u64 ‖ display name (local joined members)
//	'T' ‖ eventID                     -> thread root (events in a thread)
//	'E' ‖ str(roomID) ‖ seq u64       -> notification entry (entryCodec)
//	'R' ‖ str(userID) ‖ str(roomID) ‖ thread -> read position u64
//
// thread is "main" for the main timeline or the root's event ID; 'R' also
// has thread "" for the unthreaded receipt, which covers every thread. An
// entry notifies a member at its position if the member is listed in it,
// or else if they joined before it and did not send it.
//
// Read positions: "When the user updates their read receipt (either by
// using the API or by sending an event), notifications prior to and
// including that event MUST be marked as read." m.read and m.read.private
// both move the position (the one further ahead wins); a user's own event
// moves the position of its thread.
//
// Limits: a state change that resolution makes current without being the
// event of its record (StateEntry.EventID of another event) changes
// memberships and counts, but not display names or power levels, whose
// contents this fold cannot read. Notifications are listed for rooms the
// user is in (joined or invited), not for rooms they left.
type Push struct{ rules *ruleCache }

type ruleCache struct {
	sync.Mutex
	m map[string]cachedRules
}

type cachedRules struct {
	raw   []byte
	rules compiledRules
}

// defaultCompiled are the server defaults, with @USER@ left for evaluation.
var defaultCompiled = compileRuleset((*UserPushRules)(nil).Ruleset(""))

// PushID is the push projection's ID.
const PushID byte = 'y'

func (Push) ID() byte     { return PushID }
func (Push) Name() string { return "push" }

// unreadPrefix: the fold writes notification entries and never reads them
// (replay need not keep them where reads would look).
func (Push) unreadPrefix() byte { return 'E' }

// Version 1: one notification entry per event ('E'), join positions in
// 'l' (format 0 kept notifications and counters per member).
func (Push) Version() uint32 { return 1 }

// Notification is one event a user was notified about.
type Notification struct {
	RoomID    string `msgpack:"r"`
	EventID   string `msgpack:"e"`
	Thread    string `msgpack:"th,omitempty"`
	Highlight bool   `msgpack:"h,omitempty"`
	Actions   []byte `msgpack:"a"` // JSON array
	TS        int64  `msgpack:"ts"`
}

type userLevel struct {
	User  string `msgpack:"u"`
	Level int64  `msgpack:"l"`
}

// pushRoomInfo is the room state push evaluation needs. Slices, not maps,
// so its encoding is deterministic.
type pushRoomInfo struct {
	Joined           int64       `msgpack:"j"`
	Invited          int64       `msgpack:"i"`
	Creators         []string    `msgpack:"c,omitempty"`
	InfiniteCreators bool        `msgpack:"ic,omitempty"`
	HasPL            bool        `msgpack:"p,omitempty"`
	Users            []userLevel `msgpack:"u,omitempty"`
	UsersDefault     int64       `msgpack:"ud,omitempty"`
	Notifications    []userLevel `msgpack:"n,omitempty"` // notification kind -> level
}

func (ri *pushRoomInfo) power(user string) int64 {
	isCreator := false
	for _, c := range ri.Creators {
		if c == user {
			isCreator = true
		}
	}
	if isCreator && ri.InfiniteCreators {
		return infinitePower
	}
	if !ri.HasPL {
		// "If the room contains no m.room.power_levels event, the room's
		// creator has power level 100 and everyone else 0."
		if isCreator {
			return 100
		}
		return 0
	}
	i := sort.Search(len(ri.Users), func(i int) bool { return ri.Users[i].User >= user })
	if i < len(ri.Users) && ri.Users[i].User == user {
		return ri.Users[i].Level
	}
	return ri.UsersDefault
}

func (ri *pushRoomInfo) notifLevel(key string) int64 {
	for _, n := range ri.Notifications {
		if n.User == key {
			return n.Level
		}
	}
	return 50
}

func pushAccountKey(user string) []byte      { return append([]byte{'a'}, user...) }
func pushRulesKey(user string) []byte        { return append([]byte{'p'}, user...) }
func pushRoomKey(room string) []byte         { return append([]byte{'i'}, room...) }
func pushMemberKey(room, user string) []byte { return append(appendStr([]byte{'m'}, room), user...) }
func pushLocalPrefix(room string) []byte     { return appendStr([]byte{'l'}, room) }
func pushThreadKey(event string) []byte      { return append([]byte{'T'}, event...) }
func entryPrefix(room string) []byte         { return appendStr([]byte{'E'}, room) }
func entryKey(room string, seq uint64) []byte {
	return appendU64(appendStr(append(make([]byte, 0, 11+len(room)), 'E'), room), seq)
}
func readPosPrefix(user, room string) []byte {
	return appendStr(appendStr([]byte{'R'}, user), room)
}
func readPosKey(user, room, thread string) []byte {
	k := make([]byte, 0, 5+len(user)+len(room)+len(thread))
	return append(appendStr(appendStr(append(k, 'R'), user), room), thread...)
}

// NeedsRead: events and receipts read accounts, rules, room info, members
// and read positions.
func (Push) NeedsRead(v any) bool {
	switch r := v.(type) {
	case *EventRecord:
		return r.Status == Accepted
	case *ReceiptRecord:
		return true
	}
	return false
}

func (p Push) Apply(tx *Tx, seq uint64, v any) error {
	keepOf(tx).at(seq)
	switch r := v.(type) {
	case *AccountRecord:
		return tx.Set(pushAccountKey(r.UserID), nil)
	case *PushRulesRecord:
		// Member lists cached say who has rules of their own.
		b := batchOf(tx)
		clear(b.members)
		b.rulesChanged = true
		keepOf(tx).forget("")
		if len(r.Rules) == 0 {
			return tx.Delete(pushRulesKey(r.UserID))
		}
		return tx.Set(pushRulesKey(r.UserID), r.Rules)
	case *ReceiptRecord:
		o := newOverlay(tx)
		if r.Type != ReceiptRead && r.Type != ReceiptReadPrivate {
			return nil
		}
		if local, err := o.has(pushAccountKey(r.UserID)); err != nil || !local {
			return err
		}
		return advanceRead(o, r.UserID, r.RoomID, r.ThreadID, r.EventSeq)
	case *EventRecord:
		if r.Status != Accepted {
			return nil
		}
		return p.applyEvent(newOverlay(tx), seq, r)
	}
	return nil
}

func init() {
	registerKind(KindPushRules, func() any { return new(PushRulesRecord) })
	register(Push{rules: &ruleCache{m: map[string]cachedRules{}}})
	// The fold reads the content of these (codec.go): the default rules'
	// conditions, display names, power levels, creators. Rules of a user's
	// own on the content of other types see an event without content.
	for _, t := range []string{"m.room.message", "m.room.encrypted", "m.sticker", "m.call.invite",
		"m.room.member", "m.room.power_levels", "m.room.create"} {
		pduTypes[t] = true
	}
}

type localMember struct {
	user, displayName string
	join              uint64 // position of the join
	custom            bool   // has push rules of their own
	joined            bool   // false: an invitee, evaluated but not a member
}

func (p Push) applyEvent(o overlay, seq uint64, r *EventRecord) error {
	info, err := roomInfo(o, r.RoomID)
	if err != nil {
		return err
	}
	// The members evaluated are the room's local members but the sender
	// (all, read-only: it may be cached), and an invitee (extra).
	all, err := localMembers(o, r.RoomID)
	if err != nil {
		return err
	}
	senderLocal := false
	for i := range all {
		senderLocal = senderLocal || all[i].user == r.Sender
	}
	others := len(all)
	if senderLocal {
		others--
	}
	var extra []localMember
	// The invitee of a local invite is notified too (.m.rule.invite_for_me),
	// though not joined.
	if r.Type == "m.room.member" && r.Membership == "invite" && r.StateKey != nil && *r.StateKey != r.Sender {
		invitee := *r.StateKey
		local, err := o.has(pushAccountKey(invitee))
		if err != nil {
			return err
		}
		if local {
			found := false
			for i := range all {
				found = found || all[i].user == invitee
			}
			if !found {
				_, custom, err := o.get(pushRulesKey(invitee))
				if err != nil {
					return err
				}
				extra = append(extra, localMember{user: invitee, custom: custom})
				others++
			}
		}
	}
	changes := stateChanges(r)
	// The content is parsed only when someone is evaluated, a state change
	// needs it, or the sender's event may belong to a thread; and not even
	// then when only the default rules are evaluated and the PDU shows
	// none of what they (or threads) look for in content (plainPDU).
	needEvent := others > 0 || (senderLocal && bytes.Contains(r.PDU, []byte(`"m.relates_to"`)))
	needContent := false
	for _, c := range changes {
		if c.EventID == r.EventID && (c.Type == "m.room.power_levels" || c.Type == "m.room.create" || c.Type == "m.room.member") {
			needEvent, needContent = true, true
		}
	}
	needContent = needContent || len(extra) > 0
	for i := range all {
		needContent = needContent || (all[i].custom && all[i].user != r.Sender)
	}
	var ev map[string]any
	plain := false
	switch {
	case !needEvent:
	case !needContent && plainPDU(r.Type, r.PDU):
		plain = true // evaluated from the record: ev stays nil
	default:
		ev = eventView(r)
	}
	thread := ""
	if ev != nil {
		if thread, err = threadOf(o, ev); err != nil {
			return err
		}
		if thread != "" {
			if err := o.set(pushThreadKey(r.EventID), []byte(thread)); err != nil {
				return err
			}
		}
	}
	threadKey := thread
	if threadKey == "" {
		threadKey = "main"
	}

	if others > 0 {
		if err := p.evaluate(o, seq, r, ev, plain, info, all, extra, thread); err != nil {
			return err
		}
	}
	if senderLocal {
		// The event is newer than any position the sender had here.
		if err := o.set(readPosKey(r.Sender, r.RoomID, threadKey), appendU64(nil, seq)); err != nil {
			return err
		}
	}

	changed := false
	for _, c := range changes {
		ch, err := p.applyState(o, info, seq, r, ev, c)
		if err != nil {
			return err
		}
		changed = changed || ch
	}
	if changed {
		b, err := msgpack.Marshal(info)
		if err != nil {
			return err
		}
		return o.set(pushRoomKey(r.RoomID), b)
	}
	return nil
}

// evaluate runs push rules for the event's local members (all but the
// sender, and extra) and writes its entry: the default rules once, for a
// member they cannot single out, and every member they might (mentioned,
// invited) or whose own rules apply.
func (p Push) evaluate(o overlay, seq uint64, r *EventRecord, ev map[string]any, plain bool, info *pushRoomInfo, all, extra []localMember, thread string) error {
	pb := batchOf(o.tx)
	pe := &pb.pe
	*pe = pushEvent{ev: ev, rec: r, pdu: r.PDU, memberCount: info.Joined, senderPower: info.power(r.Sender), notifLevel: pb.notifLevel(info)}
	if plain {
		pe.pdu = nil
	}
	e := notifEntry{EventID: r.EventID, Sender: r.Sender, Thread: thread}
	if n, ok := ev["origin_server_ts"].(json.Number); ok {
		e.TS, _ = strconv.ParseInt(string(n), 10, 64)
	} else if raw, ok := jsonMember(r.PDU, "origin_server_ts"); ok {
		e.TS, _ = strconv.ParseInt(string(raw), 10, 64)
	}
	if hit := p.defaultOutcome(o.tx, pe, r, plain); hit != nil && hit.notify {
		e.Flags, e.Actions = hit.flags(), hit.actions
	}
	named := mentionedUsers(r, ev)
	anyDefault := false
	one := func(m *localMember) error {
		if !m.custom && (named == nil || !named[strings.ToLower(m.user)]) {
			anyDefault = anyDefault || m.joined
			return nil
		}
		rules := defaultCompiled
		if m.custom {
			var err error
			if rules, err = p.rulesFor(o, m.user); err != nil {
				return err
			}
		}
		x := notifExcept{User: m.user}
		if hit := pe.match(rules, m.user, m.displayName); hit != nil && hit.notify {
			x.Flags, x.Actions = hit.flags(), hit.actions
		}
		if x.Flags != e.Flags || !bytes.Equal(x.Actions, e.Actions) || !m.joined {
			e.Except = append(e.Except, x)
		} else {
			anyDefault = true
		}
		return nil
	}
	for i := range all {
		m := &all[i]
		if m.user == r.Sender {
			continue
		}
		if !m.custom && named == nil {
			anyDefault = anyDefault || m.joined
			continue
		}
		if err := one(m); err != nil {
			return err
		}
	}
	for i := range extra {
		if err := one(&extra[i]); err != nil {
			return err
		}
	}
	if len(e.Except) == 0 && (e.Flags == 0 || !anyDefault) {
		return nil
	}
	sort.Slice(e.Except, func(i, j int) bool { return e.Except[i].User < e.Except[j].User })
	return o.set(entryKey(r.RoomID, seq), e.encode(make([]byte, 0, 64+len(e.Sender)+len(e.EventID)+len(e.Actions))))
}

// plainKey is all the default rules' answer for a plain event depends on
// (plainPDU: no condition on content can hold; sender_notification_permission
// only appears next to one).
type plainKey struct {
	typ, stateKey string
	hasStateKey   bool
	members       int64
}

// defaultOutcome is the rule of the server defaults that matches the event
// for a member it does not name; for plain events it is remembered for the
// batch by plainKey.
func (p Push) defaultOutcome(tx *Tx, pe *pushEvent, r *EventRecord, plain bool) *compiledRule {
	pe.anon = true
	defer func() { pe.anon = false }()
	if !plain {
		return pe.match(defaultCompiled, "", "")
	}
	cache := batchOf(tx).plain
	k := plainKey{typ: r.Type, hasStateKey: r.StateKey != nil, members: pe.memberCount}
	if r.StateKey != nil {
		k.stateKey = *r.StateKey
	}
	hit, ok := cache[k]
	if !ok {
		hit = pe.match(defaultCompiled, "", "")
		cache[k] = hit
	}
	return hit
}

// mentionedUsers are the user IDs, lowercased, that the default rules'
// "@USER@" can match in an event: its state_key (.m.rule.invite_for_me,
// matched ignoring case) and its m.mentions user IDs
// (.m.rule.is_user_mention).
func mentionedUsers(r *EventRecord, ev map[string]any) map[string]bool {
	var out map[string]bool
	add := func(v any) {
		if s, ok := v.(string); ok {
			if out == nil {
				out = map[string]bool{}
			}
			out[strings.ToLower(s)] = true
		}
	}
	if r.StateKey != nil {
		add(*r.StateKey)
	}
	content, _ := ev["content"].(map[string]any)
	mentions, _ := content["m.mentions"].(map[string]any)
	ids, _ := mentions["user_ids"].([]any)
	for _, id := range ids {
		add(id)
	}
	return out
}

// applyState folds one state change into the room's push info and member
// rows; it reports whether info changed.
func (p Push) applyState(o overlay, info *pushRoomInfo, seq uint64, r *EventRecord, ev map[string]any, c StateEntry) (bool, error) {
	own := c.EventID == r.EventID && ev != nil
	var content map[string]any
	if own {
		content, _ = ev["content"].(map[string]any)
	}
	switch {
	case c.Type == "m.room.create" && c.StateKey == "":
		if !own {
			return false, nil
		}
		info.Creators = info.Creators[:0]
		ver := dag.Version(r.RoomVersion)
		if ver == nil || ver.CreatorIsSender {
			info.Creators = append(info.Creators, r.Sender)
		} else if cr, ok := content["creator"].(string); ok {
			info.Creators = append(info.Creators, cr)
		}
		if ver != nil && ver.RoomIDFromCreate {
			info.InfiniteCreators = true
			if extra, ok := content["additional_creators"].([]any); ok {
				for _, x := range extra {
					if s, ok := x.(string); ok {
						info.Creators = append(info.Creators, s)
					}
				}
			}
		}
		return true, nil
	case c.Type == "m.room.power_levels" && c.StateKey == "":
		if c.EventID == "" {
			info.HasPL, info.Users, info.UsersDefault, info.Notifications = false, nil, 0, nil
			return true, nil
		}
		if !own {
			return false, nil
		}
		info.HasPL = true
		info.Users, info.Notifications = levelList(content["users"]), levelList(content["notifications"])
		info.UsersDefault, _ = powerInt(content["users_default"])
		return true, nil
	case c.Type == "m.room.member":
		return p.applyMember(o, info, seq, r, content, c)
	}
	return false, nil
}

func (p Push) applyMember(o overlay, info *pushRoomInfo, seq uint64, r *EventRecord, content map[string]any, c StateEntry) (bool, error) {
	user := c.StateKey
	code := MembershipCode(c.Membership)
	if c.EventID == "" {
		code = 0
	}
	old, _, err := o.get(pushMemberKey(r.RoomID, user))
	if err != nil {
		return false, err
	}
	var was byte
	if len(old) == 1 {
		was = old[0]
	}
	changed := false
	if was != code {
		changed = true
		switch was {
		case MemberJoin:
			info.Joined--
		case MemberInvite:
			info.Invited--
		}
		switch code {
		case MemberJoin:
			info.Joined++
		case MemberInvite:
			info.Invited++
		}
		if code == 0 {
			err = o.del(pushMemberKey(r.RoomID, user))
		} else {
			err = o.set(pushMemberKey(r.RoomID, user), []byte{code})
		}
		if err != nil {
			return false, err
		}
	}
	local, err := o.has(pushAccountKey(user))
	if err != nil || !local {
		return changed, err
	}
	lk := append(pushLocalPrefix(r.RoomID), user...)
	if code != MemberJoin {
		dropLocalMember(o, r.RoomID, user)
		return changed, o.del(lk)
	}
	// A join keeps the position of the join it continues (a display name
	// change, or resolution re-joining them): counts start there.
	join, name := seq, ""
	prev, found, err := o.get(lk)
	if err != nil {
		return changed, err
	}
	if found && len(prev) >= 8 && was == MemberJoin {
		join, name = binary.BigEndian.Uint64(prev), string(prev[8:])
	}
	if content != nil {
		name, _ = content["displayname"].(string)
	}
	if err := putLocalMember(o, r.RoomID, localMember{user: user, displayName: name, join: join, joined: true}); err != nil {
		return changed, err
	}
	return changed, o.set(lk, append(appendU64(make([]byte, 0, 8+len(name)), join), name...))
}

// plainNeedles are what the server-default rules look for in an event's
// content, and "m.relates_to" for threads: for each condition on a content
// path, the literal it compares with (ignoring case for event_match) when
// it has one, otherwise the quoted key under content. A PDU holding none of
// them and no escape (which could spell one differently) gives every such
// condition the same answer with or without content: none matches.
//
// A rule that names an event type other than the event's cannot match it
// whatever the content, so its conditions are left out: the needles are
// kept per type the default rules name (plainByType, by lower-case type:
// their event_match on the type ignores case) and for every other type
// (plainOther). A type that is not ASCII, which simple case folding could
// still match with a rule's type, gets every needle (plainAll).
var plainAll, plainOther, plainByType = func() (*needleSet, *needleSet, map[string]*needleSet) {
	byType := map[string]*needleSet{}
	for _, r := range defaultCompiled {
		if t, ok := ruleType(&r); ok {
			byType[t] = nil
		}
	}
	for t := range byType {
		byType[t] = plainNeedles(func(rt string, ok bool) bool { return !ok || rt == t })
	}
	return plainNeedles(func(string, bool) bool { return true }), plainNeedles(func(_ string, ok bool) bool { return !ok }), byType
}()

// ruleType returns the event type a rule requires (lower case), if it has
// an event_match on the type without wildcards.
func ruleType(r *compiledRule) (string, bool) {
	for _, c := range r.conds {
		if c.kind == condEventMatch && c.re == nil && !c.userEq && len(c.path) == 1 && c.path[0] == "type" {
			return strings.ToLower(c.literal), true
		}
	}
	return "", false
}

// plainNeedles returns the needles of the default rules that keep says may
// match (given the type the rule requires, if any).
func plainNeedles(keep func(typ string, ok bool) bool) *needleSet {
	out := &needleSet{needles: []needle{{s: `"m.relates_to"`}}}
	for i := range defaultCompiled {
		r := &defaultCompiled[i]
		if !keep(ruleType(r)) {
			continue
		}
		for _, c := range r.conds {
			if len(c.path) < 2 || c.path[0] != "content" {
				continue
			}
			switch v, isStr := c.value.(string); {
			case c.kind == condEventMatch && c.re == nil && !c.userEq:
				// Simple case folding maps the Kelvin sign to k and the
				// long s to s: a literal with those letters also needs
				// the PDU to be ASCII.
				l := strings.ToLower(c.literal)
				out.needles = append(out.needles, needle{s: l, fold: true})
				out.ascii = out.ascii || strings.ContainsAny(l, "ks")
			case (c.kind == condPropertyIs || c.kind == condPropertyContains) && isStr && !c.userEq:
				out.needles = append(out.needles, needle{s: v})
			default:
				out.needles = append(out.needles, needle{s: `"` + c.path[1] + `"`})
			}
		}
	}
	out.dotted = true
	for i := range out.needles {
		out.needles[i].dot = strings.IndexByte(out.needles[i].s, '.')
		out.dotted = out.dotted && out.needles[i].dot >= 0
	}
	return out
}

// needleSet is what plainPDU looks for in the PDU of an event type.
type needleSet struct {
	needles []needle
	ascii   bool // only an ASCII PDU can be plain
	dotted  bool // every needle has a '.': look only around the PDU's dots
}

type needle struct {
	s    string
	fold bool // ASCII case-insensitive
	dot  int  // index of the first '.' in s (-1: none)
}

// plainPDU reports whether the server-default rules can be evaluated on an
// event of type typ without its content (see plainNeedles).
func plainPDU(typ string, pdu []byte) bool {
	set := plainOther
	if s, ok := plainByType[typ]; ok {
		set = s
	} else if !isASCII([]byte(typ)) {
		set = plainAll
	} else if s, ok := plainByType[asciiLower(typ)]; ok {
		set = s
	}
	if bytes.IndexByte(pdu, '\\') >= 0 {
		return false
	}
	if set.ascii && !isASCII(pdu) {
		return false
	}
	if set.dotted {
		for i := 0; ; {
			j := bytes.IndexByte(pdu[i:], '.')
			if j < 0 {
				return true
			}
			i += j
			for k := range set.needles {
				n := &set.needles[k]
				if start := i - n.dot; start >= 0 && start+len(n.s) <= len(pdu) && n.at(pdu[start:start+len(n.s)]) {
					return false
				}
			}
			i++
		}
	}
	for _, n := range set.needles {
		if n.fold && containsFold(pdu, n.s) || !n.fold && bytes.Contains(pdu, []byte(n.s)) {
			return false
		}
	}
	return true
}

// asciiLower lower-cases an ASCII string (allocating only if it must).
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

// at reports whether b (of the needle's length) is the needle.
func (n *needle) at(b []byte) bool {
	if !n.fold {
		return string(b) == n.s
	}
	return containsFold(b, n.s)
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

// containsFold reports whether b contains s (lower case ASCII), ignoring
// ASCII case.
func containsFold(b []byte, s string) bool {
	if len(s) == 0 {
		return true
	}
	for i := 0; i+len(s) <= len(b); i++ {
		j := 0
		for ; j < len(s); j++ {
			x := b[i+j]
			if 'A' <= x && x <= 'Z' {
				x += 'a' - 'A'
			}
			if x != s[j] {
				break
			}
		}
		if j == len(s) {
			return true
		}
	}
	return false
}

// eventView is the event as push rules see it, built cheaply: type,
// sender, state_key and room_id from the record, content and
// origin_server_ts from the PDU (whose other members are parsed only if a
// rule asks for one; pushEvent.lookup).
func eventView(r *EventRecord) map[string]any {
	var top struct {
		Content json.RawMessage `json:"content"`
		TS      json.Number     `json:"origin_server_ts"`
	}
	ev := map[string]any{"type": r.Type, "sender": r.Sender, "room_id": r.RoomID}
	if r.StateKey != nil {
		ev["state_key"] = *r.StateKey
	}
	if json.Unmarshal(r.PDU, &top) != nil {
		return ev
	}
	if top.TS != "" {
		ev["origin_server_ts"] = top.TS
	}
	if len(top.Content) > 0 {
		dec := json.NewDecoder(bytes.NewReader(top.Content))
		dec.UseNumber()
		var c any
		if dec.Decode(&c) == nil {
			ev["content"] = c
		}
	}
	return ev
}

// levelList turns a power levels map ({"@u": 50}) into a sorted list.
func levelList(v any) []userLevel {
	m, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	out := make([]userLevel, 0, len(m))
	for k, x := range m {
		if n, ok := powerInt(x); ok {
			out = append(out, userLevel{k, n})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].User < out[j].User })
	return out
}

// powerInt reads a power level: an integer, or (before room version 10) a
// string holding one.
func powerInt(v any) (int64, bool) {
	switch x := v.(type) {
	case json.Number:
		n, err := strconv.ParseInt(string(x), 10, 64)
		return n, err == nil
	case string:
		n, err := strconv.ParseInt(x, 10, 64)
		return n, err == nil
	}
	return 0, false
}

// threadOf returns the thread root an event belongs to: the event_id of an
// m.thread relation, or the thread of the event it relates to otherwise
// (threads are recorded per event, so one lookup follows any chain, where
// the spec suggests up to 3 hops).
func threadOf(o overlay, ev map[string]any) (string, error) {
	content, _ := ev["content"].(map[string]any)
	rel, _ := content["m.relates_to"].(map[string]any)
	target, _ := rel["event_id"].(string)
	if target == "" {
		return "", nil
	}
	if rt, _ := rel["rel_type"].(string); rt == "m.thread" {
		return target, nil
	}
	root, _, err := o.get(pushThreadKey(target))
	return string(root), err
}

func (p Push) rulesFor(o overlay, user string) (compiledRules, error) {
	raw, found, err := o.get(pushRulesKey(user))
	if err != nil || !found {
		return defaultCompiled, err
	}
	if p.rules != nil {
		p.rules.Lock()
		c, ok := p.rules.m[user]
		p.rules.Unlock()
		if ok && bytes.Equal(c.raw, raw) {
			return c.rules, nil
		}
	}
	u, err := ParseUserPushRules(raw)
	if err != nil {
		// A stored state this server cannot read evaluates as the
		// defaults rather than stopping the fold.
		return defaultCompiled, nil
	}
	rules := compileRuleset(u.Ruleset(""))
	if p.rules != nil {
		p.rules.Lock()
		if len(p.rules.m) > 100000 {
			p.rules.m = map[string]cachedRules{}
		}
		p.rules.m[user] = cachedRules{raw: raw, rules: rules}
		p.rules.Unlock()
	}
	return rules, nil
}

// advanceRead moves a user's read position in a room (thread "" for an
// unthreaded receipt) forward to pos.
func advanceRead(o overlay, user, room, thread string, pos uint64) error {
	k := readPosKey(user, room, thread)
	old, _, err := o.get(k)
	if err != nil || (len(old) == 8 && binary.BigEndian.Uint64(old) >= pos) {
		return err
	}
	return o.set(k, appendU64(nil, pos))
}

// overlay is the push fold's access to its rows: the Tx, whose reads see
// the writes before them (live apply folds in an indexed batch, replay
// folds reading records in indexed batches).
type overlay struct{ tx *Tx }

func newOverlay(tx *Tx) overlay { return overlay{tx} }

func (o overlay) get(k []byte) ([]byte, bool, error) { return o.tx.Get(k) }

func (o overlay) has(k []byte) (bool, error) {
	_, ok, err := o.tx.Get(k)
	return ok, err
}

func (o overlay) set(k, v []byte) error { return o.tx.Set(k, v) }

func (o overlay) del(k []byte) error { return o.tx.Delete(k) }

// scanRange calls fn for the rows of the projection with keys in [lo, hi)
// (hi nil: every key with prefix lo), as the batch and the database
// beneath it hold them. Slices are valid only during fn.
func (t *Tx) scanRange(lo, hi []byte, fn func(k, v []byte) bool) error {
	flo := append([]byte{rowPrefix, t.id}, lo...)
	var fhi []byte
	if hi == nil {
		fhi = prefixEnd(flo)
	} else {
		fhi = append([]byte{rowPrefix, t.id}, hi...)
	}
	it, err := t.r.NewIter(&pebble.IterOptions{LowerBound: flo, UpperBound: fhi})
	if err != nil {
		return err
	}
	for it.First(); it.Valid() && fn(it.Key()[2:], it.Value()); it.Next() {
	}
	return it.Close()
}

// ---- reads ----

// PushRules returns a user's stored push rules (empty when they have
// changed nothing).
func (s *Store) PushRules(user string) (*UserPushRules, error) {
	v, _, err := s.get(row('y', pushRulesKey(user)))
	if err != nil {
		return nil, err
	}
	return ParseUserPushRules(v)
}

// RoomMemberCounts returns the numbers of joined and invited members of a
// room, as push evaluation counts them.
func (s *Store) RoomMemberCounts(room string) (joined, invited int64, err error) {
	v, ok, err := s.get(row('y', pushRoomKey(room)))
	if err != nil || !ok {
		return 0, 0, err
	}
	var info pushRoomInfo
	if err := msgpack.Unmarshal(v, &info); err != nil {
		return 0, 0, err
	}
	return info.Joined, info.Invited, nil
}

// ThreadOf returns the thread root an event belongs to ("" for the main
// timeline).
func (s *Store) ThreadOf(eventID string) (string, error) {
	v, _, err := s.get(row('y', pushThreadKey(eventID)))
	return string(v), err
}

// pushBatch is what the fold keeps for the length of one batch (in the
// Tx's scratch space): decoded room info, member lists and default
// outcomes, read once per batch rather than once per event. Each is
// forgotten by the writes that change it.
type pushBatch struct {
	info    map[string]*pushRoomInfo
	members map[string][]localMember
	plain   map[plainKey]*compiledRule
	// changed are the rooms whose local member rows this batch changed,
	// rulesChanged whether it changed push rules: their lists are not
	// committed ones (pushKeep). shared are the lists pushKeep holds too.
	changed      map[string]bool
	rulesChanged bool
	shared       map[string]bool
	pe           pushEvent // evaluate's, reused
	// levelOf and levels are the notifLevel of the last room evaluated
	// (a method value costs an allocation per event).
	levelOf *pushRoomInfo
	levels  func(string) int64
}

// notifLevel returns info.notifLevel, made once per room in a row.
func (b *pushBatch) notifLevel(info *pushRoomInfo) func(string) int64 {
	if b.levelOf != info {
		b.levelOf, b.levels = info, info.notifLevel
	}
	return b.levels
}

func batchOf(tx *Tx) *pushBatch {
	if b, ok := tx.scratch["push"].(*pushBatch); ok {
		return b
	}
	b := &pushBatch{info: map[string]*pushRoomInfo{}, members: map[string][]localMember{}, plain: map[plainKey]*compiledRule{},
		changed: map[string]bool{}, shared: map[string]bool{}}
	if tx.scratch == nil {
		tx.scratch = map[string]any{}
	}
	tx.scratch["push"] = b
	return b
}

// roomInfo returns a room's push info; applyState changes it in place (and
// writes it).
func roomInfo(o overlay, room string) (*pushRoomInfo, error) {
	b := batchOf(o.tx)
	if info, ok := b.info[room]; ok {
		return info, nil
	}
	raw, _, err := o.get(pushRoomKey(room))
	if err != nil {
		return nil, err
	}
	info := &pushRoomInfo{}
	if len(raw) > 0 {
		if err := msgpack.Unmarshal(raw, info); err != nil {
			return nil, err
		}
	}
	b.info[room] = info
	return info, nil
}

// localMembers returns a room's local joined members, with whether each
// has push rules of their own. The list is the batch's (or shared with
// pushKeep): callers only read it, and putLocalMember and dropLocalMember
// change a copy.
func localMembers(o overlay, room string) ([]localMember, error) {
	b := batchOf(o.tx)
	if v, ok := b.members[room]; ok {
		return v, nil
	}
	k := keepOf(o.tx)
	committed := !b.rulesChanged && !b.changed[room]
	if v, ok := k.members[room]; ok && committed {
		b.members[room] = v
		b.shared[room] = true
		return v, nil
	}
	var out []localMember
	prefix := pushLocalPrefix(room)
	err := o.tx.scanRange(prefix, nil, func(k, v []byte) bool {
		m := localMember{user: string(k[len(prefix):]), joined: true}
		if len(v) >= 8 {
			m.join, m.displayName = binary.BigEndian.Uint64(v), string(v[8:])
		}
		out = append(out, m)
		return true
	})
	if err != nil {
		return nil, err
	}
	for i := range out {
		if _, out[i].custom, err = o.get(pushRulesKey(out[i].user)); err != nil {
			return nil, err
		}
	}
	b.members[room] = out
	if committed {
		// Nothing in this batch changed the rows read: they are
		// committed ones (pushKeep).
		k.put(room, out)
		b.shared[room] = true
	}
	return out, nil
}

// dropLocalMember and putLocalMember keep a room's member list of this
// batch, if it was read, in step with the member rows (a join storm would
// otherwise read the whole list again for every join). Lists stay sorted
// by user, as read; applyEvent is done with a list before its state
// changes are applied, so it may be changed in place.
func dropLocalMember(o overlay, room, user string) {
	b := batchOf(o.tx)
	b.change(o.tx, room)
	list, ok := b.members[room]
	if !ok {
		return
	}
	i, found := slices.BinarySearchFunc(list, user, func(m localMember, u string) int { return strings.Compare(m.user, u) })
	if found {
		b.members[room] = slices.Delete(list, i, i+1)
	}
}

func putLocalMember(o overlay, room string, m localMember) error {
	b := batchOf(o.tx)
	b.change(o.tx, room)
	list, ok := b.members[room]
	if !ok {
		return nil
	}
	_, custom, err := o.get(pushRulesKey(m.user))
	if err != nil {
		return err
	}
	m.custom = custom
	i, found := slices.BinarySearchFunc(list, m.user, func(x localMember, u string) int { return strings.Compare(x.user, u) })
	if found {
		list[i] = m
	} else {
		list = slices.Insert(list, i, m)
	}
	b.members[room] = list
	return nil
}

// change notes that the batch changes room's local member rows: pushKeep
// forgets the room, and the batch's list becomes a copy of its own.
func (b *pushBatch) change(tx *Tx, room string) {
	b.changed[room] = true
	keepOf(tx).forget(room)
	if b.shared[room] {
		b.members[room] = slices.Clone(b.members[room])
		delete(b.shared, room)
	}
}

// pushKeep is what the fold keeps across batches (Tx.keep): the local
// member lists of rooms, each as committed rows hold it. Reading a busy
// room's members (a scan, and a rules lookup for each) was most of the
// cost of a message in the live fold, whose batches are a few records.
//
// Apply runs while the log builds a batch that may yet fail to commit, so
// the cache must never hold what a batch wrote: a list is kept only when
// it was read in a batch that had not changed the room's member rows or
// anyone's push rules (so the rows read were committed ones), and a batch
// that changes them forgets the room (or every room) as it does, before
// it commits. A failed batch thus leaves the cache holding committed rows
// only; and the log fails for good after one, anyway. The cache follows
// one log: a record that is not the next position (another log, a replay)
// empties it.
type pushKeep struct {
	next    uint64
	members map[string][]localMember
	n       int // members held
}

// keepMax bounds the members pushKeep holds.
const keepMax = 1 << 18

func keepOf(tx *Tx) *pushKeep {
	k, ok := tx.keep.(*pushKeep)
	if !ok {
		k = &pushKeep{members: map[string][]localMember{}}
		tx.keep = k
	}
	return k
}

// at is called for every record the fold sees.
func (k *pushKeep) at(seq uint64) {
	if seq != k.next {
		k.forget("")
	}
	k.next = seq + 1
}

// forget drops a room's list ("": every room's).
func (k *pushKeep) forget(room string) {
	if room == "" {
		clear(k.members)
		k.n = 0
		return
	}
	if v, ok := k.members[room]; ok {
		k.n -= len(v)
		delete(k.members, room)
	}
}

func (k *pushKeep) put(room string, list []localMember) {
	if k.n+len(list) > keepMax {
		k.forget("")
	}
	k.forget(room)
	k.members[room] = list
	k.n += len(list)
}
