package log

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/bloom"
	"github.com/cockroachdb/pebble/vfs"
)

// Kind says what a record is. The log stores it and never interprets it; the
// values are assigned by the packages that write records.
type Kind uint8

// Record is one log entry. Body is kind-specific (msgpack, or a PDU's exact
// JSON inside a msgpack body); the log never interprets it. Version is the
// version of Body's encoding for this Kind, so that readers can keep decoding
// records written by older releases.
type Record struct {
	Kind    Kind
	Version uint8
	Body    []byte
}

var (
	// ErrNotFound is returned by Get for a position that is not in the log
	// (0, or beyond Last()).
	ErrNotFound = errors.New("log: not found")
	// ErrClosed is returned by Append, Submit, Get and Read after Close, and
	// by Close itself the second time.
	ErrClosed = errors.New("log: closed")
	// ErrFailed marks the sticky failure of the log: a commit, an fsync or an
	// Apply failed. The error returned wraps both ErrFailed and the cause
	// (errors.Is works for both). Once failed, the log is read-only until it is
	// closed and reopened; what is durable stays readable.
	ErrFailed = errors.New("log: failed")
	// ErrCorrupt marks stored data that cannot be decoded: a malformed key or
	// envelope, an unknown envelope format, or a gap in the positions.
	ErrCorrupt = errors.New("log: corrupt")
)

// Group-commit bounds. A group closes when the next waiting request would
// take it past either bound, which keeps the latency of one commit (and the
// memory of one batch) bounded under any load. A single request larger than
// the bounds is committed alone: an Append is never split across batches.
const (
	maxGroupRecords = 4096
	maxGroupBytes   = 1 << 20 // encoded envelopes, not counting what Apply adds
	// maxRequestBytes caps one Append: pebble panics on batches near 4 GiB,
	// and nothing may panic on input.
	maxRequestBytes = 256 << 20
	// maxYields bounds how often the committer yields, before gathering a
	// group, to let just-acknowledged appenders queue their next request
	// (see commitLoop).
	maxYields = 8
	// queueLen is the capacity of the request channel. Submit blocks when it
	// is full, which is the log's back-pressure.
	queueLen = 4096
)

// Options configures Open.
type Options struct {
	// Dir is the pebble directory. It is created if missing.
	Dir string
	// Apply, if set, is called by the single committer goroutine for every
	// group of records, in log order, before the commit, with the indexed batch
	// that will hold them (so projections can read their own earlier
	// uncommitted writes via b.Get / b.NewIter). first is the position of
	// recs[0]; positions are consecutive. recs and their bodies are valid only
	// during the call. Apply must not commit, close or reset b, and must not
	// write keys in the log keyspace ('l' prefix); it must not call Append,
	// Submit or Close (the committer would wait for itself). Like every fold
	// over the log, it must be deterministic (ARCHITECTURE.md). An error (or a
	// panic) fails the whole group and makes the log read-only (sticky).
	Apply func(b *pebble.Batch, first uint64, recs []Record) error
	// OnCommit, if set, is called by the committer after each durable group
	// commit with the group's record count, the time Apply took and the time
	// of the commit itself (write plus fsync). For metrics: it must be quick
	// and must not block or call into the log.
	OnCommit func(records int, apply, commit time.Duration)
	// NoSync skips the fsync. For tests and benchmarks only: Append then
	// returns before the records are durable.
	NoSync bool
	// PebbleOptions overrides pebble's options (cache size, etc.). Open hands
	// them to pebble.Open, which fills in defaults and keeps them; do not share
	// one value between two logs. Nil means pebble's defaults with a 64 MiB
	// memtable. DisableWAL is refused.
	PebbleOptions *pebble.Options
}

// Log is an append-only log of records on pebble. All methods are safe for
// concurrent use. See the package documentation for the contract.
type Log struct {
	db       *pebble.DB
	apply    func(b *pebble.Batch, first uint64, recs []Record) error
	noSync   bool
	onCommit func(records int, apply, commit time.Duration)

	// last is the last durable position, published by the committer only
	// after the group holding it is synced. Readers never look past it.
	last atomic.Uint64
	// next is the position the next group starts at. Committer only.
	next uint64

	// sendMu makes "check closed, then send" atomic with respect to Close,
	// so that no request is sent on the closed channel and none is left in
	// it unanswered.
	sendMu sync.RWMutex
	closed bool // guarded by sendMu
	reqs   chan *Pending

	group         group         // the committer's, reused for every group
	committerDone chan struct{} // closed when the committer has exited

	failure atomic.Pointer[error] // sticky; wraps ErrFailed
	changed atomic.Pointer[notifier]
	readers gate

	stats struct{ groups, records, commitNS atomic.Uint64 }
}

// Stats are cumulative counters of the committer, for metrics: Records /
// Groups is the mean group-commit size, CommitSeconds / Groups the mean time
// of one durable commit (batch write plus fsync; the projections' Apply
// before it is not counted).
type Stats struct {
	Groups, Records uint64
	CommitSeconds   float64
}

// Stats returns the committer's counters.
func (l *Log) Stats() Stats {
	return Stats{
		Groups:        l.stats.groups.Load(),
		Records:       l.stats.records.Load(),
		CommitSeconds: float64(l.stats.commitNS.Load()) / 1e9,
	}
}

// notifier is one generation of Changed(): its channel is closed at the next
// durable commit.
type notifier struct{ ch chan struct{} }

// closedNotifier is what Changed returns after Close.
var closedNotifier = func() *notifier {
	n := &notifier{ch: make(chan struct{})}
	close(n.ch)
	return n
}()

// Pending is an enqueued append. Its result is available through Wait.
type Pending struct {
	wg     sync.WaitGroup
	recs   []Record
	size   int // encoded bytes of recs
	first  uint64
	err    error
	inline [1]Record // recs for the common one-record append, without an allocation
}

// Wait blocks until the records of p are durable (fsynced) or have failed,
// and returns the position of the first one; the others follow
// consecutively. It may be called any number of times, from any goroutine.
func (p *Pending) Wait() (first uint64, err error) {
	p.wg.Wait()
	return p.first, p.err
}

// finish publishes the result of p. Nothing may touch p after it.
func (p *Pending) finish(first uint64, err error) {
	p.first, p.err = first, err
	p.wg.Done()
}

// pendingPool recycles the requests of Append, which owns them from Get to
// Put; Submit's Pendings escape to the caller and are never recycled.
var pendingPool = sync.Pool{New: func() any {
	p := new(Pending)
	p.recs = p.inline[:0]
	return p
}}

// DefaultPebbleOptions are the options of a log opened without its own: a
// 64 MiB memtable, and a bloom filter in every table, because the
// projections look up many keys that do not exist (transaction IDs, push
// rules of users who have none, redactions of events that have none),
// which without a filter cost a block read per level.
func DefaultPebbleOptions() *pebble.Options {
	o := &pebble.Options{MemTableSize: 64 << 20, Levels: make([]pebble.LevelOptions, 7)}
	for i := range o.Levels {
		o.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
		o.Levels[i].FilterType = pebble.TableFilter
	}
	return o
}

// Open opens (or creates) the log in opts.Dir and recovers Last() from the
// last stored record.
func Open(opts Options) (*Log, error) {
	if opts.Dir == "" {
		return nil, errors.New("log: open: Options.Dir is empty")
	}
	popts := opts.PebbleOptions
	if popts == nil {
		popts = DefaultPebbleOptions()
	}
	if popts.DisableWAL {
		return nil, errors.New("log: open: pebble DisableWAL is set; the log needs the WAL for durability")
	}
	fs := popts.FS
	if fs == nil {
		fs = vfs.Default
	}
	if err := ensureDir(fs, opts.Dir); err != nil {
		return nil, fmt.Errorf("log: open %s: %w", opts.Dir, err)
	}
	db, err := pebble.Open(opts.Dir, popts)
	if err != nil {
		return nil, fmt.Errorf("log: open %s: %w", opts.Dir, err)
	}
	last, err := recoverLast(db)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("log: open %s: %w", opts.Dir, err)
	}
	l := &Log{
		db:            db,
		apply:         opts.Apply,
		noSync:        opts.NoSync,
		onCommit:      opts.OnCommit,
		next:          last + 1,
		reqs:          make(chan *Pending, queueLen),
		committerDone: make(chan struct{}),
	}
	l.last.Store(last)
	l.readers.done = make(chan struct{})
	go l.commitLoop()
	return l, nil
}

// ensureDir creates dir and its missing parents durably: pebble syncs the
// files inside its directory, but not the parent's entry for the directory
// itself, and a power cut could otherwise lose a new log with everything in
// it.
func ensureDir(fs vfs.FS, dir string) error {
	if _, err := fs.Stat(dir); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	parent := fs.PathDir(dir)
	if parent != dir {
		if err := ensureDir(fs, parent); err != nil {
			return err
		}
	}
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	d, err := fs.OpenDir(parent)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// recoverLast returns the position of the last record, checking that the log
// starts at 1 and that the last record decodes.
func recoverLast(db *pebble.DB) (uint64, error) {
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: keyLower, UpperBound: keyUpper})
	if err != nil {
		return 0, err
	}
	var last uint64
	if it.First() {
		first, err := decodeKey(it.Key())
		if err != nil {
			_ = it.Close()
			return 0, err
		}
		if first != 1 {
			_ = it.Close()
			return 0, fmt.Errorf("%w: first record is at %d, not 1", ErrCorrupt, first)
		}
		if !it.Last() {
			_ = it.Close()
			return 0, fmt.Errorf("log: seek last: %w", it.Error())
		}
		if last, err = decodeKey(it.Key()); err != nil {
			_ = it.Close()
			return 0, err
		}
		v, err := it.ValueAndErr()
		if err == nil {
			_, err = decodeEnvelope(v)
		}
		if err != nil {
			_ = it.Close()
			return 0, fmt.Errorf("record %d: %w", last, err)
		}
	}
	if err := it.Close(); err != nil {
		return 0, err
	}
	return last, nil
}

// Append appends recs atomically and returns after they are durable
// (fsynced). Their positions are first..first+len(recs)-1. Appends that wait
// at the same time share one batch and one fsync. recs may be reused once
// Append returns. Appending no records returns (0, nil) at once.
func (l *Log) Append(recs ...Record) (first uint64, err error) {
	p := pendingPool.Get().(*Pending)
	l.submit(p, recs)
	first, err = p.Wait()
	clear(p.recs)
	if cap(p.recs) > 64 {
		p.recs = p.inline[:0]
	} else {
		p.recs = p.recs[:0]
	}
	p.err = nil
	pendingPool.Put(p)
	return first, err
}

// Submit enqueues recs without waiting for them to be durable. The order of
// Submit calls from one goroutine is the log order of their records. Submit
// blocks only when the queue is full. The records' bodies must not be
// modified until Wait returns; the recs slice itself may be reused at once.
func (l *Log) Submit(recs ...Record) *Pending {
	p := new(Pending)
	p.recs = p.inline[:0]
	l.submit(p, recs)
	return p
}

// submit copies recs into p and hands p to the committer, or finishes it
// with the reason why it cannot be appended.
func (l *Log) submit(p *Pending, recs []Record) {
	p.wg.Add(1)
	p.recs = append(p.recs[:0], recs...)
	p.size = 0
	for i := range p.recs {
		p.size += keyLen + envelopeLen(&p.recs[i])
	}
	if p.size > maxRequestBytes {
		p.finish(0, fmt.Errorf("log: append of %d bytes exceeds the limit of %d", p.size, maxRequestBytes))
		return
	}
	l.sendMu.RLock()
	switch {
	case l.closed:
		p.finish(0, ErrClosed)
	case l.failure.Load() != nil:
		p.finish(0, *l.failure.Load())
	case len(p.recs) == 0:
		p.finish(0, nil)
	default:
		l.reqs <- p
	}
	l.sendMu.RUnlock()
}

// Last returns the last durable position; 0 means the log is empty.
// Positions start at 1.
func (l *Log) Last() uint64 { return l.last.Load() }

// Get returns the record at seq, with a Body the caller owns. It returns
// ErrNotFound if seq is 0 or beyond Last().
func (l *Log) Get(seq uint64) (Record, error) {
	if !l.readers.enter() {
		return Record{}, ErrClosed
	}
	defer l.readers.exit()
	if seq == 0 || seq > l.last.Load() {
		return Record{}, ErrNotFound
	}
	var key [keyLen]byte
	putKey(key[:], seq)
	v, closer, err := l.db.Get(key[:])
	if err != nil {
		if errors.Is(err, pebble.ErrNotFound) {
			return Record{}, fmt.Errorf("log: get %d: %w: durable record missing", seq, ErrCorrupt)
		}
		return Record{}, fmt.Errorf("log: get %d: %w", seq, err)
	}
	rec, err := decodeEnvelope(v)
	rec.Body = bytes.Clone(rec.Body)
	_ = closer.Close()
	if err != nil {
		return Record{}, fmt.Errorf("log: get %d: %w", seq, err)
	}
	return rec, nil
}

// Read calls fn for every record from position from (inclusive; 0 counts as
// 1) up to Last() at the time of the call, in order. rec.Body is borrowed:
// it is valid only during fn. An error from fn stops the scan and is returned
// as is. fn may call other methods of l, except Close.
func (l *Log) Read(from uint64, fn func(seq uint64, rec Record) error) error {
	if !l.readers.enter() {
		return ErrClosed
	}
	defer l.readers.exit()
	last := l.last.Load()
	if from == 0 {
		from = 1
	}
	if from > last {
		return nil
	}
	var lower, upper [keyLen]byte
	putKey(lower[:], from)
	putKey(upper[:], last+1)
	it, err := l.db.NewIter(&pebble.IterOptions{LowerBound: lower[:], UpperBound: upper[:]})
	if err != nil {
		return fmt.Errorf("log: read: %w", err)
	}
	want := from
	for ok := it.First(); ok; ok = it.Next() {
		seq, err := decodeKey(it.Key())
		if err == nil && seq != want {
			err = fmt.Errorf("%w: record %d missing (next is %d)", ErrCorrupt, want, seq)
		}
		var v []byte
		if err == nil {
			v, err = it.ValueAndErr()
		}
		var rec Record
		if err == nil {
			rec, err = decodeEnvelope(v)
		}
		if err != nil {
			_ = it.Close()
			return fmt.Errorf("log: read %d: %w", want, err)
		}
		if err := fn(seq, rec); err != nil {
			_ = it.Close()
			return err
		}
		want++
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("log: read %d: %w", want, err)
	}
	if want != last+1 {
		return fmt.Errorf("log: read: %w: record %d missing (last is %d)", ErrCorrupt, want, last)
	}
	return nil
}

// Changed returns a channel that is closed at the next durable commit (and
// when the log fails or closes). It is cheap to call often. To wait for
// records past a position, take the channel first, then check Last(), then
// wait: a commit between the two is not missed. After Close it returns a
// closed channel.
func (l *Log) Changed() <-chan struct{} {
	for {
		if n := l.changed.Load(); n != nil {
			return n.ch
		}
		n := &notifier{ch: make(chan struct{})}
		if l.changed.CompareAndSwap(nil, n) {
			return n.ch
		}
	}
}

// notify wakes the waiters of Changed. A new channel is made only when
// someone asks for one, so commits nobody waits for cost nothing here.
func (l *Log) notify() {
	if n := l.changed.Swap(nil); n != nil {
		close(n.ch)
	}
}

// DB returns the pebble database, for projections' reads of committed rows.
// Pebble makes a batch visible before its fsync completes, so rows may run
// slightly ahead of Last(); readers that must see only durable data bound
// themselves by Last(). The log owns the database: do not close it, and do
// not use it after Close.
func (l *Log) DB() *pebble.DB { return l.db }

// Close stops accepting appends, commits every append submitted before it
// (acknowledged writes are never lost), waits for running reads, and closes
// pebble. Close does not wait for anything but the log's own work and
// in-progress Read calls; it must not be called from inside Read's fn or
// Apply. A second Close returns ErrClosed.
func (l *Log) Close() error {
	l.sendMu.Lock()
	if l.closed {
		l.sendMu.Unlock()
		return ErrClosed
	}
	l.closed = true
	close(l.reqs)
	l.sendMu.Unlock()

	<-l.committerDone
	l.readers.closeAndWait()
	if n := l.changed.Swap(closedNotifier); n != nil {
		close(n.ch)
	}
	if err := l.db.Close(); err != nil {
		return fmt.Errorf("log: close: %w", err)
	}
	return nil
}

// fail makes the log read-only with cause, once, and returns the sticky
// error (the first cause wins).
func (l *Log) fail(cause error) error {
	err := fmt.Errorf("%w: %w", ErrFailed, cause)
	if l.failure.CompareAndSwap(nil, &err) {
		l.notify()
		return err
	}
	return *l.failure.Load()
}

// gate counts the readers using the pebble database so that Close can wait
// for them; unlike a RWMutex it lets a reader re-enter (Get inside Read's fn)
// while Close is waiting.
type gate struct {
	n    atomic.Int64
	once sync.Once
	done chan struct{}
}

const gateClosed = 1 << 62

func (g *gate) enter() bool {
	if g.n.Add(1)&gateClosed != 0 {
		g.exit()
		return false
	}
	return true
}

func (g *gate) exit() {
	if g.n.Add(-1) == gateClosed {
		g.once.Do(func() { close(g.done) })
	}
}

func (g *gate) closeAndWait() {
	if g.n.Add(gateClosed) != gateClosed {
		<-g.done
	}
}
