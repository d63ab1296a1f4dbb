package api

import (
	"fmt"
	"net/url"
	"testing"
)

type rmPublicRooms struct {
	Chunk []struct {
		RoomID           string  `json:"room_id"`
		Name             *string `json:"name"`
		Topic            *string `json:"topic"`
		CanonicalAlias   *string `json:"canonical_alias"`
		NumJoinedMembers int     `json:"num_joined_members"`
		WorldReadable    bool    `json:"world_readable"`
		GuestCanJoin     bool    `json:"guest_can_join"`
		JoinRule         string  `json:"join_rule"`
		RoomType         *string `json:"room_type"`
		AvatarURL        *string `json:"avatar_url"`
	} `json:"chunk"`
	NextBatch string `json:"next_batch"`
	PrevBatch string `json:"prev_batch"`
	Total     int    `json:"total_room_count_estimate"`
}

func (p rmPublicRooms) ids() []string {
	var out []string
	for _, c := range p.Chunk {
		out = append(out, c.RoomID)
	}
	return out
}

// TestRoomDirectory: publishing rooms and listing the published directory.
func TestRoomDirectory(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	alice, bob, carol := ts.register("alice"), ts.register("bob"), ts.register("carol")
	big := ts.rmCreate(alice, `{"preset":"public_chat","visibility":"public","name":"Big Room","topic":"Lots of people","room_alias_name":"big",
		"initial_state":[{"type":"m.room.avatar","content":{"url":"mxc://test.local/a"}},{"type":"m.room.history_visibility","content":{"history_visibility":"world_readable"}}]}`)
	ts.rmOK("POST", rmPath(big, "/join"), bob, `{}`)
	ts.rmOK("POST", rmPath(big, "/join"), carol, `{}`)
	space := ts.rmCreate(alice, `{"preset":"public_chat","name":"A Space","creation_content":{"type":"m.space"}}`)
	small := ts.rmCreate(bob, `{"preset":"public_chat","name":"small talk"}`)
	hidden := ts.rmCreate(alice, `{"preset":"private_chat","name":"hidden"}`)
	ts.rmOK("POST", rmPath(small, "/join"), carol, `{}`)
	vis := func(room string) string { return rmV3 + "/directory/list/room/" + url.PathEscape(room) }
	steps := []struct {
		name, method, path, token, body string
		status                          int
		code                            string
	}{
		{"publish without power", "PUT", vis(small), carol, `{"visibility":"public"}`, 403, "M_FORBIDDEN"},
		{"publish as outsider", "PUT", vis(space), bob, `{"visibility":"public"}`, 403, "M_FORBIDDEN"},
		{"publish (default public)", "PUT", vis(space), alice, `{}`, 200, ""},
		{"publish", "PUT", vis(small), bob, `{"visibility":"public"}`, 200, ""},
		{"publish invite-only", "PUT", vis(hidden), alice, `{"visibility":"public"}`, 200, ""},
		{"bad visibility", "PUT", vis(small), bob, `{"visibility":"loud"}`, 400, "M_INVALID_PARAM"},
		{"unknown room", "PUT", vis("!nope:test.local"), bob, `{"visibility":"public"}`, 404, "M_NOT_FOUND"},
		{"get unknown", "GET", vis("!nope:test.local"), "", ``, 404, "M_NOT_FOUND"},
		{"get unauthenticated", "GET", vis(small), "", ``, 200, ""},
		{"bad since", "GET", rmV3 + "/publicRooms?since=zz", "", ``, 400, "M_INVALID_PARAM"},
		{"bad limit", "GET", rmV3 + "/publicRooms?limit=x", "", ``, 400, "M_INVALID_PARAM"},
		{"remote server", "GET", rmV3 + "/publicRooms?server=elsewhere.example", "", ``, 404, "M_NOT_FOUND"},
		{"post needs a token", "POST", rmV3 + "/publicRooms", "", `{}`, 401, "M_MISSING_TOKEN"},
		{"post bad body", "POST", rmV3 + "/publicRooms", bob, `{"limit":"x"}`, 400, "M_BAD_JSON"},
	}
	for _, st := range steps {
		r := ts.do(st.method, st.path, st.token, st.body)
		if r.status != st.status || r.errcode() != st.code {
			t.Fatalf("%s: got %d %s, want %d %s", st.name, r.status, r.body, st.status, st.code)
		}
	}
	if r := ts.rmOK("GET", vis(small), "", ""); r.field("visibility") != "public" {
		t.Errorf("visibility: %s", r.body)
	}

	var all rmPublicRooms
	rmDecode(t, ts.rmOK("GET", rmV3+"/publicRooms", "", ""), &all)
	// Largest first (3, 2, 1 joined); the invite-only room is not listed.
	want := []string{big, small, space}
	if fmt.Sprint(all.ids()) != fmt.Sprint(want) || all.Total != 3 {
		t.Fatalf("publicRooms: %+v", all)
	}
	c := all.Chunk[0]
	if c.Name == nil || *c.Name != "Big Room" || c.Topic == nil || *c.Topic != "Lots of people" || c.CanonicalAlias == nil || *c.CanonicalAlias != "#big:test.local" ||
		c.NumJoinedMembers != 3 || !c.WorldReadable || c.GuestCanJoin || c.JoinRule != "public" || c.AvatarURL == nil || *c.AvatarURL != "mxc://test.local/a" || c.RoomType != nil {
		t.Errorf("big room chunk: %+v", c)
	}
	for _, ch := range all.Chunk {
		if ch.RoomID == space && (ch.RoomType == nil || *ch.RoomType != "m.space") {
			t.Errorf("space chunk: %+v", ch)
		}
	}
	// Pagination, one at a time, there and back.
	var got []string
	since, prev := "", ""
	for i := 0; i < 5; i++ {
		var p rmPublicRooms
		q := "?limit=1"
		if since != "" {
			q += "&since=" + since
		}
		rmDecode(t, ts.rmOK("GET", rmV3+"/publicRooms"+q, "", ""), &p)
		got = append(got, p.ids()...)
		if (i == 0) != (p.PrevBatch == "") {
			t.Errorf("page %d prev_batch %q", i, p.PrevBatch)
		}
		prev = p.PrevBatch
		if since = p.NextBatch; since == "" {
			break
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("paginated: %v, want %v", got, want)
	}
	var back rmPublicRooms
	rmDecode(t, ts.rmOK("GET", rmV3+"/publicRooms?limit=1&since="+prev, "", ""), &back)
	if len(back.Chunk) != 1 || back.Chunk[0].RoomID != want[1] {
		t.Errorf("prev_batch page: %v", back.ids())
	}
	// Filters.
	filters := []struct {
		body string
		want []string
	}{
		{`{"filter":{"generic_search_term":"TALK"}}`, []string{small}},
		{`{"filter":{"generic_search_term":"people"}}`, []string{big}},
		{`{"filter":{"generic_search_term":"#big"}}`, []string{big}},
		{`{"filter":{"room_types":["m.space"]}}`, []string{space}},
		{`{"filter":{"room_types":[null]}}`, []string{big, small}},
		{`{"limit":1}`, []string{big}},
		{`{"third_party_instance_id":"irc"}`, nil},
	}
	for _, f := range filters {
		var p rmPublicRooms
		rmDecode(t, ts.rmOK("POST", rmV3+"/publicRooms", carol, f.body), &p)
		if fmt.Sprint(p.ids()) != fmt.Sprint(f.want) {
			t.Errorf("POST %s: %v, want %v", f.body, p.ids(), f.want)
		}
	}
	// Withdrawing a room.
	ts.rmOK("PUT", vis(small), bob, `{"visibility":"private"}`)
	rmDecode(t, ts.rmOK("GET", rmV3+"/publicRooms", "", ""), &all)
	if len(all.Chunk) != 2 {
		t.Errorf("after withdrawing: %v", all.ids())
	}
}

// TestRoomSummary: /v1/room_summary for public rooms without a token, for
// members of private rooms, not for others.
func TestRoomSummary(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	alice, bob := ts.register("alice"), ts.register("bob")
	pub := ts.rmCreate(alice, `{"preset":"public_chat","name":"Pub","room_alias_name":"pub","room_version":"11"}`)
	priv := ts.rmCreate(alice, `{"preset":"private_chat","name":"Priv","initial_state":[{"type":"m.room.encryption","content":{"algorithm":"m.megolm.v1.aes-sha2"}}]}`)
	sum := func(id string) string { return "/_matrix/client/v1/room_summary/" + url.PathEscape(id) }
	cases := []struct {
		name, id, token string
		status          int
		membership      string
	}{
		{"public, no token", pub, "", 200, ""},
		{"public by alias", "#pub:test.local", bob, 200, "leave"},
		{"private, member", priv, alice, 200, "join"},
		{"private, no token", priv, "", 404, ""},
		{"private, outsider", priv, bob, 404, ""},
		{"unknown", "!nope:test.local", bob, 404, ""},
		{"unknown alias", "#nope:test.local", bob, 404, ""},
		{"bad token", pub, "nope", 401, ""},
	}
	for _, c := range cases {
		r := ts.do("GET", sum(c.id), c.token, "")
		if r.status != c.status {
			t.Errorf("%s: %d %s", c.name, r.status, r.body)
			continue
		}
		if r.status == 200 && r.field("membership") != c.membership {
			t.Errorf("%s: membership %q in %s", c.name, r.field("membership"), r.body)
		}
	}
	r := ts.rmOK("GET", sum(pub), "", "")
	if r.field("room_id") != pub || r.field("name") != "Pub" || r.field("room_version") != "11" || r.field("join_rule") != "public" || r.field("canonical_alias") != "#pub:test.local" {
		t.Errorf("summary: %s", r.body)
	}
	if r := ts.rmOK("GET", sum(priv), alice, ""); r.field("encryption") != "m.megolm.v1.aes-sha2" {
		t.Errorf("encrypted summary: %s", r.body)
	}
	// An invite opens the summary.
	ts.rmOK("POST", rmPath(priv, "/invite"), alice, `{"user_id":"@bob:test.local"}`)
	if r := ts.do("GET", sum(priv), bob, ""); r.status != 200 || r.field("membership") != "invite" {
		t.Errorf("invitee: %d %s", r.status, r.body)
	}
}
