package log

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/vfs"
)

// errInjected is the fsync failure of failingFS.
var errInjected = errors.New("injected fsync failure")

// failingFS is the real file system, except that once broken is set, every
// Sync of a WAL file (*.log) fails: the disk went bad under the log.
type failingFS struct {
	vfs.FS
	broken atomic.Bool
}

func (fs *failingFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil || !strings.HasSuffix(name, ".log") {
		return f, err
	}
	return &failingFile{File: f, fs: fs}, nil
}

func (fs *failingFS) Create(name string) (vfs.File, error) {
	f, err := fs.FS.Create(name)
	return fs.wrap(name, f, err)
}

func (fs *failingFS) ReuseForWrite(oldname, newname string) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname)
	return fs.wrap(newname, f, err)
}

type failingFile struct {
	vfs.File
	fs *failingFS
}

func (f *failingFile) Sync() error {
	if f.fs.broken.Load() {
		return errInjected
	}
	return f.File.Sync()
}

func (f *failingFile) SyncData() error {
	if f.fs.broken.Load() {
		return errInjected
	}
	return f.File.SyncData()
}

func (f *failingFile) SyncTo(length int64) (bool, error) {
	if f.fs.broken.Load() {
		return false, errInjected
	}
	return f.File.SyncTo(length)
}

// TestSyncFailureIsSticky breaks fsync under concurrent appenders: no append
// is acknowledged after the failure, every one fails with ErrFailed wrapping
// the cause, Last() stops, reads keep working, and Close does not hang.
func TestSyncFailureIsSticky(t *testing.T) {
	fs := &failingFS{FS: vfs.Default}
	dir := t.TempDir()
	l, err := Open(Options{Dir: dir, PebbleOptions: &pebble.Options{FS: fs}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := l.Append(Record{Body: body(0, i)}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	var failedAt atomic.Uint64 // Last() when the first failure was seen
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				_, err := l.Append(Record{Body: body(w, i)})
				if err == nil {
					continue
				}
				if !errors.Is(err, ErrFailed) || !errors.Is(err, errInjected) {
					t.Errorf("Append: %v, want ErrFailed wrapping the fsync error", err)
				}
				failedAt.CompareAndSwap(0, l.Last())
				return
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	fs.broken.Store(true)
	wg.Wait()
	last := l.Last()
	if last != failedAt.Load() {
		t.Fatalf("Last() moved from %d to %d after the failure", failedAt.Load(), last)
	}
	if _, err := l.Append(Record{Body: []byte("after")}); !errors.Is(err, ErrFailed) {
		t.Fatalf("Append after failure: %v", err)
	}
	if _, err := l.Get(last); err != nil {
		t.Fatalf("Get(%d) after failure: %v", last, err)
	}
	if _, err := l.Get(last + 1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(%d) past Last after failure: %v", last+1, err)
	}
	n := 0
	if err := l.Read(1, func(uint64, Record) error { n++; return nil }); err != nil || uint64(n) != last {
		t.Fatalf("Read after failure: %d records, %v; want %d", n, err, last)
	}
	select {
	case <-l.Changed():
		t.Fatal("Changed() closed after failure without a commit")
	default:
	}
	done := make(chan error, 1)
	go func() { done <- l.Close() }()
	select {
	case err := <-done:
		t.Logf("Close after fsync failure: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("Close hangs after fsync failure")
	}
	// The disk recovers; whatever reached it is the log. Every acknowledged
	// record is there.
	fs.broken.Store(false)
	l2 := openTest(t, Options{Dir: dir})
	if l2.Last() < last {
		t.Fatalf("reopened Last() = %d < acknowledged %d", l2.Last(), last)
	}
}
