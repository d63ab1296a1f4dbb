package dag

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

const (
	baseV10 = `{"auth_events":["$a1","$a2"],"content":{"body":"x"},"depth":3,"hashes":{"sha256":"abc"},` +
		`"origin_server_ts":5,"prev_events":["$p"],"room_id":"!r:x","sender":"@s:x",` +
		`"signatures":{"x":{"ed25519:1":"sig"}},"type":"m.room.message"}`
	baseV1 = `{"auth_events":[["$a1:x",{"sha256":"h"}],["$a2:x",{}]],"content":{"body":"x"},"depth":3,` +
		`"event_id":"$e:x","hashes":{"sha256":"abc"},"origin":"x","origin_server_ts":5,"prev_events":[["$p:x",{"sha256":"h"}]],` +
		`"room_id":"!r:x","sender":"@s:x","signatures":{"x":{"ed25519:1":"sig"}},"type":"m.room.message"}`
	baseV12 = `{"auth_events":["$a1"],"content":{"membership":"join"},"depth":3,"hashes":{"sha256":"abc"},` +
		`"origin_server_ts":5,"prev_events":["$p"],"room_id":"!mauT12AzsoqxV7Abvy_ApA-HNPK1LcT4GbP70_AOPyQ",` +
		`"sender":"@s:x","signatures":{"x":{"ed25519:1":"sig"}},"state_key":"@s:x","type":"m.room.member"}`
	createV12 = `{"auth_events":[],"content":{"room_version":"12"},"depth":1,"hashes":{"sha256":"abc"},` +
		`"origin_server_ts":5,"prev_events":[],"sender":"@s:x","signatures":{"x":{"ed25519:1":"sig"}},"state_key":"","type":"m.room.create"}`
)

// mutate decodes an event, applies f and encodes it again.
func mutate(t testing.TB, base string, f func(m map[string]any)) []byte {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(base))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatal(err)
	}
	f(m)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseEventFields(t *testing.T) {
	ev, err := ParseEvent([]byte(baseV10), &RoomV10)
	if err != nil {
		t.Fatal(err)
	}
	want := Event{
		Version: &RoomV10, Sender: "@s:x", RoomID: "!r:x", Type: "m.room.message",
		Content: json.RawMessage(`{"body":"x"}`), PrevEvents: []string{"$p"}, AuthEvents: []string{"$a1", "$a2"},
		Depth: 3, OriginServerTS: 5,
	}
	checkEvent(t, ev, &want)
	if id, _ := EventID([]byte(baseV10), &RoomV10); ev.ID != id || !isHashID(ev.ID) || ev.ID[0] != '$' {
		t.Errorf("ID %s, want %s", ev.ID, id)
	}
	if ev.IsState() || ev.Key() != (StateKeyTuple{Type: "m.room.message"}) {
		t.Error("message event looks like state")
	}

	// v1: pairs, carried event_id, origin, top-level redacts.
	v1 := mutate(t, baseV1, func(m map[string]any) { m["redacts"] = "$victim:x"; m["type"] = "m.room.redaction" })
	ev, err = ParseEvent(v1, &RoomV1)
	if err != nil {
		t.Fatal(err)
	}
	checkEvent(t, ev, &Event{
		Version: &RoomV1, ID: "$e:x", Sender: "@s:x", RoomID: "!r:x", Origin: "x", Type: "m.room.redaction",
		Content: json.RawMessage(`{"body":"x"}`), PrevEvents: []string{"$p:x"}, AuthEvents: []string{"$a1:x", "$a2:x"},
		Depth: 3, OriginServerTS: 5, Redacts: "$victim:x",
	})
	if got := ev.RequiredSigners(); len(got) != 1 || got[0] != "x" {
		t.Errorf("RequiredSigners = %v", got)
	}
	other := mutate(t, baseV1, func(m map[string]any) { m["event_id"] = "$e:elsewhere:8448" })
	if ev, err := ParseEvent(other, &RoomV2); err != nil || strings.Join(ev.RequiredSigners(), ",") != "x,elsewhere:8448" {
		t.Errorf("RequiredSigners with a foreign event_id: %v, %v", ev, err)
	}

	// v12 state event with escapes in strings, and unsigned.
	raw := mutate(t, baseV12, func(m map[string]any) {
		m["state_key"] = "@s:x\n\"q\""
		m["unsigned"] = map[string]any{"age": 4}
	})
	ev, err = ParseEvent(raw, &RoomV12)
	if err != nil {
		t.Fatal(err)
	}
	if ev.StateKey == nil || *ev.StateKey != "@s:x\n\"q\"" || !ev.IsState() || ev.Key() != (StateKeyTuple{"m.room.member", "@s:x\n\"q\""}) {
		t.Errorf("state key %v", ev.StateKey)
	}
	if string(ev.Unsigned) != `{"age":4}` {
		t.Errorf("unsigned %s", ev.Unsigned)
	}

	// v11 reads redacts from content; a top-level one is ignored.
	v11 := mutate(t, baseV10, func(m map[string]any) {
		m["type"] = "m.room.redaction"
		m["content"] = map[string]any{"redacts": "$victim", "reason": "spam"}
		m["redacts"] = "$ignored"
	})
	if ev, err := ParseEvent(v11, &RoomV11); err != nil || ev.Redacts != "$victim" {
		t.Errorf("v11 redaction: %+v, %v", ev, err)
	}
	if ev, err := ParseEvent(v11, &RoomV10); err != nil || ev.Redacts != "$ignored" {
		t.Errorf("v10 redaction: %+v, %v", ev, err)
	}

	// A v12 create event gets its room ID from its event ID.
	ev, err = ParseEvent([]byte(createV12), &RoomV12)
	if err != nil {
		t.Fatal(err)
	}
	if ev.RoomID != "!"+ev.ID[1:] || !isHashID(ev.RoomID) {
		t.Errorf("v12 create: ID %s room %s", ev.ID, ev.RoomID)
	}
	// The same event in v11 needs a room_id.
	if _, err := ParseEvent([]byte(createV12), &RoomV11); err == nil || !strings.Contains(err.Error(), "room_id") {
		t.Errorf("v11 create without room_id: %v", err)
	}
}

func checkEvent(t *testing.T, got, want *Event) {
	t.Helper()
	if want.ID != "" && got.ID != want.ID {
		t.Errorf("ID = %q, want %q", got.ID, want.ID)
	}
	if got.Version != want.Version || got.RoomID != want.RoomID || got.Sender != want.Sender ||
		got.Origin != want.Origin || got.Type != want.Type || got.Depth != want.Depth ||
		got.OriginServerTS != want.OriginServerTS || got.Redacts != want.Redacts {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if !bytes.Equal(got.Content, want.Content) {
		t.Errorf("content %s, want %s", got.Content, want.Content)
	}
	if strings.Join(got.PrevEvents, ",") != strings.Join(want.PrevEvents, ",") ||
		strings.Join(got.AuthEvents, ",") != strings.Join(want.AuthEvents, ",") {
		t.Errorf("prev %v auth %v, want %v %v", got.PrevEvents, got.AuthEvents, want.PrevEvents, want.AuthEvents)
	}
}

func TestParseEventKeepsRawAndCanonicalises(t *testing.T) {
	raw := []byte("{ \"type\" : \"m.room.message\", \"content\": {\"b\": 1, \"a\": \"\\u00e9\"},\n" +
		strings.TrimPrefix(baseV10[:len(baseV10)-len(`,"type":"m.room.message"}`)], `{"auth_events":["$a1","$a2"],"content":{"body":"x"},`) +
		`, "auth_events": ["$a1"] }`)
	ev, err := ParseEvent(raw, &RoomV10)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ev.Raw, raw) {
		t.Error("Raw differs from the input")
	}
	raw[0] = 'X' // the event owns its copy
	if ev.Raw[0] != '{' {
		t.Error("Raw aliases the caller's buffer")
	}
	if string(ev.Content) != `{"a":"é","b":1}` {
		t.Errorf("content %s is not canonical", ev.Content)
	}
	canon, err := ev.CanonicalJSON()
	if err != nil || !IsCanonical(canon) {
		t.Errorf("CanonicalJSON: %s, %v", canon, err)
	}
	if id, _ := EventID(canon, &RoomV10); id != ev.ID {
		t.Error("ID of the canonical form differs")
	}
	// Appending to Content must not scribble over Raw.
	_ = append(ev.Content, "garbage"...)
	if again, _ := ev.CanonicalJSON(); !bytes.Equal(again, canon) {
		t.Error("appending to Content changed the event")
	}
}

func TestParseEventErrors(t *testing.T) {
	del := func(k string) func(map[string]any) { return func(m map[string]any) { delete(m, k) } }
	set := func(k string, v any) func(map[string]any) { return func(m map[string]any) { m[k] = v } }
	many := func(n int, pairs bool) []any {
		out := make([]any, n)
		for i := range out {
			if pairs {
				out[i] = []any{"$e:x", map[string]any{}}
			} else {
				out[i] = "$e"
			}
		}
		return out
	}
	long := "@" + strings.Repeat("a", 251) + ":x.y" // 256 bytes
	tests := []struct {
		name string
		ver  *RoomVersion
		base string
		f    func(map[string]any)
		want error
		msg  string
	}{
		{"no type", &RoomV10, baseV10, del("type"), ErrBadEvent, "type is missing"},
		{"no sender", &RoomV10, baseV10, del("sender"), ErrBadEvent, "sender is missing"},
		{"no room_id", &RoomV10, baseV10, del("room_id"), ErrBadEvent, "room_id is missing"},
		{"no content", &RoomV10, baseV10, del("content"), ErrBadEvent, "content is missing"},
		{"no depth", &RoomV10, baseV10, del("depth"), ErrBadEvent, "depth is missing"},
		{"no ts", &RoomV10, baseV10, del("origin_server_ts"), ErrBadEvent, "origin_server_ts is missing"},
		{"no hashes", &RoomV10, baseV10, del("hashes"), ErrBadEvent, "hashes is missing"},
		{"no signatures", &RoomV10, baseV10, del("signatures"), ErrBadEvent, "signatures is missing"},
		{"no prev_events", &RoomV10, baseV10, del("prev_events"), ErrBadEvent, "prev_events is missing"},
		{"no auth_events", &RoomV10, baseV10, del("auth_events"), ErrBadEvent, "auth_events is missing"},
		{"v1 no event_id", &RoomV1, baseV1, del("event_id"), ErrBadEvent, "event_id is missing"},
		{"type not string", &RoomV10, baseV10, set("type", 1), ErrBadEvent, "type must be a string"},
		{"sender not string", &RoomV10, baseV10, set("sender", []any{}), ErrBadEvent, "sender must be a string"},
		{"sender sigil", &RoomV10, baseV10, set("sender", "s:x"), ErrBadEvent, "does not start with"},
		{"sender no domain", &RoomV10, baseV10, set("sender", "@s"), ErrBadEvent, "not a user ID"},
		{"sender too long", &RoomV10, baseV10, set("sender", long), ErrTooLarge, "sender is 256 bytes"},
		{"room sigil", &RoomV10, baseV10, set("room_id", "#r:x"), ErrBadEvent, "does not start with"},
		{"room no domain", &RoomV10, baseV10, set("room_id", "!r"), ErrBadEvent, "has no domain"},
		{"v12 room not hash", &RoomV12, baseV12, set("room_id", "!r:x"), ErrBadEvent, "not a create event hash"},
		{"v12 create with room_id", &RoomV12, createV12, set("room_id", "!mauT12AzsoqxV7Abvy_ApA-HNPK1LcT4GbP70_AOPyQ"), ErrBadEvent, "must not have a room_id"},
		{"type too long", &RoomV10, baseV10, set("type", strings.Repeat("t", 256)), ErrTooLarge, "type is 256 bytes"},
		{"state_key too long", &RoomV10, baseV10, set("state_key", strings.Repeat("é", 128)), ErrTooLarge, "state_key is 256 bytes"},
		{"state_key not string", &RoomV10, baseV10, set("state_key", nil), ErrBadEvent, "state_key must be a string"},
		{"content not object", &RoomV10, baseV10, set("content", "x"), ErrBadEvent, "content must be an object"},
		{"content null", &RoomV10, baseV10, set("content", nil), ErrBadEvent, "content must be an object"},
		{"depth string", &RoomV10, baseV10, set("depth", "3"), ErrBadEvent, "depth must be an integer"},
		{"depth negative", &RoomV10, baseV10, set("depth", -1), ErrBadEvent, "depth must not be negative"},
		{"depth float v5", &RoomV5, baseV10, set("depth", json.Number("3.5")), ErrBadEvent, "depth must be an integer"},
		{"depth float v10", &RoomV10, baseV10, set("depth", json.Number("3.0")), ErrBadJSON, "fraction"},
		{"depth beyond int64 v5", &RoomV5, baseV10, set("depth", json.Number("9223372036854775808")), ErrBadEvent, "out of range"},
		{"depth beyond 2^53 v6", &RoomV6, baseV10, set("depth", json.Number("9007199254740992")), ErrBadJSON, "integer outside"},
		{"ts string", &RoomV10, baseV10, set("origin_server_ts", "5"), ErrBadEvent, "origin_server_ts must be an integer"},
		{"hashes not object", &RoomV10, baseV10, set("hashes", "x"), ErrBadEvent, "hashes must be an object"},
		{"no sha256", &RoomV10, baseV10, set("hashes", map[string]any{"sha1": "x"}), ErrBadEvent, "sha256 is missing"},
		{"sha256 not string", &RoomV10, baseV10, set("hashes", map[string]any{"sha256": 1}), ErrBadEvent, "sha256 is missing or not a string"},
		{"signatures not object", &RoomV10, baseV10, set("signatures", []any{}), ErrBadEvent, "signatures must be an object"},
		{"signature server not object", &RoomV10, baseV10, set("signatures", map[string]any{"x": "s"}), ErrBadEvent, `signatures["x"] must be an object`},
		{"signature not string", &RoomV10, baseV10, set("signatures", map[string]any{"x": map[string]any{"k": 1}}), ErrBadEvent, "must be a string"},
		{"unsigned not object", &RoomV10, baseV10, set("unsigned", 1), ErrBadEvent, "unsigned must be an object"},
		{"redacts not string", &RoomV10, baseV10, set("redacts", 1), ErrBadEvent, "redacts must be a string"},
		{"prev not array", &RoomV10, baseV10, set("prev_events", "$p"), ErrBadEvent, "prev_events must be an array"},
		{"prev entry not string", &RoomV10, baseV10, set("prev_events", []any{1}), ErrBadEvent, "prev_events entry must be a string"},
		{"prev entry sigil", &RoomV10, baseV10, set("prev_events", []any{"p"}), ErrBadEvent, "does not start with"},
		{"prev pairs in v3+", &RoomV10, baseV10, set("prev_events", []any{[]any{"$p", map[string]any{}}}), ErrBadEvent, "must be a string"},
		{"prev strings in v1", &RoomV1, baseV1, set("prev_events", []any{"$p:x"}), ErrBadEvent, "pairs"},
		{"v1 pair too long", &RoomV1, baseV1, set("auth_events", []any{[]any{"$p:x", map[string]any{}, 1}}), ErrBadEvent, "pairs"},
		{"v1 pair hash not object", &RoomV1, baseV1, set("auth_events", []any{[]any{"$p:x", "h"}}), ErrBadEvent, "pairs"},
		{"v1 event_id no domain", &RoomV1, baseV1, set("event_id", "$e"), ErrBadEvent, "has no domain"},
		{"too many prev", &RoomV10, baseV10, set("prev_events", many(21, false)), ErrBadEvent, "limit 20"},
		{"too many auth", &RoomV10, baseV10, set("auth_events", many(11, false)), ErrBadEvent, "limit 10"},
		{"too many auth v1", &RoomV1, baseV1, set("auth_events", many(11, true)), ErrBadEvent, "limit 10"},
		{"content.redacts not string v11", &RoomV11, baseV10, func(m map[string]any) {
			m["type"] = "m.room.redaction"
			m["content"] = map[string]any{"redacts": 5}
		}, ErrBadEvent, "content.redacts must be a string"},
		{"too large", &RoomV10, baseV10, set("content", map[string]any{"body": strings.Repeat("x", MaxPDUSize)}), ErrTooLarge, "canonical JSON"},
		{"duplicate key", &RoomV10, baseV10, nil, ErrBadJSON, "duplicate key"},
	}
	for _, tt := range tests {
		var raw []byte
		if tt.f == nil {
			raw = []byte(strings.Replace(tt.base, `"depth":3`, `"depth":3,"depth":4`, 1))
		} else {
			raw = mutate(t, tt.base, tt.f)
		}
		_, err := ParseEvent(raw, tt.ver)
		if !errors.Is(err, tt.want) || !strings.Contains(errString(err), tt.msg) {
			t.Errorf("%s: got %v, want %v mentioning %q", tt.name, err, tt.want, tt.msg)
		}
	}
	// The limits themselves are fine.
	for _, ok := range []struct {
		name string
		raw  []byte
	}{
		{"20 prev", mutate(t, baseV10, set("prev_events", many(20, false)))},
		{"10 auth", mutate(t, baseV10, set("auth_events", many(10, false)))},
		{"255-byte sender", mutate(t, baseV10, set("sender", long[:1]+long[2:]))},
		{"255-byte state_key", mutate(t, baseV10, set("state_key", strings.Repeat("k", 255)))},
		{"empty prev", mutate(t, baseV10, set("prev_events", []any{}))},
		{"huge origin_server_ts", mutate(t, baseV10, set("origin_server_ts", json.Number("9007199254740991")))},
		{"negative origin_server_ts", mutate(t, baseV10, set("origin_server_ts", -5))},
		{"origin not string is ignored", mutate(t, baseV10, set("origin", 5))},
	} {
		if _, err := ParseEvent(ok.raw, &RoomV10); err != nil {
			t.Errorf("%s: %v", ok.name, err)
		}
	}
	if _, err := ParseEvent(bytes.Repeat([]byte(" "), maxRawSize+1), &RoomV10); !errors.Is(err, ErrTooLarge) {
		t.Errorf("huge input: %v", err)
	}
	if _, err := ParseEvent([]byte(`[]`), &RoomV10); !errors.Is(err, ErrBadEvent) {
		t.Errorf("array: %v", err)
	}
}

func TestServerName(t *testing.T) {
	for in, want := range map[string]string{
		"@a:example.org":      "example.org",
		"@a:example.org:8448": "example.org:8448",
		"!r:[::1]:8448":       "[::1]:8448",
		"$abc":                "",
		"":                    "",
	} {
		if got := ServerName(in); got != want {
			t.Errorf("ServerName(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzParseEvent(f *testing.F) {
	for _, s := range []string{baseV10, baseV1, baseV12, createV12, string(messageEventJSON), `{}`, `[]`, `{"type":1}`} {
		for _, v := range []string{"1", "4", "10", "11", "12"} {
			f.Add([]byte(s), v)
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte, v string) {
		ver := Version(v)
		if ver == nil {
			ver = &RoomV10
		}
		ev, err := ParseEvent(raw, ver)
		if err != nil {
			return
		}
		if ev.ID == "" || ev.Sender == "" || ev.Content == nil || ev.RoomID == "" {
			t.Fatalf("parsed event lacks ID, sender, content or room: %+v", ev)
		}
		// Whatever parses can be redacted, hashed and re-parsed the same.
		if _, err := Redact(raw, ver); err != nil {
			t.Fatalf("Redact failed on a parsed event: %v", err)
		}
		canon, err := ev.CanonicalJSON()
		if err != nil {
			t.Fatal(err)
		}
		ev2, err := ParseEvent(canon, ver)
		if err != nil || ev2.ID != ev.ID || ev2.RoomID != ev.RoomID {
			t.Fatalf("canonical form parses differently: %v", err)
		}
	})
}
