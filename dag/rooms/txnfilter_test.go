package rooms

import (
	"fmt"
	"sync"
	"testing"

	"engram/log"
	"engram/projections"
)

func TestTxnScopeOf(t *testing.T) {
	for _, c := range []struct {
		txn, scope string
		ok         bool
	}{
		{"@a:x\x00DEV\x00!r:x\x00t1", "@a:x\x00DEV\x00", true},
		{"@a:x\x00DEV\x00!r:x\x01redact\x00t1", "@a:x\x00DEV\x00", true},
		{"@a:x\x00\x00", "@a:x\x00\x00", true},
		{"@a:x\x00DEV", "", false},
		{"plain", "", false},
		{"", "", false},
	} {
		scope, ok := txnScopeOf(c.txn)
		if scope != c.scope || ok != c.ok {
			t.Errorf("txnScopeOf(%q) = %q, %v; want %q, %v", c.txn, scope, ok, c.scope, c.ok)
		}
	}
}

// TestTxnFilterNoIsExact: whatever was stored before learning or added
// after, the filter never answers "no" for it; unknown keys mostly get "no".
func TestTxnFilterNoIsExact(t *testing.T) {
	stored := map[string][]string{}
	keys := func(prefix string, fn func([]byte) bool) error {
		for _, k := range stored[prefix] {
			if !fn([]byte(k)) {
				break
			}
		}
		return nil
	}
	f := newTxnFilter()
	scope := "@a:x\x00D\x00"
	for i := 0; i < 1000; i++ {
		stored[scope] = append(stored[scope], fmt.Sprintf("%s!r\x00old%d", scope, i))
	}
	if !f.mayHave(scope+"!r\x00old7", keys) {
		t.Fatal("a stored transaction is unknown after learning")
	}
	for i := 0; i < 5000; i++ { // past several layers
		f.add(fmt.Sprintf("%s!r\x00new%d", scope, i))
	}
	for i := 0; i < 1000; i++ {
		if !f.mayHave(fmt.Sprintf("%s!r\x00old%d", scope, i), keys) {
			t.Fatalf("stored old%d answered no", i)
		}
	}
	for i := 0; i < 5000; i++ {
		if !f.mayHave(fmt.Sprintf("%s!r\x00new%d", scope, i), keys) {
			t.Fatalf("added new%d answered no", i)
		}
	}
	maybe := 0
	for i := 0; i < 10000; i++ {
		if f.mayHave(fmt.Sprintf("%s!r\x00other%d", scope, i), keys) {
			maybe++
		}
	}
	if maybe > 1000 { // ~1% per layer expected; a broken filter says maybe to all
		t.Fatalf("%d of 10000 unknown transactions answered maybe", maybe)
	}
	// A key without a scope is always looked up; an add before the scope
	// is learned is left to the learning scan.
	if !f.mayHave("noscope", keys) {
		t.Fatal("a key without a scope answered no")
	}
	f.add("@b:x\x00D\x00!r\x00t") // not learned: dropped
	stored["@b:x\x00D\x00"] = []string{"@b:x\x00D\x00!r\x00t"}
	if !f.mayHave("@b:x\x00D\x00!r\x00t", keys) {
		t.Fatal("a stored transaction of a new scope answered no")
	}
}

// TestTxnFilterFailedScan: a scope whose scan fails always answers maybe.
func TestTxnFilterFailedScan(t *testing.T) {
	f := newTxnFilter()
	keys := func(string, func([]byte) bool) error { return fmt.Errorf("boom") }
	for i := 0; i < 3; i++ {
		if !f.mayHave("@a:x\x00D\x00!r\x00t", keys) {
			t.Fatal("an unlearned scope answered no")
		}
	}
}

// TestSendTxnAcrossRestart: a transaction sent before a restart answers its
// first event after it, through a fresh sequencer whose filter learns the
// device from the store, and a new transaction of that device still sends.
func TestSendTxnAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	set, _ := projections.All()
	open := func() (*log.Log, *projections.Store) {
		l, err := log.Open(log.Options{Dir: dir, Apply: set.Apply, NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		st, err := projections.NewStore(l, l.DB(), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		return l, st
	}
	l, st := open()
	w := &world{log: l, store: st}
	w0 := newWorld(t) // for a key
	cfg := w0.seq.cfg
	w.seq = New(cfg, l, st)
	room := w.createRoom(t, "12", "@a:x", "public")
	msg := func(seq *Sequencer, txn string) string {
		t.Helper()
		res, err := seq.Send(Event{Room: room, Sender: "@a:x", Type: "m.room.message",
			Content: obj(map[string]any{"body": txn}), Txn: "@a:x\x00D\x00" + room + "\x00" + txn})
		if err != nil {
			t.Fatal(err)
		}
		return res.EventID
	}
	first := make([]string, 50)
	for i := range first {
		first[i] = msg(w.seq, fmt.Sprint("t", i))
	}
	if again := msg(w.seq, "t3"); again != first[3] {
		t.Fatalf("retry before restart: %s, want %s", again, first[3])
	}
	st.Close()
	l.Close()

	l, st = open()
	defer func() { st.Close(); l.Close() }()
	seq := New(cfg, l, st)
	// Retries of every stored transaction, concurrently, right after the
	// restart: the first ask learns the device while others look up.
	var wg sync.WaitGroup
	got := make([]string, len(first))
	for i := range first {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := seq.Send(Event{Room: room, Sender: "@a:x", Type: "m.room.message",
				Content: obj(map[string]any{"body": "x"}), Txn: fmt.Sprintf("@a:x\x00D\x00%s\x00t%d", room, i)})
			if err != nil {
				t.Error(err)
				return
			}
			got[i] = res.EventID
		}()
	}
	wg.Wait()
	for i := range first {
		if got[i] != first[i] {
			t.Fatalf("retry of t%d after restart: %s, want %s", i, got[i], first[i])
		}
	}
	fresh := msg(seq, "new")
	for _, id := range first {
		if id == fresh {
			t.Fatal("a new transaction answered an old event")
		}
	}
	if again := msg(seq, "new"); again != fresh {
		t.Fatalf("retry of a new transaction after restart: %s, want %s", again, fresh)
	}
	tl, err := st.Timeline(room, 0, l.Last()+1, false, 1000)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, q := range tl {
		if rec, err := st.Record(q); err == nil && rec.Type == "m.room.message" {
			n++
		}
	}
	if n != len(first)+1 {
		t.Fatalf("%d messages, want %d", n, len(first)+1)
	}
}

// TestSendTxnRetriesLearnedDevice: with the device learned (the common
// case, every lookup answered from memory), concurrent retries of one new
// transaction, in waves overlapping the first send's completion, make one
// event; so does a retry arriving after it is done.
func TestSendTxnRetriesLearnedDevice(t *testing.T) {
	w := newWorld(t)
	room := w.createRoom(t, "12", "@a:x", "public")
	send := func(txn string) (string, error) {
		res, err := w.seq.Send(Event{Room: room, Sender: "@a:x", Type: "m.room.message",
			Content: obj(map[string]any{"body": "x"}), Txn: "@a:x\x00D\x00" + room + "\x00" + txn})
		return res.EventID, err
	}
	if _, err := send("warm"); err != nil { // learns the device
		t.Fatal(err)
	}
	for wave := 0; wave < 30; wave++ {
		txn := fmt.Sprint("w", wave)
		ids := make([]string, 12)
		var wg sync.WaitGroup
		for g := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id, err := send(txn)
				if err != nil {
					t.Error(err)
				}
				ids[g] = id
			}()
		}
		wg.Wait()
		for _, id := range ids {
			if id != ids[0] {
				t.Fatalf("wave %d: %v", wave, ids)
			}
		}
		if id, err := send(txn); err != nil || id != ids[0] {
			t.Fatalf("wave %d: late retry %s %v, want %s", wave, id, err, ids[0])
		}
	}
	tl, _ := w.store.Timeline(room, 0, w.log.Last()+1, false, 1000)
	n := 0
	for _, q := range tl {
		if rec, err := w.store.Record(q); err == nil && rec.Type == "m.room.message" {
			n++
		}
	}
	if n != 31 {
		t.Fatalf("%d messages, want 31", n)
	}
}
