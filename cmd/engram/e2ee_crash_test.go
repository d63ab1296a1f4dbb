package main

import (
	"fmt"
	"math/rand/v2"
	"net/url"
	"os/exec"
	"testing"
	"time"
)

// TestCrashToDeviceExactlyOnce kills engram with SIGKILL while a device
// sends to-device messages; after a restart the sender retries every
// transaction (as clients do) and the recipient must get each message
// exactly once, in send order, and nothing again once it synced past them.
func TestCrashToDeviceExactlyOnce(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	s := startServer(t, dir, addr)
	alice := register(t, s.url, "alice")
	bob := register(t, s.url, "bob")
	var first struct {
		NextBatch string `json:"next_batch"`
	}
	if code, err := call("GET", s.url+"/_matrix/client/v3/sync?timeout=0", bob, nil, &first); err != nil || code != 200 {
		t.Fatalf("sync: %d %v", code, err)
	}
	const n = 200
	send := func(base string, i int) (int, error) {
		body := map[string]any{"messages": map[string]any{"@bob:localhost": map[string]any{"*": map[string]any{"n": i}}}}
		return call("PUT", fmt.Sprintf("%s/_matrix/client/v3/sendToDevice/m.test/txn%d", base, i), alice, body, nil)
	}
	done := make(chan int)
	go func() {
		acked := 0
		for i := 0; i < n; i++ {
			if code, err := send(s.url, i); err != nil || code != 200 {
				break
			}
			acked = i + 1
		}
		done <- acked
	}()
	time.Sleep(time.Duration(5+rand.IntN(40)) * time.Millisecond)
	s.kill()
	acked := <-done

	s = startServer(t, dir, addr)
	stopped := false
	defer func() {
		if !stopped {
			s.stop()
		}
	}()
	for i := 0; i < n; i++ {
		if code, err := send(s.url, i); err != nil || code != 200 {
			t.Fatalf("retry %d: %d %v", i, code, err)
		}
	}
	var got struct {
		NextBatch string `json:"next_batch"`
		ToDevice  struct {
			Events []struct {
				Content struct {
					N int `json:"n"`
				} `json:"content"`
			} `json:"events"`
		} `json:"to_device"`
	}
	if code, err := call("GET", s.url+"/_matrix/client/v3/sync?timeout=0&since="+url.QueryEscape(first.NextBatch), bob, nil, &got); err != nil || code != 200 {
		t.Fatalf("sync: %d %v", code, err)
	}
	if len(got.ToDevice.Events) != n {
		t.Fatalf("got %d messages, want %d (%d acknowledged before the kill)", len(got.ToDevice.Events), n, acked)
	}
	for i, e := range got.ToDevice.Events {
		if e.Content.N != i {
			t.Fatalf("message %d is %d: out of order or duplicated", i, e.Content.N)
		}
	}
	var again struct {
		ToDevice struct {
			Events []any `json:"events"`
		} `json:"to_device"`
	}
	if code, err := call("GET", s.url+"/_matrix/client/v3/sync?timeout=0&since="+url.QueryEscape(got.NextBatch), bob, nil, &again); err != nil || code != 200 {
		t.Fatalf("sync: %d %v", code, err)
	}
	if len(again.ToDevice.Events) != 0 {
		t.Fatalf("%d messages delivered twice", len(again.ToDevice.Events))
	}
	s.stop()
	stopped = true
	if out, err := exec.Command(engramBin, "replay", "--data-dir", dir, "--verify").CombinedOutput(); err != nil {
		t.Fatalf("replay --verify: %v\n%s", err, out)
	}
}
