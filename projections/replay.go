package projections

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"sync/atomic"

	"github.com/cockroachdb/pebble"
)

// Replay writes reach the memtable sorted.
//
// A projection's writes for one record land all over its keyspace (an event
// ID row, a transaction row, a timeline row...), and a batch applied to
// pebble's memtable inserts each key into a skiplist: in write order, every
// insert searches from the top, which made memtable insertion the largest
// cost of replay. The skiplist remembers where the last insert went, so keys
// that arrive in order cost a step or two each. In replay a projection's
// point writes are therefore buffered (writeBuf) and added to its batch
// sorted, the last write of a key only (what the batch would have left).
// Order matters only between writes of one key, and between point writes
// and range deletes: a range delete first adds what is buffered.
//
// A buffered write is invisible to reads until it is committed. A record a
// projection says it reads for (NeedsRead) is folded in an indexed batch of
// its own, after what was buffered is committed; a chunk where many records
// read is folded in one indexed batch, as live apply does. A read the
// projection did not announce still sees every earlier write (the buffer
// is committed first, flushingReader), at the price of a commit, and is
// counted in undeclaredReads (tests keep it at zero).

// writeBuf holds point writes, keys and values back to back in data.
type writeBuf struct {
	data []byte
	ops  []bufOp
}

type bufOp struct {
	pre    uint64 // the key's bytes 2-9 (after 'p' ‖ id), zero-padded: most comparisons stop here
	off    uint32 // key at data[off:off+kn], value right after it
	kn, vn uint32
	n      uint32 // write order, which decides between writes of one key
	del    bool
}

func (w *writeBuf) add(key, val []byte, del bool) {
	off := len(w.data)
	w.data = append(append(w.data, key...), val...)
	var pre [8]byte
	if len(key) > 2 {
		copy(pre[:], key[2:])
	}
	w.ops = append(w.ops, bufOp{pre: binary.BigEndian.Uint64(pre[:]), off: uint32(off), kn: uint32(len(key)), vn: uint32(len(val)),
		n: uint32(len(w.ops)), del: del})
}

// cmpOps orders writes by key, then in write order.
func (w *writeBuf) cmpOps(x, y bufOp) int {
	if x.pre != y.pre {
		if x.pre < y.pre {
			return -1
		}
		return 1
	}
	if c := bytes.Compare(w.key(&x), w.key(&y)); c != 0 {
		return c
	}
	return int(x.n) - int(y.n)
}

func (w *writeBuf) key(o *bufOp) []byte { return w.data[o.off : o.off+o.kn] }

func (w *writeBuf) size() int { return len(w.data) + 32*len(w.ops) }

// drain adds the buffered writes to b in key order, only the last write of
// each key, and empties w.
func (w *writeBuf) drain(b *pebble.Batch) error {
	if len(w.ops) == 0 {
		return nil
	}
	slices.SortStableFunc(w.ops, w.cmpOps)
	for i := range w.ops {
		o := &w.ops[i]
		k := w.key(o)
		if i+1 < len(w.ops) && bytes.Equal(k, w.key(&w.ops[i+1])) {
			continue // a later write of the same key decides
		}
		var err error
		if o.del {
			err = b.Delete(k, nil)
		} else {
			err = b.Set(k, w.data[o.off+o.kn:o.off+o.kn+o.vn], nil)
		}
		if err != nil {
			return err
		}
	}
	w.data, w.ops = w.data[:0], w.ops[:0]
	return nil
}

// undeclaredReads counts reads during replay that their projection's
// NeedsRead did not announce (each costs a commit in the middle of a
// record; a test keeps it at zero).
var undeclaredReads atomic.Int64

// replayer folds chunks into one projection during replay; its buffers live
// as long as the replay.
type replayer struct {
	db    *pebble.DB
	p     Projection
	reads interface{ NeedsRead(any) bool } // nil: p never reads
	opts  *pebble.WriteOptions
	tx    Tx
	w     writeBuf
	b     *pebble.Batch
	last  uint64 // last record folded into the open batch (or committed)
	saved uint64 // checkpoint last committed
	needs []bool // per record of the chunk: NeedsRead
}

func newReplayer(db *pebble.DB, p Projection, opts *pebble.WriteOptions) *replayer {
	rp := &replayer{db: db, p: p, opts: opts, tx: Tx{id: p.ID()}}
	rp.reads, _ = p.(interface{ NeedsRead(any) bool })
	return rp
}

// open starts a batch: buffered (sorted writes) or indexed (reads see it).
func (rp *replayer) open(indexed bool) {
	if indexed {
		rp.b = rp.db.NewIndexedBatch()
		rp.tx.w = nil
		rp.tx.reset(rp.b, rp.b)
		return
	}
	rp.b = rp.db.NewBatch()
	rp.tx.w = &rp.w
	rp.tx.reset(rp.b, flushingReader{rp})
}

// commit commits the open batch with the checkpoint rp.last.
func (rp *replayer) commit() error {
	b := rp.b
	rp.b = nil
	err := rp.w.drain(b)
	if err == nil {
		err = b.Set([]byte{checkpointPrefix, rp.p.ID()}, binary.BigEndian.AppendUint64(nil, rp.last), nil)
	}
	if err == nil {
		err = b.Commit(rp.opts)
	}
	b.Close()
	if err == nil {
		rp.saved = rp.last
	}
	return err
}

// finish commits the checkpoint if chunks that wrote nothing left it behind.
func (rp *replayer) finish() error {
	if rp.saved == rp.last {
		return nil
	}
	rp.open(false)
	return rp.commit()
}

// fold applies one record.
func (rp *replayer) fold(seq uint64, v any) error {
	if err := rp.p.Apply(&rp.tx, seq, v); err != nil {
		return fmt.Errorf("projections: %s at %d: %w", rp.p.Name(), seq, err)
	}
	return nil
}

// chunk folds n decoded records (at(k) is the k-th) and commits them with
// the checkpoint.
func (rp *replayer) chunk(n int, at func(k int) (uint64, any)) error {
	reading := 0
	if rp.reads != nil {
		rp.needs = slices.Grow(rp.needs[:0], n)[:n]
		for k := 0; k < n; k++ {
			_, v := at(k)
			rp.needs[k] = v != nil && rp.reads.NeedsRead(v)
			if rp.needs[k] {
				reading++
			}
		}
	}
	// Many reading records (push, for every event): one indexed batch,
	// which beats a commit around each of them.
	indexed := reading*8 > n
	rp.open(indexed)
	for k := 0; k < n; k++ {
		seq, v := at(k)
		if v != nil {
			if !indexed && reading > 0 && rp.needs[k] {
				// Its reads must see everything before it, and its own writes.
				if err := rp.commit(); err != nil {
					return err
				}
				rp.open(true)
				if err := rp.fold(seq, v); err != nil {
					rp.b.Close()
					return err
				}
				rp.last = seq
				if err := rp.commit(); err != nil {
					return err
				}
				rp.open(false)
				continue
			}
			if err := rp.fold(seq, v); err != nil {
				if rp.b != nil {
					rp.b.Close()
				}
				return err
			}
			if rp.b == nil {
				return fmt.Errorf("projections: %s at %d: replay batch lost", rp.p.Name(), seq)
			}
		}
		rp.last = seq
		if rp.b.Len()+rp.w.size() > maxBatchBytes && k < n-1 {
			// Bound memory: a chunk of large records makes a large batch.
			if err := rp.commit(); err != nil {
				return err
			}
			rp.open(indexed)
		}
	}
	if rp.b.Empty() && len(rp.w.ops) == 0 {
		// Nothing to write (most projections, for most chunks): the
		// checkpoint goes with the next rows, or at the end (finish).
		rp.b.Close()
		rp.b = nil
		return nil
	}
	return rp.commit()
}

// flushingReader is a buffered replay batch's reader: the database, after
// the buffered writes are committed (see the top of this file).
type flushingReader struct{ rp *replayer }

func (f flushingReader) flush() error {
	rp := f.rp
	if len(rp.w.ops) == 0 && rp.b.Empty() {
		return nil
	}
	undeclaredReads.Add(1)
	// The record being folded is not complete: the checkpoint stays at the
	// last one that is.
	if err := rp.commit(); err != nil {
		return err
	}
	rp.b = rp.db.NewBatch()
	rp.tx.b = rp.b // keep what the projection cached in this batch
	return nil
}

func (f flushingReader) Get(key []byte) ([]byte, io.Closer, error) {
	if err := f.flush(); err != nil {
		return nil, nil, err
	}
	return f.rp.db.Get(key)
}

func (f flushingReader) NewIter(o *pebble.IterOptions) (*pebble.Iterator, error) {
	if err := f.flush(); err != nil {
		return nil, err
	}
	return f.rp.db.NewIter(o)
}

func (f flushingReader) Close() error { return nil }

// rebuildOptions are the scratch database's: no WAL (it is thrown away if
// interrupted), large memtables, and no compactions while it fills (every
// projection writes all over the keyspace, so compacting would rewrite the
// same rows again and again; a one-time comparison reads a few L0 files
// just as well). Stalls on L0 are lifted since nothing would ever clear
// them. Flushed sstables go uncompressed: they are read once and deleted.
func rebuildOptions() *pebble.Options {
	o := &pebble.Options{
		DisableWAL:                  true,
		MemTableSize:                64 << 20,
		L0CompactionThreshold:       1 << 20,
		L0StopWritesThreshold:       1 << 20,
		DisableAutomaticCompactions: true,
	}
	o.Levels = make([]pebble.LevelOptions, 1)
	o.Levels[0].Compression = pebble.NoCompression
	return o.EnsureDefaults()
}
