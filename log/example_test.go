package log_test

import (
	"encoding/binary"
	"fmt"
	"os"

	"engram/log"

	"github.com/cockroachdb/pebble"
)

func Example() {
	dir, err := os.MkdirTemp("", "engram-log-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)

	// A projection that counts records, in the same batch as the records.
	countKey := []byte("p\x01count")
	apply := func(b *pebble.Batch, first uint64, recs []log.Record) error {
		return b.Set(countKey, binary.BigEndian.AppendUint64(nil, first+uint64(len(recs))-1), nil)
	}
	l, err := log.Open(log.Options{Dir: dir, Apply: apply})
	if err != nil {
		panic(err)
	}
	first, err := l.Append(
		log.Record{Kind: 1, Version: 1, Body: []byte("hello")},
		log.Record{Kind: 2, Version: 1, Body: []byte("world")},
	)
	if err != nil {
		panic(err)
	}
	fmt.Println("first", first, "last", l.Last())

	_ = l.Read(1, func(seq uint64, rec log.Record) error {
		fmt.Printf("%d kind=%d v%d %s\n", seq, rec.Kind, rec.Version, rec.Body)
		return nil
	})
	v, closer, err := l.DB().Get(countKey)
	if err != nil {
		panic(err)
	}
	fmt.Println("projection count", binary.BigEndian.Uint64(v))
	closer.Close()
	if err := l.Close(); err != nil {
		panic(err)
	}
	// Output:
	// first 1 last 2
	// 1 kind=1 v1 hello
	// 2 kind=2 v1 world
	// projection count 2
}

func ExampleLog_Changed() {
	dir, err := os.MkdirTemp("", "engram-log-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	l, err := log.Open(log.Options{Dir: dir})
	if err != nil {
		panic(err)
	}
	defer l.Close()

	// A long-poll waiter for anything after position since: take the
	// channel, then check Last(), then wait.
	since := l.Last()
	done := make(chan uint64)
	go func() {
		for {
			changed := l.Changed()
			if last := l.Last(); last > since {
				done <- last
				return
			}
			<-changed
		}
	}()
	if _, err := l.Append(log.Record{Kind: 1, Body: []byte("wake up")}); err != nil {
		panic(err)
	}
	fmt.Println("woken at", <-done)
	// Output:
	// woken at 1
}
