// Package projections holds engram's materialized views: deterministic folds
// over the log. Each projection owns the keyspace 'p' ‖ ID and a checkpoint
// 'c' ‖ ID (the last log position it applied). Live, a projection applies
// records inside the same Pebble batch as the records themselves (the log's
// Apply hook), so rows, checkpoint and records become durable together. A
// projection can be thrown away and rebuilt by replaying the log; Digest
// proves the rebuild equal.
//
// Determinism: Apply depends only on the record and rows written by earlier
// records. No clock, randomness, network or map iteration order.
package projections

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/cockroachdb/pebble"

	"engram/log"
)

const (
	rowPrefix        = 'p'
	checkpointPrefix = 'c'
	versionPrefix    = 'v'
)

// Versioned is a projection whose row format has changed since it was
// first released: Version is the format its code writes. CatchUp rebuilds
// a projection from the log when the format of its stored rows is another
// (a projection without Version writes format 0).
type Versioned interface {
	Version() uint32
}

func formatOf(p Projection) uint32 {
	if v, ok := p.(Versioned); ok {
		return v.Version()
	}
	return 0
}

// migrate drops the rows and checkpoint of every projection whose stored
// format is not the one its code writes, so CatchUp folds it anew.
func (s *Set) migrate(db *pebble.DB) error {
	b := db.NewBatch()
	defer b.Close()
	for _, p := range s.all {
		want := formatOf(p)
		got := uint32(0)
		v, closer, err := db.Get([]byte{versionPrefix, p.ID()})
		if err == nil {
			if len(v) == 4 {
				got = binary.BigEndian.Uint32(v)
			}
			closer.Close()
		} else if !errors.Is(err, pebble.ErrNotFound) {
			return err
		}
		if got == want {
			continue
		}
		if err := b.DeleteRange([]byte{rowPrefix, p.ID()}, []byte{rowPrefix, p.ID() + 1}, nil); err != nil {
			return err
		}
		if err := b.Delete([]byte{checkpointPrefix, p.ID()}, nil); err != nil {
			return err
		}
		if err := b.Set([]byte{versionPrefix, p.ID()}, binary.BigEndian.AppendUint32(nil, want), nil); err != nil {
			return err
		}
	}
	if b.Empty() {
		return nil
	}
	return b.Commit(pebble.Sync)
}

// Projection is one view.
type Projection interface {
	// ID is the projection's keyspace byte; unique within a Set, never reused.
	ID() byte
	// Name is for logs and digests.
	Name() string
	// Apply folds one record into the view. v is the record's decoded body
	// (Decode); projections ignore kinds they do not fold.
	Apply(tx *Tx, seq uint64, v any) error
}

// Tx is a projection's view of the batch being built: keys are relative to
// the projection's keyspace. Reads see earlier writes of the same batch (r
// is the indexed batch itself, or, in replay, the database after the batch
// was cut). A projection that reads rows to apply a record must say so by
// implementing NeedsRead(v any) bool.
type Tx struct {
	b    *pebble.Batch
	r    pebble.Reader
	id   byte
	kbuf []byte
	// memo caches what Get read in this batch, kept current by Set and
	// Delete: a projection that reads the same rows for many records of a
	// batch (push room info, member rows and rules, for every event of a busy room) pays
	// for one read. Only keys read before are tracked, so it stays small.
	memo map[string]*memoEntry
	// scratch is per-batch space for a projection's own derived caches
	// (each is responsible for forgetting what its writes invalidate).
	scratch map[string]any
	// keep is a projection's own cache across batches (reset leaves it):
	// it may hold only what committed rows say (push.go, pushKeep).
	keep any
	// w, in replay, buffers point writes to add them to b sorted (replay.go).
	w *writeBuf
	// track, in replay, keeps every write in memo, so that reads see
	// what w buffers (replay.go), but those of rows under the prefix
	// byte unread (if not 0), which the fold never reads.
	track  bool
	unread byte
}

type memoEntry struct {
	v  []byte
	ok bool
}

// remember sets the memo of k (an entry is updated in place: a row
// rewritten for every record costs no allocation).
func (t *Tx) remember(k, v []byte, ok bool) {
	if e := t.memo[string(k)]; e != nil {
		e.v, e.ok = append(e.v[:0], v...), ok
		return
	}
	if t.memo == nil {
		t.memo = map[string]*memoEntry{}
	}
	t.memo[string(k)] = &memoEntry{append([]byte(nil), v...), ok}
}

// reset points t at a new batch, forgetting what it read.
func (t *Tx) reset(b *pebble.Batch, r pebble.Reader) {
	t.b, t.r = b, r
	clear(t.memo)
	clear(t.scratch)
}

func (t *Tx) key(k []byte) []byte {
	t.kbuf = append(append(t.kbuf[:0], rowPrefix, t.id), k...)
	return t.kbuf
}

// Get returns a copy of the value at k, or nil, false.
func (t *Tx) Get(k []byte) ([]byte, bool, error) {
	if e := t.memo[string(k)]; e != nil {
		if !e.ok {
			return nil, false, nil
		}
		return append([]byte(nil), e.v...), true, nil
	}
	v, ok, err := t.read(k)
	if err != nil {
		return nil, false, err
	}
	t.remember(k, v, ok)
	return v, ok, nil
}

func (t *Tx) read(k []byte) ([]byte, bool, error) {
	v, closer, err := t.r.Get(t.key(k))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	out := append([]byte(nil), v...)
	closer.Close()
	return out, true, nil
}

// Set writes k = v. The batch copies both.
func (t *Tx) Set(k, v []byte) error {
	if t.track && (t.unread == 0 || len(k) == 0 || k[0] != t.unread) {
		t.remember(k, v, true)
	} else if e := t.memo[string(k)]; e != nil {
		e.v, e.ok = append(e.v[:0], v...), true
	}
	if t.w != nil {
		t.w.add(t.key(k), v, false)
		return nil
	}
	return t.b.Set(t.key(k), v, nil)
}

// Delete removes k.
func (t *Tx) Delete(k []byte) error {
	if t.track && (t.unread == 0 || len(k) == 0 || k[0] != t.unread) {
		t.remember(k, nil, false)
	} else if e := t.memo[string(k)]; e != nil {
		e.v, e.ok = e.v[:0], false
	}
	if t.w != nil {
		t.w.add(t.key(k), nil, true)
		return nil
	}
	return t.b.Delete(t.key(k), nil)
}

// Set is the group of projections a server runs. Every projection folds
// inside the log's append batch (Apply), so a record and everything it
// changes become durable, and visible, together.
type Set struct {
	all []Projection // every projection, sorted as given
	tx  []Tx
}

// NewSet groups projections; their IDs must be distinct.
func NewSet(ps ...Projection) (*Set, error) {
	seen := map[byte]string{}
	s := &Set{all: ps}
	for _, p := range ps {
		if other, dup := seen[p.ID()]; dup {
			return nil, fmt.Errorf("projections: %s and %s share ID %q", other, p.Name(), p.ID())
		}
		seen[p.ID()] = p.Name()
		s.tx = append(s.tx, Tx{id: p.ID()})
	}
	return s, nil
}

// Projections returns the members of the set.
func (s *Set) Projections() []Projection { return s.all }

// Apply is the log's Apply hook: it folds recs (positions first, first+1, ...)
// into every projection and advances their checkpoints, all in b. It runs on
// the log's single committer goroutine, so it needs no locking.
func (s *Set) Apply(b *pebble.Batch, first uint64, recs []log.Record) error {
	return s.apply(b, first, recs)
}

func (s *Set) apply(b *pebble.Batch, first uint64, recs []log.Record) error {
	ps, tx := s.all, s.txs(s.tx, b, b)
	for i, rec := range recs {
		seq := first + uint64(i)
		v, err := decodeForApply(rec)
		if err != nil {
			return fmt.Errorf("projections: record %d: %w", seq, err)
		}
		if v == nil {
			continue
		}
		if err := applyOne(ps, tx, seq, v); err != nil {
			return err
		}
	}
	return checkpoint(ps, b, first+uint64(len(recs))-1)
}

// txs points transactions at batch b, reading through r.
func (s *Set) txs(txs []Tx, b *pebble.Batch, r pebble.Reader) []Tx {
	for i := range txs {
		txs[i].reset(b, r)
	}
	return txs
}

func applyOne(ps []Projection, tx []Tx, seq uint64, v any) error {
	for j, p := range ps {
		if err := p.Apply(&tx[j], seq, v); err != nil {
			return fmt.Errorf("projections: %s at %d: %w", p.Name(), seq, err)
		}
	}
	return nil
}

// checkpoint records last as the applied position of ps in b.
func checkpoint(ps []Projection, b *pebble.Batch, last uint64) error {
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], last)
	for _, p := range ps {
		if err := b.Set([]byte{checkpointPrefix, p.ID()}, v[:], nil); err != nil {
			return err
		}
	}
	return nil
}

// Checkpoint returns the last position p has applied in r (0 if none).
func Checkpoint(r pebble.Reader, id byte) (uint64, error) {
	v, closer, err := r.Get([]byte{checkpointPrefix, id})
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, fmt.Errorf("projections: checkpoint of %q is %d bytes", id, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// replayBatch bounds how many records one replay batch holds.
const replayBatch = 4096

// CatchUp folds into db the records of l that each projection has not
// applied yet (a new projection, a reset or migrated one), before the
// server takes writes.
func (s *Set) CatchUp(l *log.Log, db *pebble.DB) error {
	if err := s.migrate(db); err != nil {
		return err
	}
	for i := range s.tx {
		s.tx[i].keep = nil // rows are about to change under it
	}
	from := make([]uint64, len(s.all))
	for i, p := range s.all {
		cp, err := Checkpoint(db, p.ID())
		if err != nil {
			return err
		}
		if cp > l.Last() {
			return fmt.Errorf("projections: %s is at %d, past the log's end %d", p.Name(), cp, l.Last())
		}
		from[i] = cp + 1
	}
	return s.replay(l, db, s.all, from, pebble.NoSync, true, nil)
}

// Reset drops every projection's rows and rebuilds them from position 1.
func (s *Set) Reset(l *log.Log, db *pebble.DB) error {
	b := db.NewBatch()
	for _, p := range s.all {
		if err := b.DeleteRange([]byte{rowPrefix, p.ID()}, []byte{rowPrefix, p.ID() + 1}, nil); err != nil {
			return err
		}
		if err := b.Delete([]byte{checkpointPrefix, p.ID()}, nil); err != nil {
			return err
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return err
	}
	return s.CatchUp(l, db)
}

// replay folds the log from position from into db. One goroutine reads and
// decodes; every projection then folds the same decoded chunks in its own
// goroutine: projections never read each other's rows, so they are
// independent. Each buffers its writes and writes them out sorted, rarely,
// into the memtable or (ing non-nil) as ingested sstables; reads see what is
// buffered (replay.go, replay_ingest.go).
//
// flush says whether to flush the memtables at the end (CatchUp does, so what
// it folded is in sstables before the server starts; a scratch Rebuild need
// not).
func (s *Set) replay(l *log.Log, db *pebble.DB, ps []Projection, froms []uint64, opts *pebble.WriteOptions, flush bool, ing *ingester) error {
	type decoded struct {
		seq uint64
		v   any
	}
	from := l.Last() + 1
	for _, f := range froms {
		from = min(from, f)
	}
	if from > l.Last() {
		return nil
	}
	feeds := make([]chan []decoded, len(ps))
	for i := range feeds {
		feeds[i] = make(chan []decoded, 4)
	}
	stop := make(chan struct{})
	var stopOnce sync.Once
	halt := func() { stopOnce.Do(func() { close(stop) }) }

	errs := make(chan error, len(ps)+1)
	var wg sync.WaitGroup
	rps := make([]*replayer, len(ps))
	paths := make([]string, len(ps)) // each projection's last sstable (ing)
	for i, p := range ps {
		rps[i] = newReplayer(db, p, opts, ing)
		wg.Add(1)
		go func(i int, feed <-chan []decoded, from uint64) {
			defer wg.Done()
			rp := rps[i]
			defer rp.close()
			var err error
			for chunk := range feed {
				// Skip what this projection's checkpoint already covers.
				k0 := 0
				for k0 < len(chunk) && chunk[k0].seq < from {
					k0++
				}
				if err == nil && k0 < len(chunk) {
					rest := chunk[k0:]
					if err = rp.chunk(len(rest), func(k int) (uint64, any) { return rest[k].seq, rest[k].v }); err != nil {
						halt()
					}
				}
			}
			if err == nil {
				paths[i], err = rp.finish()
			}
			errs <- err
		}(i, feeds[i], froms[i])
	}

	chunk := make([]decoded, 0, replayBatch)
	send := func() error {
		for _, f := range feeds {
			select {
			case f <- chunk:
			case <-stop:
				return errStopped
			}
		}
		chunk = make([]decoded, 0, replayBatch)
		return nil
	}
	readErr := l.Read(from, func(seq uint64, rec log.Record) error {
		v, err := decodeForApply(rec)
		if err != nil {
			return fmt.Errorf("projections: record %d: %w", seq, err)
		}
		chunk = append(chunk, decoded{seq, v})
		if len(chunk) == replayBatch {
			return send()
		}
		return nil
	})
	if readErr == nil && len(chunk) > 0 {
		readErr = send()
	}
	for _, f := range feeds {
		close(f)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	if readErr != nil {
		return readErr
	}
	if ing != nil {
		// One ingestion: every projection's last rows, and the
		// checkpoints of the projections that have not committed theirs.
		var cps []checkpointAt
		for _, rp := range rps {
			if rp.last > rp.saved {
				cps = append(cps, checkpointAt{rp.p.ID(), rp.last})
			}
		}
		if len(cps) > 0 {
			cp, err := ing.writeCheckpoints(cps)
			if err != nil {
				return err
			}
			paths = append(paths, cp)
		}
		if err := ing.ingest(paths...); err != nil {
			return err
		}
	}
	if !flush {
		return nil
	}
	return db.Flush()
}

// maxBatchBytes bounds the batches of replay.
const maxBatchBytes = 8 << 20

var errStopped = errors.New("projections: replay stopped")

// Rebuild replays the whole log into a fresh database at dir (which must not
// exist or be empty) and returns it; used by `engram replay --verify`.
//
// The database is scratch space for a comparison: it has no WAL, its rows
// are ingested as sstables that were never synced, and whatever some
// projection committed to its memtable is not flushed. A caller that means
// to keep it must db.Flush() before Close.
func (s *Set) Rebuild(l *log.Log, dir string) (*pebble.DB, error) {
	o := rebuildOptions()
	db, err := pebble.Open(dir, o)
	if err != nil {
		return nil, err
	}
	ing, err := newIngester(db, o, dir)
	if err != nil {
		db.Close()
		return nil, err
	}
	froms := make([]uint64, len(s.all))
	for i := range froms {
		froms[i] = 1
	}
	err = s.replay(l, db, s.all, froms, pebble.NoSync, false, ing)
	if cerr := ing.close(); err == nil {
		err = cerr
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// Digest hashes a projection's rows and checkpoint in r: equal digests mean
// equal views. Keys and values are length-prefixed so boundaries count.
func Digest(r pebble.Reader, id byte) ([32]byte, error) {
	h := sha256.New()
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: []byte{rowPrefix, id}, UpperBound: []byte{rowPrefix, id + 1}})
	if err != nil {
		return [32]byte{}, err
	}
	var n [8]byte
	for it.First(); it.Valid(); it.Next() {
		writeLenPrefixed(h, n[:], it.Key())
		writeLenPrefixed(h, n[:], it.Value())
	}
	if err := it.Close(); err != nil {
		return [32]byte{}, err
	}
	cp, err := Checkpoint(r, id)
	if err != nil {
		return [32]byte{}, err
	}
	binary.BigEndian.PutUint64(n[:], cp)
	h.Write(n[:])
	var out [32]byte
	h.Sum(out[:0])
	return out, nil
}

func writeLenPrefixed(w io.Writer, scratch, b []byte) {
	binary.BigEndian.PutUint64(scratch, uint64(len(b)))
	w.Write(scratch)
	w.Write(b)
}

// Mismatch describes one projection whose rebuilt digest differs.
type Mismatch struct {
	Name       string
	Live, Scan [32]byte
}

// Compare returns the projections whose rows differ between a and b.
func (s *Set) Compare(a, b pebble.Reader) ([]Mismatch, error) {
	var out []Mismatch
	for _, p := range s.all {
		da, err := Digest(a, p.ID())
		if err != nil {
			return nil, err
		}
		db, err := Digest(b, p.ID())
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(da[:], db[:]) {
			out = append(out, Mismatch{Name: p.Name(), Live: da, Scan: db})
		}
	}
	return out, nil
}

// scanKeys returns copies of the projection-relative keys under prefix, as the
// batch (and the database beneath it) holds them.
func (t *Tx) scanKeys(prefix []byte) ([][]byte, error) {
	lo := append([]byte{rowPrefix, t.id}, prefix...)
	it, err := t.r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return nil, err
	}
	var out [][]byte
	for it.First(); it.Valid(); it.Next() {
		out = append(out, append([]byte(nil), it.Key()[2:]...))
	}
	return out, it.Close()
}
