package main

import (
	"context"
	"testing"
	"time"

	"engram/bench"
)

// TestBenchScenariosAgainstEngram runs every single-server bench scenario on
// small parameters against a real engram: counts and outputs must be right
// (no timing assertions). The federated scenario needs federation.
func TestBenchScenariosAgainstEngram(t *testing.T) {
	srv := startServer(t, t.TempDir(), freeAddr(t))
	defer srv.stop()
	cases := []bench.Config{
		{Scenario: "busy-room", Users: 6, Senders: 3, Messages: 60, Listeners: 3},
		{Scenario: "join-storm", Users: 12},
		{Scenario: "initial-sync", Rooms: 3, History: 15, PageLimit: 5, Repeat: 1},
		{Scenario: "state-heavy", StateEvents: 40, Repeat: 1},
		{Scenario: "fan-out", Rooms: 3, Listeners: 6, Messages: 12},
	}
	for _, c := range cases {
		t.Run(c.Scenario, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			c.HS = srv.url
			c.Grace = 10 * time.Second
			res, err := bench.Run(ctx, c)
			if err != nil {
				t.Fatalf("%v\nserver log:\n%s", err, srv.logs.String())
			}
			k := res.Counts
			if k.SendFailures != 0 || k.Failures != 0 || k.Undelivered != 0 {
				t.Fatalf("counts %+v, notes %v", k, res.Notes)
			}
			if c.Messages > 0 && k.Sent != int64(c.Messages) {
				t.Fatalf("sent %d of %d", k.Sent, c.Messages)
			}
			if k.Expected != k.Delivered {
				t.Fatalf("delivered %d of %d", k.Delivered, k.Expected)
			}
		})
	}
}
