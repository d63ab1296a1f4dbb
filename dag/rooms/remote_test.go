package rooms

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"

	"engram/dag"
	"engram/log"
	"engram/projections"
	"engram/stateres"
)

// A resident server x and a joining server y, each with its own log: a
// room of x with members, a join of y's user built from x's make_join
// template, and the send_join answer as x computes it.

type namedWorld struct {
	*world
	key dag.SigningKey
}

func newNamedWorld(t testing.TB, name string) *namedWorld {
	t.Helper()
	set, _ := projections.All()
	l, err := log.Open(log.Options{Dir: t.TempDir(), Apply: set.Apply, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	st, _ := projections.NewStore(l, l.DB(), 1<<20)
	key, _ := dag.GenerateSigningKey()
	t.Cleanup(func() { st.Close(); l.Close() })
	return &namedWorld{world: &world{seq: New(Config{ServerName: name, KeyID: key.ID, Key: key.Key}, l, st), log: l, store: st}, key: key}
}

// fillRoom joins n users of x to a public room.
func (w *namedWorld) fillRoom(t testing.TB, room string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		u := fmt.Sprintf("@m%d:x", i)
		if _, err := w.seq.Send(Event{Room: room, Sender: u, Type: "m.room.member", StateKey: sk(u), Content: obj(map[string]any{"membership": "join"})}); err != nil {
			t.Fatal(err)
		}
	}
}

// joinThrough builds user's join from x's template, signed by y, and has x
// sequence it as send_join does; it returns the join and x's answer.
func joinThrough(t testing.TB, x, y *namedWorld, room, user string) (join *dag.Event, state, chain []*dag.Event) {
	t.Helper()
	tmpl, vid, err := x.seq.MakeTemplate(room, user, "m.room.member", sk(user), obj(map[string]any{"membership": "join"}))
	if err != nil {
		t.Fatal(err)
	}
	ver := dag.Version(vid)
	raw, err := dag.AddContentHash(tmpl, ver)
	if err != nil {
		t.Fatal(err)
	}
	if raw, err = dag.SignEvent(raw, ver, y.seq.cfg.ServerName, y.key.ID, y.key.Key); err != nil {
		t.Fatal(err)
	}
	if join, err = dag.ParseEvent(raw, ver); err != nil {
		t.Fatal(err)
	}
	before, err := x.seq.StateBefore(join)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := x.seq.Receive(join); err != nil || res.Status != projections.Accepted {
		t.Fatalf("x receives the join: %+v %v", res, err)
	}
	var ids []string
	for _, id := range before {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	chainIDs, err := x.seq.AuthChain(append(append([]string(nil), ids...), join.ID))
	if err != nil {
		t.Fatal(err)
	}
	load := func(ids []string) []*dag.Event {
		var out []*dag.Event
		for _, id := range ids {
			rec, _, err := x.store.Event(id)
			if err != nil {
				t.Fatal(err)
			}
			ev, err := parseRecord(rec)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, ev)
		}
		return out
	}
	return join, load(ids), load(chainIDs)
}

func stateOf(t testing.TB, s *Sequencer, room string) stateres.StateMap {
	t.Helper()
	m, _, err := s.CurrentState(room)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestJoinRemote(t *testing.T) {
	for _, v := range []string{"10", "11", "12"} {
		t.Run("v"+v, func(t *testing.T) {
			x, y := newNamedWorld(t, "x"), newNamedWorld(t, "y")
			room := x.createRoom(t, v, "@a:x", "public")
			x.fillRoom(t, room, 300)
			join, state, chain := joinThrough(t, x, y, room, "@b:y")
			if len(state) != 304 || len(chain) == 0 {
				t.Fatalf("send_join answer: %d state, %d auth chain", len(state), len(chain))
			}
			res, err := y.seq.JoinRemote(join, state, chain)
			if err != nil || res.Status != projections.Accepted {
				t.Fatalf("JoinRemote: %+v %v", res, err)
			}
			want := stateOf(t, x.seq, room)
			if got := stateOf(t, y.seq, room); !sameState(got, want) {
				t.Fatalf("y's state has %d entries, x's %d", len(got), len(want))
			}
			// The room y holds in memory is the one the projections give.
			cold := New(y.seq.cfg, y.log, y.store)
			if got := stateOf(t, cold, room); !sameState(got, want) {
				t.Fatalf("y's state read back has %d entries, x's %d", len(got), len(want))
			}
			// And y can sequence in it.
			if _, err := y.seq.Send(Event{Room: room, Sender: "@b:y", Type: "m.room.message", Content: obj(map[string]any{"body": "hi"})}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestJoinRemoteBatches: a join too large for one batch is appended in
// several, and the room is the same.
func TestJoinRemoteBatches(t *testing.T) {
	defer func(n int) { joinBatchBytes = n }(joinBatchBytes)
	joinBatchBytes = 8 << 10
	x, y := newNamedWorld(t, "x"), newNamedWorld(t, "y")
	room := x.createRoom(t, "12", "@a:x", "public")
	x.fillRoom(t, room, 200)
	join, state, chain := joinThrough(t, x, y, room, "@b:y")
	if res, err := y.seq.JoinRemote(join, state, chain); err != nil || res.Status != projections.Accepted {
		t.Fatalf("JoinRemote: %+v %v", res, err)
	}
	if got, want := stateOf(t, New(y.seq.cfg, y.log, y.store), room), stateOf(t, x.seq, room); !sameState(got, want) {
		t.Fatalf("y's state has %d entries, x's %d", len(got), len(want))
	}
}

func TestSplitBatches(t *testing.T) {
	for _, c := range []struct {
		sizes       []int
		limit, tail int
		want        string
	}{
		{[]int{1, 1, 1}, 10, 2, "[[0 3]]"},
		{[]int{4, 4, 4, 4, 1, 1}, 8, 2, "[[0 2] [2 4] [4 6]]"},
		{[]int{4, 4, 4, 4, 4, 4}, 8, 2, "[[0 2] [2 4] [4 6]]"},
		{[]int{4, 4, 4, 4, 4}, 8, 2, "[[0 2] [2 5]]"},
		{[]int{20, 1, 20, 1}, 8, 2, "[[0 1] [1 2] [2 4]]"},
		{[]int{5}, 1, 2, "[[0 1]]"},
		{nil, 8, 2, "[]"},
	} {
		if got := fmt.Sprint(splitBatches(c.sizes, c.limit, c.tail)); got != c.want {
			t.Errorf("splitBatches(%v, %d, %d) = %s, want %s", c.sizes, c.limit, c.tail, got, c.want)
		}
	}
}

// TestJoinRemoteRejects: state events failing auth on their own auth events
// are stored rejected and left out of the state; a state without a create
// event, or with a create event of another room version, is refused.
func TestJoinRemoteRejects(t *testing.T) {
	x, y := newNamedWorld(t, "x"), newNamedWorld(t, "y")
	room := x.createRoom(t, "11", "@a:x", "public")
	x.fillRoom(t, room, 5)
	join, state, chain := joinThrough(t, x, y, room, "@b:y")

	var create, pl *dag.Event
	for _, ev := range state {
		switch ev.Type {
		case "m.room.create":
			create = ev
		case "m.room.power_levels":
			pl = ev
		}
	}
	// A member event that changes the power levels of a user who may not.
	forged, err := dag.Build(dag.ProtoEvent{RoomID: room, Sender: "@m1:x", Type: "m.room.power_levels", StateKey: sk(""),
		Content:    obj(map[string]any{"users": map[string]any{"@m1:x": 100}}),
		PrevEvents: []string{join.PrevEvents[0]}, AuthEvents: []string{create.ID, pl.ID, memberID(t, state, "@m1:x")},
		Depth: join.Depth, OriginServerTS: 1}, join.Version, "x", x.key.ID, x.key.Key)
	if err != nil {
		t.Fatal(err)
	}
	bad := append(append([]*dag.Event(nil), state...), forged)

	without := func(evs []*dag.Event, typ string) []*dag.Event {
		var out []*dag.Event
		for _, ev := range evs {
			if ev.Type != typ {
				out = append(out, ev)
			}
		}
		return out
	}
	if _, err := y.seq.JoinRemote(join, without(bad, "m.room.create"), without(chain, "m.room.create")); !errors.Is(err, ErrBadEvent) {
		t.Fatalf("state without create: %v", err)
	}
	if _, err := y.seq.JoinRemote(join, without(bad, "m.room.join_rules"), without(chain, "m.room.join_rules")); !errors.Is(err, ErrBadEvent) {
		t.Fatalf("answer without the join's auth event m.room.join_rules: %v", err)
	}

	res, err := y.seq.JoinRemote(join, bad, chain)
	if err != nil || res.Status != projections.Accepted {
		t.Fatalf("JoinRemote: %+v %v", res, err)
	}
	if _, st, err := y.store.EventPos(forged.ID); err != nil || st != projections.Rejected {
		t.Fatalf("forged power levels: status %v %v", st, err)
	}
	got := stateOf(t, y.seq, room)
	if got[dag.StateKeyTuple{Type: "m.room.power_levels"}] != pl.ID {
		t.Fatal("the forged power levels made it into the state")
	}
	if !sameState(got, stateOf(t, x.seq, room)) {
		t.Fatal("y's state differs from x's")
	}
}

// TestJoinRemoteRoomVersion: the create event must be of the join's room
// version.
func TestJoinRemoteRoomVersion(t *testing.T) {
	x, y := newNamedWorld(t, "x"), newNamedWorld(t, "y")
	id, err := x.seq.CreateRoom("11", []Event{
		{Sender: "@a:x", Type: "m.room.create", StateKey: sk(""), Content: obj(map[string]any{"room_version": "10", "creator": "@a:x"})},
		{Sender: "@a:x", Type: "m.room.member", StateKey: sk("@a:x"), Content: obj(map[string]any{"membership": "join"})},
		{Sender: "@a:x", Type: "m.room.join_rules", StateKey: sk(""), Content: obj(map[string]any{"join_rule": "public"})},
	})
	if err != nil {
		t.Skipf("cannot build a mismatched room here: %v", err)
	}
	join, state, chain := joinThrough(t, x, y, id, "@b:y")
	if _, err := y.seq.JoinRemote(join, state, chain); !errors.Is(err, ErrBadEvent) || !strings.Contains(err.Error(), "room version") {
		t.Fatalf("create of room version 10 in a v11 join: %v", err)
	}
}

func memberID(t testing.TB, state []*dag.Event, user string) string {
	t.Helper()
	for _, ev := range state {
		if ev.Type == "m.room.member" && ev.StateKey != nil && *ev.StateKey == user {
			return ev.ID
		}
	}
	t.Fatalf("no member event of %s", user)
	return ""
}

// TestStateBeforeFastPath: the state before an event on all extremities
// (the current state) is what the DAG walk finds, and the seeded cache
// agrees with a walk on a cold cache.
func TestStateBeforeFastPath(t *testing.T) {
	x, y := newNamedWorld(t, "x"), newNamedWorld(t, "y")
	room := x.createRoom(t, "12", "@a:x", "public")
	x.fillRoom(t, room, 50)
	r, err := x.seq.load(room)
	if err != nil {
		t.Fatal(err)
	}
	var last string
	for id := range r.extremities {
		last = id
	}
	cold := &fedCache{after: map[string]stateres.StateMap{}, events: map[string]*dag.Event{}, seen: map[string]projections.Status{}}
	walked, err := x.seq.stateAfter(cold, r.version, last)
	r.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	_, state, _ := joinThrough(t, x, y, room, "@b:y")
	before := stateres.StateMap{}
	for _, ev := range state {
		before[ev.Key()] = ev.ID
	}
	if !sameState(walked, before) {
		t.Fatalf("walk: %d entries, fast path: %d", len(walked), len(before))
	}
}

// TestAuthChainHeld: the auth chain from the sequencer's parsed state is
// the one read from the store.
func TestAuthChainHeld(t *testing.T) {
	x := newNamedWorld(t, "x")
	room := x.createRoom(t, "11", "@a:x", "public")
	x.fillRoom(t, room, 100)
	m, _, err := x.seq.CurrentState(room)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, id := range m {
		ids = append(ids, id)
	}
	held, err := x.seq.AuthChain(ids)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := New(x.seq.cfg, x.log, x.store).AuthChain(ids)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(held) != fmt.Sprint(stored) || len(held) < 3 {
		t.Fatalf("held %v\nstored %v", held, stored)
	}
}

// TestAuthLevels: events come after their auth events; events on an auth
// cycle are dropped.
func TestAuthLevels(t *testing.T) {
	v1 := dag.Version("1")
	mk := func(id string, depth int64, auth ...string) *dag.Event {
		return &dag.Event{ID: id, Version: v1, Depth: depth, AuthEvents: auth, Type: "t"}
	}
	evs := []*dag.Event{mk("$a", 1), mk("$b", 2, "$a"), mk("$c", 3, "$a", "$b"), mk("$d", 1, "$c", "$missing"),
		mk("$x", 5, "$y"), mk("$y", 6, "$x"), mk("$z", 7, "$y")}
	byID := map[string]*dag.Event{}
	for _, ev := range evs {
		byID[ev.ID] = ev
	}
	levels := authLevels(byID)
	var got []string
	for i, l := range levels {
		for _, ev := range l {
			got = append(got, fmt.Sprintf("%d%s", i, ev.ID))
		}
	}
	if want := "[0$a 1$b 2$c 3$d]"; fmt.Sprint(got) != want {
		t.Fatalf("levels %v, want %s", got, want)
	}
}

// BenchmarkJoinRemote: the joining side's recording of a send_join answer
// (auth checks of every event on its auth events, one log batch, the room
// loaded into memory) for a room of 2,000 members; signatures are the
// caller's and not part of it.
func BenchmarkJoinRemote(b *testing.B) {
	x := newNamedWorld(b, "x")
	room := x.createRoom(b, "12", "@a:x", "public")
	x.fillRoom(b, room, 2000)
	y0 := newNamedWorld(b, "y")
	join, state, chain := joinThrough(b, x, y0, room, "@b:y")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		y := newNamedWorld(b, "y")
		b.StartTimer()
		if res, err := y.seq.JoinRemote(join, state, chain); err != nil || res.Status != projections.Accepted {
			b.Fatalf("%+v %v", res, err)
		}
	}
}
