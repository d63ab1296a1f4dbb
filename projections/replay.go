package projections

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/vfs"
)

// Replay buffers a projection's writes and commits them sorted, rarely.
//
// A projection's writes for one record land all over its keyspace (an event
// ID row, a transaction row, a timeline row...), and a batch applied to
// pebble's memtable inserts each key into a skiplist, which made memtable
// insertion the largest cost of replay. So in replay a projection's point
// writes are buffered (writeBuf) across chunks, up to pendingMax bytes, and
// then written sorted, the last write of a key only (what a batch would
// have left): into an sstable that is ingested (Rebuild, see ingest.go), or
// into the memtable in one batch with keys in order, which the skiplist
// inserts cheaply (CatchUp). Keys rewritten for every record (a room's
// extremities, a sender's read position) reach pebble once.
//
// A buffered write is invisible to the database, so reads must find it
// elsewhere. A projection that reads (it implements NeedsRead) has every
// buffered write of its own remembered in its Tx (Tx.track, Tx.memo): a
// Get finds the write there, and what is not there is in the database. A
// scan cannot use the memo: it commits what is buffered first. So does a
// read by a projection that never reads (it does not track), counted in
// undeclaredReads (tests keep it at zero).
//
// A range delete (Tx.deleteRange) goes into the replayer's batch, with the
// buffered writes before it; the batch is committed when the record is done
// (or before a read), so the writes after it stay after it.
//
// Checkpoints: every commit carries the checkpoint of the last record
// folded whole, so rows and checkpoint become visible together, and a
// record is never split across commits unless it reads (a scan, or a Get
// after its own range delete) after writing, which no projection does.

// writeBuf holds point writes, keys and values back to back in blocks
// (one growing slice was copied again at every doubling). The writes of
// ops[:sorted] are sorted runs (runs holds where each ends), one write per
// key in each; the writes after them are in write order.
type writeBuf struct {
	blocks [][]byte
	bytes  int // key and value bytes added
	n      uint32
	ops    []bufOp
	sorted int
	runs   []int
	tmp    []bufOp
}

type bufOp struct {
	pre    uint64 // the key's bytes 2-9 (after 'p' ‖ id), zero-padded: most comparisons stop here
	blk    uint32 // key at blocks[blk][off:off+kn], value right after it
	off    uint32
	kn, vn uint32
	n      uint32 // write order, which decides between writes of one key
	del    bool
}

// blockSize is the size of a writeBuf block; a larger write has a block of
// its own.
const blockSize = 1 << 20

var blockPool = sync.Pool{New: func() any { return new([blockSize]byte) }}

// opsPool keeps the ops of finished replays: growing them again to
// hundreds of thousands of writes was a tenth of a replay.
var opsPool sync.Pool

// release gives w's memory back to the pools.
func (w *writeBuf) release() {
	w.reset()
	if cap(w.ops) > 0 {
		ops := w.ops[:0]
		opsPool.Put(&ops)
	}
	w.ops, w.tmp, w.blocks, w.runs = nil, nil, nil, nil
}

func (w *writeBuf) add(key, val []byte, del bool) {
	if w.ops == nil {
		if p, ok := opsPool.Get().(*[]bufOp); ok {
			w.ops = *p
		}
	}
	need := len(key) + len(val)
	last := len(w.blocks) - 1
	if last < 0 || len(w.blocks[last])+need > cap(w.blocks[last]) {
		var b []byte
		if need > blockSize {
			b = make([]byte, 0, need)
		} else {
			b = blockPool.Get().(*[blockSize]byte)[:0]
		}
		w.blocks = append(w.blocks, b)
		last++
	}
	blk := w.blocks[last]
	off := len(blk)
	w.blocks[last] = append(append(blk, key...), val...)
	w.bytes += need
	var pre [8]byte
	if len(key) > 2 {
		copy(pre[:], key[2:])
	}
	w.ops = append(w.ops, bufOp{pre: binary.BigEndian.Uint64(pre[:]), blk: uint32(last), off: uint32(off),
		kn: uint32(len(key)), vn: uint32(len(val)), n: w.n, del: del})
	w.n++
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

func (w *writeBuf) key(o *bufOp) []byte { return w.blocks[o.blk][o.off : o.off+o.kn] }

func (w *writeBuf) val(o *bufOp) []byte { return w.blocks[o.blk][o.off+o.kn : o.off+o.kn+o.vn] }

func (w *writeBuf) size() int { return w.bytes + 32*len(w.ops) }

// sortTail sorts the writes added since the last call into a run of their
// own, the last write of each key only, and merges runs (a newer run wins
// a key) whenever the newest is at least as long as the one before it, so
// that a write is merged O(log runs) times. Replay calls it after each
// chunk; writes of growing keys (positions) make runs that follow each
// other, and merging those costs one comparison.
func (w *writeBuf) sortTail() {
	if w.sorted == len(w.ops) {
		return
	}
	tail := w.ops[w.sorted:]
	// n breaks ties, so an unstable sort
	// gives the stable order.
	slices.SortStableFunc(tail, w.cmpOps)
	j := 0
	for i := range tail {
		if i+1 < len(tail) && bytes.Equal(w.key(&tail[i]), w.key(&tail[i+1])) {
			continue // a later write of the same key decides
		}
		tail[j] = tail[i]
		j++
	}
	w.ops = w.ops[:w.sorted+j]
	w.sorted = len(w.ops)
	w.runs = append(w.runs, w.sorted)
	for len(w.runs) >= 2 {
		end, mid := w.runs[len(w.runs)-1], w.runs[len(w.runs)-2]
		start := 0
		if len(w.runs) >= 3 {
			start = w.runs[len(w.runs)-3]
		}
		if end-mid < mid-start {
			break
		}
		w.merge(start, mid, end)
		w.runs = w.runs[:len(w.runs)-1]
		w.runs[len(w.runs)-1] = len(w.ops)
	}
}

// merge merges the runs ops[start:mid] and ops[mid:end], the last ones,
// keeping the second's write of a key both hold.
func (w *writeBuf) merge(start, mid, end int) {
	if w.cmpKeys(&w.ops[mid-1], &w.ops[mid]) < 0 {
		return // already in order
	}
	w.tmp = append(w.tmp[:0], w.ops[start:mid]...)
	a, b, out := 0, mid, start
	for a < len(w.tmp) && b < end {
		switch c := w.cmpKeys(&w.tmp[a], &w.ops[b]); {
		case c < 0:
			w.ops[out] = w.tmp[a]
			a++
		case c > 0:
			w.ops[out] = w.ops[b]
			b++
		default:
			w.ops[out] = w.ops[b]
			a++
			b++
		}
		out++
	}
	out += copy(w.ops[out:], w.tmp[a:])
	out += copy(w.ops[out:], w.ops[b:end])
	w.ops = w.ops[:out]
	w.sorted = out
}

// cmpKeys orders writes by key alone.
func (w *writeBuf) cmpKeys(x, y *bufOp) int {
	if x.pre != y.pre {
		if x.pre < y.pre {
			return -1
		}
		return 1
	}
	return bytes.Compare(w.key(x), w.key(y))
}

// each calls fn for the last write of each key, in key order.
func (w *writeBuf) each(fn func(k, v []byte, del bool) error) error {
	w.sortTail()
	for len(w.runs) >= 2 {
		mid := w.runs[len(w.runs)-2]
		start := 0
		if len(w.runs) >= 3 {
			start = w.runs[len(w.runs)-3]
		}
		w.merge(start, mid, len(w.ops))
		w.runs = w.runs[:len(w.runs)-1]
		w.runs[len(w.runs)-1] = len(w.ops)
	}
	for i := range w.ops {
		o := &w.ops[i]
		if err := fn(w.key(o), w.val(o), o.del); err != nil {
			return err
		}
	}
	return nil
}

func (w *writeBuf) reset() {
	for i, b := range w.blocks {
		if cap(b) == blockSize {
			blockPool.Put((*[blockSize]byte)(b[:blockSize]))
		}
		w.blocks[i] = nil
	}
	w.blocks, w.bytes, w.n = w.blocks[:0], 0, 0
	w.ops, w.sorted, w.runs = w.ops[:0], 0, w.runs[:0]
	if cap(w.tmp) > 1<<16 {
		w.tmp = nil
	}
}

// drain adds the buffered writes to b in key order, only the last write of
// each key, and empties w.
func (w *writeBuf) drain(b *pebble.Batch) error {
	if len(w.ops) == 0 {
		return nil
	}
	err := w.each(func(k, v []byte, del bool) error {
		if del {
			return b.Delete(k, nil)
		}
		return b.Set(k, v, nil)
	})
	w.reset()
	return err
}

// undeclaredReads counts reads during replay that their projection's
// NeedsRead did not announce (each costs a commit in the middle of a
// record; a test keeps it at zero).
var undeclaredReads atomic.Int64

// pendingMax bounds what one projection buffers in replay before writing
// it out (a variable for tests); pendingTotal bounds all of them together
// (pendingBytes).
var pendingMax = 32 << 20

const pendingTotal = 192 << 20

// pendingBytes is what the replayers of every running replay buffer.
var pendingBytes atomic.Int64

// unreadRows is implemented by a projection with rows its fold writes but
// never reads, under one prefix byte: replay need not remember them for
// its reads.
type unreadRows interface{ unreadPrefix() byte }

// replayer folds chunks into one projection during replay; its buffers live
// as long as the replay.
type replayer struct {
	db    *pebble.DB
	p     Projection
	reads interface{ NeedsRead(any) bool } // nil: p never reads
	opts  *pebble.WriteOptions
	ing   *ingester // nil: buffered writes go to the memtable
	tx    Tx
	w     writeBuf
	b     *pebble.Batch // range deletes and the writes before them
	last  uint64        // last record folded whole
	saved uint64        // checkpoint last committed (or ingested)
	cur   any           // record being folded, nil between records
	held  int64         // bytes counted in pendingBytes
}

func newReplayer(db *pebble.DB, p Projection, opts *pebble.WriteOptions, ing *ingester) *replayer {
	rp := &replayer{db: db, p: p, opts: opts, ing: ing, tx: Tx{id: p.ID()}}
	rp.reads, _ = p.(interface{ NeedsRead(any) bool })
	rp.b = db.NewBatch()
	rp.tx.reset(rp.b, replayReader{rp})
	rp.tx.w = &rp.w
	rp.tx.track = rp.reads != nil
	if u, ok := p.(unreadRows); ok {
		rp.tx.unread = u.unreadPrefix()
	}
	return rp
}

// pending says whether anything is buffered or batched.
func (rp *replayer) pending() bool { return len(rp.w.ops) > 0 || !rp.b.Empty() }

// commit commits the batch, then the buffered writes after it, with the
// checkpoint rp.last, in one batch.
func (rp *replayer) commit() error {
	b := rp.b
	err := rp.w.drain(b)
	if err == nil {
		err = b.Set([]byte{checkpointPrefix, rp.p.ID()}, binary.BigEndian.AppendUint64(nil, rp.last), nil)
	}
	if err == nil {
		err = b.Commit(rp.opts)
	}
	b.Close()
	rp.b = rp.db.NewBatch()
	rp.tx.b = rp.b
	if err == nil {
		rp.saved = rp.last
	}
	rp.written()
	return err
}

// written forgets what was buffered: it is in the database now, and so is
// every write the memo tracked.
func (rp *replayer) written() {
	if rp.tx.track {
		clear(rp.tx.memo)
	}
	pendingBytes.Add(-rp.held)
	rp.held = 0
}

// flush writes out what is buffered, between records: into an sstable when
// there is enough of it and no range delete is batched, else into the
// memtable.
func (rp *replayer) flush() error {
	if rp.ing == nil || !rp.b.Empty() || rp.w.size() < ingestMin {
		return rp.commit()
	}
	rows, err := rp.ing.writeRows(&rp.w)
	if err != nil {
		return err
	}
	cp, err := rp.ing.writeCheckpoints([]checkpointAt{{rp.p.ID(), rp.last}})
	if err != nil {
		return err
	}
	if err := rp.ing.ingest(rows, cp); err != nil {
		return err
	}
	rp.saved = rp.last
	rp.written()
	return nil
}

// flushed bounds the projection's derived caches (Tx.scratch, which
// replay never resets), after a flush: they are read again as needed.
func (rp *replayer) flushed() { clear(rp.tx.scratch) }

// finish writes out what is left. With an ingester, buffered rows go to
// an sstable whose path it returns, and the checkpoint is left to the
// caller: Set.replay ingests every projection's last rows and checkpoints
// at once.
func (rp *replayer) finish() (string, error) {
	if rp.ing == nil || !rp.b.Empty() {
		if !rp.pending() && rp.saved == rp.last {
			return "", nil
		}
		return "", rp.commit()
	}
	if len(rp.w.ops) == 0 {
		return "", nil
	}
	path, err := rp.ing.writeRows(&rp.w)
	rp.written()
	return path, err
}

// chunk folds n decoded records (at(k) is the k-th).
func (rp *replayer) chunk(n int, at func(k int) (uint64, any)) error {
	for k := 0; k < n; k++ {
		seq, v := at(k)
		if v != nil {
			rp.cur = v
			err := rp.p.Apply(&rp.tx, seq, v)
			rp.cur = nil
			if err != nil {
				return fmt.Errorf("projections: %s at %d: %w", rp.p.Name(), seq, err)
			}
		}
		rp.last = seq
		if !rp.b.Empty() {
			// A range delete: commit it with the writes around it now,
			// between records, before anything reads.
			if err := rp.commit(); err != nil {
				return err
			}
		}
	}
	rp.w.sortTail()
	held := int64(rp.w.size())
	if rp.tx.track {
		held *= 2 // the memo holds a copy
	}
	pendingBytes.Add(held - rp.held)
	rp.held = held
	if held > int64(pendingMax) || (pendingBytes.Load() > pendingTotal && held > int64(pendingMax/16)) {
		rp.flushed()
		return rp.flush()
	}
	return nil
}

// replayReader is a replaying projection's reader: the database, after
// what it must see is committed (see the top of this file).
type replayReader struct{ rp *replayer }

// before makes the database show what a read must see: everything
// buffered for a scan or for a projection that does not track its writes,
// else what is batched (a range delete and the writes before it).
func (r replayReader) before(scan bool) error {
	rp := r.rp
	if !rp.pending() {
		return nil
	}
	if !rp.tx.track {
		if rp.reads == nil || rp.cur == nil || !rp.reads.NeedsRead(rp.cur) {
			undeclaredReads.Add(1)
		}
	} else if !scan {
		if rp.b.Empty() {
			return nil
		}
		// Commit the batch alone: the buffered writes after it stay
		// buffered (the memo has them), and the checkpoint stays.
		b := rp.b
		err := b.Commit(rp.opts)
		b.Close()
		rp.b = rp.db.NewBatch()
		rp.tx.b = rp.b
		return err
	}
	return rp.commit()
}

func (r replayReader) Get(key []byte) ([]byte, io.Closer, error) {
	if err := r.before(false); err != nil {
		return nil, nil, err
	}
	return r.rp.db.Get(key)
}

func (r replayReader) NewIter(o *pebble.IterOptions) (*pebble.Iterator, error) {
	if err := r.before(true); err != nil {
		return nil, err
	}
	return r.rp.db.NewIter(o)
}

func (r replayReader) Close() error { return nil }

// rebuildOptions are the scratch database's: no WAL (it is thrown away if
// interrupted), large memtables, and no compactions while it fills (every
// projection writes all over the keyspace, so compacting would rewrite the
// same rows again and again; a one-time comparison reads a few L0 files
// just as well). Stalls on L0 are lifted since nothing would ever clear
// them. Sstables go uncompressed: they are read once and deleted. Nothing
// is synced (scratchFS).
func rebuildOptions() *pebble.Options {
	o := &pebble.Options{
		FS:                          scratchFS{vfs.Default},
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

// close releases what the replayer holds, after finish or an error.
func (rp *replayer) close() {
	if rp.b != nil {
		rp.b.Close()
		rp.b = nil
	}
	rp.w.release()
	pendingBytes.Add(-rp.held)
	rp.held = 0
}
