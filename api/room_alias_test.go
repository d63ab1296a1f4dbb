package api

import (
	"encoding/json"
	"net/url"
	"testing"
)

// TestAliases drives the alias directory and the canonical alias checks.
func TestAliases(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	alice, bob, carol := ts.register("alice"), ts.register("bob"), ts.register("carol")
	room := ts.rmCreate(alice, `{"preset":"public_chat"}`)
	other := ts.rmCreate(carol, `{"preset":"public_chat"}`)
	ts.rmOK("POST", rmPath(room, "/join"), bob, `{}`)
	dir := func(alias string) string { return rmV3 + "/directory/room/" + url.PathEscape(alias) }
	roomBody := `{"room_id":"` + room + `"}`
	steps := []struct {
		name, method, path, token, body string
		status                          int
		code                            string
	}{
		{"create", "PUT", dir("#one:test.local"), bob, roomBody, 200, ""},
		{"create again", "PUT", dir("#one:test.local"), alice, roomBody, 409, "M_UNKNOWN"},
		{"create as non-member", "PUT", dir("#two:test.local"), carol, roomBody, 403, "M_FORBIDDEN"},
		{"create invalid", "PUT", dir("one"), alice, roomBody, 400, "M_INVALID_PARAM"},
		{"create remote", "PUT", dir("#one:elsewhere.example"), alice, roomBody, 400, "M_INVALID_PARAM"},
		{"create unknown room", "PUT", dir("#two:test.local"), alice, `{"room_id":"!nope:test.local"}`, 404, "M_NOT_FOUND"},
		{"create without room_id", "PUT", dir("#two:test.local"), alice, `{}`, 400, "M_BAD_JSON"},
		{"create second", "PUT", dir("#two:test.local"), alice, roomBody, 200, ""},
		{"create on other room", "PUT", dir("#carols:test.local"), carol, `{"room_id":"` + other + `"}`, 200, ""},
		{"resolve unauthenticated", "GET", dir("#one:test.local"), "", ``, 200, ""},
		{"resolve unknown", "GET", dir("#zzz:test.local"), "", ``, 404, "M_NOT_FOUND"},
		{"resolve remote", "GET", dir("#zzz:elsewhere.example"), "", ``, 404, "M_NOT_FOUND"},
		{"resolve invalid", "GET", dir("zzz"), "", ``, 400, "M_INVALID_PARAM"},
		{"list as member", "GET", rmPath(room, "/aliases"), bob, ``, 200, ""},
		{"list as outsider", "GET", rmPath(room, "/aliases"), carol, ``, 403, "M_FORBIDDEN"},
		{"canonical: unknown alias", "PUT", rmPath(room, "/state/m.room.canonical_alias"), alice, `{"alias":"#zzz:test.local"}`, 400, "M_BAD_ALIAS"},
		{"canonical: alias of another room", "PUT", rmPath(room, "/state/m.room.canonical_alias"), alice, `{"alias":"#carols:test.local"}`, 400, "M_BAD_ALIAS"},
		{"canonical: remote alias", "PUT", rmPath(room, "/state/m.room.canonical_alias"), alice, `{"alias":"#x:elsewhere.example"}`, 400, "M_BAD_ALIAS"},
		{"canonical: invalid alias", "PUT", rmPath(room, "/state/m.room.canonical_alias"), alice, `{"alias":"nope"}`, 400, "M_INVALID_PARAM"},
		{"canonical: bad alt_aliases", "PUT", rmPath(room, "/state/m.room.canonical_alias"), alice, `{"alt_aliases":"#one:test.local"}`, 400, "M_INVALID_PARAM"},
		{"canonical: bad alt alias", "PUT", rmPath(room, "/state/m.room.canonical_alias"), alice, `{"alias":"#one:test.local","alt_aliases":["#zzz:test.local"]}`, 400, "M_BAD_ALIAS"},
		{"canonical: valid", "PUT", rmPath(room, "/state/m.room.canonical_alias"), alice, `{"alias":"#one:test.local","alt_aliases":["#two:test.local"]}`, 200, ""},
		{"delete without power", "DELETE", dir("#two:test.local"), bob, ``, 403, "M_FORBIDDEN"},
		{"delete by outsider", "DELETE", dir("#two:test.local"), carol, ``, 403, "M_FORBIDDEN"},
		{"delete unknown", "DELETE", dir("#zzz:test.local"), alice, ``, 404, "M_NOT_FOUND"},
		{"delete by creator", "DELETE", dir("#one:test.local"), bob, ``, 200, ""},
		{"delete by moderator", "DELETE", dir("#two:test.local"), alice, ``, 200, ""},
		{"deleted", "GET", dir("#one:test.local"), "", ``, 404, "M_NOT_FOUND"},
	}
	for _, st := range steps {
		r := ts.do(st.method, st.path, st.token, st.body)
		if r.status != st.status || r.errcode() != st.code {
			t.Fatalf("%s: got %d %s, want %d %s", st.name, r.status, r.body, st.status, st.code)
		}
		switch st.name {
		case "resolve unauthenticated":
			var res struct {
				RoomID  string   `json:"room_id"`
				Servers []string `json:"servers"`
			}
			rmDecode(t, r, &res)
			if res.RoomID != room || len(res.Servers) != 1 || res.Servers[0] != "test.local" {
				t.Errorf("resolve: %s", r.body)
			}
		case "list as member":
			var res struct {
				Aliases []string `json:"aliases"`
			}
			rmDecode(t, r, &res)
			if len(res.Aliases) != 2 || res.Aliases[0] != "#one:test.local" || res.Aliases[1] != "#two:test.local" {
				t.Errorf("aliases: %s", r.body)
			}
		}
	}
	// alice's delete took #two out of the canonical alias event; bob may
	// not send that event, so #one stays listed (the alias is gone anyway).
	var ca map[string]json.RawMessage
	rmDecode(t, ts.rmOK("GET", rmPath(room, "/state/m.room.canonical_alias"), alice, ""), &ca)
	if string(ca["alias"]) != `"#one:test.local"` || string(ca["alt_aliases"]) != "[]" {
		t.Errorf("canonical alias after deletes: %v", ca)
	}
	var res struct {
		Aliases []string `json:"aliases"`
	}
	rmDecode(t, ts.rmOK("GET", rmPath(room, "/aliases"), alice, ""), &res)
	if len(res.Aliases) != 0 {
		t.Errorf("aliases left: %v", res.Aliases)
	}
	// A world_readable room lists its aliases to anyone.
	ts.rmState(carol, other, "m.room.history_visibility", "", `{"history_visibility":"world_readable"}`)
	if r := ts.do("GET", rmPath(other, "/aliases"), bob, ""); r.status != 200 {
		t.Errorf("aliases of a world_readable room: %d %s", r.status, r.body)
	}
}
