package dag

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// TestPrepareThenSignEqualsBuild: preparing and signing gives the same bytes
// and ID as building in one step.
func TestPrepareThenSignEqualsBuild(t *testing.T) {
	key, err := GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"1", "3", "10", "11", "12"} {
		ver := Version(id)
		room := "!r:x"
		if ver.RoomIDFromCreate {
			room = RoomIDFromCreateEventID("$" + strings.Repeat("A", 43))
		}
		p := ProtoEvent{RoomID: room, Sender: "@a:x", Type: "m.room.message", Content: json.RawMessage(`{"body":"hi"}`),
			PrevEvents: []string{"$p"}, AuthEvents: []string{"$a"}, Depth: 3, OriginServerTS: 1234, EventID: "$fixed:x"}
		built, err := Build(p, ver, "x", key.ID, key.Key)
		if err != nil {
			t.Fatal(err)
		}
		prep, err := Prepare(p, ver, "x")
		if err != nil {
			t.Fatal(err)
		}
		if prep.ID != built.ID {
			t.Fatalf("v%s: prepared ID %s, built %s", id, prep.ID, built.ID)
		}
		if err := prep.Sign("x", key.ID, key.Key); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(prep.Raw, built.Raw) {
			t.Fatalf("v%s: prepared+signed differs:\n%s\n%s", id, prep.Raw, built.Raw)
		}
		if err := VerifyEvent(prep.Raw, ver, "x", key.ID, key.Public()); err != nil {
			t.Fatalf("v%s: %v", id, err)
		}
	}
}

// BenchmarkPrepare: the sequencer's critical-section build of a message
// (no signature).
func BenchmarkPrepare(b *testing.B) {
	p := benchProto()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Prepare(p, &RoomV12, "example.org"); err != nil {
			b.Fatal(err)
		}
	}
}
