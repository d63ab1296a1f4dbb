package projections

import (
	"fmt"
	"math"
	"path/filepath"
	"reflect"
	"testing"
)

// relFixture is a room with threads, edits, reactions, references and
// redactions (of a thread's latest reply, of a reaction, and of a child
// before it arrives), plus searchable and join-rules events.
func relFixture() []any {
	room := "!r:x"
	n := 0
	ev := func(id, typ, sender, content string) *EventRecord {
		n++
		return &EventRecord{RoomID: room, EventID: id, RoomVersion: "12", Type: typ, Sender: sender, Depth: int64(n), Status: Accepted,
			PDU: []byte(fmt.Sprintf(`{"type":%q,"origin_server_ts":%d,"content":%s}`, typ, 1000+n, content))}
	}
	rel := func(typ, parent, extra string) string {
		return fmt.Sprintf(`{"body":"r","m.new_content":{"body":"n"},"m.relates_to":{"rel_type":%q,"event_id":%q%s}}`, typ, parent, extra)
	}
	red := func(id, target string) *EventRecord {
		r := ev(id, "m.room.redaction", "@a:x", `{}`)
		r.Redacts = target
		return r
	}
	jr := ev("$jr", "m.room.join_rules", "@a:x", `{"join_rule":"public"}`)
	jr.StateKey = sk("")
	return []any{
		jr,
		ev("$root", "m.room.message", "@a:x", `{"body":"Hello World, hello!"}`),
		ev("$t1", "m.room.message", "@b:x", rel(RelThread, "$root", "")),
		ev("$t2", "m.room.message", "@c:x", rel(RelThread, "$root", "")),
		ev("$e1", "m.room.message", "@a:x", rel(RelReplace, "$root", "")),
		ev("$e2", "m.room.message", "@a:x", rel(RelReplace, "$root", "")),
		ev("$eb", "m.room.message", "@b:x", rel(RelReplace, "$root", "")),
		ev("$k1", "m.reaction", "@b:x", rel(RelAnnotation, "$root", `,"key":"+1"`)),
		ev("$k2", "m.reaction", "@c:x", rel(RelAnnotation, "$root", `,"key":"+1"`)),
		ev("$ref", "m.room.message", "@c:x", rel(RelReference, "$root", "")),
		red("$x1", "$t2"), // the thread's latest reply
		red("$x2", "$k1"),
		red("$x3", "$e2"),
		red("$x4", "$late"), // before its target
		ev("$late", "m.room.message", "@b:x", rel(RelThread, "$root", "")),
		ev("$bad", "m.room.message", "@b:x", `{"m.relates_to":{"rel_type":"m.thread"}}`),
	}
}

func TestRelationsSearchUserDir(t *testing.T) {
	set, _ := All()
	dir := t.TempDir()
	l := openLog(t, filepath.Join(dir, "db"), set)
	defer l.Close()
	appendAll(t, l, relFixture())
	st, err := NewStore(l, l.DB(), 0)
	if err != nil {
		t.Fatal(err)
	}
	room := "!r:x"

	sum, err := st.RelationSummary(room, "$root")
	if err != nil {
		t.Fatal(err)
	}
	t1, _, _ := st.EventPos("$t1")
	if want := (RelSummary{Edits: 2, Threads: 1, Latest: t1, Refs: 1, Annots: 1}); sum != want {
		t.Errorf("summary %+v, want %+v", sum, want)
	}
	e1, _, _ := st.EventPos("$e1")
	if q, err := st.LatestEdit(room, "$root", "@a:x", "m.room.message"); err != nil || q != e1 {
		t.Errorf("latest edit %d %v, want %d", q, err, e1)
	}
	var kids []string
	st.Relations(room, "$root", "", "", 0, math.MaxUint64, false, func(r Relation) bool {
		kids = append(kids, r.EventID)
		return true
	})
	if want := []string{"$t1", "$e1", "$eb", "$k2", "$ref"}; !reflect.DeepEqual(kids, want) {
		t.Errorf("children %v, want %v", kids, want)
	}
	var threads []Thread
	st.Threads(room, math.MaxUint64, func(th Thread) bool { threads = append(threads, th); return true })
	if len(threads) != 1 || threads[0].Root != "$root" || threads[0].Latest != t1 {
		t.Errorf("threads %+v", threads)
	}
	if ok, _ := st.ThreadParticipant(room, "$root", "@c:x"); ok {
		t.Errorf("@c:x still participates after its reply was redacted")
	}
	if ok, _ := st.ThreadParticipant(room, "$root", "@b:x"); !ok {
		t.Errorf("@b:x does not participate")
	}
	if ac, _ := st.Annotations(room, "$root"); len(ac) != 1 || ac[0].Count != 1 {
		t.Errorf("annotations %+v", ac)
	}

	var toks []string
	st.SearchPrefix(room, SearchBody, "hel", func(h SearchHit) bool {
		toks = append(toks, fmt.Sprintf("%s:%d", h.Token, h.Count))
		return true
	})
	if want := []string{"hello:2"}; !reflect.DeepEqual(toks, want) {
		t.Errorf("search %v", toks)
	}
	if pub, _ := st.PublicRooms(); !reflect.DeepEqual(pub, []string{room}) {
		t.Errorf("public rooms %v", pub)
	}

	rebuildMatches(t, set, l, filepath.Join(dir, "scratch"))
}

func TestSearchTokens(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{"Hello, World!", []string{"hello", "world"}},
		{"  ", nil},
		{"ÉCOLE d'été 42", []string{"école", "d", "été", "42"}},
		{"a_b-c", []string{"a", "b", "c"}},
	}
	for _, c := range cases {
		if got := SearchTokens(c.in); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%q: %v, want %v", c.in, got, c.want)
		}
	}
}

func FuzzSearchTokens(f *testing.F) {
	for _, s := range []string{"hello world", "", "\x00\xff", "ÉCOLE"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, tok := range SearchTokens(s) {
			if tok == "" || len(tok) > maxTokenBytes {
				t.Fatalf("bad token %q", tok)
			}
			for i := 0; i < len(tok); i++ {
				if tok[i] == 0 {
					t.Fatalf("token holds 0x00")
				}
			}
		}
	})
}

func BenchmarkSearchTokens(b *testing.B) {
	b.ReportAllocs()
	text := "The quick brown fox jumps over the lazy dog, again and AGAIN: 42 times!"
	for i := 0; i < b.N; i++ {
		SearchTokens(text)
	}
}

// BenchmarkRelationsApply folds thread replies, the hot relation.
func BenchmarkRelationsApply(b *testing.B) {
	set, _ := All()
	l := openLog(b, b.TempDir(), set)
	defer l.Close()
	appendAll(b, l, relFixture())
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		appendAll(b, l, []any{&EventRecord{RoomID: "!r:x", EventID: fmt.Sprintf("$b%d", i), RoomVersion: "12", Type: "m.room.message",
			Sender: "@b:x", Status: Accepted,
			PDU: []byte(`{"origin_server_ts":1,"content":{"body":"reply","m.relates_to":{"rel_type":"m.thread","event_id":"$root"}}}`)}})
	}
}
