package rooms

import (
	"math"
	"sort"
	"testing"

	"engram/dag"
	"engram/projections"
)

// parsed returns the held events with these IDs, parsed.
func (w *world) parsed(t *testing.T, ids []string) []*dag.Event {
	t.Helper()
	var out []*dag.Event
	for _, id := range ids {
		rec, _, err := w.store.Event(id)
		if err != nil {
			t.Fatalf("event %s: %v", id, err)
		}
		ev, err := parseRecord(rec)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

// walkBack is what a resident server's /backfill answers: up to limit
// events reachable backwards from start (included) through prev_events.
func (w *world) walkBack(t *testing.T, start []string, limit int) []*dag.Event {
	t.Helper()
	seen := map[string]bool{}
	var ids []string
	queue := append([]string(nil), start...)
	for len(queue) > 0 && len(ids) < limit {
		id := queue[0]
		queue = queue[1:]
		if seen[id] {
			continue
		}
		seen[id] = true
		rec, _, err := w.store.Event(id)
		if err != nil {
			continue
		}
		ids = append(ids, id)
		queue = append(queue, rec.PrevEvents...)
	}
	return w.parsed(t, ids)
}

// remoteJoin has @b:y join a room of w in a fresh world b, as send_join
// would: the join made on w, the state before it and its auth chain.
func remoteJoin(t *testing.T, w *world, room string) (*world, *dag.Event) {
	t.Helper()
	st, _, err := w.seq.CurrentState(room)
	if err != nil {
		t.Fatal(err)
	}
	var stateIDs []string
	for _, id := range st {
		stateIDs = append(stateIDs, id)
	}
	sort.Strings(stateIDs)
	res, err := w.seq.Send(Event{Room: room, Sender: "@b:y", Type: "m.room.member", StateKey: sk("@b:y"), Content: obj(map[string]any{"membership": "join"})})
	if err != nil {
		t.Fatal(err)
	}
	chain, _ := w.seq.AuthChain(append(stateIDs, res.EventID))
	join := w.parsed(t, []string{res.EventID})[0]
	b := newWorld(t)
	if _, err := b.seq.JoinRemote(join, w.parsed(t, stateIDs), w.parsed(t, chain)); err != nil {
		t.Fatal(err)
	}
	return b, join
}

func TestBackfill(t *testing.T) {
	for _, v := range []string{"10", "12"} {
		t.Run("v"+v, func(t *testing.T) { testBackfill(t, v) })
	}
}

func testBackfill(t *testing.T, version string) {
	a := newWorld(t)
	room := a.createRoom(t, version, "@a:x", "public")
	if _, err := a.seq.Send(Event{Room: room, Sender: "@a:x", Type: "m.room.history_visibility", StateKey: sk(""), Content: obj(map[string]any{"history_visibility": "shared"})}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 30; i++ {
		if _, err := a.seq.Send(Event{Room: room, Sender: "@a:x", Type: "m.room.message", Content: obj(map[string]any{"body": i})}); err != nil {
			t.Fatal(err)
		}
	}
	history, _ := a.store.Timeline(room, 0, math.MaxUint64, false, 1000) // everything before the join
	b, join := remoteJoin(t, a, room)

	frontier, err := b.seq.BackfillFrontier(room)
	if err != nil || len(frontier) != 1 || frontier[0] != join.PrevEvents[0] {
		t.Fatalf("frontier before backfill: %v %v (join prevs %v)", frontier, err, join.PrevEvents)
	}
	stateBefore, _, _ := b.seq.CurrentState(room)
	extBefore, _ := b.store.Extremities(room)

	// Backfill in batches of 7 until the frontier is empty.
	total := 0
	for i := 0; len(frontier) > 0; i++ {
		if i > 20 {
			t.Fatal("backfill does not end")
		}
		res, err := b.seq.Backfill(room, a.walkBack(t, frontier, 7))
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Missing) > 0 || res.Rejected > 0 || res.Added == 0 {
			t.Fatalf("batch %d: %+v", i, res)
		}
		total += res.Added
		frontier = res.Frontier
		if got, _ := b.seq.BackfillFrontier(room); !equalStrings(got, frontier) {
			t.Fatalf("stored frontier %v, result %v", got, frontier)
		}
	}
	if total != len(history) {
		t.Fatalf("backfilled %d events, A had %d before the join", total, len(history))
	}
	// The same events again add nothing.
	if res, err := b.seq.Backfill(room, a.walkBack(t, []string{join.PrevEvents[0]}, 100)); err != nil || res.Added != 0 {
		t.Fatalf("second backfill: %+v %v", res, err)
	}

	check := func(when string) {
		t.Helper()
		items, err := b.store.Backfilled(room, 0, math.MaxUint64, false, 1000)
		if err != nil || len(items) != len(history) {
			t.Fatalf("%s: %d backfilled items, %v", when, len(items), err)
		}
		// Newest first, in A's order (a linear history): A's timeline reversed.
		for i, it := range items {
			rec, _ := a.store.Record(history[len(history)-1-i])
			if it.EventID != rec.EventID {
				t.Fatalf("%s: item %d is %s, want %s", when, i, it.EventID, rec.EventID)
			}
			if _, st, _ := b.store.EventPos(it.EventID); st != projections.Outlier {
				t.Fatalf("%s: %s has status %d", when, it.EventID, st)
			}
		}
		// Historical: not in the forward timeline, state or extremities.
		if tl, _ := b.store.Timeline(room, 0, math.MaxUint64, false, 1000); len(tl) != 1 {
			t.Fatalf("%s: forward timeline has %d events", when, len(tl))
		}
		ext, _ := b.store.Extremities(room)
		if len(ext) != 1 || ext[join.ID] == 0 || len(extBefore) != 1 {
			t.Fatalf("%s: extremities %v", when, ext)
		}
		if vis, ok, _ := b.store.BackfillVisAt(room, math.MaxInt64, true); !ok || vis != projections.VisShared {
			t.Fatalf("%s: backfilled visibility %d %v", when, vis, ok)
		}
		if m, _, ok, _ := b.store.BackfillMemberAt(room, "@a:x", math.MaxInt64, true); !ok || m != projections.MemberJoin {
			t.Fatalf("%s: backfilled membership %d %v", when, m, ok)
		}
		if f, _ := b.seq.BackfillFrontier(room); len(f) != 0 {
			t.Fatalf("%s: frontier %v", when, f)
		}
	}
	check("after backfill")
	if st, _, _ := b.seq.CurrentState(room); !sameState(st, stateBefore) {
		t.Fatal("backfill changed the current state")
	}
	// The room still works: a new event builds on the join only.
	fresh := New(b.seq.cfg, b.log, b.store)
	if st, err := fresh.StateAt(room, join.ID); err != nil || !sameState(st, stateBefore) {
		t.Fatalf("state at the join after reload: %v", err)
	}

	// Replay gives the same ordinals.
	set, _ := projections.All()
	if err := set.Reset(b.log, b.log.DB()); err != nil {
		t.Fatal(err)
	}
	check("after replay")
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestBackfillChecks: events that fail their auth checks are rejected and
// never join the history; events whose auth events are unknown are left
// out and named.
func TestBackfillChecks(t *testing.T) {
	a := newWorld(t)
	room := a.createRoom(t, "10", "@a:x", "invite")
	first, err := a.seq.Send(Event{Room: room, Sender: "@a:x", Type: "m.room.message", Content: obj(map[string]any{"body": "hi"})})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.seq.Send(Event{Room: room, Sender: "@a:x", Type: "m.room.member", StateKey: sk("@b:y"), Content: obj(map[string]any{"membership": "invite"})}); err != nil {
		t.Fatal(err)
	}
	b, join := remoteJoin(t, a, room)
	frontier, _ := b.seq.BackfillFrontier(room)

	// A forged message of a non-member, claiming a place in the history.
	firstEv := a.parsed(t, []string{first.EventID})[0]
	key, _ := dag.GenerateSigningKey()
	forged, err := dag.Build(dag.ProtoEvent{RoomID: room, Sender: "@evil:z", Type: "m.room.message", Content: obj(map[string]any{"body": "x"}),
		PrevEvents: []string{first.EventID}, AuthEvents: firstEv.AuthEvents, Depth: firstEv.Depth + 1, OriginServerTS: 1}, firstEv.Version, "z", key.ID, key.Key)
	if err != nil {
		t.Fatal(err)
	}
	// An event whose auth events nobody has.
	orphan, err := dag.Build(dag.ProtoEvent{RoomID: room, Sender: "@a:x", Type: "m.room.message", Content: obj(map[string]any{"body": "y"}),
		PrevEvents: []string{first.EventID}, AuthEvents: []string{"$unknown"}, Depth: firstEv.Depth + 1, OriginServerTS: 2}, firstEv.Version, "x", key.ID, key.Key)
	if err != nil {
		t.Fatal(err)
	}
	// Junk: an event the history does not lead to.
	junk, err := dag.Build(dag.ProtoEvent{RoomID: room, Sender: "@a:x", Type: "m.room.message", Content: obj(map[string]any{"body": "z"}),
		PrevEvents: []string{first.EventID}, AuthEvents: firstEv.AuthEvents, Depth: firstEv.Depth + 1, OriginServerTS: 3}, firstEv.Version, "x", key.ID, key.Key)
	if err != nil {
		t.Fatal(err)
	}
	// As if the history named the forged and the orphaned events.
	lr, _ := projections.Encode(&projections.BackfillRecord{RoomID: room, Frontier: append(frontier, forged.ID, orphan.ID)})
	if _, err := b.log.Append(lr); err != nil {
		t.Fatal(err)
	}
	evs := append(a.walkBack(t, frontier, 100), forged, orphan, junk)
	res, err := b.seq.Backfill(room, evs)
	if err != nil {
		t.Fatal(err)
	}
	if res.Rejected != 1 || len(res.Missing) != 1 || res.Missing[0] != "$unknown" || len(res.Frontier) != 1 || res.Frontier[0] != orphan.ID {
		t.Fatalf("result %+v", res)
	}
	if _, st, err := b.store.EventPos(forged.ID); err != nil || st != projections.Rejected {
		t.Fatalf("forged event: %d %v", st, err)
	}
	for _, ev := range []*dag.Event{orphan, junk} {
		if _, _, err := b.store.EventPos(ev.ID); err == nil {
			t.Fatalf("%s was stored", ev.Content)
		}
	}
	items, _ := b.store.Backfilled(room, 0, math.MaxUint64, false, 100)
	for _, it := range items {
		if it.EventID == forged.ID || it.EventID == join.ID {
			t.Fatalf("%s in the backfilled history", it.EventID)
		}
	}
	if len(items) != res.Added || res.Added == 0 {
		t.Fatalf("%d items, %d added", len(items), res.Added)
	}
}
