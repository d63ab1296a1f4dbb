package log

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestZZRounds(t *testing.T) {
	dir := t.TempDir()
	for round := range 6 {
		var calls [][2]uint64
		l, err := Open(Options{Dir: dir, Apply: countingApply(&calls)})
		if err != nil {
			t.Fatal(err)
		}
		var n atomic.Int64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for g := range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(1, uint64(g)))
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := l.Append(Record{Body: checksummedBody(rng)}); err != nil {
						t.Error(err)
						return
					}
					n.Add(1)
				}
			}()
		}
		time.Sleep(300 * time.Millisecond)
		close(stop)
		wg.Wait()
		t.Logf("round %d: %d appends in 300ms, %d groups", round, n.Load(), len(calls))
		l.Close()
	}
}
