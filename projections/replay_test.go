package projections

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/vfs"
)

// TestMain fails the package if any replay in any test read rows its
// projection's NeedsRead did not announce (replay.go): such a read works,
// but commits half a record.
func TestMain(m *testing.M) {
	code := m.Run()
	if n := undeclaredReads.Load(); n > 0 && code == 0 {
		fmt.Fprintf(os.Stderr, "projections: %d reads during replay were not announced by NeedsRead\n", n)
		code = 1
	}
	os.Exit(code)
}

// TestWriteBufDrain: buffered writes reach the batch sorted, the last write
// of each key only, with the same outcome as writing them in order.
func TestWriteBufDrain(t *testing.T) {
	type op struct {
		k, v string
		del  bool
	}
	ops := []op{{"b", "1", false}, {"a", "1", false}, {"b", "", true}, {"c", "1", false}, {"a", "2", false}, {"c", "", true}, {"c", "3", false}, {"d", "", true}}
	mem, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	mem.Set([]byte("d"), []byte("old"), nil)
	var w writeBuf
	for _, o := range ops {
		w.add([]byte(o.k), []byte(o.v), o.del)
	}
	b := mem.NewBatch()
	if err := w.drain(b); err != nil {
		t.Fatal(err)
	}
	if b.Count() != 4 || len(w.ops) != 0 {
		t.Errorf("batch holds %d writes, buffer %d", b.Count(), len(w.ops))
	}
	if err := b.Commit(nil); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"a": "2", "b": "", "c": "3", "d": ""} {
		v, closer, err := mem.Get([]byte(k))
		got := ""
		if err == nil {
			got = string(v)
			closer.Close()
		}
		if got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
}

// TestReplayReadsDeclared: every read a projection makes while the
// fixtures replay was announced by its NeedsRead (an undeclared read works,
// but costs a commit mid-record), and the rebuild equals the live rows.
func TestReplayReadsDeclared(t *testing.T) {
	set, _ := All()
	dir := t.TempDir()
	l := openLog(t, filepath.Join(dir, "db"), set)
	defer l.Close()
	appendAll(t, l, fixture(t, 20))
	appendAll(t, l, relFixture())
	before := undeclaredReads.Load()
	db, err := set.Rebuild(l, filepath.Join(dir, "scratch"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if n := undeclaredReads.Load() - before; n != 0 {
		t.Errorf("%d undeclared reads", n)
	}
	bad, err := set.Compare(l.DB(), db)
	if err != nil || len(bad) != 0 {
		t.Fatalf("rebuild differs: %+v %v", bad, err)
	}
}

// TestReplaySplitsAroundReads: a chunk where a few records read (relations
// among many messages) folds them in batches of their own and still equals
// live apply.
func TestReplaySplitsAroundReads(t *testing.T) {
	set, _ := All()
	dir := t.TempDir()
	l := openLog(t, filepath.Join(dir, "db"), set)
	defer l.Close()
	vals := fixture(t, 0)
	for i := 0; i < 300; i++ {
		content := `{"content":{"body":"m"}}`
		if i%50 == 7 {
			content = fmt.Sprintf(`{"content":{"body":"r","m.relates_to":{"rel_type":"m.annotation","event_id":"$m%d","key":"k"}}}`, i-1)
		}
		vals = append(vals, &EventRecord{RoomID: "!r:x", EventID: fmt.Sprintf("$m%d", i), RoomVersion: "12", Type: "m.room.message",
			Sender: "@a:x", Depth: int64(10 + i), Status: Accepted, PDU: []byte(content)})
	}
	appendAll(t, l, vals)
	rebuildMatches(t, set, l, filepath.Join(dir, "scratch"))
}

// TestReplayManyChunks: a log longer than several replay chunks and batches,
// with relations, state changes and redactions among the messages, rebuilds
// to the live rows, and CatchUp of a reset projection too.
func TestReplayManyChunks(t *testing.T) {
	set, _ := All()
	dir := t.TempDir()
	l := openLog(t, filepath.Join(dir, "db"), set)
	defer l.Close()
	vals := fixture(t, 0)
	prev := "$jb"
	for i := 0; i < 3*replayBatch+100; i++ {
		id := fmt.Sprintf("$m%d", i)
		r := &EventRecord{RoomID: "!r:x", EventID: id, RoomVersion: "12", Type: "m.room.message", Sender: "@a:x",
			PrevEvents: []string{prev}, Depth: int64(10 + i), Status: Accepted, Txn: "@a:x\x00DA\x00!r:x\x00" + id,
			PDU: []byte(fmt.Sprintf(`{"content":{"body":"hello %d world","msgtype":"m.text"}}`, i%97))}
		switch {
		case i%331 == 5:
			r.PDU = []byte(fmt.Sprintf(`{"content":{"body":"+1","m.relates_to":{"rel_type":"m.annotation","event_id":"$m%d","key":"👍"}}}`, i-3))
		case i%509 == 7:
			r.Type, r.StateKey, r.PDU = "m.room.topic", sk(""), []byte(fmt.Sprintf(`{"content":{"topic":"topic %d"}}`, i))
		case i%701 == 9:
			r.Type, r.Redacts, r.PDU = "m.room.redaction", fmt.Sprintf("$m%d", i-1), []byte(`{"content":{}}`)
		}
		vals = append(vals, r)
		prev = id
	}
	appendGroups(t, l, vals, 500)
	db := rebuildMatches(t, set, l, filepath.Join(dir, "scratch"))
	// Search and events lose their rows; CatchUp folds them again while
	// the others skip what their checkpoints cover.
	want, _ := Digest(l.DB(), 'S')
	b := l.DB().NewBatch()
	for _, id := range []byte{'S', 'e'} {
		b.DeleteRange([]byte{'p', id}, []byte{'p', id + 1}, nil)
		b.Delete([]byte{'c', id}, nil)
	}
	b.Commit(pebble.Sync)
	if err := set.CatchUp(l, l.DB()); err != nil {
		t.Fatal(err)
	}
	if got, _ := Digest(l.DB(), 'S'); got != want {
		t.Fatal("search not rebuilt by catch-up")
	}
	if bad, err := set.Compare(l.DB(), db); err != nil || len(bad) != 0 {
		t.Fatalf("after catch-up: %+v %v", bad, err)
	}
}

// TestReplayFlushes: with tiny buffers, replay writes out many times in
// the middle of the log, through the memtable and through ingested
// sstables, while push scans the members of many rooms, to-device acks
// delete ranges and receipts read; Rebuild and a CatchUp of every
// projection both equal the live rows.
func TestReplayFlushes(t *testing.T) {
	defer func(p, i int) { pendingMax, ingestMin = p, i }(pendingMax, ingestMin)
	pendingMax, ingestMin = 24<<10, 8<<10
	set, _ := All()
	dir := t.TempDir()
	l := openLog(t, filepath.Join(dir, "db"), set)
	defer l.Close()
	vals := append(fixture(t, 0), pushFixture(200)...)
	vals = append(vals, relFixture()...)
	vals = append(vals, busyRoomFixture(30)...)
	for i := 0; i < 3000; i++ {
		room := fmt.Sprintf("!r%d:x", i%7)
		if i%7 == 0 {
			room = "!busy:x"
		}
		vals = append(vals, &EventRecord{RoomID: room, EventID: fmt.Sprintf("$f%d", i), RoomVersion: "12", Type: "m.room.message",
			Sender: fmt.Sprintf("@u%d:x", i%9), Depth: int64(i), Status: Accepted,
			PDU: []byte(fmt.Sprintf(`{"origin_server_ts":%d,"content":{"body":"hello %d","msgtype":"m.text"}}`, i, i%13))})
		switch i % 97 {
		case 3:
			vals = append(vals, &ToDeviceRecord{Sender: "@a:x", SenderDevice: "DA", Type: "m.x", TxnID: fmt.Sprint(i),
				Msgs: []ToDeviceMsg{{UserID: "@u1:x", DeviceID: "D1", Content: []byte(`{}`)}, {UserID: "@u2:x", DeviceID: "D2", Content: []byte(`{}`)}}})
		case 50:
			vals = append(vals, &ToDeviceAckRecord{UserID: "@u1:x", DeviceID: "D1", UpTo: uint64(len(vals))})
		case 70:
			u := fmt.Sprintf("@u%d:x", 10+i%20)
			vals = append(vals, &EventRecord{RoomID: "!busy:x", EventID: fmt.Sprintf("$fl%d", i), RoomVersion: "12", Type: "m.room.member",
				StateKey: sk(u), Membership: []string{"leave", "join"}[i%2], Sender: u, Status: Accepted,
				PDU: []byte(`{"content":{"membership":"join","displayname":"n` + fmt.Sprint(i) + `"}}`)})
		}
	}
	appendGroups(t, l, vals, 400)
	db := rebuildMatches(t, set, l, filepath.Join(dir, "scratch"))
	if n := db.Metrics().Levels[0].NumFiles; n < 2 {
		t.Errorf("%d sstables in L0: nothing was ingested mid-replay", n)
	}
	live, err := NewSet(set.Projections()...)
	if err != nil {
		t.Fatal(err)
	}
	if err := live.Reset(l, l.DB()); err != nil {
		t.Fatal(err)
	}
	if bad, err := set.Compare(l.DB(), db); err != nil || len(bad) != 0 {
		t.Fatalf("after reset: %+v %v", bad, err)
	}
}
