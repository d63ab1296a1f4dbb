package projections

import (
	"fmt"
	"path/filepath"
	"testing"
)

// roomsFixture is a room whose history visibility and memberships change,
// with a fork resolved back to an older history visibility event,
// redactions, aliases, the directory, forgets and reports.
func roomsFixture() []any {
	const room = "!h:x"
	ev := func(id, typ string, key *string, sender, membership string) *EventRecord {
		pdu := `{"content":{},"type":"` + typ + `"}`
		return &EventRecord{RoomID: room, EventID: id, RoomVersion: "12", Type: typ, StateKey: key, Sender: sender,
			Membership: membership, Status: Accepted, PDU: []byte(pdu)}
	}
	hv := func(id, vis string) *EventRecord {
		r := ev(id, "m.room.history_visibility", sk(""), "@a:x", "")
		r.PDU = []byte(`{"content":{"history_visibility":"` + vis + `"},"type":"m.room.history_visibility"}`)
		return r
	}
	softHV := hv("$hv-fork", "joined")
	softHV.Status = SoftFailed
	resolved := ev("$merge", "m.room.message", nil, "@a:x", "")
	resolved.State = []StateEntry{{Type: "m.room.history_visibility", StateKey: "", EventID: "$hv-fork"}}
	red1 := ev("$red1", "m.room.redaction", nil, "@a:x", "")
	red1.Redacts = "$m1"
	red2 := ev("$red2", "m.room.redaction", nil, "@a:x", "")
	red2.Redacts = "$m1"
	return []any{
		ev("$create", "m.room.create", sk(""), "@a:x", ""), // 1
		ev("$ja", "m.room.member", sk("@a:x"), "@a:x", "join"),
		hv("$hv1", "world_readable"),
		ev("$m1", "m.room.message", nil, "@a:x", ""),
		ev("$ib", "m.room.member", sk("@b:x"), "@a:x", "invite"), // 5
		hv("$hv2", "invited"),
		ev("$jb", "m.room.member", sk("@b:x"), "@b:x", "join"),
		softHV,
		resolved, // 9: history visibility back to $hv-fork: joined
		ev("$lb", "m.room.member", sk("@b:x"), "@b:x", "leave"), // 10
		red1,
		red2,
		&AliasRecord{Alias: "#a:x", RoomID: room, Creator: "@a:x"},
		&AliasRecord{Alias: "#b:x", RoomID: room, Creator: "@a:x"},
		&AliasRecord{Alias: "#b:x", RoomID: "!other:x", Creator: "@a:x"}, // 15: moved
		&AliasRecord{Alias: "#a:x"},                                      // deleted
		&DirectoryRecord{RoomID: room, Public: true},
		&DirectoryRecord{RoomID: "!other:x", Public: true},
		&DirectoryRecord{RoomID: "!other:x"},
		&ForgetRecord{UserID: "@b:x", RoomID: room}, // 20
		&ForgetRecord{UserID: "@a:x", RoomID: room},
		ev("$ja2", "m.room.member", sk("@a:x"), "@a:x", "join"), // clears @a's forget
		&ReportRecord{Reporter: "@b:x", RoomID: room, EventID: "$m1", Reason: "r", TS: 5},
	}
}

func TestRoomProjections(t *testing.T) {
	set, _ := All()
	l := openLog(t, t.TempDir(), set)
	defer l.Close()
	appendAll(t, l, roomsFixture())
	st, err := NewStore(l, l.DB(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	vh, _ := st.VisibilityHistory("!h:x")
	if fmt.Sprint(vh) != "[{3 1} {6 3} {9 4}]" {
		t.Errorf("visibility history: %v", vh)
	}
	if v, _ := st.HistoryVisibility("!h:x"); v != VisJoined {
		t.Errorf("current visibility: %d", v)
	}
	if r, _ := st.VisibilityRestricted("!h:x"); !r {
		t.Error("room not marked restricted")
	}
	if v, _ := st.HistoryVisibility("!none:x"); v != VisShared {
		t.Errorf("default visibility: %d", v)
	}
	mh, _ := st.MembershipHistory("!h:x", "@b:x")
	if fmt.Sprint(mh) != "[{5 $ib 2} {7 $jb 1} {10 $lb 3}]" {
		t.Errorf("membership history: %v", mh)
	}
	stateAt := func(typ string, at uint64) string {
		es, err := st.StateAt("!h:x", typ, at)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range es {
			out = append(out, e.Type+"/"+e.StateKey+"="+e.EventID+e.Membership)
		}
		return fmt.Sprint(out)
	}
	cases := []struct {
		typ  string
		at   uint64
		want string
	}{
		{"", 0, "[]"},
		{"", 1, "[m.room.create/=$create]"},
		{"", 4, "[m.room.create/=$create m.room.member/@a:x=$jajoin m.room.history_visibility/=$hv1]"}, // key order: types by length first
		{"m.room.member", 7, "[m.room.member/@a:x=$jajoin m.room.member/@b:x=$jbjoin]"},
		{"m.room.member", 100, "[m.room.member/@a:x=$ja2join m.room.member/@b:x=$lbleave]"},
		{"m.room.history_visibility", 9, "[m.room.history_visibility/=$hv-fork]"},
		{"m.room.history_visibility", ^uint64(0), "[m.room.history_visibility/=$hv-fork]"},
	}
	for _, c := range cases {
		if got := stateAt(c.typ, c.at); got != c.want {
			t.Errorf("StateAt(%q, %d) = %s, want %s", c.typ, c.at, got, c.want)
		}
	}
	if id, pos, err := st.StateEventAt("!h:x", "m.room.member", "@b:x", 9); err != nil || id != "$jb" || pos != 7 {
		t.Errorf("StateEventAt: %s %d %v", id, pos, err)
	}
	if _, _, err := st.StateEventAt("!h:x", "m.room.member", "@b:x", 4); err != ErrNotFound {
		t.Errorf("StateEventAt before: %v", err)
	}
	if id, seq, err := st.RedactedBy("!h:x", "$m1"); err != nil || id != "$red1" || seq != 11 {
		t.Errorf("redacted by: %s %d %v", id, seq, err)
	}
	if _, _, err := st.RedactedBy("!other:x", "$m1"); err != ErrNotFound {
		t.Errorf("redaction leaks to another room: %v", err)
	}
	if _, _, err := st.Alias("#a:x"); err != ErrNotFound {
		t.Errorf("deleted alias: %v", err)
	}
	if room, creator, err := st.Alias("#b:x"); err != nil || room != "!other:x" || creator != "@a:x" {
		t.Errorf("moved alias: %s %s %v", room, creator, err)
	}
	if as, _ := st.RoomAliases("!h:x"); len(as) != 0 {
		t.Errorf("aliases of the old room: %v", as)
	}
	if as, _ := st.RoomAliases("!other:x"); fmt.Sprint(as) != "[#b:x]" {
		t.Errorf("aliases of the other room: %v", as)
	}
	if ps, _ := st.PublishedRooms(); fmt.Sprint(ps) != "[!h:x]" {
		t.Errorf("published: %v", ps)
	}
	if f, _ := st.Forgotten("@b:x", "!h:x"); !f {
		t.Error("b's forget lost")
	}
	if f, _ := st.Forgotten("@a:x", "!h:x"); f {
		t.Error("a's forget survives a join")
	}
	var reports []ReportRecord
	st.Reports(0, func(_ uint64, r *ReportRecord) bool { reports = append(reports, *r); return true })
	if len(reports) != 1 || reports[0].EventID != "$m1" {
		t.Errorf("reports: %+v", reports)
	}
}

// TestRoomProjectionsRebuild: the rooms projections rebuild byte for byte,
// including the records that read rows (resolution back to an older
// history visibility, second redactions, alias moves).
func TestRoomProjectionsRebuild(t *testing.T) {
	set, _ := All()
	dir := t.TempDir()
	l := openLog(t, filepath.Join(dir, "db"), set)
	defer l.Close()
	appendAll(t, l, append(fixture(t, 50), roomsFixture()...))
	rebuildMatches(t, set, l, filepath.Join(dir, "scratch"))
}
