package projections

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"sort"
	"strconv"
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
// local members and keeps what that produces: the notifications, the
// unread counts, and the read positions that clear them. It does so inside
// the fold, so the counts are a deterministic function of the log ("The
// updated notification count from a new event MUST appear in the same
// /sync response as the event itself" holds by construction: the event's
// record and its counts become durable in the same batch), and the
// evaluation sees the room as it was when the event was appended (member
// count, power levels, display names), not as it is when someone syncs.
//
// A projection reads only its own rows, so this one keeps its own copy of
// what evaluation needs:
//
//	'a' ‖ userID                                 -> ∅   a local account
//	'p' ‖ userID                                 -> UserPushRules JSON (absent: server defaults only)
//	'i' ‖ roomID                                 -> msgpack(pushRoomInfo): member counts, power levels, creators
//	'm' ‖ str(roomID) ‖ userID                   -> membership code u8 (every member)
//	'l' ‖ str(roomID) ‖ userID                   -> display name (local joined members)
//	'T' ‖ eventID                                -> thread root (events in a thread)
//	'n' ‖ str(userID) ‖ seq u64                  -> msgpack(Notification)
//	'u' ‖ str(userID) ‖ str(roomID) ‖ seq u64    -> flags u8 ‖ thread   (unread notifications)
//	'k' ‖ str(userID) ‖ str(roomID) ‖ thread     -> notify u32 ‖ highlight u32
//	'R' ‖ str(userID) ‖ str(roomID) ‖ thread     -> read position u64
//
// thread is "main" for the main timeline or the root's event ID; 'R' also
// has thread "" for the unthreaded receipt, which covers every thread.
// 'u' rows are exactly the unread notifications: a read position that
// passes one decrements its counter and deletes it, so counts are O(1) to
// read and a receipt costs what it marks read.
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
// contents this fold cannot read.
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

// PushID is the push projection's ID, for Store.WaitApplied.
const PushID byte = 'y'

func (Push) ID() byte     { return PushID }
func (Push) Name() string { return "push" }

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
func notifPrefix(user string) []byte         { return appendStr([]byte{'n'}, user) }
func notifKey(user string, seq uint64) []byte {
	return appendU64(notifPrefix(user), seq)
}
func unreadPrefix(user, room string) []byte { return appendStr(appendStr([]byte{'u'}, user), room) }
func counterPrefix(user, room string) []byte {
	return appendStr(appendStr([]byte{'k'}, user), room)
}
func readPosKey(user, room, thread string) []byte {
	return append(appendStr(appendStr([]byte{'R'}, user), room), thread...)
}

// NeedsRead: events and receipts read rules, members, counters and
// positions.
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
	switch r := v.(type) {
	case *AccountRecord:
		return tx.Set(pushAccountKey(r.UserID), nil)
	case *PushRulesRecord:
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
}

type localMember struct{ user, displayName string }

func (p Push) applyEvent(o *overlay, seq uint64, r *EventRecord) error {
	infoRaw, _, err := o.get(pushRoomKey(r.RoomID))
	if err != nil {
		return err
	}
	var info pushRoomInfo
	if len(infoRaw) > 0 {
		if err := msgpack.Unmarshal(infoRaw, &info); err != nil {
			return err
		}
	}
	all, err := localMembers(o, r.RoomID)
	if err != nil {
		return err
	}
	members := make([]localMember, 0, len(all))
	senderLocal := false
	for _, m := range all {
		if m.user == r.Sender {
			senderLocal = true
			continue
		}
		members = append(members, m)
	}
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
			for _, m := range members {
				found = found || m.user == invitee
			}
			if !found {
				members = append(members, localMember{user: invitee})
			}
		}
	}
	changes := stateChanges(r)
	// The content is parsed only when someone is evaluated, a state change
	// needs it, or the sender's event may belong to a thread.
	needEvent := len(members) > 0 || (senderLocal && bytes.Contains(r.PDU, []byte(`"m.relates_to"`)))
	for _, c := range changes {
		if c.EventID == r.EventID && (c.Type == "m.room.power_levels" || c.Type == "m.room.create" || c.Type == "m.room.member") {
			needEvent = true
		}
	}
	var ev map[string]any
	if needEvent {
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

	if len(members) > 0 {
		pe := &pushEvent{ev: ev, pdu: r.PDU, memberCount: info.Joined, senderPower: info.power(r.Sender), notifLevel: info.notifLevel}
		ts := int64(0)
		if n, ok := ev["origin_server_ts"].(json.Number); ok {
			ts, _ = strconv.ParseInt(string(n), 10, 64)
		}
		for _, m := range members {
			rules, err := p.rulesFor(o, m.user)
			if err != nil {
				return err
			}
			hit := pe.match(rules, m.user, m.displayName)
			if hit == nil || !hit.notify {
				continue
			}
			n := Notification{RoomID: r.RoomID, EventID: r.EventID, Thread: thread, Highlight: hit.highlight, Actions: hit.actions, TS: ts}
			b, err := msgpack.Marshal(&n)
			if err != nil {
				return err
			}
			if err := o.set(notifKey(m.user, seq), b); err != nil {
				return err
			}
			var flags byte
			if hit.highlight {
				flags = 1
			}
			if err := o.set(appendU64(unreadPrefix(m.user, r.RoomID), seq), append([]byte{flags}, threadKey...)); err != nil {
				return err
			}
			var hl int64
			if hit.highlight {
				hl = 1
			}
			if err := addCounter(o, m.user, r.RoomID, threadKey, 1, hl); err != nil {
				return err
			}
		}
	}
	if senderLocal {
		if err := ownEventRead(o, r.Sender, r.RoomID, threadKey, seq); err != nil {
			return err
		}
	}

	changed := false
	for _, c := range changes {
		ch, err := p.applyState(o, &info, r, ev, c)
		if err != nil {
			return err
		}
		changed = changed || ch
	}
	if changed {
		b, err := msgpack.Marshal(&info)
		if err != nil {
			return err
		}
		return o.set(pushRoomKey(r.RoomID), b)
	}
	return nil
}

// applyState folds one state change into the room's push info and member
// rows; it reports whether info changed.
func (p Push) applyState(o *overlay, info *pushRoomInfo, r *EventRecord, ev map[string]any, c StateEntry) (bool, error) {
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
		return p.applyMember(o, info, r, content, c)
	}
	return false, nil
}

func (p Push) applyMember(o *overlay, info *pushRoomInfo, r *EventRecord, content map[string]any, c StateEntry) (bool, error) {
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
	forgetLocalMembers(o, r.RoomID)
	if code != MemberJoin {
		return changed, o.del(lk)
	}
	name := ""
	if content != nil {
		name, _ = content["displayname"].(string)
	} else if old, found, err := o.get(lk); err != nil {
		return changed, err
	} else if found {
		name = string(old) // resolution re-joined them: keep what we knew
	}
	return changed, o.set(lk, []byte(name))
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
func threadOf(o *overlay, ev map[string]any) (string, error) {
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

func (p Push) rulesFor(o *overlay, user string) (compiledRules, error) {
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

func addCounter(o *overlay, user, room, thread string, notify, highlight int64) error {
	delete(o.tx.scratch, "pushnone\x00"+user+"\x00"+room)
	k := append(counterPrefix(user, room), thread...)
	old, _, err := o.get(k)
	if err != nil {
		return err
	}
	var n, h int64
	if len(old) == 8 {
		n, h = int64(binary.BigEndian.Uint32(old)), int64(binary.BigEndian.Uint32(old[4:]))
	}
	n, h = max(0, n+notify), max(0, h+highlight)
	if n == 0 && h == 0 {
		return o.del(k)
	}
	var v [8]byte
	binary.BigEndian.PutUint32(v[:], uint32(min(n, 1<<32-1)))
	binary.BigEndian.PutUint32(v[4:], uint32(min(h, 1<<32-1)))
	return o.set(k, v[:])
}

func readPos(o *overlay, user, room, thread string) (uint64, error) {
	v, _, err := o.get(readPosKey(user, room, thread))
	if err != nil || len(v) != 8 {
		return 0, err
	}
	return binary.BigEndian.Uint64(v), nil
}

// ownEventRead moves the read position of the sender of an event to it.
// The event is newer than any position, so the old one need not be read;
// and notifications are cleared only when the user has any in the room.
func ownEventRead(o *overlay, user, room, thread string, pos uint64) error {
	// Whether the user has unread counters here is kept in the batch's
	// scratch space once known to be "none" (addCounter forgets it): a busy
	// sender would otherwise scan for every event it sends.
	noneKey := "pushnone\x00" + user + "\x00" + room
	unread := false
	if _, none := o.tx.scratch[noneKey]; !none {
		if err := o.tx.scanRange(counterPrefix(user, room), nil, func(_, _ []byte) bool {
			unread = true
			return false
		}); err != nil {
			return err
		}
		if !unread {
			if o.tx.scratch == nil {
				o.tx.scratch = map[string]any{}
			}
			o.tx.scratch[noneKey] = true
		}
	}
	if unread {
		return advanceRead(o, user, room, thread, pos)
	}
	return o.set(readPosKey(user, room, thread), appendU64(nil, pos))
}

// advanceRead moves a user's read position in a room (thread "" for an
// unthreaded receipt) to pos, and clears the notifications it passes.
func advanceRead(o *overlay, user, room, thread string, pos uint64) error {
	old, err := readPos(o, user, room, thread)
	if err != nil || pos <= old {
		return err
	}
	if err := o.set(readPosKey(user, room, thread), appendU64(nil, pos)); err != nil {
		return err
	}
	lo := old
	if thread != "" {
		unthreaded, err := readPos(o, user, room, "")
		if err != nil {
			return err
		}
		lo = max(lo, unthreaded)
	}
	if lo >= pos {
		return nil
	}
	prefix := unreadPrefix(user, room)
	type dec struct{ n, h int64 }
	decs := map[string]*dec{}
	var keys [][]byte
	err = o.tx.scanRange(appendU64(append([]byte(nil), prefix...), lo+1), appendU64(append([]byte(nil), prefix...), pos+1), func(k, v []byte) bool {
		if len(v) < 1 {
			return true
		}
		t := string(v[1:])
		if thread != "" && t != thread {
			return true
		}
		d := decs[t]
		if d == nil {
			d = &dec{}
			decs[t] = d
		}
		d.n++
		if v[0]&1 != 0 {
			d.h++
		}
		keys = append(keys, append([]byte(nil), k...))
		return true
	})
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := o.del(k); err != nil {
			return err
		}
	}
	threads := make([]string, 0, len(decs))
	for t := range decs {
		threads = append(threads, t)
	}
	sort.Strings(threads)
	for _, t := range threads {
		if err := addCounter(o, user, room, t, -decs[t].n, -decs[t].h); err != nil {
			return err
		}
	}
	return nil
}

// overlay is a Tx that remembers what this fold of one record wrote, so
// a read after a write of the same record sees the write in replay too
// (where reads go to the database, not to the batch).
type overlay struct {
	tx *Tx
	w  map[string][]byte // nil value: deleted
}

func newOverlay(tx *Tx) *overlay { return &overlay{tx: tx} }

func (o *overlay) get(k []byte) ([]byte, bool, error) {
	if v, ok := o.w[string(k)]; ok {
		return v, v != nil, nil
	}
	return o.tx.Get(k)
}

func (o *overlay) has(k []byte) (bool, error) {
	_, ok, err := o.get(k)
	return ok, err
}

func (o *overlay) set(k, v []byte) error {
	if o.w == nil {
		o.w = map[string][]byte{}
	}
	cp := make([]byte, len(v)) // never nil: nil marks a deletion
	copy(cp, v)
	o.w[string(k)] = cp
	return o.tx.Set(k, cp)
}

func (o *overlay) del(k []byte) error {
	if o.w == nil {
		o.w = map[string][]byte{}
	}
	o.w[string(k)] = nil
	return o.tx.Delete(k)
}

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

// Counts are unread notification counts.
type Counts struct{ Notify, Highlight int64 }

// UnreadCounts returns a user's unread notification counts in a room, per
// thread ("main" for the main timeline).
func (s *Store) UnreadCounts(user, room string) (map[string]Counts, error) {
	prefix := counterPrefix(user, room)
	out := map[string]Counts{}
	err := s.scan('y', prefix, nil, false, func(k, v []byte) bool {
		if len(v) == 8 {
			out[string(k[len(prefix):])] = Counts{int64(binary.BigEndian.Uint32(v)), int64(binary.BigEndian.Uint32(v[4:]))}
		}
		return true
	})
	return out, err
}

// UnreadTotal returns a user's unread notification count over all rooms.
func (s *Store) UnreadTotal(user string) (int64, error) {
	var n int64
	err := s.scan('y', appendStr([]byte{'k'}, user), nil, false, func(_, v []byte) bool {
		if len(v) == 8 {
			n += int64(binary.BigEndian.Uint32(v))
		}
		return true
	})
	return n, err
}

// ReadPosition returns a user's read position in a room for a thread ("" for
// the unthreaded receipt, "main", or a root event ID).
func (s *Store) ReadPosition(user, room, thread string) (uint64, error) {
	v, _, err := s.get(row('y', readPosKey(user, room, thread)))
	if err != nil || len(v) != 8 {
		return 0, err
	}
	return binary.BigEndian.Uint64(v), nil
}

// Notifications calls fn for a user's notifications at positions in
// (after, upto], oldest first, or newest first when backwards.
func (s *Store) Notifications(user string, after, upto uint64, backwards bool, fn func(seq uint64, n *Notification) bool) error {
	lo, hi, ok := seqRange(notifPrefix(user), after, upto)
	if !ok {
		return nil
	}
	var derr error
	err := s.scan('y', lo, hi, backwards, func(k, v []byte) bool {
		var n Notification
		if derr = msgpack.Unmarshal(v, &n); derr != nil {
			return false
		}
		return fn(binary.BigEndian.Uint64(k[len(k)-8:]), &n)
	})
	if err == nil {
		err = derr
	}
	return err
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

// Async: push evaluation runs once per local member for every event, too
// much for the append path; the projection folds behind the log (Set.Follow)
// and readers of counts wait for it (Set.WaitApplied).
func (Push) Async() bool { return true }

// localMembers returns a room's local joined members. The list is read once
// per batch and kept in the batch's scratch space (it is read for every
// event of a room and changes only with memberships, which forget it).
func localMembers(o *overlay, room string) ([]localMember, error) {
	key := "pushlocal\x00" + room
	if v, ok := o.tx.scratch[key]; ok {
		return v.([]localMember), nil
	}
	var out []localMember
	prefix := pushLocalPrefix(room)
	err := o.tx.scanRange(prefix, nil, func(k, v []byte) bool {
		out = append(out, localMember{string(k[len(prefix):]), string(v)})
		return true
	})
	if err != nil {
		return nil, err
	}
	if o.tx.scratch == nil {
		o.tx.scratch = map[string]any{}
	}
	o.tx.scratch[key] = out
	return out, nil
}

func forgetLocalMembers(o *overlay, room string) { delete(o.tx.scratch, "pushlocal\x00"+room) }
