package api

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func TestProfile(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	tok := ts.register("pia")
	other := ts.register("quin")
	prof := "/_matrix/client/v3/profile/@pia:test.local"

	// A new account's display name is its localpart, as in Synapse.
	if r := ts.do("GET", prof, "", ""); r.status != 200 || string(r.body) != `{"displayname":"pia"}` {
		t.Fatalf("initial profile: %d %s", r.status, r.body)
	}
	room := ts.do("POST", "/_matrix/client/v3/createRoom", tok, `{"preset":"public_chat"}`).field("room_id")
	if r := ts.do("POST", "/_matrix/client/v3/join/"+room, other, `{}`); r.status != 200 {
		t.Fatalf("join: %s", r.body)
	}
	member := func(user string) resp {
		return ts.do("GET", "/_matrix/client/v3/rooms/"+room+"/state/m.room.member/"+user, tok, "")
	}
	if m := member("@pia:test.local"); m.field("displayname") != "pia" {
		t.Fatalf("creator's member event lacks the display name: %s", m.body)
	}

	if r := ts.do("PUT", prof+"/displayname", tok, `{"displayname":"Pia P."}`); r.status != 200 || string(r.body) != "{}" {
		t.Fatalf("put displayname: %d %s", r.status, r.body)
	}
	if r := ts.do("PUT", prof+"/avatar_url", tok, `{"avatar_url":"mxc://test.local/abc"}`); r.status != 200 {
		t.Fatalf("put avatar: %d %s", r.status, r.body)
	}
	if r := ts.do("GET", prof+"/displayname", "", ""); string(r.body) != `{"displayname":"Pia P."}` {
		t.Fatalf("get displayname: %s", r.body)
	}
	m := member("@pia:test.local")
	if m.field("displayname") != "Pia P." || m.field("avatar_url") != "mxc://test.local/abc" || m.field("membership") != "join" {
		t.Fatalf("member event not updated: %s", m.body)
	}
	if r := ts.do("GET", prof, "", ""); string(r.body) != `{"avatar_url":"mxc://test.local/abc","displayname":"Pia P."}` {
		t.Fatalf("profile: %s", r.body)
	}

	// Custom fields (spec 1.16) do not touch rooms.
	if r := ts.do("PUT", prof+"/m.tz", tok, `{"m.tz":"Europe/Paris"}`); r.status != 200 {
		t.Fatalf("m.tz: %d %s", r.status, r.body)
	}
	if r := ts.do("PUT", prof+"/org.example.pets", tok, `{"org.example.pets": {"cats": 2} }`); r.status != 200 {
		t.Fatalf("custom: %d %s", r.status, r.body)
	}
	if r := ts.do("GET", prof+"/org.example.pets", "", ""); string(r.body) != `{"org.example.pets":{"cats":2}}` {
		t.Fatalf("custom get: %s", r.body)
	}
	before := ts.log.Last()
	if r := ts.do("DELETE", prof+"/org.example.pets", tok, ""); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	if r := ts.do("DELETE", prof+"/org.example.pets", tok, ""); r.status != 200 {
		t.Fatalf("delete again: %d %s", r.status, r.body)
	}
	if ts.log.Last() != before+1 {
		t.Fatalf("deleting an absent field was logged")
	}

	// Clearing the display name removes it from the member event.
	if r := ts.do("PUT", prof+"/displayname", tok, `{"displayname":""}`); r.status != 200 {
		t.Fatalf("clear: %d %s", r.status, r.body)
	}
	if m := member("@pia:test.local"); strings.Contains(string(m.body), "displayname") || m.field("avatar_url") == "" {
		t.Fatalf("member event after clearing: %s", m.body)
	}

	big := `{"org.example.big":"` + strings.Repeat("x", 70000) + `"}`
	runErrCases(t, ts, []errCase{
		{"other user", "PUT", "/_matrix/client/v3/profile/@quin:test.local/displayname", tok, `{"displayname":"x"}`, 403, "M_FORBIDDEN"},
		{"delete other user", "DELETE", "/_matrix/client/v3/profile/@quin:test.local/m.tz", tok, ``, 403, "M_FORBIDDEN"},
		{"no token", "PUT", prof + "/displayname", "", `{"displayname":"x"}`, 401, "M_MISSING_TOKEN"},
		{"bad token", "PUT", prof + "/displayname", "bad", `{"displayname":"x"}`, 401, "M_UNKNOWN_TOKEN"},
		{"missing key", "PUT", prof + "/displayname", tok, `{"avatar_url":"x"}`, 400, "M_MISSING_PARAM"},
		{"not a string", "PUT", prof + "/displayname", tok, `{"displayname":5}`, 400, "M_INVALID_PARAM"},
		{"null", "PUT", prof + "/displayname", tok, `{"displayname":null}`, 400, "M_INVALID_PARAM"},
		{"too long", "PUT", prof + "/displayname", tok, `{"displayname":"` + strings.Repeat("n", 257) + `"}`, 400, "M_UNKNOWN"},
		{"not json", "PUT", prof + "/displayname", tok, `{"displayname":`, 400, "M_NOT_JSON"},
		{"not object", "PUT", prof + "/displayname", tok, `"x"`, 400, "M_BAD_JSON"},
		{"invalid key", "PUT", prof + "/Bad", tok, `{"Bad":1}`, 400, "M_INVALID_PARAM"},
		{"key too long", "PUT", prof + "/a." + strings.Repeat("b", 300), tok, `{}`, 400, "M_KEY_TOO_LARGE"},
		{"profile too large", "PUT", prof + "/org.example.big", tok, big, 400, "M_PROFILE_TOO_LARGE"},
		{"unknown user", "GET", "/_matrix/client/v3/profile/@nobody:test.local", "", ``, 404, "M_NOT_FOUND"},
		{"unknown user field", "GET", "/_matrix/client/v3/profile/@nobody:test.local/displayname", "", ``, 404, "M_NOT_FOUND"},
		{"unset field", "GET", prof + "/displayname", "", ``, 404, "M_NOT_FOUND"},
		{"remote user", "GET", "/_matrix/client/v3/profile/@x:elsewhere", "", ``, 404, "M_NOT_FOUND"},
		{"bad user id", "GET", "/_matrix/client/v3/profile/nobody", "", ``, 400, "M_INVALID_PARAM"},
	})

	// A joiner's member event carries the joiner's profile.
	if r := ts.do("PUT", "/_matrix/client/v3/profile/@quin:test.local/displayname", other, `{"displayname":"Q"}`); r.status != 200 {
		t.Fatal(r.status)
	}
	if m := member("@quin:test.local"); m.field("displayname") != "Q" {
		t.Fatalf("quin's member event: %s", m.body)
	}
	room2 := ts.do("POST", "/_matrix/client/v3/createRoom", tok, `{"preset":"public_chat"}`).field("room_id")
	ts.do("POST", "/_matrix/client/v3/join/"+room2, other, `{}`)
	if m := ts.do("GET", fmt.Sprintf("/_matrix/client/v3/rooms/%s/state/m.room.member/@quin:test.local", room2), other, ""); m.field("displayname") != "Q" {
		t.Fatalf("join content: %s", m.body)
	}
	if c := ts.srv.profileContent("@quin:test.local"); c["displayname"] != "Q" || len(c) != 1 {
		t.Fatalf("profileContent: %v", c)
	}
}

// FuzzProfileValue: no input panics, and every accepted value is valid JSON
// of the right shape for its key.
func FuzzProfileValue(f *testing.F) {
	for _, s := range [][2]string{{"displayname", `"Alice"`}, {"displayname", `""`}, {"avatar_url", `null`},
		{"m.tz", `"UTC"`}, {"org.example.x", `{"a":[1,2,{"b":null}]}`}, {"org.example.x", ` 5 `}, {"displayname", `"\u00e9"`}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, key, raw string) {
		if !json.Valid([]byte(raw)) {
			return // the request decoder refuses it before
		}
		v, del, e := checkProfileValue(key, json.RawMessage(raw))
		if e != nil || del {
			return
		}
		if !json.Valid(v) {
			t.Fatalf("accepted invalid JSON %q for %q", v, key)
		}
		if (key == "displayname" || key == "avatar_url") && v[0] != '"' {
			t.Fatalf("%s accepted non-string %q", key, v)
		}
	})
}

func TestProfilePropagatesToEveryRoom(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	tok := ts.register("rae")
	var rooms []string
	for i := 0; i < 10; i++ {
		rooms = append(rooms, ts.do("POST", "/_matrix/client/v3/createRoom", tok, `{}`).field("room_id"))
	}
	left := rooms[9]
	ts.do("POST", "/_matrix/client/v3/rooms/"+left+"/leave", tok, `{}`)
	if r := ts.do("PUT", "/_matrix/client/v3/profile/@rae:test.local/displayname", tok, `{"displayname":"Rae"}`); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	for _, room := range rooms[:9] {
		m := ts.do("GET", "/_matrix/client/v3/rooms/"+room+"/state/m.room.member/@rae:test.local", tok, "")
		if m.field("displayname") != "Rae" || m.field("membership") != "join" {
			t.Fatalf("room %s: %s", room, m.body)
		}
	}
	// The room the user left got no join event.
	var st struct {
		Chunk []json.RawMessage `json:"chunk"`
	}
	json.Unmarshal(ts.do("GET", "/_matrix/client/v3/rooms/"+left+"/messages?dir=b&limit=50", tok, "").body, &st)
	for _, e := range st.Chunk {
		if strings.Contains(string(e), `"displayname":"Rae"`) {
			t.Fatalf("left room got the change: %s", e)
		}
	}
}
