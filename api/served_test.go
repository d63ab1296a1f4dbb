package api

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
)

// The tests of served.go: every cache that lets /sync skip reads must give
// way as soon as what it stands for changes. Each test first serves the
// thing (so the cache holds it), then changes it, then serves it again.

// TestServedPlainEventGainsEditThenRedaction: an event already served
// plain (marked so in its shared client form, in a room with no redaction
// and no relation) is served with its edit bundled once an edit arrives,
// and redacted once redacted, on /sync, /messages and /event.
func TestServedPlainEventGainsEditThenRedaction(t *testing.T) {
	ts, alice, bob, room := syRoomPair(t, Config{EnableRegistration: true, DisablePresence: true})
	orig := ts.syMsg(alice, room, "original text")
	s0 := ts.sySync(bob, "")
	if got := findSyEvent(s0.Rooms.Join[room].Timeline.Events, orig); got == nil || strings.Contains(string(got.Unsigned), "m.relations") {
		t.Fatalf("first serve: %+v", got)
	}
	// Served again, from the memo.
	if e := ts.getEventJSON(bob, room, orig); e.Unsigned.Relations.Replace != nil {
		t.Fatalf("plain event served with an edit: %+v", e)
	}

	edit := ts.sySend(alice, room, "m.room.message", relEdit(orig, "edited text"))
	if e := ts.getEventJSON(bob, room, orig); e.Unsigned.Relations.Replace == nil || e.Unsigned.Relations.Replace.EventID != edit {
		t.Fatalf("edit not bundled after the event was served plain: %+v", e.Unsigned.Relations)
	}
	// An initial sync serves the original from the timeline again.
	s1 := ts.sySync(bob, "")
	if got := findSyEvent(s1.Rooms.Join[room].Timeline.Events, orig); got == nil || !strings.Contains(string(got.Unsigned), `"m.relations"`) {
		t.Fatalf("/sync lost the bundled edit: %+v", got)
	}
	r := ts.syOK("GET", syPath(room, "/messages?dir=b&limit=20"), bob, "")
	if !strings.Contains(string(r.body), `"m.relations"`) {
		t.Fatalf("/messages lost the bundled edit: %s", r.body)
	}

	ts.syOK("PUT", syPath(room, "/redact/"+url.PathEscape(orig)+"/r1"), alice, `{"reason":"gone"}`)
	e := ts.getEventJSON(bob, room, orig)
	var c map[string]any
	json.Unmarshal(e.Content, &c)
	if len(c) != 0 || e.Unsigned.Relations.Replace != nil {
		t.Fatalf("not served redacted after the redaction: content %s, relations %+v", e.Content, e.Unsigned.Relations)
	}
}

// TestServedRedactionOfOldEvent: in a room whose events were all served
// plain, redacting an old event shows on the next read.
func TestServedRedactionOfOldEvent(t *testing.T) {
	ts, alice, bob, room := syRoomPair(t, Config{EnableRegistration: true, DisablePresence: true})
	ids := []string{ts.syMsg(alice, room, "one"), ts.syMsg(alice, room, "two"), ts.syMsg(alice, room, "three")}
	first := ts.sySync(bob, "")
	if n := len(first.Rooms.Join[room].Timeline.Events); n < 3 {
		t.Fatalf("timeline has %d events", n)
	}
	ts.syOK("PUT", syPath(room, "/redact/"+url.PathEscape(ids[0])+"/r1"), alice, `{}`)
	msgs, _ := ts.rmMessages(bob, room, "")
	for _, m := range msgs {
		if m.EventID == ids[0] && m.body() != "" {
			t.Fatalf("old event still served with its body after redaction")
		}
		if m.EventID == ids[1] && m.body() != "two" {
			t.Fatalf("other event changed: %q", m.body())
		}
	}
}

// TestServedMembershipCacheFollowsChanges: the membership cache of /sync
// follows a leave and a rejoin.
func TestServedMembershipCacheFollowsChanges(t *testing.T) {
	ts, alice, bob, room := syRoomPair(t, Config{EnableRegistration: true, DisablePresence: true})
	s := ts.sySync(bob, "")
	ts.syMsg(alice, room, "before leave")
	s = ts.syAfter(bob, s.NextBatch)
	if _, ok := s.Rooms.Join[room]; !ok {
		t.Fatalf("joined room missing")
	}
	ts.syOK("POST", syPath(room, "/leave"), bob, `{}`)
	s = ts.syAfter(bob, s.NextBatch)
	if _, ok := s.Rooms.Leave[room]; !ok {
		t.Fatalf("leave not reported: %s", s.raw)
	}
	ts.syMsg(alice, room, "while away")
	s = ts.syAfter(bob, s.NextBatch)
	if _, ok := s.Rooms.Join[room]; ok {
		t.Fatalf("left room still in join: %s", s.raw)
	}
	ts.syJoin(bob, room)
	s = ts.syAfter(bob, s.NextBatch)
	if _, ok := s.Rooms.Join[room]; !ok {
		t.Fatalf("rejoin not reported: %s", s.raw)
	}
}

// TestServedIgnoreAfterSyncs: ignoring a user after syncs that cached the
// (empty) ignore list hides their messages from the next sync.
func TestServedIgnoreAfterSyncs(t *testing.T) {
	ts, alice, bob, room := syRoomPair(t, Config{EnableRegistration: true, DisablePresence: true})
	s := ts.sySync(bob, "")
	ts.syMsg(alice, room, "visible")
	s = ts.syAfter(bob, s.NextBatch)
	if len(s.Rooms.Join[room].Timeline.Events) != 1 {
		t.Fatalf("message missing: %s", s.raw)
	}
	ts.syOK("PUT", "/user/@bob:test.local/account_data/m.ignored_user_list", bob, `{"ignored_users":{"@alice:test.local":{}}}`)
	s = ts.syAfter(bob, s.NextBatch)
	ts.syMsg(alice, room, "secretword")
	s = ts.syAfter(bob, s.NextBatch)
	if strings.Contains(string(s.raw), "secretword") {
		t.Fatalf("ignored user's message served: %s", s.raw)
	}
}

// TestServedToDeviceAfterQuietSyncs: after syncs that found the inbox empty
// (and cached that), a new to-device message is delivered once.
func TestServedToDeviceAfterQuietSyncs(t *testing.T) {
	ts, alice, bob, room := syRoomPair(t, Config{EnableRegistration: true, DisablePresence: true})
	s := ts.sySync(bob, "")
	for i := 0; i < 3; i++ {
		ts.syMsg(alice, room, "tick")
		s = ts.syAfter(bob, s.NextBatch)
		if s.ToDevice != nil && len(s.ToDevice.Events) > 0 {
			t.Fatalf("unexpected to-device: %s", s.raw)
		}
	}
	dev := bobDevice(t, ts, bob)
	ts.syOK("PUT", "/sendToDevice/m.test/td1", alice, `{"messages":{"@bob:test.local":{"`+dev+`":{"hello":"world"}}}}`)
	s = ts.syAfter(bob, s.NextBatch)
	if s.ToDevice == nil || len(s.ToDevice.Events) != 1 {
		t.Fatalf("to-device message not delivered: %s", s.raw)
	}
	ts.syMsg(alice, room, "tock")
	s = ts.syAfter(bob, s.NextBatch)
	if s.ToDevice != nil && len(s.ToDevice.Events) != 0 {
		t.Fatalf("to-device message delivered twice: %s", s.raw)
	}
}

func bobDevice(t *testing.T, ts *testServer, tok string) string {
	t.Helper()
	r := ts.syOK("GET", "/account/whoami", tok, "")
	var w struct {
		DeviceID string `json:"device_id"`
	}
	json.Unmarshal(r.body, &w)
	if w.DeviceID == "" {
		t.Fatalf("whoami: %s", r.body)
	}
	return w.DeviceID
}

func findSyEvent(evs []syEvent, id string) *syEvent {
	for i := range evs {
		if evs[i].EventID == id {
			return &evs[i]
		}
	}
	return nil
}

// TestServedUnreadCountsFollowPositions: unread counts that reuse the read
// positions read at an earlier sync (the tracker vouches for them) drop
// after a receipt, after the user's own message, and start again after a
// leave and a rejoin; other users' receipts change nothing.
func TestServedUnreadCountsFollowPositions(t *testing.T) {
	ts, alice, bob, room := syRoomPair(t, Config{EnableRegistration: true, DisablePresence: true})
	carol := ts.register("carol")
	ts.syJoin(carol, room) // three members: messages notify
	s := ts.sySync(bob, "")
	step := func(name string, want int) {
		t.Helper()
		s = ts.syAfter(bob, s.NextBatch)
		j, ok := s.Rooms.Join[room]
		if !ok || j.Unread == nil || j.Unread.Notify != want {
			t.Fatalf("%s: want %d notifications: %s", name, want, s.raw)
		}
	}
	ts.syMsg(alice, room, "one")
	step("first", 1)
	last := ts.syMsg(alice, room, "two")
	step("second", 2)
	ts.syOK("POST", syPath(room, "/receipt/m.read/", url.PathEscape(last)), carol, `{}`)
	ts.syMsg(alice, room, "three")
	step("after carol's receipt", 3)
	ts.syOK("POST", syPath(room, "/receipt/m.read/", url.PathEscape(last)), bob, `{}`)
	ts.syMsg(alice, room, "four")
	step("after bob's receipt", 2)
	ts.syMsg(bob, room, "mine")
	ts.syMsg(alice, room, "five")
	step("after bob's message", 1)
	ts.syMsg(alice, room, "six")
	step("six", 2)
	ts.syOK("POST", syPath(room, "/leave"), bob, `{}`)
	s = ts.syAfter(bob, s.NextBatch)
	ts.syMsg(alice, room, "while away")
	ts.syJoin(bob, room)
	ts.syMsg(alice, room, "back")
	step("after rejoin", 1)
}

// TestTokenCacheRevocation: a token the cache holds is refused as soon as
// it is revoked: by logout, by a login that replaces the device's token,
// by logout/all and by deactivation.
func TestTokenCacheRevocation(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true, DisablePresence: true})
	whoami := func(tok string) int { return ts.do("GET", syV3+"/account/whoami", tok, "").status }
	login := func(user, device string) string {
		t.Helper()
		body := `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"` + user + `"},"password":"pw"`
		if device != "" {
			body += `,"device_id":"` + device + `"`
		}
		r := ts.do("POST", syV3+"/login", "", body+"}")
		if r.status != 200 {
			t.Fatalf("login: %d %s", r.status, r.body)
		}
		return r.field("access_token")
	}
	cached := func(tok string) {
		t.Helper()
		for i := 0; i < 3; i++ {
			if st := whoami(tok); st != 200 {
				t.Fatalf("token refused before revocation: %d", st)
			}
		}
	}
	refused := func(what, tok string) {
		t.Helper()
		r := ts.do("GET", syV3+"/account/whoami", tok, "")
		if r.status != 401 || r.field("errcode") != "M_UNKNOWN_TOKEN" {
			t.Fatalf("%s: token still accepted: %d %s", what, r.status, r.body)
		}
	}

	alice := ts.register("alice")
	cached(alice)
	ts.syOK("POST", "/logout", alice, `{}`)
	refused("logout", alice)

	old := login("alice", "DEV1")
	cached(old)
	fresh := login("alice", "DEV1") // the same device: its token is replaced
	refused("login to the same device", old)
	cached(fresh)

	other := login("alice", "")
	cached(other)
	ts.syOK("POST", "/logout/all", fresh, `{}`)
	refused("logout/all", fresh)
	refused("logout/all (other device)", other)

	bob := ts.register("bob")
	cached(bob)
	r := ts.do("POST", syV3+"/account/deactivate", bob, `{}`)
	session := r.field("session")
	r = ts.do("POST", syV3+"/account/deactivate", bob, `{"auth":{"type":"m.login.password","identifier":{"type":"m.id.user","user":"bob"},"password":"pw","session":"`+session+`"}}`)
	if r.status != 200 {
		t.Fatalf("deactivate: %d %s", r.status, r.body)
	}
	refused("deactivation", bob)
}
