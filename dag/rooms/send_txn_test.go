package rooms

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

// TestSendSameTxnConcurrently: many concurrent sends with one transaction
// ID, in waves that overlap the completion of earlier ones, all answer the
// first event's ID and only one event is made.
func TestSendSameTxnConcurrently(t *testing.T) {
	w := newWorld(t)
	room := w.createRoom(t, "12", "@a:x", "public")
	for wave := 0; wave < 20; wave++ {
		txn := fmt.Sprintf("a\x00D\x00%s\x00t%d", room, wave)
		var wg sync.WaitGroup
		ids := make([]string, 16)
		for g := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := w.seq.Send(Event{Room: room, Sender: "@a:x", Type: "m.room.message",
					Content: obj(map[string]any{"body": "x"}), Txn: txn})
				if err != nil {
					t.Error(err)
					return
				}
				ids[g] = res.EventID
			}()
		}
		wg.Wait()
		for _, id := range ids[1:] {
			if id != ids[0] {
				t.Fatalf("wave %d: event IDs %v differ", wave, ids)
			}
		}
		// A late retry, after completion, gets it too.
		res, err := w.seq.Send(Event{Room: room, Sender: "@a:x", Type: "m.room.message",
			Content: obj(map[string]any{"body": "x"}), Txn: txn})
		if err != nil || res.EventID != ids[0] {
			t.Fatalf("wave %d: retry got %v %v, want %s", wave, res.EventID, err, ids[0])
		}
	}
	n := 0
	tl, err := w.store.Timeline(room, 0, w.log.Last()+1, false, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range tl {
		if rec, err := w.store.Record(q); err == nil && rec.Type == "m.room.message" {
			n++
		}
	}
	if n != 20 {
		t.Fatalf("%d messages in the room, want 20", n)
	}
}

// BenchmarkSendTxn: BenchmarkSend with a client transaction ID on every
// send, as every /send request has (the sequencer checks it for a retry).
func BenchmarkSendTxn(b *testing.B) {
	w := newWorld(b)
	room := w.createRoom(b, "12", "@a:x", "public")
	content := obj(map[string]any{"msgtype": "m.text", "body": "hello, this is a fairly typical chat message"})
	var n atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			txn := fmt.Sprintf("@a:x\x00DEV\x00%s\x00t%d", room, n.Add(1))
			if _, err := w.seq.Send(Event{Room: room, Sender: "@a:x", Type: "m.room.message", Content: content, Txn: txn}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
