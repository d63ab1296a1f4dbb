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
)

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
}

func (t *Tx) key(k []byte) []byte {
	t.kbuf = append(append(t.kbuf[:0], rowPrefix, t.id), k...)
	return t.kbuf
}

// Get returns a copy of the value at k, or nil, false.
func (t *Tx) Get(k []byte) ([]byte, bool, error) {
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
func (t *Tx) Set(k, v []byte) error { return t.b.Set(t.key(k), v, nil) }

// Delete removes k.
func (t *Tx) Delete(k []byte) error { return t.b.Delete(t.key(k), nil) }

// Set is the group of projections a server runs.
type Set struct {
	ps []Projection
	tx []Tx
}

// NewSet groups projections; their IDs must be distinct.
func NewSet(ps ...Projection) (*Set, error) {
	seen := map[byte]string{}
	s := &Set{ps: ps, tx: make([]Tx, len(ps))}
	for i, p := range ps {
		if other, dup := seen[p.ID()]; dup {
			return nil, fmt.Errorf("projections: %s and %s share ID %q", other, p.Name(), p.ID())
		}
		seen[p.ID()] = p.Name()
		s.tx[i].id = p.ID()
	}
	return s, nil
}

// Projections returns the members of the set.
func (s *Set) Projections() []Projection { return s.ps }

// Apply is the log's Apply hook: it folds recs (positions first, first+1, ...)
// into every projection and advances their checkpoints, all in b. It runs on
// the log's single committer goroutine, so it needs no locking.
func (s *Set) Apply(b *pebble.Batch, first uint64, recs []log.Record) error {
	return s.apply(b, first, recs)
}

func (s *Set) apply(b *pebble.Batch, first uint64, recs []log.Record) error {
	tx := s.txs(b, b)
	for i, rec := range recs {
		seq := first + uint64(i)
		v, err := decodeForApply(rec)
		if err != nil {
			return fmt.Errorf("projections: record %d: %w", seq, err)
		}
		if v == nil {
			continue
		}
		if err := s.applyOne(tx, seq, v); err != nil {
			return err
		}
	}
	return s.checkpoint(b, first+uint64(len(recs))-1)
}

// txs points the set's transactions at batch b, reading through r.
func (s *Set) txs(b *pebble.Batch, r pebble.Reader) []Tx {
	for i := range s.tx {
		s.tx[i].b, s.tx[i].r = b, r
	}
	return s.tx
}

func (s *Set) applyOne(tx []Tx, seq uint64, v any) error {
	for j, p := range s.ps {
		if err := p.Apply(&tx[j], seq, v); err != nil {
			return fmt.Errorf("projections: %s at %d: %w", p.Name(), seq, err)
		}
	}
	return nil
}

// checkpoint records last as every projection's applied position in b.
func (s *Set) checkpoint(b *pebble.Batch, last uint64) error {
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], last)
	for _, p := range s.ps {
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

// CatchUp applies the records of l that are newer than the oldest checkpoint
// of the set, writing to db. It is how a new or reset projection is built
// before the server starts taking writes. Every projection's checkpoint must
// be equal (a Set is caught up as a whole); a lagging one is rebuilt from 0.
func (s *Set) CatchUp(l *log.Log, db *pebble.DB) error {
	from := l.Last() + 1
	for _, p := range s.ps {
		cp, err := Checkpoint(db, p.ID())
		if err != nil {
			return err
		}
		if cp+1 < from {
			from = cp + 1
		}
	}
	if from > l.Last() {
		return nil
	}
	for _, p := range s.ps {
		cp, _ := Checkpoint(db, p.ID())
		if cp+1 != from {
			// Mixed checkpoints: reset the laggards' keyspaces and replay all.
			return s.Reset(l, db)
		}
	}
	return s.replay(l, db, from, pebble.NoSync)
}

// Reset drops every projection's rows and rebuilds them from position 1.
func (s *Set) Reset(l *log.Log, db *pebble.DB) error {
	b := db.NewBatch()
	for _, p := range s.ps {
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
	return s.replay(l, db, 1, pebble.NoSync)
}

// replay folds the log from position from into db. One goroutine reads and
// decodes; every projection then folds the same decoded chunks in its own
// goroutine, into its own batches: projections never read each other's rows,
// so they are independent, and pebble inserts concurrent commits into the
// memtable in parallel. Replay batches are plain (not indexed): a projection
// reads rows only for records it says NeedsRead, and its batch is committed
// before such a record so the read sees everything before it.
func (s *Set) replay(l *log.Log, db *pebble.DB, from uint64, opts *pebble.WriteOptions) error {
	type decoded struct {
		seq uint64
		v   any
	}
	feeds := make([]chan []decoded, len(s.ps))
	for i := range feeds {
		feeds[i] = make(chan []decoded, 4)
	}
	stop := make(chan struct{})
	var stopOnce sync.Once
	halt := func() { stopOnce.Do(func() { close(stop) }) }

	errs := make(chan error, len(s.ps)+1)
	var wg sync.WaitGroup
	for i, p := range s.ps {
		wg.Add(1)
		go func(p Projection, feed <-chan []decoded) {
			defer wg.Done()
			var err error
			for chunk := range feed {
				if err == nil {
					if err = s.replayChunk(db, p, opts, len(chunk), func(k int) (uint64, any) { return chunk[k].seq, chunk[k].v }); err != nil {
						halt()
					}
				}
			}
			errs <- err
		}(p, feeds[i])
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
	return db.Flush()
}

// replayChunk folds n decoded records into projection p, committing its rows
// and checkpoint; at(k) returns the k-th record.
func (s *Set) replayChunk(db *pebble.DB, p Projection, opts *pebble.WriteOptions, n int, at func(k int) (uint64, any)) error {
	reader, _ := p.(interface{ NeedsRead(any) bool })
	tx := &Tx{b: db.NewBatch(), r: db, id: p.ID()}
	var last uint64
	commit := func() error {
		if err := tx.b.Set([]byte{checkpointPrefix, p.ID()}, binary.BigEndian.AppendUint64(nil, last), nil); err != nil {
			return err
		}
		err := tx.b.Commit(opts)
		tx.b.Close()
		return err
	}
	for k := 0; k < n; k++ {
		seq, v := at(k)
		if v != nil {
			if reader != nil && reader.NeedsRead(v) && tx.b.Count() > 0 {
				if err := commit(); err != nil {
					return err
				}
				tx.b = db.NewBatch()
			}
			if err := p.Apply(tx, seq, v); err != nil {
				tx.b.Close()
				return fmt.Errorf("projections: %s at %d: %w", p.Name(), seq, err)
			}
		}
		last = seq
	}
	return commit()
}

var errStopped = errors.New("projections: replay stopped")

// Rebuild replays the whole log into a fresh database at dir (which must not
// exist or be empty) and returns it; used by `engram replay`.
func (s *Set) Rebuild(l *log.Log, dir string) (*pebble.DB, error) {
	// A scratch rebuild needs no WAL (it is flushed once at the end, and
	// thrown away if interrupted) and wants large memtables.
	db, err := pebble.Open(dir, &pebble.Options{DisableWAL: true, MemTableSize: 64 << 20})
	if err != nil {
		return nil, err
	}
	if err := s.replay(l, db, 1, pebble.NoSync); err != nil {
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
	for _, p := range s.ps {
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
