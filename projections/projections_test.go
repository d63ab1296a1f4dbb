package projections

import (
	"fmt"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble"

	"engram/log"
)

func sk(s string) *string { return &s }

// fixture returns records for a small world: two users, one room with a
// create, joins, messages, a leave, a filter, a logout.
func fixture(t testing.TB, messages int) []any {
	room := "!r:x"
	recs := []any{
		&AccountRecord{UserID: "@a:x", PasswordHash: "h", TS: 1},
		&AccountRecord{UserID: "@b:x", TS: 2},
		&LoginRecord{UserID: "@a:x", DeviceID: "DA", TokenHash: []byte("tokA-hash-32-bytes-long-padding!"), TS: 3},
		&LoginRecord{UserID: "@b:x", DeviceID: "DB", TokenHash: []byte("tokB-hash-32-bytes-long-padding!"), TS: 3},
		&EventRecord{RoomID: room, EventID: "$create", RoomVersion: "12", Type: "m.room.create", StateKey: sk(""), Sender: "@a:x", Depth: 1, Status: Accepted, PDU: []byte(`{}`)},
		&EventRecord{RoomID: room, EventID: "$ja", RoomVersion: "12", Type: "m.room.member", StateKey: sk("@a:x"), Membership: "join", Sender: "@a:x", PrevEvents: []string{"$create"}, Depth: 2, Status: Accepted, PDU: []byte(`{}`)},
		&EventRecord{RoomID: room, EventID: "$jb", RoomVersion: "12", Type: "m.room.member", StateKey: sk("@b:x"), Membership: "join", Sender: "@b:x", PrevEvents: []string{"$ja"}, Depth: 3, Status: Accepted, PDU: []byte(`{}`)},
	}
	prev := "$jb"
	for i := 0; i < messages; i++ {
		id := fmt.Sprintf("$m%d", i)
		recs = append(recs, &EventRecord{RoomID: room, EventID: id, RoomVersion: "12", Type: "m.room.message", Sender: "@a:x",
			PrevEvents: []string{prev}, Depth: int64(4 + i), Status: Accepted, Txn: "@a:x\x00DA\x00" + room + "\x00" + id,
			PDU: []byte(`{"content":{"body":"hello","msgtype":"m.text"},"type":"m.room.message"}`)})
		prev = id
	}
	recs = append(recs,
		&EventRecord{RoomID: room, EventID: "$rejected", RoomVersion: "12", Type: "m.room.topic", StateKey: sk(""), Sender: "@b:x", Status: Rejected, PDU: []byte(`{}`)},
		&EventRecord{RoomID: room, EventID: "$lb", RoomVersion: "12", Type: "m.room.member", StateKey: sk("@b:x"), Membership: "leave", Sender: "@b:x", PrevEvents: []string{prev}, Depth: 1000, Status: Accepted, PDU: []byte(`{}`)},
		&FilterRecord{UserID: "@a:x", FilterID: "f1", JSON: []byte(`{"room":{}}`)},
		&LogoutRecord{UserID: "@b:x", DeviceID: "DB"},
	)
	return recs
}

func openLog(t testing.TB, dir string, set *Set) *log.Log {
	t.Helper()
	l, err := log.Open(log.Options{Dir: dir, Apply: set.Apply, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func appendAll(t testing.TB, l *log.Log, vals []any) {
	t.Helper()
	for _, v := range vals {
		rec, err := Encode(v)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Append(rec); err != nil {
			t.Fatal(err)
		}
	}
}

// rebuildMatches rebuilds set's projections from l into a scratch database
// at dir, fails the test unless every one equals the live rows, and returns
// the scratch database (closed when the test ends).
func rebuildMatches(t testing.TB, set *Set, l *log.Log, dir string) *pebble.DB {
	t.Helper()
	db, err := set.Rebuild(l, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if bad, err := set.Compare(l.DB(), db); err != nil || len(bad) != 0 {
		t.Fatalf("rebuild differs: %+v %v", bad, err)
	}
	return db
}

// appendGroups appends vals in appends of n records (group commits of the
// live path, without an fsync per record).
func appendGroups(t testing.TB, l *log.Log, vals []any, n int) {
	t.Helper()
	for i := 0; i < len(vals); i += n {
		var recs []log.Record
		for _, v := range vals[i:min(i+n, len(vals))] {
			rec, err := Encode(v)
			if err != nil {
				t.Fatal(err)
			}
			recs = append(recs, rec)
		}
		if _, err := l.Append(recs...); err != nil {
			t.Fatal(err)
		}
	}
}

func TestViews(t *testing.T) {
	set, _ := All()
	l := openLog(t, t.TempDir(), set)
	defer l.Close()
	appendAll(t, l, fixture(t, 5))
	st, err := NewStore(l, l.DB(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	if _, err := st.Account("@a:x"); err != nil {
		t.Errorf("account @a:x: %v", err)
	}
	if _, err := st.Account("@nobody:x"); err != ErrNotFound {
		t.Errorf("unknown account: %v", err)
	}
	if u, d, err := st.TokenOwner([]byte("tokA-hash-32-bytes-long-padding!")); err != nil || u != "@a:x" || d != "DA" {
		t.Errorf("token A: %q %q %v", u, d, err)
	}
	if _, _, err := st.TokenOwner([]byte("tokB-hash-32-bytes-long-padding!")); err != ErrNotFound {
		t.Errorf("token B after logout: %v", err)
	}
	if v, err := st.RoomVersion("!r:x"); err != nil || v != "12" {
		t.Errorf("room version: %q %v", v, err)
	}
	state, err := st.CurrentState("!r:x", "")
	if err != nil || len(state) != 3 {
		t.Errorf("state: %v %v", state, err)
	}
	if id, err := st.StateEvent("!r:x", "m.room.member", "@b:x"); err != nil || id != "$lb" {
		t.Errorf("member b: %q %v", id, err)
	}
	if _, err := st.StateEvent("!r:x", "m.room.topic", ""); err != ErrNotFound {
		t.Errorf("rejected topic became state: %v", err)
	}
	m, _ := st.MemberOf("!r:x", "@b:x")
	if m.Membership != MemberLeave || m.EventID != "$lb" {
		t.Errorf("membership b: %+v", m)
	}
	rooms, _ := st.UserRooms("@a:x")
	if len(rooms) != 1 || rooms[0].Membership != MemberJoin {
		t.Errorf("rooms of a: %+v", rooms)
	}
	tl, _ := st.Timeline("!r:x", 0, l.Last()+1, false, 100)
	if len(tl) != 9 { // create, 2 joins, 5 messages, leave (not the rejected topic)
		t.Errorf("timeline has %d events", len(tl))
	}
	back, _ := st.Timeline("!r:x", 0, l.Last()+1, true, 2)
	if len(back) != 2 || back[0] <= back[1] {
		t.Errorf("backwards timeline: %v", back)
	}
	ext, _ := st.Extremities("!r:x")
	if len(ext) != 1 || ext["$lb"] != 1000 {
		t.Errorf("extremities: %v", ext)
	}
	if id, err := st.TxnEvent("@a:x\x00DA\x00!r:x\x00$m2"); err != nil || id != "$m2" {
		t.Errorf("txn: %q %v", id, err)
	}
	if f, err := st.Filter("@a:x", "f1"); err != nil || string(f) != `{"room":{}}` {
		t.Errorf("filter: %s %v", f, err)
	}
	n := 0
	st.Changes(0, l.Last(), func(uint64, string) bool { n++; return true })
	if n != 9 {
		t.Errorf("changes: %d", n)
	}
	rec, _, err := st.Event("$m1")
	if err != nil || rec.Type != "m.room.message" {
		t.Errorf("event: %+v %v", rec, err)
	}
}

// TestRebuildMatchesLive: the live projections (applied inside the append
// batches, a record at a time) equal a rebuild from the log (large batches).
func TestRebuildMatchesLive(t *testing.T) {
	set, _ := All()
	dir := t.TempDir()
	l := openLog(t, filepath.Join(dir, "db"), set)
	defer l.Close()
	appendAll(t, l, fixture(t, 3000))
	db := rebuildMatches(t, set, l, filepath.Join(dir, "scratch"))
	// A corrupted live row is caught.
	if err := l.DB().Set([]byte("pswrong"), []byte("x"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	bad, _ := set.Compare(l.DB(), db)
	if len(bad) != 1 || bad[0].Name != "state" {
		t.Fatalf("corruption not detected: %+v", bad)
	}
}

// TestCatchUp: a projection whose rows were lost is rebuilt on open.
func TestCatchUp(t *testing.T) {
	set, _ := All()
	dir := t.TempDir()
	l := openLog(t, dir, set)
	appendAll(t, l, fixture(t, 10))
	want, _ := Digest(l.DB(), 'm')
	b := l.DB().NewBatch()
	b.DeleteRange([]byte{'p', 'm'}, []byte{'p', 'm' + 1}, nil)
	b.Delete([]byte{'c', 'm'}, nil)
	b.Commit(pebble.Sync)
	if err := set.CatchUp(l, l.DB()); err != nil {
		t.Fatal(err)
	}
	got, _ := Digest(l.DB(), 'm')
	if got != want {
		t.Fatal("membership not rebuilt by catch-up")
	}
	l.Close()
}

func TestDecodeUnknownAndBad(t *testing.T) {
	if v, err := Decode(log.Record{Kind: 200, Version: 1}); v != nil || err != nil {
		t.Errorf("unknown kind: %v %v", v, err)
	}
	if _, err := Decode(log.Record{Kind: KindEvent, Version: 9}); err == nil {
		t.Error("unknown version accepted")
	}
	if _, err := Decode(log.Record{Kind: KindEvent, Version: 1, Body: []byte{0xc1}}); err == nil {
		t.Error("garbage body accepted")
	}
}

// BenchmarkApply measures folding one message record into every projection.
func BenchmarkApply(b *testing.B) {
	set, _ := All()
	l := openLog(b, b.TempDir(), set)
	defer l.Close()
	appendAll(b, l, fixture(b, 0))
	rec, _ := Encode(&EventRecord{RoomID: "!r:x", EventID: "$m", RoomVersion: "12", Type: "m.room.message", Sender: "@a:x",
		PrevEvents: []string{"$jb"}, Depth: 4, Status: Accepted,
		PDU: make([]byte, 600)})
	recs := make([]log.Record, 256)
	for i := range recs {
		recs[i] = rec
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += len(recs) {
		batch := l.DB().NewIndexedBatch()
		if err := set.Apply(batch, uint64(i+1000), recs); err != nil {
			b.Fatal(err)
		}
		batch.Close()
	}
}

// BenchmarkReplay measures rebuilding projections from a message-heavy log.
func BenchmarkReplay(b *testing.B) {
	set, _ := All()
	benchReplay(b, set)
}

// BenchmarkReplayNoPush is BenchmarkReplay without the push projection, so
// the rest of the set's progress shows on its own.
func BenchmarkReplayNoPush(b *testing.B) {
	all, _ := All()
	var ps []Projection
	for _, p := range all.Projections() {
		if p.ID() != 'y' {
			ps = append(ps, p)
		}
	}
	set, err := NewSet(ps...)
	if err != nil {
		b.Fatal(err)
	}
	benchReplay(b, set)
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchReplay(b *testing.B, set *Set) {
	dir := b.TempDir()
	l := openLog(b, filepath.Join(dir, "db"), set)
	defer l.Close()
	vals := fixture(b, 50000)
	recs := make([]log.Record, 0, len(vals))
	for _, v := range vals {
		r, _ := Encode(v)
		recs = append(recs, r)
	}
	for i := 0; i < len(recs); i += 1000 {
		if _, err := l.Append(recs[i:min(i+1000, len(recs))]...); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		db, err := set.Rebuild(l, filepath.Join(dir, fmt.Sprint("scratch", i)))
		if err != nil {
			b.Fatal(err)
		}
		db.Close()
	}
	b.StopTimer()
	cpu := cpuTime() - cpu0
	runtime.ReadMemStats(&m1)
	b.ReportMetric(float64(len(recs)*b.N)/b.Elapsed().Seconds(), "records/s")
	// CPU time per record says more than records/s on a shared machine:
	// 2 cores at 100% replay 2e6/(cpu-µs/record) records/s at best.
	b.ReportMetric(cpu.Seconds()*1e6/float64(len(recs)*b.N), "cpu-µs/record")
	b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/float64(len(recs)*b.N), "allocs/record")
}

func TestEventRecordRoundTrip(t *testing.T) {
	cases := []*EventRecord{
		{},
		{RoomID: "!r", EventID: "$e", RoomVersion: "12", Type: "m.room.member", StateKey: sk(""), Sender: "@a:x", Membership: "join",
			Redacts: "$x", PrevEvents: []string{"$a", "$b"}, Depth: -3, Status: SoftFailed, Reason: "why", Txn: "t",
			State: []StateEntry{{Type: "a", StateKey: "b", EventID: "$c", Membership: "leave"}, {}}, PDU: []byte(`{"a":1}`)},
		{StateKey: sk("@a:x"), State: []StateEntry{}},
	}
	for i, c := range cases {
		rec, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		v, err := Decode(rec)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := Encode(v)
		if string(got.Body) != string(rec.Body) {
			t.Errorf("case %d: round trip differs", i)
		}
		if (c.StateKey == nil) != (v.(*EventRecord).StateKey == nil) {
			t.Errorf("case %d: state key nil-ness lost", i)
		}
	}
	// Truncated bodies are errors, never panics.
	rec, _ := Encode(cases[1])
	for n := 0; n < len(rec.Body); n++ {
		Decode(log.Record{Kind: KindEvent, Version: 1, Body: rec.Body[:n]})
	}
}

func FuzzDecodeRecord(f *testing.F) {
	for _, v := range fixture(f, 1) {
		r, _ := Encode(v)
		f.Add(byte(r.Kind), r.Body)
	}
	f.Fuzz(func(t *testing.T, kind byte, body []byte) {
		Decode(log.Record{Kind: log.Kind(kind), Version: 1, Body: body})
	})
}
