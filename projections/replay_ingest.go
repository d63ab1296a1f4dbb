package projections

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/objstorage"
	"github.com/cockroachdb/pebble/sstable"
	"github.com/cockroachdb/pebble/vfs"
)

// Rebuild writes a projection's replayed rows as sstables and ingests
// them, instead of committing batches: no memtable insertion, no flush.
// Each projection sorts what it buffered (replay.go) and writes one
// sstable; at the end of the replay one ingestion takes every projection's
// last sstable and a small one with their checkpoints, atomically (the
// projections' keyspaces do not overlap, so neither do the files). A
// projection that buffers more than pendingMax ingests its rows and
// checkpoint alone, also in one ingestion. Overlapping ingestions stack in
// L0 in order, so later rows win as later batches would; an ingestion that
// overlaps the memtable (rows some scan made a projection commit) makes
// pebble flush it first, which keeps that order too.
//
// Only Rebuild's scratch database ingests: CatchUp folds into the live
// database through the memtable, whose WAL makes each commit of rows and
// checkpoint atomic and durable without this file's sstables needing an
// fsync of their own.

// ingestMin is the least a projection buffers before an sstable pays: less
// goes into the memtable (a variable for tests).
var ingestMin = 256 << 10

// ingester writes sstables for db in a scratch directory and ingests them.
type ingester struct {
	db    *pebble.DB
	fs    vfs.FS
	dir   string
	wopts sstable.WriterOptions
	n     atomic.Uint64
}

// newIngester prepares ingestion into db, opened with opts in dir.
func newIngester(db *pebble.DB, opts *pebble.Options, dir string) (*ingester, error) {
	fs := opts.FS
	if fs == nil {
		fs = vfs.Default
	}
	tmp := fs.PathJoin(dir, "replay-sst")
	if err := fs.RemoveAll(tmp); err != nil {
		return nil, fmt.Errorf("projections: replay: %w", err)
	}
	if err := fs.MkdirAll(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("projections: replay: %w", err)
	}
	return &ingester{db: db, fs: fs, dir: tmp, wopts: opts.MakeWriterOptions(0, db.FormatMajorVersion().MaxTableFormat())}, nil
}

// close removes the scratch directory.
func (in *ingester) close() error { return in.fs.RemoveAll(in.dir) }

// write creates an sstable and fills it with fill.
func (in *ingester) write(fill func(w *sstable.Writer) error) (string, error) {
	path := in.fs.PathJoin(in.dir, fmt.Sprintf("%06d.sst", in.n.Add(1)))
	f, err := in.fs.Create(path)
	if err != nil {
		return "", fmt.Errorf("projections: replay: %w", err)
	}
	w := sstable.NewWriter(&scratchWritable{f: f, bw: bufio.NewWriterSize(f, 256<<10)}, in.wopts)
	err = fill(w)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("projections: replay: sstable: %w", err)
	}
	return path, nil
}

// writeRows writes what w buffered, sorted, the last write of each key
// (a delete as a tombstone: an earlier ingestion may hold the key), and
// empties w.
func (in *ingester) writeRows(w *writeBuf) (string, error) {
	path, err := in.write(func(sw *sstable.Writer) error {
		return w.each(func(k, v []byte, del bool) error {
			if del {
				return sw.Delete(k)
			}
			return sw.Set(k, v)
		})
	})
	w.reset()
	return path, err
}

type checkpointAt struct {
	id  byte
	pos uint64
}

// writeCheckpoints writes an sstable of checkpoint rows.
func (in *ingester) writeCheckpoints(cps []checkpointAt) (string, error) {
	slices.SortFunc(cps, func(a, b checkpointAt) int { return int(a.id) - int(b.id) })
	return in.write(func(sw *sstable.Writer) error {
		for _, c := range cps {
			if err := sw.Set([]byte{checkpointPrefix, c.id}, binary.BigEndian.AppendUint64(nil, c.pos)); err != nil {
				return err
			}
		}
		return nil
	})
}

// ingest ingests the sstables at paths ("" is skipped) in one ingestion,
// then removes them (the database has its own links or copies).
func (in *ingester) ingest(paths ...string) error {
	paths = slices.DeleteFunc(slices.Clone(paths), func(p string) bool { return p == "" })
	if len(paths) == 0 {
		return nil
	}
	err := in.db.Ingest(paths)
	for _, p := range paths {
		_ = in.fs.Remove(p)
	}
	if err != nil {
		return fmt.Errorf("projections: replay: ingest: %w", err)
	}
	return nil
}

// scratchWritable is an sstable's file in the scratch database: buffered,
// and not synced, since the database is thrown away if interrupted.
type scratchWritable struct {
	f  vfs.File
	bw *bufio.Writer
}

var _ objstorage.Writable = (*scratchWritable)(nil)

func (w *scratchWritable) Write(p []byte) error {
	_, err := w.bw.Write(p)
	return err
}

func (w *scratchWritable) Finish() error {
	err := w.bw.Flush()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (w *scratchWritable) Abort() { _ = w.f.Close() }

// scratchFS is the scratch database's file system: the default one, but
// with every sync a no-op (the database is thrown away if interrupted), so
// that a rebuild does not wait on a disk others are flushing to.
type scratchFS struct{ vfs.FS }

type scratchFile struct{ vfs.File }

func (scratchFile) Sync() error                           { return nil }
func (scratchFile) SyncData() error                       { return nil }
func (scratchFile) SyncTo(int64) (fullSync bool, _ error) { return true, nil }

func scratch(f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return scratchFile{f}, nil
}

func (fs scratchFS) Create(name string) (vfs.File, error) { return scratch(fs.FS.Create(name)) }

func (fs scratchFS) OpenReadWrite(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	return scratch(fs.FS.OpenReadWrite(name, opts...))
}

func (fs scratchFS) OpenDir(name string) (vfs.File, error) { return scratch(fs.FS.OpenDir(name)) }

func (fs scratchFS) ReuseForWrite(oldname, newname string) (vfs.File, error) {
	return scratch(fs.FS.ReuseForWrite(oldname, newname))
}
