package api

import (
	"net/url"
	"strings"
	"testing"

	"engram/projections"
)

// TestMembershipEndpoints drives join (by ID and alias), invite, kick, ban,
// unban, leave, knock and forget, with their errors.
func TestMembershipEndpoints(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	alice, bob, carol := ts.register("alice"), ts.register("bob"), ts.register("carol")
	pub := ts.rmCreate(alice, `{"preset":"public_chat","room_alias_name":"lobby"}`)
	priv := ts.rmCreate(alice, `{"preset":"private_chat"}`)
	knockRoom := ts.rmCreate(alice, `{"initial_state":[{"type":"m.room.join_rules","content":{"join_rule":"knock"}}]}`)
	oldRoom := ts.rmCreate(alice, `{"preset":"public_chat","room_version":"6"}`)
	esc := url.PathEscape
	steps := []struct {
		name, method, path, token, body string
		status                          int
		code                            string
	}{
		{"join by alias", "POST", rmV3 + "/join/" + esc("#lobby:test.local"), bob, `{}`, 200, ""},
		{"join again is a no-op", "POST", rmV3 + "/join/" + esc(pub), bob, `{}`, 200, ""},
		{"join unknown alias", "POST", rmV3 + "/join/" + esc("#nope:test.local"), bob, `{}`, 404, "M_NOT_FOUND"},
		{"join remote alias", "POST", rmV3 + "/join/" + esc("#x:elsewhere.example"), bob, `{}`, 404, "M_NOT_FOUND"},
		{"join unknown room", "POST", rmV3 + "/join/" + esc("!nope:test.local"), bob, `{}`, 404, "M_NOT_FOUND"},
		{"join garbage", "POST", rmV3 + "/join/garbage", bob, `{}`, 400, "M_INVALID_PARAM"},
		{"join invite-only", "POST", rmPath(priv, "/join"), bob, `{}`, 403, "M_FORBIDDEN"},
		{"invite without power", "POST", rmPath(pub, "/invite"), bob, `{"user_id":"@carol:test.local"}`, 403, "M_FORBIDDEN"},
		{"invite bad user", "POST", rmPath(pub, "/invite"), alice, `{"user_id":"carol"}`, 400, "M_INVALID_PARAM"},
		{"invite", "POST", rmPath(priv, "/invite"), alice, `{"user_id":"@bob:test.local","reason":"come"}`, 200, ""},
		{"join invited", "POST", rmPath(priv, "/join"), bob, `{}`, 200, ""},
		{"kick without power", "POST", rmPath(pub, "/kick"), bob, `{"user_id":"@alice:test.local"}`, 403, "M_FORBIDDEN"},
		{"kick non-member", "POST", rmPath(pub, "/kick"), alice, `{"user_id":"@carol:test.local"}`, 403, "M_FORBIDDEN"},
		{"kick", "POST", rmPath(pub, "/kick"), alice, `{"user_id":"@bob:test.local","reason":"bye"}`, 200, ""},
		{"rejoin after kick", "POST", rmPath(pub, "/join"), bob, `{}`, 200, ""},
		{"ban", "POST", rmPath(pub, "/ban"), alice, `{"user_id":"@bob:test.local"}`, 200, ""},
		{"join while banned", "POST", rmPath(pub, "/join"), bob, `{}`, 403, "M_FORBIDDEN"},
		{"unban not banned", "POST", rmPath(pub, "/unban"), alice, `{"user_id":"@carol:test.local"}`, 403, "M_FORBIDDEN"},
		{"unban without power", "POST", rmPath(pub, "/unban"), carol, `{"user_id":"@bob:test.local"}`, 403, "M_FORBIDDEN"},
		{"unban", "POST", rmPath(pub, "/unban"), alice, `{"user_id":"@bob:test.local"}`, 200, ""},
		{"join after unban", "POST", rmPath(pub, "/join"), bob, `{}`, 200, ""},
		{"leave", "POST", rmPath(pub, "/leave"), bob, `{}`, 200, ""},
		{"leave again", "POST", rmPath(pub, "/leave"), bob, `{}`, 200, ""},
		{"leave never joined", "POST", rmPath(priv, "/leave"), carol, `{}`, 403, "M_FORBIDDEN"},
		{"leave unknown room", "POST", rmPath("!nope:test.local", "/leave"), carol, `{}`, 404, "M_NOT_FOUND"},
		{"knock", "POST", rmV3 + "/knock/" + esc(knockRoom), carol, `{"reason":"let me in"}`, 200, ""},
		{"knock public room", "POST", rmV3 + "/knock/" + esc(pub), carol, `{}`, 403, "M_FORBIDDEN"},
		{"knock old version", "POST", rmV3 + "/knock/" + esc(oldRoom), carol, `{}`, 403, "M_FORBIDDEN"},
		{"knock unknown", "POST", rmV3 + "/knock/" + esc("!nope:test.local"), carol, `{}`, 404, "M_NOT_FOUND"},
		{"forget while joined", "POST", rmPath(priv, "/forget"), bob, `{}`, 400, "M_UNKNOWN"},
		{"forget after leaving", "POST", rmPath(pub, "/forget"), bob, `{}`, 200, ""},
		{"history gone after forget", "GET", rmPath(pub, "/messages?dir=b"), bob, ``, 403, "M_FORBIDDEN"},
		{"state gone after forget", "GET", rmPath(pub, "/state"), bob, ``, 403, "M_FORBIDDEN"},
	}
	for _, st := range steps {
		r := ts.do(st.method, st.path, st.token, st.body)
		if r.status != st.status || r.errcode() != st.code {
			t.Fatalf("%s: got %d %s, want %d %s", st.name, r.status, r.body, st.status, st.code)
		}
		if st.status == 200 && strings.Contains(st.path, "/join") && r.field("room_id") == "" {
			t.Fatalf("%s: no room_id: %s", st.name, r.body)
		}
	}
	if m, _ := ts.srv.store.MemberOf(knockRoom, "@carol:test.local"); m.Membership != projections.MemberKnock {
		t.Errorf("carol's knock: %+v", m)
	}
	var knock map[string]any
	rmDecode(t, ts.rmOK("GET", rmPath(knockRoom, "/state/m.room.member/@carol:test.local"), alice, ""), &knock)
	if knock["reason"] != "let me in" {
		t.Errorf("knock reason: %v", knock)
	}
	if f, _ := ts.srv.store.Forgotten("@bob:test.local", pub); !f {
		t.Error("forget not recorded")
	}
	// Coming back clears the forget.
	ts.rmOK("POST", rmPath(pub, "/join"), bob, `{}`)
	if f, _ := ts.srv.store.Forgotten("@bob:test.local", pub); f {
		t.Error("forget survives a rejoin")
	}
	var joined struct {
		JoinedRooms []string `json:"joined_rooms"`
	}
	rmDecode(t, ts.rmOK("GET", rmV3+"/joined_rooms", bob, ""), &joined)
	if len(joined.JoinedRooms) != 2 {
		t.Errorf("bob's joined rooms: %v", joined.JoinedRooms)
	}
}
