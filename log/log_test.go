package log

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble"
)

// openTest opens a log in a fresh temporary directory (or dir, if set) and
// closes it at the end of the test unless the test closed it.
func openTest(t testing.TB, opts Options) *Log {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	l, err := Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return l
}

// readAll returns every record of the log, with bodies copied.
func readAll(t testing.TB, l *Log, from uint64) ([]uint64, []Record) {
	t.Helper()
	var seqs []uint64
	var recs []Record
	err := l.Read(from, func(seq uint64, rec Record) error {
		seqs = append(seqs, seq)
		rec.Body = bytes.Clone(rec.Body)
		recs = append(recs, rec)
		return nil
	})
	if err != nil {
		t.Fatalf("Read(%d): %v", from, err)
	}
	return seqs, recs
}

func sameRecord(a, b Record) bool {
	return a.Kind == b.Kind && a.Version == b.Version && bytes.Equal(a.Body, b.Body)
}

func TestAppendGetRead(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<14) // 256 KiB
	appends := []struct {
		name string
		recs []Record
	}{
		{"one", []Record{{Kind: 1, Version: 1, Body: []byte("hello")}}},
		{"empty-body", []Record{{Kind: 2, Version: 0, Body: nil}}},
		{"three", []Record{
			{Kind: 3, Version: 7, Body: []byte{0}},
			{Kind: 255, Version: 255, Body: []byte{0xff, 0x00, 0xff}},
			{Kind: 0, Version: 0, Body: []byte(`{"type":"m.room.message"}`)},
		}},
		{"big", []Record{{Kind: 4, Version: 1, Body: big}}},
		{"after-big", []Record{{Kind: 5, Version: 2, Body: []byte("tail")}}},
	}
	l := openTest(t, Options{})
	if got := l.Last(); got != 0 {
		t.Fatalf("empty log: Last() = %d, want 0", got)
	}
	var want []Record
	for _, a := range appends {
		first, err := l.Append(a.recs...)
		if err != nil {
			t.Fatalf("%s: Append: %v", a.name, err)
		}
		if wantFirst := uint64(len(want)) + 1; first != wantFirst {
			t.Fatalf("%s: first = %d, want %d", a.name, first, wantFirst)
		}
		want = append(want, a.recs...)
		if got := l.Last(); got != uint64(len(want)) {
			t.Fatalf("%s: Last() = %d, want %d", a.name, got, len(want))
		}
	}
	for i, w := range want {
		got, err := l.Get(uint64(i) + 1)
		if err != nil {
			t.Fatalf("Get(%d): %v", i+1, err)
		}
		if !sameRecord(got, w) {
			t.Fatalf("Get(%d) = %+v, want %+v", i+1, got, w)
		}
	}
	for _, seq := range []uint64{0, uint64(len(want)) + 1, 1 << 63} {
		if _, err := l.Get(seq); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%d): err = %v, want ErrNotFound", seq, err)
		}
	}
	for _, from := range []uint64{0, 1, 3, uint64(len(want)), uint64(len(want)) + 1, 1 << 63} {
		seqs, recs := readAll(t, l, from)
		start := max(from, 1)
		wantN := 0
		if start <= uint64(len(want)) {
			wantN = len(want) - int(start) + 1
		}
		if len(recs) != wantN {
			t.Fatalf("Read(%d): %d records, want %d", from, len(recs), wantN)
		}
		for i := range recs {
			if seqs[i] != start+uint64(i) || !sameRecord(recs[i], want[start-1+uint64(i)]) {
				t.Fatalf("Read(%d): record %d = %d %+v", from, i, seqs[i], recs[i])
			}
		}
	}
	// An error from fn stops the scan and comes back as is.
	stop := errors.New("stop")
	n := 0
	if err := l.Read(1, func(uint64, Record) error { n++; return stop }); err != stop || n != 1 {
		t.Fatalf("Read with failing fn: err = %v after %d calls", err, n)
	}
}

func TestGetOwnsBody(t *testing.T) {
	l := openTest(t, Options{})
	body := []byte("mutable")
	if _, err := l.Append(Record{Kind: 1, Body: body}); err != nil {
		t.Fatal(err)
	}
	copy(body, "XXXXXXX") // the caller may reuse its buffer once Append returns
	rec, err := l.Get(1)
	if err != nil {
		t.Fatal(err)
	}
	if string(rec.Body) != "mutable" {
		t.Fatalf("Get(1).Body = %q", rec.Body)
	}
	rec.Body[0] = 'M' // and Get's body is the caller's
	if again, _ := l.Get(1); string(again.Body) != "mutable" {
		t.Fatalf("Get after mutation = %q", again.Body)
	}
}

func TestEmptyAppend(t *testing.T) {
	l := openTest(t, Options{})
	if first, err := l.Append(); first != 0 || err != nil {
		t.Fatalf("Append() = %d, %v", first, err)
	}
	if first, err := l.Submit().Wait(); first != 0 || err != nil {
		t.Fatalf("Submit().Wait() = %d, %v", first, err)
	}
	if l.Last() != 0 {
		t.Fatalf("Last() = %d", l.Last())
	}
}

// body encodes (writer, index) so that a record says who wrote it.
func body(writer, i int) []byte {
	b := make([]byte, 16, 64)
	binary.BigEndian.PutUint64(b, uint64(writer))
	binary.BigEndian.PutUint64(b[8:], uint64(i))
	return append(b, "padding to make the body less tiny"...)
}

func TestConcurrentOrder(t *testing.T) {
	const writers, perWriter = 16, 300
	l := openTest(t, Options{})
	positions := make([][]uint64, writers) // positions[w][i]: where writer w's record i went
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pos := make([]uint64, perWriter)
			// Alternate: a burst of Submits (not waited for one by one), then
			// an Append of two records, so that both paths interleave.
			var pend []*Pending
			var pendIdx []int
			for i := 0; i < perWriter; {
				if i%10 == 9 && i+1 < perWriter {
					first, err := l.Append(Record{Kind: 1, Body: body(w, i)}, Record{Kind: 1, Body: body(w, i+1)})
					if err != nil {
						t.Errorf("Append: %v", err)
						return
					}
					pos[i], pos[i+1] = first, first+1
					i += 2
					continue
				}
				pend = append(pend, l.Submit(Record{Kind: 2, Body: body(w, i)}))
				pendIdx = append(pendIdx, i)
				i++
			}
			for j, p := range pend {
				first, err := p.Wait()
				if err != nil {
					t.Errorf("Wait: %v", err)
					return
				}
				pos[pendIdx[j]] = first
			}
			positions[w] = pos
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	total := uint64(writers * perWriter)
	if l.Last() != total {
		t.Fatalf("Last() = %d, want %d", l.Last(), total)
	}
	seen := make(map[uint64]bool)
	for w, pos := range positions {
		for i, p := range pos {
			if p < 1 || p > total || seen[p] {
				t.Fatalf("writer %d record %d: position %d out of range or duplicated", w, i, p)
			}
			seen[p] = true
			if i > 0 && p <= pos[i-1] {
				t.Fatalf("writer %d: record %d at %d is not after record %d at %d", w, i, p, i-1, pos[i-1])
			}
		}
	}
	seqs, recs := readAll(t, l, 1)
	if uint64(len(recs)) != total {
		t.Fatalf("Read: %d records, want %d", len(recs), total)
	}
	for i, rec := range recs {
		w, j := int(binary.BigEndian.Uint64(rec.Body)), int(binary.BigEndian.Uint64(rec.Body[8:]))
		if seqs[i] != uint64(i)+1 || positions[w][j] != seqs[i] {
			t.Fatalf("record at %d is writer %d's #%d, which was acknowledged at %d", seqs[i], w, j, positions[w][j])
		}
	}
}

// counterKey is a projection row that Apply increments for every record,
// reading its own uncommitted value from the batch.
var counterKey = []byte("p\x01count")

func rowKey(seq uint64) []byte { return binary.BigEndian.AppendUint64([]byte("p\x02"), seq) }

func counter(r pebble.Reader) (uint64, error) {
	v, closer, err := r.Get(counterKey)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, fmt.Errorf("counter is %d bytes", len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

func readCounter(t testing.TB, r pebble.Reader) uint64 {
	t.Helper()
	n, err := counter(r)
	if err != nil {
		t.Fatalf("counter: %v", err)
	}
	return n
}

// countingApply is a projection: a counter of records and one row per record
// holding its body. It fails the group if a body is "fail" or "panic". If
// calls is not nil, it records (first, len(recs)) of every call.
func countingApply(calls *[][2]uint64) func(b *pebble.Batch, first uint64, recs []Record) error {
	return func(b *pebble.Batch, first uint64, recs []Record) error {
		if calls != nil {
			*calls = append(*calls, [2]uint64{first, uint64(len(recs))})
		}
		n, err := counter(b) // sees the writes of earlier groups, even those still syncing
		if err != nil {
			return err
		}
		if n != first-1 {
			return fmt.Errorf("counter %d before position %d", n, first)
		}
		for i, rec := range recs {
			switch string(rec.Body) {
			case "fail":
				return errors.New("projection refused")
			case "panic":
				panic("projection bug")
			}
			if err := b.Set(rowKey(first+uint64(i)), rec.Body, nil); err != nil {
				return err
			}
		}
		return b.Set(counterKey, binary.BigEndian.AppendUint64(nil, first-1+uint64(len(recs))), nil)
	}
}

func TestApplyOrder(t *testing.T) {
	var calls [][2]uint64
	l := openTest(t, Options{Apply: countingApply(&calls)})
	const writers, perWriter = 8, 200
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				if _, err := l.Append(Record{Body: body(w, i)}); err != nil {
					t.Errorf("Append: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	const total = writers * perWriter
	if l.Last() != total || readCounter(t, l.DB()) != total {
		t.Fatalf("Last() = %d, counter = %d, want %d", l.Last(), readCounter(t, l.DB()), total)
	}
	next := uint64(1)
	for _, c := range calls {
		if c[0] != next || c[1] == 0 {
			t.Fatalf("Apply called with first=%d n=%d, want first=%d", c[0], c[1], next)
		}
		next += c[1]
	}
	if next != total+1 {
		t.Fatalf("Apply saw %d records, want %d", next-1, total)
	}
	t.Logf("%d records in %d groups", total, len(calls))
	err := l.Read(1, func(seq uint64, rec Record) error {
		v, closer, err := l.DB().Get(rowKey(seq))
		if err != nil {
			return fmt.Errorf("row %d: %w", seq, err)
		}
		defer closer.Close()
		if !bytes.Equal(v, rec.Body) {
			return fmt.Errorf("row %d = %x, record body %x", seq, v, rec.Body)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestApplyFailureIsAtomicAndSticky(t *testing.T) {
	for _, bad := range []string{"fail", "panic"} {
		t.Run(bad, func(t *testing.T) {
			var calls [][2]uint64
			dir := t.TempDir()
			l := openTest(t, Options{Dir: dir, Apply: countingApply(&calls)})
			if _, err := l.Append(Record{Body: []byte("a")}); err != nil {
				t.Fatal(err)
			}
			// One Append of three records, the last of which Apply refuses: no
			// part of it may become visible.
			_, err := l.Append(Record{Body: []byte("b")}, Record{Body: []byte("c")}, Record{Body: []byte(bad)})
			if !errors.Is(err, ErrFailed) {
				t.Fatalf("failing Append: err = %v, want ErrFailed", err)
			}
			if _, err := l.Append(Record{Body: []byte("d")}); !errors.Is(err, ErrFailed) {
				t.Fatalf("Append after failure: err = %v, want ErrFailed", err)
			}
			if _, err := l.Submit(Record{Body: []byte("e")}).Wait(); !errors.Is(err, ErrFailed) {
				t.Fatalf("Submit after failure: err = %v, want ErrFailed", err)
			}
			check := func(l *Log) {
				t.Helper()
				if l.Last() != 1 {
					t.Fatalf("Last() = %d, want 1", l.Last())
				}
				if _, err := l.Get(2); !errors.Is(err, ErrNotFound) {
					t.Fatalf("Get(2): %v, want ErrNotFound", err)
				}
				for seq := uint64(2); seq <= 4; seq++ {
					if _, closer, err := l.DB().Get(rowKey(seq)); err == nil {
						closer.Close()
						t.Fatalf("projection row of failed record %d is visible", seq)
					}
					var k [keyLen]byte
					putKey(k[:], seq)
					if _, closer, err := l.DB().Get(k[:]); err == nil {
						closer.Close()
						t.Fatalf("failed record %d is in pebble", seq)
					}
				}
				if c := readCounter(t, l.DB()); c != 1 {
					t.Fatalf("counter = %d, want 1", c)
				}
				if rec, err := l.Get(1); err != nil || string(rec.Body) != "a" {
					t.Fatalf("Get(1) = %q, %v: durable data must stay readable", rec.Body, err)
				}
			}
			check(l)
			if err := l.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			// Reopening clears the failure; the failed group never happened.
			calls = nil
			l = openTest(t, Options{Dir: dir, Apply: countingApply(&calls)})
			check(l)
			if first, err := l.Append(Record{Body: []byte("f")}); err != nil || first != 2 {
				t.Fatalf("Append after reopen = %d, %v; want 2", first, err)
			}
		})
	}
}

func TestChangedWakesWaiters(t *testing.T) {
	l := openTest(t, Options{})
	ch := l.Changed()
	if l.Changed() != ch {
		t.Fatal("Changed() returned a new channel without a commit")
	}
	const waiters = 8
	woke := make(chan uint64, waiters)
	for range waiters {
		go func() {
			// The documented pattern: channel first, then Last(), then wait.
			for {
				c := l.Changed()
				if last := l.Last(); last >= 1 {
					woke <- last
					return
				}
				<-c
			}
		}()
	}
	select {
	case <-ch:
		t.Fatal("Changed() closed before any commit")
	default:
	}
	if _, err := l.Append(Record{Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("Changed() not closed after a commit")
	}
	for range waiters {
		select {
		case last := <-woke:
			if last < 1 {
				t.Fatalf("waiter woke with Last() = %d", last)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("waiter not woken")
		}
	}
	if l.Changed() == ch {
		t.Fatal("Changed() returned the closed channel after the commit")
	}
	last := l.Changed()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-last:
	default:
		t.Fatal("Changed() channel not closed by Close")
	}
	select {
	case <-l.Changed():
	default:
		t.Fatal("Changed() after Close is not closed")
	}
}

func TestReopenRecoversLast(t *testing.T) {
	dir := t.TempDir()
	var want []Record
	for round := range 3 {
		l, err := Open(Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		if l.Last() != uint64(len(want)) {
			t.Fatalf("round %d: Last() = %d, want %d", round, l.Last(), len(want))
		}
		for i := range 10 + round {
			rec := Record{Kind: Kind(round), Version: uint8(i), Body: body(round, i)}
			first, err := l.Append(rec)
			if err != nil || first != uint64(len(want))+1 {
				t.Fatalf("round %d: Append = %d, %v", round, first, err)
			}
			want = append(want, rec)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	l := openTest(t, Options{Dir: dir})
	_, recs := readAll(t, l, 1)
	if len(recs) != len(want) {
		t.Fatalf("%d records, want %d", len(recs), len(want))
	}
	for i := range want {
		if !sameRecord(recs[i], want[i]) {
			t.Fatalf("record %d = %+v, want %+v", i+1, recs[i], want[i])
		}
	}
}

func TestCloseDrainsAndRefuses(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	const n = 2000
	pend := make([]*Pending, n)
	for i := range pend {
		pend[i] = l.Submit(Record{Body: body(0, i)})
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for i, p := range pend {
		if first, err := p.Wait(); err != nil || first != uint64(i)+1 {
			t.Fatalf("Pending %d: %d, %v; every append submitted before Close must commit", i, first, err)
		}
	}
	if _, err := l.Append(Record{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
	if _, err := l.Get(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
	if err := l.Read(1, func(uint64, Record) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("Read after Close: %v", err)
	}
	if err := l.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	l = openTest(t, Options{Dir: dir})
	if l.Last() != n {
		t.Fatalf("after reopen Last() = %d, want %d", l.Last(), n)
	}
}

// TestCloseRacesAppends closes the log while appenders are running: every
// append either commits (and is then present after reopen) or fails with
// ErrClosed, and Close does not hang.
func TestCloseRacesAppends(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(Options{Dir: dir, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	acked := make([][]uint64, 8)
	for w := range acked {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				first, err := l.Append(Record{Body: body(w, i)})
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				acked[w] = append(acked[w], first)
			}
		}()
	}
	// Reads running during Close must finish or be refused, not crash pebble.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			err := l.Read(1, func(seq uint64, rec Record) error {
				_, err := l.Get(seq) // re-entering the reader gate
				if errors.Is(err, ErrClosed) {
					return nil
				}
				return err
			})
			if errors.Is(err, ErrClosed) {
				return
			}
			if err != nil {
				t.Errorf("Read: %v", err)
				return
			}
		}
	}()
	time.Sleep(50 * time.Millisecond)
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wg.Wait()
	l = openTest(t, Options{Dir: dir})
	for _, seqs := range acked {
		for _, seq := range seqs {
			if seq > l.Last() {
				t.Fatalf("acknowledged %d lost: Last() = %d", seq, l.Last())
			}
		}
	}
}

func TestCorruptionIsReported(t *testing.T) {
	l := openTest(t, Options{})
	for i := range 5 {
		if _, err := l.Append(Record{Body: body(0, i)}); err != nil {
			t.Fatal(err)
		}
	}
	var k [keyLen]byte
	// An envelope of an unknown format at 2.
	putKey(k[:], 2)
	if err := l.DB().Set(k[:], []byte{99, 1, 1, 'x'}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Get(2); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Get(2): %v, want ErrCorrupt", err)
	}
	if err := l.Read(1, func(uint64, Record) error { return nil }); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Read over bad envelope: %v, want ErrCorrupt", err)
	}
	if err := l.Read(3, func(uint64, Record) error { return nil }); err != nil {
		t.Fatalf("Read past the bad envelope: %v", err)
	}
	// A gap at 4.
	putKey(k[:], 4)
	if err := l.DB().Delete(k[:], pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := l.Read(3, func(uint64, Record) error { return nil }); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Read over a gap: %v, want ErrCorrupt", err)
	}
	if _, err := l.Get(4); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Get of a missing durable record: %v, want ErrCorrupt", err)
	}
	// A missing tail.
	putKey(k[:], 5)
	if err := l.DB().Delete(k[:], pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := l.Read(5, func(uint64, Record) error { return nil }); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Read of a missing tail: %v, want ErrCorrupt", err)
	}
}

func TestOpenRejectsLogNotStartingAtOne(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := l.Append(Record{Body: body(0, i)}); err != nil {
			t.Fatal(err)
		}
	}
	var k [keyLen]byte
	putKey(k[:], 1)
	if err := l.DB().Delete(k[:], pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if l, err := Open(Options{Dir: dir}); !errors.Is(err, ErrCorrupt) {
		if err == nil {
			l.Close()
		}
		t.Fatalf("Open: %v, want ErrCorrupt", err)
	}
}

func TestOpenOptions(t *testing.T) {
	if _, err := Open(Options{}); err == nil {
		t.Fatal("Open without Dir succeeded")
	}
	if _, err := Open(Options{Dir: t.TempDir(), PebbleOptions: &pebble.Options{DisableWAL: true}}); err == nil {
		t.Fatal("Open with DisableWAL succeeded")
	}
	l := openTest(t, Options{PebbleOptions: &pebble.Options{Cache: nil, MemTableSize: 8 << 20}})
	if _, err := l.Append(Record{Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
}

func TestAppendTooLarge(t *testing.T) {
	l := openTest(t, Options{NoSync: true})
	chunk := make([]byte, 64<<20)
	recs := []Record{{Body: chunk}, {Body: chunk}, {Body: chunk}, {Body: chunk}, {Body: chunk}}
	if _, err := l.Append(recs...); err == nil || errors.Is(err, ErrFailed) {
		t.Fatalf("Append of 320 MiB: %v, want a non-sticky error", err)
	}
	if _, err := l.Append(Record{Body: []byte("ok")}); err != nil {
		t.Fatalf("Append after a refused one: %v", err)
	}
}

// TestAllocs pins the allocation budget of the hot paths: a one-record
// Append and the per-record cost of Read allocate nothing on average (pebble
// allocates per group and per iterator, not per record).
func TestAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	l := openTest(t, Options{NoSync: true})
	rec := Record{Kind: 1, Version: 1, Body: benchBody}
	if n := testing.AllocsPerRun(500, func() {
		if _, err := l.Append(rec); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Append: %v allocations per call, want 0", n)
	}
	var sum int
	read := func() {
		if err := l.Read(1, func(_ uint64, rec Record) error { sum += len(rec.Body); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	perRead := testing.AllocsPerRun(20, read)
	for range 2000 {
		if _, err := l.Append(rec); err != nil {
			t.Fatal(err)
		}
	}
	if n := testing.AllocsPerRun(20, read); n > perRead+2 {
		t.Errorf("Read of %d records: %v allocations, %v at %d records: Read allocates per record", l.Last(), n, perRead, 2000)
	}
}

// TestOnCommit: the commit hook sees every durable group once, and the
// counters agree with it.
func TestOnCommit(t *testing.T) {
	var groups, records atomic.Int64
	l := openTest(t, Options{OnCommit: func(n int, apply, commit time.Duration) {
		if n <= 0 || apply < 0 || commit <= 0 {
			t.Errorf("OnCommit(%d, %v, %v)", n, apply, commit)
		}
		groups.Add(1)
		records.Add(int64(n))
	}})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 5; j++ {
				if _, err := l.Append(Record{Kind: 1, Version: 1, Body: []byte("x")}, Record{Kind: 1, Version: 1}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	st := l.Stats()
	if records.Load() != 80 || uint64(records.Load()) != st.Records || uint64(groups.Load()) != st.Groups {
		t.Fatalf("hook saw %d records in %d groups; stats %+v", records.Load(), groups.Load(), st)
	}
}
