package api

import (
	"strings"
	"testing"
)

func TestInviteBlocking(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	a, b := ts.register("alice"), ts.register("bob")
	const bob = "@bob:test.local"
	block := func(on bool) {
		body := `{}`
		if on {
			body = `{"default_action":"block"}`
		}
		if r := ts.do("PUT", "/_matrix/client/v3/user/"+bob+"/account_data/m.invite_permission_config", b, body); r.status != 200 {
			t.Fatalf("account data: %d %s", r.status, r.body)
		}
	}
	room := ts.do("POST", "/_matrix/client/v3/createRoom", a, `{}`).field("room_id")
	// An invite sent before blocking is hidden from /sync once blocked.
	if r := ts.do("POST", "/_matrix/client/v3/rooms/"+room+"/invite", a, `{"user_id":"`+bob+`"}`); r.status != 200 {
		t.Fatalf("invite: %d %s", r.status, r.body)
	}
	block(true)
	if r := ts.do("GET", "/_matrix/client/v3/sync", b, ""); strings.Contains(string(r.body), room) {
		t.Fatalf("blocked invite served over sync: %s", r.body)
	}
	room2 := ts.do("POST", "/_matrix/client/v3/createRoom", a, `{}`).field("room_id")
	cases := []struct{ name, method, path, body string }{
		{"invite endpoint", "POST", "/_matrix/client/v3/rooms/" + room2 + "/invite", `{"user_id":"` + bob + `"}`},
		{"member state", "PUT", "/_matrix/client/v3/rooms/" + room2 + "/state/m.room.member/" + bob, `{"membership":"invite"}`},
	}
	for _, c := range cases {
		before := ts.log.Last()
		r := ts.do(c.method, c.path, a, c.body)
		if r.status != 403 || r.errcode() != "M_INVITE_BLOCKED" {
			t.Errorf("%s: %d %s", c.name, r.status, r.body)
		}
		if ts.log.Last() != before {
			t.Errorf("%s: a refused invite appended records", c.name)
		}
	}
	// createRoom succeeds; the blocked invitee is skipped.
	r := ts.do("POST", "/_matrix/client/v3/createRoom", a, `{"invite":["`+bob+`"]}`)
	room3 := r.field("room_id")
	if r.status != 200 || room3 == "" {
		t.Fatalf("createRoom with a blocked invitee: %d %s", r.status, r.body)
	}
	if m := ts.do("GET", "/_matrix/client/v3/rooms/"+room3+"/state/m.room.member/"+bob, a, ""); m.status != 404 {
		t.Fatalf("blocked user invited by createRoom: %d %s", m.status, m.body)
	}
	// Unblocked: invites work and the earlier one is served again.
	block(false)
	if r := ts.do("POST", "/_matrix/client/v3/rooms/"+room2+"/invite", a, `{"user_id":"`+bob+`"}`); r.status != 200 {
		t.Fatalf("invite after unblocking: %d %s", r.status, r.body)
	}
	if r := ts.do("GET", "/_matrix/client/v3/sync", b, ""); !strings.Contains(string(r.body), room) || !strings.Contains(string(r.body), room2) {
		t.Fatalf("invites not served after unblocking: %s", r.body)
	}
}
