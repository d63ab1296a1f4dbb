package log

import (
	"os"
	"testing"
	"time"

	"github.com/cockroachdb/pebble"
)

func TestZZPebbleSync(t *testing.T) {
	db, err := pebble.Open(t.TempDir(), &pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	v := make([]byte, 200)
	start := time.Now()
	for i := range 300 {
		db.Set([]byte{byte(i >> 8), byte(i)}, v, pebble.Sync)
	}
	t.Logf("pebble sync set: %v", time.Since(start)/300)
	db.Close()
	f, _ := os.Create(t.TempDir() + "/x")
	start = time.Now()
	for range 300 {
		f.Write(v)
		f.Sync()
	}
	t.Logf("fsync growing: %v", time.Since(start)/300)
	start = time.Now()
	for range 300 {
		f.Write(v)
		f.Sync()
	}
	t.Logf("fsync growing 2: %v", time.Since(start)/300)
	f.Seek(0, 0)
	start = time.Now()
	for range 300 {
		f.Write(v)
		f.Sync()
	}
	t.Logf("fsync overwrite: %v", time.Since(start)/300)
}
