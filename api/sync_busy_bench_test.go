package api

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"engram/dag/rooms"
	"engram/projections"
)

// busyWorld is one room with many members, as in the busy-room load
// scenario: members[:senders] send, the listeners sync with the scenario's
// filter (lazy-loaded members, no presence or account data).
type busyWorld struct {
	ts      *testServer
	room    string
	members []string
	filter  *syncFilter
	local   bool // members have accounts here: messages notify them
}

func newBusyWorld(b *testing.B, n int) *busyWorld { return newBusyWorldOf(b, n, false) }

// newBusyWorldOf is newBusyWorld whose members have local accounts when
// local is set (as in the load scenario): every message then writes a
// notification entry, and every listener's sync folds unread counts.
func newBusyWorldOf(b *testing.B, n int, local bool) *busyWorld {
	ts := newTestServer(b, Config{EnableRegistration: true, DisablePresence: true})
	alice := ts.register("alice")
	room := ts.syCreate(alice, `{"preset":"public_chat"}`)
	w := &busyWorld{ts: ts, room: room, members: []string{"@alice:test.local"}, local: local}
	for i := 1; i < n; i++ {
		u := fmt.Sprintf("@m%03d:test.local", i)
		if local {
			rec, err := projections.Encode(&projections.AccountRecord{UserID: u, TS: 1})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := ts.log.Append(rec); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := ts.srv.rooms.Send(rooms.Event{Room: room, Sender: u, Type: "m.room.member", StateKey: &u,
			Content: json.RawMessage(`{"membership":"join"}`)}); err != nil {
			b.Fatal(err)
		}
		w.members = append(w.members, u)
	}
	f, e := ts.srv.parseSyncFilterUncached("", `{"presence":{"not_types":["*"]},"account_data":{"not_types":["*"]},`+
		`"room":{"rooms":["`+room+`"],"timeline":{"limit":200},"state":{"lazy_load_members":true},`+
		`"ephemeral":{"not_types":["*"]},"account_data":{"not_types":["*"]}}}`)
	if e != nil {
		b.Fatal(e)
	}
	w.filter = f
	return w
}

// send sends n messages from n different members, concurrently (they
// share group commits, as in the scenario).
func (w *busyWorld) send(b *testing.B, n, round int) {
	var wg sync.WaitGroup
	for k := 0; k < n; k++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			sender := w.members[(round*n+k)%64]
			if _, err := w.ts.srv.rooms.Send(rooms.Event{Room: w.room, Sender: sender, Type: "m.room.message",
				Content: json.RawMessage(fmt.Sprintf(`{"msgtype":"m.text","body":"bench %d %d"}`, round, k))}); err != nil {
				b.Error(err)
			}
		}(k)
	}
	wg.Wait()
}

// BenchmarkSyncBusyRoom: incremental /syncs of the listeners of a room of
// 200 members after events=N new messages from different senders; every
// listener syncs the same window, as they do when one commit wakes them
// all. ns/op is one listener's sync (in process, no HTTP): the cost that
// is multiplied by the listeners on every wake.
func BenchmarkSyncBusyRoom(b *testing.B) { benchSyncBusyRoom(b, newBusyWorld(b, 200)) }

// BenchmarkSyncBusyRoomLocal is BenchmarkSyncBusyRoom with local members,
// as in the load scenario: every message notifies the 199 other members,
// so each sync also folds the listener's unread counts from the room's
// notification entries.
func BenchmarkSyncBusyRoomLocal(b *testing.B) { benchSyncBusyRoom(b, newBusyWorldOf(b, 200, true)) }

func benchSyncBusyRoom(b *testing.B, w *busyWorld) {
	s := w.ts.srv
	for _, events := range []int{1, 10, 50} {
		b.Run(fmt.Sprintf("events=%d", events), func(b *testing.B) {
			const listeners = 50
			reqs := make([]*syncRequest, listeners)
			for i := range reqs {
				u := w.members[len(w.members)-1-i]
				reqs[i] = &syncRequest{user: u, device: "BENCH", filter: w.filter, hasSince: true}
			}
			since := syncPos{log: s.log.Last(), eph: s.hub.ephPos()}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				l := i % listeners
				if l == 0 {
					b.StopTimer()
					w.send(b, events, i)
					next := syncPos{log: s.log.Last(), eph: s.hub.ephPos()}
					for _, r := range reqs {
						r.since = since
					}
					since = next
					b.StartTimer()
				}
				body, err := s.runSync(nil, reqs[l], 0)
				if err != nil {
					b.Fatal(err)
				}
				if l == 0 && i < listeners {
					var out struct {
						Rooms struct {
							Join map[string]struct {
								Timeline struct {
									Events []json.RawMessage `json:"events"`
								} `json:"timeline"`
								Unread struct {
									Notify int `json:"notification_count"`
								} `json:"unread_notifications"`
							} `json:"join"`
						} `json:"rooms"`
					}
					if err := json.Unmarshal(body, &out); err != nil || len(out.Rooms.Join[w.room].Timeline.Events) != events {
						b.Fatalf("sync saw %d events, want %d: %v", len(out.Rooms.Join[w.room].Timeline.Events), events, err)
					}
					if n := out.Rooms.Join[w.room].Unread.Notify; w.local != (n > 0) {
						b.Fatalf("notification count %d with local members %v", n, w.local)
					}
				}
				releaseSyncBody(body) // as the handler does once the body is copied out
			}
		})
	}
}
