package log

import (
	"fmt"

	"github.com/cockroachdb/pebble"
)

// group is the unit of group commit: the requests that share one pebble
// batch and one fsync.
type group struct {
	batch *pebble.Batch
	first uint64 // position of recs[0]
	last  uint64 // position of recs[len(recs)-1]
	reqs  []*Pending
	recs  []Record // all records of reqs, in order: what Apply sees
	size  int      // encoded bytes of recs
}

func (g *group) fits(p *Pending) bool {
	return len(g.recs)+len(p.recs) <= maxGroupRecords && g.size+p.size <= maxGroupBytes
}

func (g *group) add(p *Pending) {
	g.reqs = append(g.reqs, p)
	g.recs = append(g.recs, p.recs...)
	g.size += p.size
}

// newGroup returns an empty group, recycled when one is free.
func (l *Log) newGroup() *group {
	select {
	case g := <-l.free:
		return g
	default:
		return &group{}
	}
}

// putGroup recycles g, dropping its references to callers' requests and
// bodies so that they can be collected.
func (l *Log) putGroup(g *group) {
	clear(g.reqs)
	clear(g.recs)
	*g = group{reqs: g.reqs[:0], recs: g.recs[:0]}
	select {
	case l.free <- g:
	default:
	}
}

// commitLoop is the committer: the only goroutine that assigns positions and
// writes to the log keyspace. It takes the first waiting request, waits for
// a slot in the pipeline (while it waits, more requests queue up), then takes
// every request already waiting, within the group bounds, and commits them
// as one group. It returns when the request channel is closed and drained.
func (l *Log) commitLoop() {
	defer close(l.groups)
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
		l.tokens <- struct{}{}
		g := l.newGroup()
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
	}
}

// commitGroup writes g's records and Apply's rows into one indexed batch and
// applies it to pebble without waiting for the fsync, then hands g to the
// acker. Groups reach pebble in log order, and pebble's WAL keeps that order,
// so a group is never durable without every group before it.
func (l *Log) commitGroup(g *group) {
	if f := l.failure.Load(); f != nil {
		l.dropGroup(g, *f)
		return
	}
	b := l.db.NewIndexedBatchWithSize(g.size)
	first := l.next
	for i := range g.recs {
		rec := &g.recs[i]
		op := b.SetDeferred(keyLen, envelopeLen(rec))
		putKey(op.Key, first+uint64(i))
		putEnvelope(op.Value, rec)
		if err := op.Finish(); err != nil {
			_ = b.Close()
			l.dropGroup(g, l.fail(fmt.Errorf("batch at %d: %w", first, err)))
			return
		}
	}
	if l.apply != nil {
		if err := l.callApply(b, first, g.recs); err != nil {
			_ = b.Close()
			l.dropGroup(g, l.fail(fmt.Errorf("apply at %d: %w", first, err)))
			return
		}
	}
	var err error
	if l.noSync {
		err = b.Commit(pebble.NoSync)
	} else {
		// Visible in the memtable now, durable when SyncWait returns; the
		// acker waits, so that the committer can build the next group
		// meanwhile (and see this group's writes through its batch).
		err = l.db.ApplyNoSyncWait(b, pebble.Sync)
	}
	if err != nil {
		// Pebble has marked the batch as not reusable; Close only drops it.
		_ = b.Close()
		l.dropGroup(g, l.fail(fmt.Errorf("commit at %d: %w", first, err)))
		return
	}
	g.batch = b
	g.first = first
	g.last = first + uint64(len(g.recs)) - 1
	l.next = g.last + 1
	l.groups <- g
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

// dropGroup fails every request of a group that was never handed to the
// acker, and releases its pipeline slot.
func (l *Log) dropGroup(g *group, err error) {
	for _, p := range g.reqs {
		p.finish(0, err)
	}
	l.putGroup(g)
	<-l.tokens
}

// ackLoop is the acker: it waits for each group's fsync in log order, then
// publishes Last(), wakes Changed() waiters and answers the appenders, in
// that order, so that an appender that returns sees its own records. After a
// failed fsync it never publishes again: the groups behind the failed one
// are failed too, even if their own sync reports success, because the fsync
// is never retried.
func (l *Log) ackLoop() {
	defer close(l.ackerDone)
	var failed error
	for g := range l.groups {
		var err error
		if !l.noSync {
			// SyncWait must be called before the batch is closed, even after a
			// failure.
			err = g.batch.SyncWait()
		}
		_ = g.batch.Close()
		switch {
		case failed != nil:
			err = failed
		case err != nil:
			failed = l.fail(fmt.Errorf("sync at %d: %w", g.first, err))
			err = failed
		}
		if err != nil {
			for _, p := range g.reqs {
				p.finish(0, err)
			}
		} else {
			l.last.Store(g.last)
			l.notify()
			pos := g.first
			for _, p := range g.reqs {
				n := uint64(len(p.recs))
				p.finish(pos, nil)
				pos += n
			}
		}
		l.putGroup(g)
		<-l.tokens
	}
}
