package api

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"sync"
	"testing"
	"time"

	"engram/dag/rooms"
)

// BenchmarkSyncWake measures how soon a parked long-poll /sync returns
// after an event in one of its rooms becomes durable: from the moment the
// log publishes the commit (its Changed channel closes) to the moment the
// client has read the response. ns/op is that wake latency (mean); p50
// and p99 are reported too. The send itself (fsync) is not counted.
func BenchmarkSyncWake(b *testing.B) {
	ts, alice, bob, room := syRoomPair(b, Config{EnableRegistration: true, DisablePresence: true})
	_ = alice
	since := ts.sySync(bob, "").NextBatch
	client := &http.Client{}
	var lat []time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		before := ts.srv.hub.waiting.Load()
		type result struct {
			at   time.Time
			body []byte
		}
		done := make(chan result, 1)
		go func(since string) {
			req, _ := http.NewRequest("GET", ts.url+syV3+"/sync?timeout=30000&since="+url.QueryEscape(since), nil)
			req.Header.Set("Authorization", "Bearer "+bob)
			res, err := client.Do(req)
			if err != nil {
				b.Error(err)
				done <- result{}
				return
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			done <- result{time.Now(), body}
		}(since)
		for ts.srv.hub.waiting.Load() <= before {
			time.Sleep(50 * time.Microsecond)
		}
		committed := ts.log.Changed()
		durable := make(chan time.Time, 1)
		go func() { <-committed; durable <- time.Now() }()
		if _, err := ts.srv.rooms.Send(rooms.Event{Room: room, Sender: "@alice:test.local", Type: "m.room.message",
			Content: json.RawMessage(fmt.Sprintf(`{"msgtype":"m.text","body":"wake %d"}`, i))}); err != nil {
			b.Fatal(err)
		}
		r := <-done
		lat = append(lat, r.at.Sub(<-durable))
		var s struct {
			NextBatch string `json:"next_batch"`
		}
		json.Unmarshal(r.body, &s)
		since = s.NextBatch
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	b.ReportMetric(float64(sum.Nanoseconds())/float64(len(lat)), "ns/op")
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
}

// syncWorld is a server where bob is in 1,000 rooms and carol in 100 of
// them, for the incremental sync benchmarks.
type syncWorld struct {
	ts         *testServer
	rooms      []string
	bob, carol string
}

func benchWorld(b *testing.B) *syncWorld {
	{
		ts := newTestServer(b, Config{EnableRegistration: true, DisablePresence: true})
		alice, bob, carol := ts.register("alice"), ts.register("bob"), ts.register("carol")
		w := &syncWorld{ts: ts, bob: bob, carol: carol, rooms: make([]string, 1000)}
		var wg sync.WaitGroup
		sem := make(chan struct{}, 32)
		for i := range w.rooms {
			wg.Add(1)
			sem <- struct{}{}
			go func(i int) {
				defer wg.Done()
				defer func() { <-sem }()
				room := ts.syCreate(alice, `{"preset":"public_chat"}`)
				ts.syJoin(bob, room)
				if i < 100 {
					ts.syJoin(carol, room)
				}
				w.rooms[i] = room
			}(i)
		}
		wg.Wait()
		return w
	}
}

// BenchmarkSyncIncremental: an incremental /sync of a user in 100 or 1,000
// rooms of which 1 or 10 had a new message since the token. The cost
// follows the changed rooms, not the joined ones. The sync is called
// in-process (no HTTP) so the figure is the sync's own work. "all" runs
// every registered top-level section; "core" leaves out the sections other
// areas plug in (to_device, device_lists, key counts), to show the cost of
// the rooms, presence and account data sections alone.
func BenchmarkSyncIncremental(b *testing.B) {
	w := benchWorld(b)
	all := activeSyncExtensions()
	var placeholders []syncExtension
	for _, e := range syncExtensions {
		if e.placeholder {
			placeholders = append(placeholders, e)
		}
	}
	defer func() { activeExts = all }()
	for _, c := range []struct {
		sections        string
		joined, changed int
	}{{"core", 100, 1}, {"core", 1000, 1}, {"core", 100, 10}, {"core", 1000, 10},
		{"all", 100, 1}, {"all", 1000, 1}, {"all", 100, 10}, {"all", 1000, 10}} {
		if c.sections == "core" {
			activeExts = placeholders
		} else {
			activeExts = all
		}
		b.Run(fmt.Sprintf("%s/joined=%d/changed=%d", c.sections, c.joined, c.changed), func(b *testing.B) {
			s := w.ts.srv
			user, tok := "@carol:test.local", w.carol
			if c.joined == 1000 {
				user, tok = "@bob:test.local", w.bob
			}
			_ = tok
			req := &syncRequest{user: user, device: "BENCH", filter: &syncFilter{}, hasSince: true}
			since := syncPos{log: s.log.Last(), eph: s.hub.ephPos()}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				var wg sync.WaitGroup
				for k := 0; k < c.changed; k++ {
					wg.Add(1)
					go func(room string) {
						defer wg.Done()
						if _, err := s.rooms.Send(rooms.Event{Room: room, Sender: "@alice:test.local", Type: "m.room.message",
							Content: json.RawMessage(`{"msgtype":"m.text","body":"tick"}`)}); err != nil {
							b.Error(err)
						}
					}(w.rooms[(i*c.changed+k)%100])
				}
				wg.Wait()
				req.since = since
				b.StartTimer()
				body, err := s.runSync(nil, req, 0)
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				var out struct {
					NextBatch string `json:"next_batch"`
					Rooms     struct {
						Join map[string]json.RawMessage `json:"join"`
					} `json:"rooms"`
				}
				if err := json.Unmarshal(body, &out); err != nil || len(out.Rooms.Join) != c.changed {
					b.Fatalf("sync saw %d rooms, want %d: %v", len(out.Rooms.Join), c.changed, err)
				}
				since, _ = parseSyncToken(out.NextBatch)
				b.StartTimer()
			}
		})
	}
}

// BenchmarkSyncInitial: an initial /sync of a user in 100 and in 1,000
// rooms (each with its creation state and a timeline of 6 events), for
// scale: this one is proportional to the rooms.
func BenchmarkSyncInitial(b *testing.B) {
	w := benchWorld(b)
	for _, c := range []struct {
		user   string
		joined int
	}{{"@carol:test.local", 100}, {"@bob:test.local", 1000}} {
		b.Run(fmt.Sprintf("joined=%d", c.joined), func(b *testing.B) {
			s := w.ts.srv
			req := &syncRequest{user: c.user, device: "BENCH", filter: &syncFilter{}}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := s.runSync(nil, req, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
