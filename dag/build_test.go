package dag

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func strp(s string) *string { return &s }

func TestBuildAllVersions(t *testing.T) {
	k := specKey(t)
	for _, id := range allVersions {
		ver := Version(id)
		room := "!r:example.org"
		if ver.RoomIDFromCreate {
			room = ""
		}
		create, err := Build(ProtoEvent{
			RoomID: room, Sender: "@alice:example.org", Type: "m.room.create", StateKey: strp(""),
			Content: json.RawMessage(`{"room_version": "` + id + `"}`), Depth: 1, OriginServerTS: 1700000000000,
		}, ver, "example.org", k.ID, k.Key)
		if err != nil {
			t.Fatalf("v%s create: %v", id, err)
		}
		roomID := create.RoomID
		if ver.RoomIDFromCreate {
			if roomID != "!"+create.ID[1:] || bytes.Contains(create.Raw, []byte(`"room_id"`)) {
				t.Errorf("v%s create: room ID %s from ID %s; raw %s", id, roomID, create.ID, create.Raw)
			}
		} else if roomID != room {
			t.Errorf("v%s create: room ID %s", id, roomID)
		}
		auth := []string{create.ID}
		if ver.RoomIDFromCreate {
			auth = nil // "The m.room.create event MUST NOT be selected for auth_events"
		}
		member, err := Build(ProtoEvent{
			RoomID: roomID, Sender: "@alice:example.org", Type: "m.room.member", StateKey: strp("@alice:example.org"),
			Content: json.RawMessage(`{"membership":"join","displayname":"Alice \"A\" <3"}`), PrevEvents: []string{create.ID},
			AuthEvents: auth, Depth: 2, OriginServerTS: 1700000000001,
			RefHashes: map[string][]byte{create.ID: refHash(t, create)},
		}, ver, "example.org", k.ID, k.Key)
		if err != nil {
			t.Fatalf("v%s member: %v", id, err)
		}
		msg, err := Build(ProtoEvent{
			RoomID: roomID, Sender: "@alice:example.org", Type: "m.room.message",
			Content: json.RawMessage(`{"msgtype":"m.text","body":"héllo\u0000"}`), PrevEvents: []string{member.ID},
			AuthEvents: append(auth, member.ID), Depth: 3, OriginServerTS: 1700000000002,
		}, ver, "example.org", k.ID, k.Key)
		if err != nil {
			t.Fatalf("v%s message: %v", id, err)
		}
		red, err := Build(ProtoEvent{
			RoomID: roomID, Sender: "@alice:example.org", Type: "m.room.redaction",
			Content: json.RawMessage(`{"reason":"oops"}`), PrevEvents: []string{msg.ID}, AuthEvents: append(auth, member.ID),
			Depth: 4, OriginServerTS: 1700000000003, Redacts: msg.ID,
		}, ver, "example.org", k.ID, k.Key)
		if err != nil {
			t.Fatalf("v%s redaction: %v", id, err)
		}
		if red.Redacts != msg.ID {
			t.Errorf("v%s: Redacts = %q, want %q", id, red.Redacts, msg.ID)
		}
		if inContent := getMember(red.Content, "redacts") != nil; inContent != ver.CreatorIsSender {
			t.Errorf("v%s: content.redacts present = %v; raw %s", id, inContent, red.Raw)
		}

		for _, ev := range []*Event{create, member, msg, red} {
			checkBuilt(t, ev, ver, k)
		}
		if !strings.Contains(string(msg.Content), `"body":"héllo\u0000"`) {
			t.Errorf("v%s: message content %s", id, msg.Content)
		}
		// Pair format carries the reference hash given in RefHashes.
		if ver.EventIDFormat == 1 {
			h := base64.RawStdEncoding.EncodeToString(refHash(t, create))
			if want := `"prev_events":[["` + create.ID + `",{"sha256":"` + h + `"}]]`; !strings.Contains(string(member.Raw), want) {
				t.Errorf("v%s: member %s lacks %s", id, member.Raw, want)
			}
			if !strings.Contains(string(msg.Raw), `"prev_events":[["`+member.ID+`",{}]]`) {
				t.Errorf("v%s: message without RefHashes: %s", id, msg.Raw)
			}
		}
	}
}

func refHash(t *testing.T, ev *Event) []byte {
	t.Helper()
	sum, err := ReferenceHash(ev.Raw, ev.Version)
	if err != nil {
		t.Fatal(err)
	}
	return sum[:]
}

func checkBuilt(t *testing.T, ev *Event, ver *RoomVersion, k SigningKey) {
	t.Helper()
	if !IsCanonical(ev.Raw) {
		t.Errorf("v%s %s: Raw is not canonical: %s", ver.ID, ev.Type, ev.Raw)
	}
	if err := ev.CheckContentHash(); err != nil {
		t.Errorf("v%s %s: %v", ver.ID, ev.Type, err)
	}
	if err := ev.VerifySignature("example.org", k.ID, k.Public()); err != nil {
		t.Errorf("v%s %s: %v", ver.ID, ev.Type, err)
	}
	parsed, err := ParseEvent(ev.Raw, ver)
	if err != nil {
		t.Fatalf("v%s %s: re-parse: %v", ver.ID, ev.Type, err)
	}
	checkEvent(t, parsed, ev)
	if parsed.ID != ev.ID || parsed.RoomID != ev.RoomID {
		t.Errorf("v%s %s: re-parsed ID %s room %s, built %s %s", ver.ID, ev.Type, parsed.ID, parsed.RoomID, ev.ID, ev.RoomID)
	}
	switch ver.EventIDFormat {
	case 1:
		if !strings.HasPrefix(ev.ID, "$") || !strings.HasSuffix(ev.ID, ":example.org") || len(ev.ID) != 1+18+len(":example.org") {
			t.Errorf("v%s: event ID %s", ver.ID, ev.ID)
		}
	case 3:
		sum, _ := ReferenceHash(ev.Raw, ver)
		if ev.ID != "$"+base64.RawStdEncoding.EncodeToString(sum[:]) {
			t.Errorf("v3: event ID %s", ev.ID)
		}
	default:
		sum, _ := ReferenceHash(ev.Raw, ver)
		if ev.ID != "$"+base64.RawURLEncoding.EncodeToString(sum[:]) || !isHashID(ev.ID) {
			t.Errorf("v%s: event ID %s", ver.ID, ev.ID)
		}
	}
	if bytes.Contains(ev.Raw, []byte(`"origin"`)) || bytes.Contains(ev.Raw, []byte(`"unsigned"`)) {
		t.Errorf("v%s: built event has origin or unsigned: %s", ver.ID, ev.Raw)
	}
}

func TestBuildIsDeterministic(t *testing.T) {
	k := specKey(t)
	p := ProtoEvent{RoomID: "!r:x", Sender: "@a:x", Type: "m.room.message", Content: json.RawMessage(`{"b":1,"a":2}`),
		PrevEvents: []string{"$p"}, AuthEvents: []string{"$a"}, Depth: 9, OriginServerTS: 42}
	a, err := Build(p, &RoomV10, "x", k.ID, k.Key)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Build(p, &RoomV10, "x", k.ID, k.Key)
	if !bytes.Equal(a.Raw, b.Raw) || a.ID != b.ID {
		t.Error("building the same event twice gives different bytes")
	}
	// The hash covers exactly the template from EncodeProto.
	tmpl, err := EncodeProto(p, &RoomV10, "x")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(tmpl)
	if !strings.Contains(string(a.Raw), base64.RawStdEncoding.EncodeToString(sum[:])) {
		t.Error("content hash is not sha256 of the template")
	}
	// make_join style: template -> AddContentHash -> SignEvent -> same event.
	hashed, err := AddContentHash(tmpl, &RoomV10)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := SignEvent(hashed, &RoomV10, "x", k.ID, k.Key)
	if err != nil || !bytes.Equal(signed, a.Raw) {
		t.Errorf("template path gives %s, %v; want %s", signed, err, a.Raw)
	}
	// A v1 event ID can be given.
	p.EventID = "$fixed:x"
	v1, err := Build(p, &RoomV1, "x", k.ID, k.Key)
	if err != nil || v1.ID != "$fixed:x" {
		t.Errorf("v1 with EventID: %v, %v", v1, err)
	}
}

func TestBuildErrors(t *testing.T) {
	k := specKey(t)
	ok := ProtoEvent{RoomID: "!r:x", Sender: "@a:x", Type: "m.room.message", Content: json.RawMessage(`{}`),
		PrevEvents: []string{"$p"}, AuthEvents: []string{"$a"}, Depth: 1, OriginServerTS: 1}
	tests := []struct {
		name   string
		ver    *RoomVersion
		edit   func(p *ProtoEvent)
		keyID  string
		origin string
		want   error
		msg    string
	}{
		{"no type", &RoomV10, func(p *ProtoEvent) { p.Type = "" }, "", "", ErrBadEvent, "type is empty"},
		{"no room", &RoomV10, func(p *ProtoEvent) { p.RoomID = "" }, "", "", ErrBadEvent, "room_id is missing"},
		{"v12 create with room", &RoomV12, func(p *ProtoEvent) { p.Type = "m.room.create"; p.StateKey = strp("") }, "", "", ErrBadEvent, "must not have a room_id"},
		{"negative depth", &RoomV10, func(p *ProtoEvent) { p.Depth = -1 }, "", "", ErrBadEvent, "negative"},
		{"depth beyond 2^53 in v6+", &RoomV6, func(p *ProtoEvent) { p.Depth = 1 << 53 }, "", "", ErrBadEvent, "canonical JSON integer range"},
		{"ts beyond 2^53 in v6+", &RoomV6, func(p *ProtoEvent) { p.OriginServerTS = -(1 << 53) }, "", "", ErrBadEvent, "canonical JSON integer range"},
		{"content not object", &RoomV10, func(p *ProtoEvent) { p.Content = json.RawMessage(`[]`) }, "", "", ErrBadEvent, "content must be an object"},
		{"content bad json", &RoomV10, func(p *ProtoEvent) { p.Content = json.RawMessage(`{`) }, "", "", ErrBadJSON, ""},
		{"content float in v6+", &RoomV6, func(p *ProtoEvent) { p.Content = json.RawMessage(`{"a":1.5}`) }, "", "", ErrBadJSON, "fraction"},
		{"redacts on other type", &RoomV10, func(p *ProtoEvent) { p.Redacts = "$x" }, "", "", ErrBadEvent, "only for m.room.redaction"},
		{"content.redacts differs", &RoomV11, func(p *ProtoEvent) {
			p.Type = "m.room.redaction"
			p.Redacts = "$x"
			p.Content = json.RawMessage(`{"redacts":"$y"}`)
		}, "", "", ErrBadEvent, "differs"},
		{"invalid UTF-8 sender", &RoomV10, func(p *ProtoEvent) { p.Sender = "@\xff:x" }, "", "", ErrBadJSON, "UTF-8"},
		{"bad sender", &RoomV10, func(p *ProtoEvent) { p.Sender = "a" }, "", "", ErrBadEvent, "does not start with"},
		{"too many prev", &RoomV10, func(p *ProtoEvent) { p.PrevEvents = make([]string, 21); fillIDs(p.PrevEvents) }, "", "", ErrBadEvent, "limit 20"},
		{"huge content", &RoomV10, func(p *ProtoEvent) { p.Content = json.RawMessage(`{"b":"` + strings.Repeat("x", MaxPDUSize) + `"}`) }, "", "", ErrTooLarge, ""},
		{"bad key ID", &RoomV10, func(p *ProtoEvent) {}, "rsa:1", "", ErrBadKey, "key ID"},
		{"v1 without origin", &RoomV1, func(p *ProtoEvent) {}, "", "-", ErrBadEvent, "origin"},
	}
	for _, tt := range tests {
		p := ok
		tt.edit(&p)
		keyID := k.ID
		if tt.keyID != "" {
			keyID = tt.keyID
		}
		origin := "x"
		if tt.origin == "-" {
			origin = ""
		}
		_, err := Build(p, tt.ver, origin, keyID, k.Key)
		if !errors.Is(err, tt.want) || !strings.Contains(errString(err), tt.msg) {
			t.Errorf("%s: got %v, want %v mentioning %q", tt.name, err, tt.want, tt.msg)
		}
	}
	if _, err := Build(ok, &RoomV10, "x", k.ID, nil); !errors.Is(err, ErrBadKey) {
		t.Errorf("nil key: %v", err)
	}
	// v11: an existing equal content.redacts is fine and not duplicated.
	p := ok
	p.Type, p.Redacts, p.Content = "m.room.redaction", "$x", json.RawMessage(`{"redacts":"$x"}`)
	ev, err := Build(p, &RoomV11, "x", k.ID, k.Key)
	if err != nil || string(ev.Content) != `{"redacts":"$x"}` || ev.Redacts != "$x" {
		t.Errorf("v11 redaction with content.redacts: %v, %v", ev, err)
	}
}

func fillIDs(ids []string) {
	for i := range ids {
		ids[i] = "$e"
	}
}

// benchKey and benchProto are a typical message event to build.
func benchProto() ProtoEvent {
	return ProtoEvent{
		RoomID: "!Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ", Sender: "@alice:example.org", Type: "m.room.message",
		Content:    json.RawMessage(`{"body":"Hello there! Has anyone tried the new build yet? It seems a lot faster.","format":"org.matrix.custom.html","formatted_body":"<p>Hello there! Has anyone tried the <b>new build</b> yet?</p>","m.mentions":{},"msgtype":"m.text"}`),
		PrevEvents: []string{"$yEvX4xRQzmj7NTkKX6AoGZWUS8PT8WBCwGEqGcp6DGE"},
		AuthEvents: []string{"$UB3Vd8oK1prbm7aBvwgpKeCZgzbnWwb8mqbX3fOQOKg", "$MjsE8HfVt3jOdVNEwrVvRUHoc7W8cGzkIPsgx5Xvv3Y"},
		Depth:      1234, OriginServerTS: 1718040000000,
	}
}

func BenchmarkBuildAndSign(b *testing.B) {
	k := specKey(b)
	p := benchProto()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Build(p, &RoomV12, "example.org", k.ID, k.Key); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseEvent(b *testing.B) {
	b.SetBytes(int64(len(messageEventJSON)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseEvent(messageEventJSON, &RoomV12); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	k := specKey(b)
	ev, err := Build(benchProto(), &RoomV12, "example.org", k.ID, k.Key)
	if err != nil {
		b.Fatal(err)
	}
	pub := k.Public()
	b.ReportAllocs()
	for b.Loop() {
		if err := VerifyEvent(ev.Raw, &RoomV12, "example.org", k.ID, pub); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckContentHash(b *testing.B) {
	k := specKey(b)
	ev, err := Build(benchProto(), &RoomV12, "example.org", k.ID, k.Key)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := CheckContentHash(ev.Raw, &RoomV12); err != nil {
			b.Fatal(err)
		}
	}
}

// TestConcurrentUse runs the pooled paths from several goroutines; run with
// -race to check that pooled buffers are never shared.
func TestConcurrentUse(t *testing.T) {
	k := specKey(t)
	done := make(chan error, 4)
	for g := 0; g < 4; g++ {
		go func(g int) {
			for i := 0; i < 50; i++ {
				p := benchProto()
				p.Depth = int64(g*1000 + i)
				ev, err := Build(p, &RoomV12, "example.org", k.ID, k.Key)
				if err != nil {
					done <- err
					return
				}
				parsed, err := ParseEvent(ev.Raw, &RoomV12)
				if err != nil {
					done <- err
					return
				}
				if parsed.ID != ev.ID || parsed.Depth != p.Depth {
					done <- errors.New("concurrent parse gave a different event")
					return
				}
				if err := VerifyEvent(ev.Raw, &RoomV12, "example.org", k.ID, k.Public()); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}(g)
	}
	for g := 0; g < 4; g++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
