package projections

import (
	"math"
	"path/filepath"
	"testing"
)

// TestBackfillOrder: backfilled batches get ordinals that grow with age
// (a later batch is older), an event keeps its first ordinal, and the
// visibility and membership indexes answer by depth; a rebuild gives the
// same rows.
func TestBackfillOrder(t *testing.T) {
	set, _ := All()
	dir := t.TempDir()
	l := openLog(t, filepath.Join(dir, "db"), set)
	defer l.Close()
	st, _ := NewStore(l, l.DB(), 1<<20)
	defer st.Close()
	room := "!r:x"
	out := func(id string, depth int64) *EventRecord {
		return &EventRecord{RoomID: room, EventID: id, RoomVersion: "10", Type: "m.room.message", Sender: "@a:x", Depth: depth, Status: Outlier, PDU: []byte(`{}`)}
	}
	appendAll(t, l, []any{
		out("$m9", 9), out("$m8", 8),
		&BackfillRecord{RoomID: room, Events: []BackfillEvent{{EventID: "$m9", Depth: 9}, {EventID: "$m8", Depth: 8}}, Frontier: []string{"$m7"}},
		out("$m7", 7), out("$hv", 6), out("$jb", 5),
		&BackfillRecord{RoomID: room, Events: []BackfillEvent{
			{EventID: "$m7", Depth: 7}, {EventID: "$hv", Depth: 6, Vis: VisJoined},
			{EventID: "$jb", Depth: 5, Member: "@b:x", Membership: MemberInvite},
			{EventID: "$m8", Depth: 8}, // already backfilled: keeps its first place
		}},
	})
	want := []string{"$m9", "$m8", "$m7", "$hv", "$jb"}
	check := func(st *Store, when string) {
		t.Helper()
		items, err := st.Backfilled(room, 0, math.MaxUint64, false, 100)
		if err != nil || len(items) != len(want) {
			t.Fatalf("%s: %v %v", when, items, err)
		}
		for i, it := range items {
			if it.EventID != want[i] || (i > 0 && it.Ord <= items[i-1].Ord) {
				t.Fatalf("%s: item %d %+v", when, i, it)
			}
			if ord, ok, _ := st.BackfillOrd(it.EventID); !ok || ord != it.Ord {
				t.Fatalf("%s: ordinal of %s: %d %v", when, it.EventID, ord, ok)
			}
		}
		// Newer-wards from the middle, and bounded both ways.
		mid := items[2].Ord
		if got, _ := st.Backfilled(room, 0, mid, true, 100); len(got) != 2 || got[0].EventID != "$m8" {
			t.Fatalf("%s: newer than $m7: %v", when, got)
		}
		if got, _ := st.Backfilled(room, mid, math.MaxUint64, false, 1); len(got) != 1 || got[0].EventID != "$hv" {
			t.Fatalf("%s: older than $m7: %v", when, got)
		}
		if f, ok, _ := st.BackfillFrontier(room); !ok || len(f) != 0 {
			t.Fatalf("%s: frontier %v %v", when, f, ok)
		}
		for _, c := range []struct {
			depth     int64
			inclusive bool
			vis       byte
			found     bool
		}{{6, false, 0, false}, {6, true, VisJoined, true}, {7, false, VisJoined, true}, {math.MaxInt64, true, VisJoined, true}, {-1, true, 0, false}} {
			vis, found, err := st.BackfillVisAt(room, c.depth, c.inclusive)
			if err != nil || vis != c.vis || found != c.found {
				t.Fatalf("%s: visibility at %d (%v): %d %v %v", when, c.depth, c.inclusive, vis, found, err)
			}
		}
		if m, id, ok, _ := st.BackfillMemberAt(room, "@b:x", 6, false); !ok || m != MemberInvite || id != "$jb" {
			t.Fatalf("%s: membership: %d %s %v", when, m, id, ok)
		}
		if _, _, ok, _ := st.BackfillMemberAt(room, "@b:x", 5, false); ok {
			t.Fatalf("%s: membership before the invite", when)
		}
		if _, ok, _ := st.BackfillFrontier("!other:x"); ok {
			t.Fatalf("%s: another room has a frontier", when)
		}
	}
	check(st, "live")
	rebuildMatches(t, set, l, filepath.Join(dir, "scratch"))
	// Backfilled events stay out of the timeline and the state.
	if tl, _ := st.Timeline(room, 0, math.MaxUint64, false, 10); len(tl) != 0 {
		t.Fatalf("timeline %v", tl)
	}
	if _, err := st.StateEvent(room, "m.room.history_visibility", ""); err == nil {
		t.Fatal("a backfilled event became current state")
	}
}
