package api

import (
	"strings"
	"testing"
)

// TestIgnoredUsersHiddenOnEveryReadPath: once alice ignores bob, bob's
// messages are gone from her /context and /search as from /sync and
// /messages; bob's state (his membership) stays.
func TestIgnoredUsersHiddenOnEveryReadPath(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	a, b := ts.register("alice"), ts.register("bob")
	room := ts.do("POST", "/_matrix/client/v3/createRoom", a, `{"preset":"public_chat"}`).field("room_id")
	ts.do("POST", "/_matrix/client/v3/join/"+room, b, `{}`)
	anchor := ts.do("PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/1", a, `{"msgtype":"m.text","body":"hello there"}`).field("event_id")
	ts.do("PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/2", b, `{"msgtype":"m.text","body":"hello secretword"}`)
	if r := ts.do("PUT", "/_matrix/client/v3/user/@alice:test.local/account_data/m.ignored_user_list", a, `{"ignored_users":{"@bob:test.local":{}}}`); r.status != 200 {
		t.Fatalf("ignore: %d %s", r.status, r.body)
	}
	for _, path := range []string{
		"/_matrix/client/v3/rooms/" + room + "/context/" + anchor + "?limit=10",
		"/_matrix/client/v3/rooms/" + room + "/messages?dir=b&limit=50",
	} {
		r := ts.do("GET", path, a, "")
		if r.status != 200 || strings.Contains(string(r.body), "secretword") {
			t.Errorf("%s: %d %s", path, r.status, r.body)
		}
	}
	r := ts.do("POST", "/_matrix/client/v3/search", a, `{"search_categories":{"room_events":{"search_term":"secretword"}}}`)
	if r.status != 200 || strings.Contains(string(r.body), "secretword\"") {
		t.Errorf("search: %d %s", r.status, r.body)
	}
	// Bob, not ignored by himself, still sees it.
	if r := ts.do("GET", "/_matrix/client/v3/rooms/"+room+"/messages?dir=b&limit=50", b, ""); !strings.Contains(string(r.body), "secretword") {
		t.Errorf("bob lost his own message: %s", r.body)
	}
}
