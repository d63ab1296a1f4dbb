package log

import (
	"crypto/sha256"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/vfs"
)

// TestPowerLoss simulates power cuts, which SIGKILL does not (the page cache
// survives a killed process): on pebble's strict in-memory file system,
// everything not fsynced is dropped at the cut. Every append acknowledged
// before the cut must survive, with its projection rows, and nothing torn
// may appear.
//
// Track record: its first run lost a whole new log (Last() 0 after the cut),
// because nothing synced the parent directory's entry for the log directory
// that pebble created; Open now creates the directory durably (ensureDir).
func TestPowerLoss(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	fs := vfs.NewStrictMem()
	acked := make(map[uint64][sha256.Size]byte)
	open := func() *Log {
		l, err := Open(Options{Dir: "db", Apply: countingApply(nil), PebbleOptions: &pebble.Options{FS: fs}})
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		return l
	}
	for round := range 6 {
		l := open()
		before := verifyLog(t, l, acked)
		var mu sync.Mutex // orders acks against the cut
		cut := false
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for g := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(seed, uint64(round*100+g)))
				for {
					select {
					case <-stop:
						return
					default:
					}
					b := checksummedBody(rng)
					seq, err := l.Append(Record{Kind: 1, Version: 1, Body: b})
					if err != nil {
						t.Errorf("append: %v", err)
						return
					}
					mu.Lock()
					if !cut { // durable: the fsync was real
						acked[seq] = sha256.Sum256(b)
					}
					mu.Unlock()
				}
			}()
		}
		time.Sleep(time.Duration(10+rng.IntN(60)) * time.Millisecond)
		mu.Lock()
		cut = true
		fs.SetIgnoreSyncs(true) // from now on nothing reaches the "disk"
		mu.Unlock()
		time.Sleep(time.Duration(rng.IntN(10)) * time.Millisecond)
		close(stop)
		wg.Wait()
		if err := l.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		fs.ResetToSyncedState() // the power cut
		fs.SetIgnoreSyncs(false)
		l = open()
		last := verifyLog(t, l, acked)
		t.Logf("round %d: Last() %d -> %d after the cut", round, before, last)
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if t.Failed() {
			return
		}
	}
}
