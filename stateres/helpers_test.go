package stateres

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"engram/dag"
)

var allVersions = []*dag.RoomVersion{
	&dag.RoomV1, &dag.RoomV2, &dag.RoomV3, &dag.RoomV4, &dag.RoomV5, &dag.RoomV6,
	&dag.RoomV7, &dag.RoomV8, &dag.RoomV9, &dag.RoomV10, &dag.RoomV11, &dag.RoomV12,
}

func sk(s string) *string { return &s }

// js marshals a Go value to JSON content; strings are taken as JSON already.
func js(v any) json.RawMessage {
	if s, ok := v.(string); ok {
		return json.RawMessage(s)
	}
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

type obj = map[string]any

// Users of the auth rule fixture.
const (
	alice    = "@alice:a.org" // creator
	admin    = "@admin:a.org" // 100
	mod      = "@mod:b.org"   // 50
	mod2     = "@mod2:b.org"  // 50
	user     = "@user:c.org"  // joined, default level
	banned   = "@banned:c.org"
	invited  = "@invited:c.org"
	left     = "@left:c.org"
	knocker  = "@knocker:c.org"
	stranger = "@stranger:d.org" // no membership
)

// fixture is a room state for auth rule tests, built directly (no auth
// checks): a creator, an admin, two moderators, a user, and one user in
// each other membership.
type fixture struct {
	t      testing.TB
	ver    *dag.RoomVersion
	roomID string
	create *dag.Event
	state  StateEvents
	n      int
}

func createContent(ver *dag.RoomVersion, creator string, extra obj) obj {
	c := obj{"room_version": ver.ID}
	if !ver.CreatorIsSender {
		c["creator"] = creator
	}
	for k, v := range extra {
		c[k] = v
	}
	return c
}

func newBareFixture(t testing.TB, ver *dag.RoomVersion, createExtra obj) *fixture {
	f := &fixture{t: t, ver: ver, state: StateEvents{}}
	create := &dag.Event{
		ID: "$create:a.org", Type: typeCreate, StateKey: sk(""), Sender: alice,
		Content: js(createContent(ver, alice, createExtra)), Version: ver, Depth: 1, OriginServerTS: 1,
	}
	if ver.RoomIDFromCreate {
		create.ID = "$createhash"
		f.roomID = "!createhash"
	} else {
		f.roomID = "!room:a.org"
	}
	create.RoomID = f.roomID
	f.create = create
	f.state[createKey] = create
	return f
}

func newFixture(t testing.TB, ver *dag.RoomVersion) *fixture {
	f := newBareFixture(t, ver, nil)
	f.member(alice, alice, mJoin)
	users := obj{admin: 100, mod: 50, mod2: 50}
	if !ver.RoomIDFromCreate {
		users[alice] = 100
	}
	f.setPL(obj{"users": users})
	f.setJR(jrPublic)
	for _, u := range []string{admin, mod, mod2, user} {
		f.member(u, u, mJoin)
	}
	f.member(admin, banned, mBan)
	f.member(admin, invited, mInvite)
	f.member(left, left, mLeave)
	f.member(knocker, knocker, mKnock)
	return f
}

// event makes an event in the fixture's room; it is not added to the state.
func (f *fixture) event(sender, typ string, stateKey *string, content any) *dag.Event {
	f.n++
	return &dag.Event{
		ID:             fmt.Sprintf("$e%d:%s", f.n, domainOf(sender)),
		RoomID:         f.roomID,
		Sender:         sender,
		Type:           typ,
		StateKey:       stateKey,
		Content:        js(content),
		PrevEvents:     []string{"$prev:a.org"},
		Depth:          int64(f.n + 1),
		OriginServerTS: int64(f.n + 1),
		Version:        f.ver,
	}
}

func (f *fixture) put(ev *dag.Event) *dag.Event {
	f.state[ev.Key()] = ev
	return ev
}

func (f *fixture) member(sender, target, membership string) *dag.Event {
	return f.put(f.event(sender, typeMember, sk(target), obj{"membership": membership}))
}

func (f *fixture) setPL(content any) *dag.Event {
	return f.put(f.event(admin, typePowerLevels, sk(""), content))
}

func (f *fixture) setJR(rule string) *dag.Event {
	return f.put(f.event(admin, typeJoinRules, sk(""), obj{"join_rule": rule}))
}

// plUsers is the fixture's users map plus overrides (nil deletes).
func (f *fixture) plUsers(over obj) obj {
	users := obj{admin: 100, mod: 50, mod2: 50}
	if !f.ver.RoomIDFromCreate {
		users[alice] = 100
	}
	for k, v := range over {
		if v == nil {
			delete(users, k)
		} else {
			users[k] = v
		}
	}
	return users
}

// want maps version ranges to expected outcomes: "1-5:5.2.2 6-11:4.2.2
// 12:ok". "ok" means allowed; a version not mentioned is not tested.
type want map[int]string

func w(spec string) want {
	m := want{}
	for _, part := range strings.Fields(spec) {
		rng, out, ok := strings.Cut(part, ":")
		if !ok {
			panic("bad want " + spec)
		}
		lo, hi, isRange := strings.Cut(rng, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			panic(err)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				panic(err)
			}
		}
		for v := a; v <= b; v++ {
			m[v] = out
		}
	}
	return m
}

func versionNumber(ver *dag.RoomVersion) int {
	n, _ := strconv.Atoi(ver.ID)
	return n
}

// checkOutcome compares an Allowed result with the expectation.
func checkOutcome(t *testing.T, err error, exp string) {
	t.Helper()
	if exp == "ok" {
		if err != nil {
			t.Fatalf("want allowed, got %v", err)
		}
		return
	}
	var d *DeniedError
	if err == nil {
		t.Fatalf("want denied by rule %s, got allowed", exp)
	}
	if !asDenied(err, &d) {
		t.Fatalf("want denied by rule %s, got non-verdict error %v", exp, err)
	}
	if d.Rule != exp {
		t.Fatalf("want denied by rule %s, got rule %s (%s)", exp, d.Rule, d.Reason)
	}
}

func asDenied(err error, d **DeniedError) bool {
	x, ok := err.(*DeniedError)
	if ok {
		*d = x
	}
	return ok
}

// memFetcher serves events from a map.
type memFetcher map[string]*dag.Event

func (m memFetcher) fetch(id string) (*dag.Event, error) {
	if ev, ok := m[id]; ok {
		return ev, nil
	}
	return nil, fmt.Errorf("event %s: %w", id, ErrNotFound)
}

func (m memFetcher) add(evs ...*dag.Event) {
	for _, ev := range evs {
		m[ev.ID] = ev
	}
}

// builder grows a linear room: each event's prev_events is the previous
// event and its auth_events are chosen from the state by SelectAuthEvents.
type builder struct {
	t      testing.TB
	ver    *dag.RoomVersion
	roomID string
	events memFetcher
	state  StateEvents
	last   string
	depth  int64
	ts     int64
}

func newBuilder(t testing.TB, ver *dag.RoomVersion, creator string) *builder {
	b := &builder{t: t, ver: ver, events: memFetcher{}, state: StateEvents{}}
	create := &dag.Event{
		ID: "$create:" + domainOf(creator), Type: typeCreate, StateKey: sk(""), Sender: creator,
		Content: js(createContent(ver, creator, nil)), Version: ver, Depth: 1, OriginServerTS: 1,
	}
	if ver.RoomIDFromCreate {
		create.ID = "$CreateHash"
	}
	if ver.RoomIDFromCreate {
		b.roomID = "!" + create.ID[1:]
	} else {
		b.roomID = "!room:" + domainOf(creator)
	}
	create.RoomID = b.roomID
	b.events.add(create)
	b.state[createKey] = create
	b.last, b.depth, b.ts = create.ID, 1, 1
	return b
}

// make builds an event on the current state without adding it.
func (b *builder) make(id, sender, typ string, stateKey *string, content any) *dag.Event {
	c := js(content)
	b.depth++
	b.ts++
	return &dag.Event{
		ID: id, RoomID: b.roomID, Sender: sender, Type: typ, StateKey: stateKey, Content: c,
		PrevEvents:     []string{b.last},
		AuthEvents:     SelectAuthEvents(b.ver, typ, stateKey, sender, c, b.state),
		Depth:          b.depth,
		OriginServerTS: b.ts,
		Version:        b.ver,
	}
}

// add builds an event, requires the auth rules to allow it, and applies it.
func (b *builder) add(id, sender, typ string, stateKey *string, content any) *dag.Event {
	b.t.Helper()
	ev := b.make(id, sender, typ, stateKey, content)
	if err := Allowed(ev, b.state); err != nil {
		b.t.Fatalf("builder: %s not allowed: %v", id, err)
	}
	b.events.add(ev)
	if ev.StateKey != nil {
		b.state[ev.Key()] = ev
	}
	b.last = ev.ID
	return ev
}

// stateMap is the builder's state as IDs.
func (b *builder) stateMap() StateMap {
	m := StateMap{}
	for k, ev := range b.state {
		m[k] = ev.ID
	}
	return m
}
