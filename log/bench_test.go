package log

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble"
)

// benchBody is the ~200-byte body of the append benchmarks (a small PDU).
var benchBody = func() []byte {
	b := make([]byte, 200)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}()

// BenchmarkAppend measures durable appends (real fsync, group commit) of
// one ~200-byte record per Append from a number of concurrent appenders.
// records/s is the figure to compare; ns/op is per record, across all
// appenders.
func BenchmarkAppend(b *testing.B) {
	for _, appenders := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("appenders=%d", appenders), func(b *testing.B) {
			benchmarkAppend(b, appenders, false)
		})
	}
}

// BenchmarkAppendNoSync is BenchmarkAppend without the fsync: the CPU cost
// of the log itself.
func BenchmarkAppendNoSync(b *testing.B) {
	for _, appenders := range []int{1, 256} {
		b.Run(fmt.Sprintf("appenders=%d", appenders), func(b *testing.B) {
			benchmarkAppend(b, appenders, true)
		})
	}
}

func benchmarkAppend(b *testing.B, appenders int, noSync bool) {
	var groups atomic.Int64
	l := openTest(b, Options{NoSync: noSync, Apply: func(_ *pebble.Batch, _ uint64, _ []Record) error {
		groups.Add(1)
		return nil
	}})
	b.ReportAllocs()
	b.SetBytes(int64(len(benchBody)))
	var next atomic.Int64
	n := int64(b.N)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range appenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := Record{Kind: 1, Version: 1, Body: benchBody}
			for next.Add(1) <= n {
				if _, err := l.Append(rec); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
	if g := groups.Load(); g > 0 {
		b.ReportMetric(float64(b.N)/float64(g), "records/group")
	}
}

// BenchmarkRead measures replay: Read over a log of 200-byte records.
func BenchmarkRead(b *testing.B) {
	const records = 200_000
	l := openTest(b, Options{NoSync: true})
	recs := make([]Record, 1000)
	for i := range recs {
		recs[i] = Record{Kind: 1, Version: 1, Body: benchBody}
	}
	for range records / len(recs) {
		if _, err := l.Append(recs...); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(benchBody)) * records)
	var total int
	start := time.Now()
	for b.Loop() {
		n := 0
		if err := l.Read(1, func(seq uint64, rec Record) error {
			n += len(rec.Body)
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		total += records
	}
	b.ReportMetric(float64(total)/time.Since(start).Seconds(), "records/s")
}

// BenchmarkGet measures random point reads of durable records.
func BenchmarkGet(b *testing.B) {
	const records = 100_000
	l := openTest(b, Options{NoSync: true})
	recs := make([]Record, 1000)
	for i := range recs {
		recs[i] = Record{Kind: 1, Version: 1, Body: benchBody}
	}
	for range records / len(recs) {
		if _, err := l.Append(recs...); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	seq := uint64(1)
	for b.Loop() {
		if _, err := l.Get(seq); err != nil {
			b.Fatal(err)
		}
		seq = seq*6364136223846793005 + 1442695040888963407
		seq = seq%records + 1
	}
}
