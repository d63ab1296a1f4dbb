package api

import (
	"encoding/json"
	"fmt"
	"net/url"
	"testing"
)

// TestRoomState: /state, /state/{type}/{key} in both formats, prev_content.
func TestRoomState(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	alice, bob := ts.register("alice"), ts.register("bob")
	room := ts.rmCreate(alice, `{"preset":"public_chat","name":"one"}`)
	ts.rmState(alice, room, "m.room.name", "", `{"name":"two"}`)
	ts.rmState(alice, room, "org.example.k", "a/b", `{"x":1}`)

	var st []rmEvent
	rmDecode(t, ts.rmOK("GET", rmPath(room, "/state"), alice, ""), &st)
	types := map[string]int{}
	for _, e := range st {
		types[e.Type]++
	}
	for _, typ := range []string{"m.room.create", "m.room.member", "m.room.power_levels", "m.room.join_rules", "m.room.history_visibility", "m.room.name", "org.example.k"} {
		if types[typ] != 1 {
			t.Errorf("/state has %d %s", types[typ], typ)
		}
	}
	var name rmEvent
	rmDecode(t, ts.rmOK("GET", rmPath(room, "/state/m.room.name/?format=event"), alice, ""), &name)
	if name.Type != "m.room.name" || name.EventID == "" || string(name.Unsigned.PrevContent) != `{"name":"one"}` || name.Unsigned.ReplacesState == "" {
		t.Errorf("format=event: %+v", name)
	}
	cases := []struct {
		name, path, token string
		status            int
		code, body        string
	}{
		{"content", "/state/m.room.name", alice, 200, "", `{"name":"two"}`},
		{"content, trailing slash", "/state/m.room.name/", alice, 200, "", `{"name":"two"}`},
		{"escaped state key", "/state/org.example.k/" + url.PathEscape("a/b"), alice, 200, "", `{"x":1}`},
		{"missing key", "/state/m.room.topic", alice, 404, "M_NOT_FOUND", ""},
		{"bad format", "/state/m.room.name?format=xml", alice, 400, "M_INVALID_PARAM", ""},
		{"outsider", "/state/m.room.name", bob, 403, "M_FORBIDDEN", ""},
		{"outsider, whole state", "/state", bob, 403, "M_FORBIDDEN", ""},
	}
	for _, c := range cases {
		r := ts.do("GET", rmPath(room, c.path), c.token, "")
		if r.status != c.status || r.errcode() != c.code || (c.body != "" && string(r.body) != c.body) {
			t.Errorf("%s: %d %s", c.name, r.status, r.body)
		}
	}
}

// TestMembers: /members with at, membership, not_membership; /joined_members.
func TestMembers(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	alice, bob, carol := ts.register("alice"), ts.register("bob"), ts.register("carol")
	ts.register("dave")
	room := ts.rmCreate(alice, `{"preset":"public_chat"}`)
	ts.rmOK("POST", rmPath(room, "/join"), bob, `{}`)
	var sync struct {
		NextBatch string `json:"next_batch"`
	}
	rmDecode(t, ts.rmOK("GET", rmV3+"/sync", alice, ""), &sync)
	ts.rmOK("POST", rmPath(room, "/join"), carol, `{}`)
	ts.rmOK("POST", rmPath(room, "/leave"), carol, `{}`)
	ts.rmOK("POST", rmPath(room, "/invite"), alice, `{"user_id":"@dave:test.local"}`)

	members := func(query string) map[string]string {
		var res struct {
			Chunk []rmEvent `json:"chunk"`
		}
		rmDecode(t, ts.rmOK("GET", rmPath(room, "/members"+query), bob, ""), &res)
		out := map[string]string{}
		for _, e := range res.Chunk {
			var c struct{ Membership string }
			json.Unmarshal(e.Content, &c)
			out[*e.StateKey] = c.Membership
		}
		return out
	}
	cases := []struct {
		query string
		want  map[string]string
	}{
		{"", map[string]string{"@alice:test.local": "join", "@bob:test.local": "join", "@carol:test.local": "leave", "@dave:test.local": "invite"}},
		{"?membership=join", map[string]string{"@alice:test.local": "join", "@bob:test.local": "join"}},
		{"?not_membership=join", map[string]string{"@carol:test.local": "leave", "@dave:test.local": "invite"}},
		{"?membership=invite&not_membership=leave", map[string]string{"@alice:test.local": "join", "@bob:test.local": "join", "@dave:test.local": "invite"}},
		{"?at=" + sync.NextBatch, map[string]string{"@alice:test.local": "join", "@bob:test.local": "join"}},
	}
	for _, c := range cases {
		if got := members(c.query); fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("members%s: %v, want %v", c.query, got, c.want)
		}
	}
	for _, q := range []string{"?membership=joined", "?at=nonsense"} {
		if r := ts.do("GET", rmPath(room, "/members"+q), bob, ""); r.status != 400 || r.errcode() != "M_INVALID_PARAM" {
			t.Errorf("members%s: %d %s", q, r.status, r.body)
		}
	}
	// carol left: she sees the members as they were when she left.
	var left struct {
		Chunk []rmEvent `json:"chunk"`
	}
	rmDecode(t, ts.rmOK("GET", rmPath(room, "/members"), carol, ""), &left)
	for _, e := range left.Chunk {
		if *e.StateKey == "@dave:test.local" {
			t.Errorf("carol sees an invite made after she left")
		}
	}
	// joined_members: joined users only; outsiders are refused.
	var jm struct {
		Joined map[string]struct {
			DisplayName *string `json:"display_name"`
		} `json:"joined"`
	}
	rmDecode(t, ts.rmOK("GET", rmPath(room, "/joined_members"), bob, ""), &jm)
	if len(jm.Joined) != 2 {
		t.Errorf("joined_members: %+v", jm)
	}
	if r := ts.do("GET", rmPath(room, "/joined_members"), carol, ""); r.status != 403 {
		t.Errorf("joined_members for a former member: %d %s", r.status, r.body)
	}
}

// TestMessagesFilterAndContext: /messages with filters in both directions,
// /context windows and tokens, /event errors.
func TestMessagesFilterAndContext(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	alice, bob := ts.register("alice"), ts.register("bob")
	room := ts.rmCreate(alice, `{"preset":"public_chat"}`)
	ts.rmOK("POST", rmPath(room, "/join"), bob, `{}`)
	var ids []string
	for i := 0; i < 6; i++ {
		tok := alice
		if i%2 == 1 {
			tok = bob
		}
		ids = append(ids, ts.rmSend(tok, room, fmt.Sprintf("m%d", i)))
	}
	ts.do("PUT", rmPath(room, "/send/org.example.ping/p1"), alice, `{"url":"mxc://x/y"}`)

	q := func(f string) string { return "&filter=" + url.QueryEscape(f) }
	cases := []struct {
		name, query string
		want        []string // bodies, oldest first; ping is "ping"
	}{
		{"messages only", q(`{"types":["m.room.message"]}`), []string{"m0", "m1", "m2", "m3", "m4", "m5"}},
		{"wildcard", q(`{"types":["m.room.mes*"]}`), []string{"m0", "m1", "m2", "m3", "m4", "m5"}},
		{"bob's messages", q(`{"types":["m.room.message"],"senders":["@bob:test.local"]}`), []string{"m1", "m3", "m5"}},
		{"not bob", q(`{"types":["m.room.message"],"not_senders":["@bob:test.local"]}`), []string{"m0", "m2", "m4"}},
		{"not_types wins", q(`{"types":["m.room.*"],"not_types":["m.room.message","m.room.member","m.room.create","m.room.power_levels","m.room.join_rules","m.room.history_visibility"]}`), nil},
		{"contains_url", q(`{"contains_url":true}`), []string{"ping"}},
		{"empty types", q(`{"types":[]}`), nil},
	}
	for _, c := range cases {
		evs, r := ts.rmMessages(bob, room, c.query)
		if r.status != 200 {
			t.Fatalf("%s: %d %s", c.name, r.status, r.body)
		}
		var got []string
		for _, e := range evs {
			if e.Type == "org.example.ping" {
				got = append(got, "ping")
			} else if b := e.body(); b != "" {
				got = append(got, b)
			} else {
				got = append(got, e.Type)
			}
		}
		if !rmSame(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	// Forwards from the start, limited by the filter's limit; then on from end.
	var page rmPage
	rmDecode(t, ts.rmOK("GET", rmPath(room, "/messages?dir=f"+q(`{"types":["m.room.message"],"limit":4}`)), bob, ""), &page)
	if got := rmBodies(page.Chunk); !rmSame(got, []string{"m0", "m1", "m2", "m3"}) || page.End == "" {
		t.Fatalf("forwards: %v end %q", got, page.End)
	}
	end := page.End
	page = rmPage{}
	rmDecode(t, ts.rmOK("GET", rmPath(room, "/messages?dir=f&limit=10&from="+end+q(`{"types":["m.room.message"]}`)), bob, ""), &page)
	if got := rmBodies(page.Chunk); !rmSame(got, []string{"m4", "m5"}) || page.End != "" {
		t.Fatalf("forwards, second page: %v end %q", got, page.End)
	}
	// lazy_load_members adds the senders' membership events.
	page = rmPage{}
	rmDecode(t, ts.rmOK("GET", rmPath(room, "/messages?dir=b&limit=2"+q(`{"types":["m.room.message"],"lazy_load_members":true}`)), bob, ""), &page)
	if len(page.State) != 2 || page.State[0].Type != "m.room.member" {
		t.Errorf("lazy members: %+v", page.State)
	}
	for _, bad := range []struct{ query, code string }{
		{"?dir=b" + q(`{"types":"m.room.message"}`), "M_BAD_JSON"},
		{"?dir=b" + q(`{"limit":-1}`), "M_BAD_JSON"},
		{"?dir=b&filter=%7Bnope", "M_NOT_JSON"},
		{"?dir=b&limit=x", "M_INVALID_PARAM"},
		{"?dir=b&from=zz", "M_INVALID_PARAM"},
		{"?dir=b&to=zz", "M_INVALID_PARAM"},
		{"", "M_INVALID_PARAM"},
	} {
		if r := ts.do("GET", rmPath(room, "/messages"+bad.query), bob, ""); r.status != 400 || r.errcode() != bad.code {
			t.Errorf("messages%s: %d %s", bad.query, r.status, r.body)
		}
	}

	// /context around m3: two before, two after (limit 4), tokens page on.
	var ctx rmContext
	ctx = rmContext{}
	rmDecode(t, ts.rmOK("GET", rmPath(room, "/context/", url.PathEscape(ids[3]), "?limit=4"), bob, ""), &ctx)
	if ctx.Event.body() != "m3" || !rmSame(rmBodies(ctx.EventsBefore), []string{"m2", "m1"}) || !rmSame(rmBodies(ctx.EventsAfter), []string{"m4", "m5"}) {
		t.Fatalf("context: %+v", ctx)
	}
	if len(ctx.State) < 5 {
		t.Errorf("context state: %d events", len(ctx.State))
	}
	page = rmPage{}
	rmDecode(t, ts.rmOK("GET", rmPath(room, "/messages?dir=b&limit=1&from="+ctx.Start), bob, ""), &page)
	if got := rmBodies(page.Chunk); !rmSame(got, []string{"m0"}) {
		t.Errorf("back from context start: %v", got)
	}
	page = rmPage{}
	rmDecode(t, ts.rmOK("GET", rmPath(room, "/messages?dir=f&limit=1&from="+ctx.End), bob, ""), &page)
	if len(page.Chunk) != 1 || page.Chunk[0].Type != "org.example.ping" {
		t.Errorf("forward from context end: %+v", page.Chunk)
	}
	ctx = rmContext{}
	rmDecode(t, ts.rmOK("GET", rmPath(room, "/context/", url.PathEscape(ids[3]), "?limit=0"), bob, ""), &ctx)
	if ctx.Event.body() != "m3" || len(ctx.EventsBefore)+len(ctx.EventsAfter) != 0 {
		t.Errorf("context limit 0: %+v", ctx)
	}
	ctx = rmContext{}
	rmDecode(t, ts.rmOK("GET", rmPath(room, "/context/", url.PathEscape(ids[3]), "?limit=10"+q(`{"senders":["@bob:test.local"]}`)), bob, ""), &ctx)
	if !rmSame(rmBodies(ctx.EventsBefore), []string{"m1"}) || !rmSame(rmBodies(ctx.EventsAfter), []string{"m5"}) {
		t.Errorf("filtered context: %v %v", rmBodies(ctx.EventsBefore), rmBodies(ctx.EventsAfter))
	}
	for _, bad := range []struct {
		path   string
		status int
		code   string
	}{
		{"/context/" + url.PathEscape("$nope") + "?limit=1", 404, "M_NOT_FOUND"},
		{"/context/" + url.PathEscape(ids[0]) + "?limit=-1", 400, "M_INVALID_PARAM"},
		{"/event/" + url.PathEscape("$nope"), 404, "M_NOT_FOUND"},
	} {
		if r := ts.do("GET", rmPath(room, bad.path), bob, ""); r.status != bad.status || r.errcode() != bad.code {
			t.Errorf("%s: %d %s", bad.path, r.status, r.body)
		}
	}
	// An event of another room is not found through this one.
	other := ts.rmCreate(alice, `{}`)
	if r := ts.do("GET", rmPath(other, "/event/", url.PathEscape(ids[0])), alice, ""); r.status != 404 {
		t.Errorf("event through another room: %d %s", r.status, r.body)
	}
	var ev rmEvent
	rmDecode(t, ts.rmOK("GET", rmPath(room, "/event/", url.PathEscape(ids[1])), bob, ""), &ev)
	if ev.body() != "m1" || ev.Sender != "@bob:test.local" {
		t.Errorf("event: %+v", ev)
	}
}

type rmContext struct {
	Event        rmEvent   `json:"event"`
	EventsBefore []rmEvent `json:"events_before"`
	EventsAfter  []rmEvent `json:"events_after"`
	State        []rmEvent `json:"state"`
	Start, End   string
}
