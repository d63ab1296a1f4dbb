package api

import (
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"testing"
)

type searchResp struct {
	SearchCategories struct {
		RoomEvents struct {
			Count      int      `json:"count"`
			Highlights []string `json:"highlights"`
			Results    []struct {
				Rank    float64  `json:"rank"`
				Result  relEvent `json:"result"`
				Context *struct {
					EventsBefore []relEvent                   `json:"events_before"`
					EventsAfter  []relEvent                   `json:"events_after"`
					ProfileInfo  map[string]map[string]string `json:"profile_info"`
				} `json:"context"`
			} `json:"results"`
			NextBatch string                                `json:"next_batch"`
			Groups    map[string]map[string]json.RawMessage `json:"groups"`
		} `json:"room_events"`
	} `json:"search_categories"`
}

func (ts *testServer) searchIDs(tok, body, query string) ([]string, searchResp) {
	ts.t.Helper()
	var s searchResp
	relDecode(ts.t, ts.do("POST", "/_matrix/client/v3/search"+query, tok, body), &s)
	var ids []string
	for _, r := range s.SearchCategories.RoomEvents.Results {
		ids = append(ids, r.Result.EventID)
	}
	return ids, s
}

func searchBody(term, extra string) string {
	return fmt.Sprintf(`{"search_categories":{"room_events":{"search_term":%q%s}}}`, term, extra)
}

func TestSearch(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	a, b := ts.register("alice"), ts.register("bob")
	pub := ts.relRoom(a, `{"preset":"public_chat","name":"Cake Lovers"}`)
	ts.relJoin(b, pub)
	priv := ts.relRoom(a, `{}`)
	m1 := ts.relSend(a, pub, "m.room.message", relMsg("I like chocolate cake"))
	m2 := ts.relSend(b, pub, "m.room.message", relMsg("Cake cake CAKE, and more cakes"))
	m3 := ts.relSend(a, pub, "m.room.message", relMsg("nothing to see"))
	secret := ts.relSend(a, priv, "m.room.message", relMsg("secret cake recipe"))
	gone := ts.relSend(a, pub, "m.room.message", relMsg("redacted cake"))
	if r := ts.do("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(pub)+"/redact/"+url.PathEscape(gone)+"/sr", a, `{}`); r.status != 200 {
		t.Fatalf("redact: %d %s", r.status, r.body)
	}
	_ = m3

	cases := []struct {
		name, tok, term, extra string
		want                   []string
		sorted                 bool
	}{
		{"bob sees only his rooms", b, "cake", `,"order_by":"recent","keys":["content.body"]`, []string{m2, m1}, false},
		{"alice sees the private room too", a, "cake", `,"order_by":"recent","keys":["content.body"]`, []string{secret, m2, m1}, false},
		{"rank orders by matches", b, "cake", `,"keys":["content.body"]`, []string{m2, m1}, false},
		{"prefix and case", b, "CHOC", ``, []string{m1}, false},
		{"all terms must match", b, "chocolate nothing", ``, nil, false},
		{"filter rooms", a, "cake", `,"keys":["content.body"],"filter":{"rooms":[` + fmt.Sprintf("%q", priv) + `]}`, []string{secret}, false},
		{"filter senders", a, "cake", `,"keys":["content.body"],"filter":{"senders":["@bob:test.local"]}`, []string{m2}, false},
		{"empty term", a, "  ", ``, nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ids, _ := ts.searchIDs(c.tok, searchBody(c.term, c.extra), "")
			if c.sorted {
				sort.Strings(ids)
			}
			if strings.Join(ids, ",") != strings.Join(c.want, ",") {
				t.Errorf("got %v, want %v", ids, c.want)
			}
		})
	}

	// The room name is found under content.name.
	ids, res := ts.searchIDs(b, searchBody("lovers", `,"keys":["content.name"]`), "")
	if len(ids) != 1 || res.SearchCategories.RoomEvents.Count != 1 {
		t.Errorf("name search: %v", ids)
	}
	// Pagination, recent order, one per page.
	var got []string
	next := ""
	for i := 0; i < 5; i++ {
		q := ""
		if next != "" {
			q = "?next_batch=" + next
		}
		ids, res := ts.searchIDs(a, searchBody("cake", `,"order_by":"recent","keys":["content.body"],"filter":{"limit":1}`), q)
		got = append(got, ids...)
		if res.SearchCategories.RoomEvents.Count != 3 {
			t.Errorf("count %d", res.SearchCategories.RoomEvents.Count)
		}
		if next = res.SearchCategories.RoomEvents.NextBatch; next == "" {
			break
		}
	}
	if strings.Join(got, ",") != strings.Join([]string{secret, m2, m1}, ",") {
		t.Fatalf("paged: %v", got)
	}
	// Rank pagination.
	_, r1 := ts.searchIDs(a, searchBody("cake", `,"filter":{"limit":2}`), "")
	if r1.SearchCategories.RoomEvents.NextBatch == "" {
		t.Fatalf("no next_batch for rank")
	}
	ids2, _ := ts.searchIDs(a, searchBody("cake", `,"filter":{"limit":2}`), "?next_batch="+r1.SearchCategories.RoomEvents.NextBatch)
	if len(ids2) == 0 {
		t.Fatalf("rank page 2 empty")
	}
	// Highlights, context, profile, groups.
	_, full := ts.searchIDs(b, searchBody("cake", `,"keys":["content.body"],"event_context":{"before_limit":1,"after_limit":1,"include_profile":true},"groupings":{"group_by":[{"key":"room_id"}]}`), "")
	re := full.SearchCategories.RoomEvents
	if strings.Join(re.Highlights, ",") != "cake,cakes" {
		t.Errorf("highlights %v", re.Highlights)
	}
	for _, r := range re.Results {
		if r.Context == nil || len(r.Context.EventsBefore) != 1 || len(r.Context.EventsAfter) != 1 {
			t.Errorf("context of %s: %+v", r.Result.EventID, r.Context)
			continue
		}
		if r.Context.ProfileInfo[r.Result.Sender]["displayname"] == "" {
			t.Errorf("profile_info: %v", r.Context.ProfileInfo)
		}
	}
	if _, ok := re.Groups["room_id"][pub]; !ok {
		t.Errorf("groups: %v", re.Groups)
	}
}

func TestSearchVisibility(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	a, b := ts.register("alice"), ts.register("bob")
	room := ts.relRoom(a, `{"preset":"public_chat"}`)
	if r := ts.do("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.history_visibility/", a, `{"history_visibility":"joined"}`); r.status != 200 {
		t.Fatalf("history_visibility: %d %s", r.status, r.body)
	}
	before := ts.relSend(a, room, "m.room.message", relMsg("banana before"))
	ts.relJoin(b, room)
	after := ts.relSend(a, room, "m.room.message", relMsg("banana after"))
	ids, _ := ts.searchIDs(b, searchBody("banana", ``), "")
	if strings.Join(ids, ",") != after {
		t.Fatalf("bob found %v (before %s, after %s)", ids, before, after)
	}
}

func TestSearchErrors(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	a := ts.register("alice")
	cases := []struct {
		name, body, query string
		status            int
		code              string
	}{
		{"not json", `{`, "", 400, "M_NOT_JSON"},
		{"no categories", `{}`, "", 400, "M_BAD_JSON"},
		{"no term", `{"search_categories":{"room_events":{}}}`, "", 400, "M_BAD_JSON"},
		{"term not a string", `{"search_categories":{"room_events":{"search_term":5}}}`, "", 400, "M_BAD_JSON"},
		{"bad order", searchBody("x", `,"order_by":"best"`), "", 400, "M_INVALID_PARAM"},
		{"bad key", searchBody("x", `,"keys":["content.foo"]`), "", 400, "M_INVALID_PARAM"},
		{"bad group", searchBody("x", `,"groupings":{"group_by":[{"key":"type"}]}`), "", 400, "M_INVALID_PARAM"},
		{"bad next_batch", searchBody("x", ``), "?next_batch=zz", 400, "M_INVALID_PARAM"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := ts.do("POST", "/_matrix/client/v3/search"+c.query, a, c.body)
			if r.status != c.status || r.errcode() != c.code {
				t.Errorf("got %d %s, want %d %s", r.status, r.body, c.status, c.code)
			}
		})
	}
	if r := ts.do("POST", "/_matrix/client/v3/search", a, `{"search_categories":{}}`); r.status != 200 {
		t.Errorf("no room_events: %d %s", r.status, r.body)
	}
}

type dirResp struct {
	Results []struct {
		UserID      string `json:"user_id"`
		DisplayName string `json:"display_name"`
	} `json:"results"`
	Limited bool `json:"limited"`
}

func TestUserDirectory(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	a, b, c := ts.register("alice"), ts.register("bob"), ts.register("carol")
	d := ts.register("dave")
	e := ts.register("erin")
	_ = d
	// alice and bob share a private room; carol is in a public room;
	// dave shares nothing with anyone; erin is in a public room too.
	priv := ts.relRoom(a, `{}`)
	if r := ts.do("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(priv)+"/invite", a, `{"user_id":"@bob:test.local"}`); r.status != 200 {
		t.Fatalf("invite: %d %s", r.status, r.body)
	}
	ts.relJoin(b, priv)
	pub := ts.relRoom(c, `{"preset":"public_chat"}`)
	ts.relJoin(e, pub)
	priv2 := ts.relRoom(d, `{}`)
	_ = priv2

	cases := []struct {
		name, tok, body string
		want            []string
		limited         bool
	}{
		{"shared private room", a, `{"search_term":"bob"}`, []string{"@bob:test.local"}, false},
		{"public room member", a, `{"search_term":"car"}`, []string{"@carol:test.local"}, false},
		{"not visible", a, `{"search_term":"dave"}`, nil, false},
		{"by server name", a, `{"search_term":"test"}`, []string{"@alice:test.local", "@bob:test.local", "@carol:test.local", "@erin:test.local"}, false},
		{"limited", a, `{"search_term":"test","limit":2}`, []string{"@alice:test.local", "@bob:test.local"}, true},
		{"dave sees public only", d, `{"search_term":"test"}`, []string{"@dave:test.local", "@carol:test.local", "@erin:test.local"}, false},
	}
	for _, cs := range cases {
		t.Run(cs.name, func(t *testing.T) {
			var res dirResp
			relDecode(t, ts.do("POST", "/_matrix/client/v3/user_directory/search", cs.tok, cs.body), &res)
			var got []string
			for _, u := range res.Results {
				got = append(got, u.UserID)
			}
			if strings.Join(got, ",") != strings.Join(cs.want, ",") || res.Limited != cs.limited {
				t.Errorf("got %v limited %v, want %v %v", got, res.Limited, cs.want, cs.limited)
			}
		})
	}
	for _, bad := range []struct{ body, code string }{
		{`{}`, "M_BAD_JSON"},
		{`{"search_term":1}`, "M_BAD_JSON"},
		{`{"search_term":"x","limit":-1}`, "M_INVALID_PARAM"},
		{`nope`, "M_NOT_JSON"},
	} {
		if r := ts.do("POST", "/_matrix/client/v3/user_directory/search", a, bad.body); r.status != 400 || r.errcode() != bad.code {
			t.Errorf("%s: got %d %s, want %s", bad.body, r.status, r.body, bad.code)
		}
	}
}

func TestMutualRooms(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	a, b := ts.register("alice"), ts.register("bob")
	r1 := ts.relRoom(a, `{"preset":"public_chat"}`)
	r2 := ts.relRoom(a, `{"preset":"public_chat"}`)
	ts.relRoom(a, `{"preset":"public_chat"}`)
	ts.relJoin(b, r1)
	ts.relJoin(b, r2)
	var res struct {
		Joined    []string `json:"joined"`
		Count     int      `json:"count"`
		NextBatch string   `json:"next_batch"`
	}
	relDecode(t, ts.do("GET", "/_matrix/client/v1/mutual_rooms?user_id=@bob:test.local", a, ""), &res)
	want := []string{r1, r2}
	sort.Strings(want)
	if strings.Join(res.Joined, ",") != strings.Join(want, ",") || res.Count != 2 || res.NextBatch != "" {
		t.Fatalf("mutual rooms: %+v", res)
	}
	for _, q := range []string{"", "?user_id=@alice:test.local", "?user_id=bob", "?user_id=@bob:test.local&from=x"} {
		if r := ts.do("GET", "/_matrix/client/v1/mutual_rooms"+q, a, ""); r.status != 400 || r.errcode() != "M_INVALID_PARAM" {
			t.Errorf("%q: %d %s", q, r.status, r.body)
		}
	}
	relDecode(t, ts.do("GET", "/_matrix/client/v1/mutual_rooms?user_id=@nobody:test.local", a, ""), &res)
	if len(res.Joined) != 0 || res.Count != 0 {
		t.Errorf("unknown user: %+v", res)
	}
}
