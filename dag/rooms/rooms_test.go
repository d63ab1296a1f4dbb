package rooms

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"engram/dag"
	"engram/log"
	"engram/projections"
)

type world struct {
	seq   *Sequencer
	log   *log.Log
	store *projections.Store
}

func newWorld(t testing.TB) *world {
	t.Helper()
	set, _ := projections.All()
	l, err := log.Open(log.Options{Dir: t.TempDir(), Apply: set.Apply, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	st, _ := projections.NewStore(l, l.DB(), 1<<20)
	key, _ := dag.GenerateSigningKey()
	t.Cleanup(func() { st.Close(); l.Close() })
	return &world{seq: New(Config{ServerName: "x", KeyID: key.ID, Key: key.Key}, l, st), log: l, store: st}
}

func sk(s string) *string { return &s }

func obj(v any) json.RawMessage { b, _ := json.Marshal(v); return b }

func (w *world) createRoom(t testing.TB, version, creator, joinRule string) string {
	t.Helper()
	pl := map[string]any{"users": map[string]any{}}
	if version != "12" {
		pl["users"] = map[string]any{creator: 100}
	}
	create := map[string]any{"room_version": version}
	if version < "11" && len(version) == 2 || len(version) == 1 {
		create["creator"] = creator
	}
	id, err := w.seq.CreateRoom(version, []Event{
		{Sender: creator, Type: "m.room.create", StateKey: sk(""), Content: obj(create)},
		{Sender: creator, Type: "m.room.member", StateKey: sk(creator), Content: obj(map[string]any{"membership": "join"})},
		{Sender: creator, Type: "m.room.power_levels", StateKey: sk(""), Content: obj(pl)},
		{Sender: creator, Type: "m.room.join_rules", StateKey: sk(""), Content: obj(map[string]any{"join_rule": joinRule})},
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestCreateJoinSend(t *testing.T) {
	for _, v := range []string{"10", "11", "12"} {
		t.Run("v"+v, func(t *testing.T) {
			w := newWorld(t)
			room := w.createRoom(t, v, "@a:x", "invite")
			msg := Event{Room: room, Sender: "@b:x", Type: "m.room.message", Content: obj(map[string]any{"body": "hi"})}
			var fe *ForbiddenError
			if _, err := w.seq.Send(msg); !errors.As(err, &fe) {
				t.Fatalf("non-member send: %v", err)
			}
			join := Event{Room: room, Sender: "@b:x", Type: "m.room.member", StateKey: sk("@b:x"), Content: obj(map[string]any{"membership": "join"})}
			if _, err := w.seq.Send(join); !errors.As(err, &fe) {
				t.Fatalf("uninvited join to an invite-only room: %v", err)
			}
			invite := Event{Room: room, Sender: "@a:x", Type: "m.room.member", StateKey: sk("@b:x"), Content: obj(map[string]any{"membership": "invite"})}
			if _, err := w.seq.Send(invite); err != nil {
				t.Fatal(err)
			}
			if _, err := w.seq.Send(join); err != nil {
				t.Fatal(err)
			}
			res, err := w.seq.Send(msg)
			if err != nil {
				t.Fatal(err)
			}
			rec, _, err := w.store.Event(res.EventID)
			if err != nil || rec.Sender != "@b:x" {
				t.Fatalf("stored: %+v %v", rec, err)
			}
			if _, err := w.seq.Send(Event{Room: "!nope:x", Sender: "@a:x", Type: "m.room.message", Content: obj(map[string]any{})}); !errors.Is(err, ErrUnknownRoom) {
				t.Fatalf("unknown room: %v", err)
			}
		})
	}
}

// TestConcurrentSendsFormAChain: many goroutines sending into one room get
// a linear DAG: one forward extremity, each event on top of the one before.
func TestConcurrentSendsFormAChain(t *testing.T) {
	w := newWorld(t)
	room := w.createRoom(t, "12", "@a:x", "public")
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				_, err := w.seq.Send(Event{Room: room, Sender: "@a:x", Type: "m.room.message",
					Content: obj(map[string]any{"body": "x"}), Txn: fmt.Sprintf("g%d-%d", g, i)})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	ext, _ := w.store.Extremities(room)
	if len(ext) != 1 {
		t.Fatalf("%d forward extremities", len(ext))
	}
	seqs, _ := w.store.Timeline(room, 0, w.log.Last()+1, false, 1000)
	if len(seqs) != 404 {
		t.Fatalf("timeline has %d events", len(seqs))
	}
	var prevID string
	var prevDepth int64
	for i, q := range seqs {
		rec, _ := w.store.Record(q)
		if i > 0 && (len(rec.PrevEvents) != 1 || rec.PrevEvents[0] != prevID || rec.Depth != prevDepth+1) {
			t.Fatalf("event %d: prev %v depth %d, want [%s] %d", i, rec.PrevEvents, rec.Depth, prevID, prevDepth+1)
		}
		prevID, prevDepth = rec.EventID, rec.Depth
	}
}

// TestReloadFromProjections: a fresh sequencer (as after a restart) picks up
// the room's state and extremities from the projections.
func TestReloadFromProjections(t *testing.T) {
	w := newWorld(t)
	room := w.createRoom(t, "12", "@a:x", "public")
	first, _ := w.seq.Send(Event{Room: room, Sender: "@a:x", Type: "m.room.message", Content: obj(map[string]any{})})
	fresh := New(w.seq.cfg, w.log, w.store)
	res, err := fresh.Send(Event{Room: room, Sender: "@a:x", Type: "m.room.message", Content: obj(map[string]any{})})
	if err != nil {
		t.Fatal(err)
	}
	rec, _, _ := w.store.Event(res.EventID)
	if len(rec.PrevEvents) != 1 || rec.PrevEvents[0] != first.EventID {
		t.Fatalf("prev events after reload: %v", rec.PrevEvents)
	}
}

func BenchmarkSend(b *testing.B) {
	w := newWorld(b)
	room := w.createRoom(b, "12", "@a:x", "public")
	content := obj(map[string]any{"msgtype": "m.text", "body": "hello, this is a fairly typical chat message"})
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := w.seq.Send(Event{Room: room, Sender: "@a:x", Type: "m.room.message", Content: content}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// TestIdenticalV12RoomsDoNotCollide: two identical create events in the same
// millisecond would give the same v12 room ID; the second gets another.
func TestIdenticalV12RoomsDoNotCollide(t *testing.T) {
	w := newWorld(t)
	fixed := time.UnixMilli(1_700_000_000_000)
	w.seq.cfg.Now = func() time.Time { return fixed }
	a := w.createRoom(t, "12", "@a:x", "public")
	b := w.createRoom(t, "12", "@a:x", "public")
	if a == b {
		t.Fatalf("both rooms are %s", a)
	}
}
