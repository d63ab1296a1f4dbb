package log

import (
	"fmt"
	"runtime"
	"time"

	"github.com/cockroachdb/pebble"
)

// group is the unit of group commit: the requests that share one pebble
// batch and one fsync.
type group struct {
	reqs []*Pending
	recs []Record // all records of reqs, in order: what Apply sees
	size int      // encoded bytes of recs
}

func (g *group) fits(p *Pending) bool {
	return len(g.recs)+len(p.recs) <= maxGroupRecords && g.size+p.size <= maxGroupBytes
}

func (g *group) add(p *Pending) {
	g.reqs = append(g.reqs, p)
	g.recs = append(g.recs, p.recs...)
	g.size += p.size
}

// reset empties g for the next group, dropping its references to callers'
// requests and bodies so that they can be collected.
func (g *group) reset() {
	clear(g.reqs)
	clear(g.recs)
	g.reqs, g.recs, g.size = g.reqs[:0], g.recs[:0], 0
}

// commitLoop is the committer: the only goroutine that assigns positions and
// writes to the log keyspace. It takes the first waiting request, then every
// request already waiting, within the group bounds, and commits them as one
// group. It returns when the request channel is closed and drained.
func (l *Log) commitLoop() {
	defer close(l.committerDone)
	g := &l.group
	var carry *Pending // request that did not fit into the previous group
	open := true
	for open || carry != nil {
		p := carry
		carry = nil
		if p == nil {
			var ok bool
			if p, ok = <-l.reqs; !ok {
				return
			}
		}
		// The appenders answered at the end of the previous commit are
		// runnable but may not have queued their next request yet. Without
		// this yield, closed-loop appenders split into two cohorts that
		// alternate between commits, halving the records per fsync; with it,
		// one fsync serves nearly all of them. It costs nothing when nobody
		// else is runnable, and it is not a timer: latency stays bounded.
		for range maxYields {
			n := len(l.reqs)
			runtime.Gosched()
			if len(l.reqs) == n {
				break
			}
		}
		g.add(p)
	gather:
		for len(g.recs) < maxGroupRecords && g.size < maxGroupBytes {
			select {
			case q, ok := <-l.reqs:
				if !ok {
					open = false
					break gather
				}
				if !g.fits(q) {
					carry = q
					break gather
				}
				g.add(q)
			default:
				break gather
			}
		}
		l.commitGroup(g)
		g.reset()
	}
}

// commitGroup writes g's records and Apply's rows into one indexed batch,
// commits it with an fsync, publishes Last() and answers the requests, in
// that order, so that an appender that returns sees its own records.
func (l *Log) commitGroup(g *group) {
	if f := l.failure.Load(); f != nil {
		g.finish(0, *f)
		return
	}
	first := l.next
	b := l.db.NewIndexedBatchWithSize(g.size)
	t0 := time.Now()
	if err := l.buildBatch(b, first, g.recs); err != nil {
		_ = b.Close()
		g.finish(0, l.fail(err))
		return
	}
	t1 := time.Now()
	if err := l.commit(b); err != nil {
		// The records may or may not be on disk; they were not acknowledged,
		// and the fsync is never retried: the log is read-only from now on.
		g.finish(0, l.fail(fmt.Errorf("commit at %d: %w", first, err)))
		return
	}
	commit := time.Since(t1)
	l.stats.commitNS.Add(uint64(commit))
	l.stats.groups.Add(1)
	l.stats.records.Add(uint64(len(g.recs)))
	if l.onCommit != nil {
		l.onCommit(len(g.recs), t1.Sub(t0), commit)
	}
	last := first + uint64(len(g.recs)) - 1
	l.next = last + 1
	l.last.Store(last)
	l.notify()
	pos := first
	for _, p := range g.reqs {
		n := uint64(len(p.recs)) // read before finish: p may be recycled after it
		p.finish(pos, nil)
		pos += n
	}
}

// commit commits b durably (unless NoSync) and closes it.
//
// It uses ApplyNoSyncWait followed by SyncWait rather than Commit(Sync):
// the durability is the same, but Commit(Sync) hands an fsync error to
// pebble's Logger.Fatalf, which exits the process, while SyncWait returns it,
// so that the log can fail read-only instead.
func (l *Log) commit(b *pebble.Batch) error {
	if l.noSync {
		err := b.Commit(pebble.NoSync)
		_ = b.Close()
		return err
	}
	if err := l.db.ApplyNoSyncWait(b, pebble.Sync); err != nil {
		_ = b.Close() // pebble has marked b as not reusable; Close only drops it
		return err
	}
	err := b.SyncWait() // must precede Close, even after a failure
	_ = b.Close()
	return err
}

// buildBatch writes recs at positions first... into b, then calls Apply.
func (l *Log) buildBatch(b *pebble.Batch, first uint64, recs []Record) error {
	for i := range recs {
		rec := &recs[i]
		op := b.SetDeferred(keyLen, envelopeLen(rec))
		putKey(op.Key, first+uint64(i))
		putEnvelope(op.Value, rec)
		if err := op.Finish(); err != nil {
			return fmt.Errorf("batch at %d: %w", first, err)
		}
	}
	if l.apply == nil {
		return nil
	}
	if err := l.callApply(b, first, recs); err != nil {
		return fmt.Errorf("apply at %d: %w", first, err)
	}
	return nil
}

// callApply runs Apply, turning a panic into an error: a projection bug
// fails the log (sticky) instead of killing the process mid-commit.
func (l *Log) callApply(b *pebble.Batch, first uint64, recs []Record) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return l.apply(b, first, recs)
}

// finish fails every request of g with err.
func (g *group) finish(first uint64, err error) {
	for _, p := range g.reqs {
		p.finish(first, err)
	}
}
