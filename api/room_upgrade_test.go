package api

import (
	"encoding/json"
	"net/url"
	"testing"
)

// TestRoomUpgrade: the new room gets the predecessor, the transferable
// state, the power levels, bans, aliases and the directory entry; the old
// one a tombstone and restricted power levels.
func TestRoomUpgrade(t *testing.T) {
	for _, c := range []struct{ from, to string }{{"10", "11"}, {"11", "12"}, {"12", "12"}, {"12", "10"}} {
		t.Run(c.from+"to"+c.to, func(t *testing.T) {
			ts := newTestServer(t, Config{EnableRegistration: true})
			alice, bob := ts.register("alice"), ts.register("bob")
			ts.register("mallory")
			old := ts.rmCreate(alice, `{"preset":"public_chat","visibility":"public","room_version":"`+c.from+`","name":"Old","topic":"t","room_alias_name":"room",
				"power_level_content_override":{"users_default":5},
				"initial_state":[{"type":"m.room.history_visibility","content":{"history_visibility":"joined"}}]}`)
			ts.rmOK("POST", rmPath(old, "/join"), bob, `{}`)
			ts.rmOK("POST", rmPath(old, "/ban"), alice, `{"user_id":"@mallory:test.local","reason":"spam"}`)
			ts.rmSend(alice, old, "last words")

			up := rmPath(old, "/upgrade")
			for _, bad := range []struct {
				name, token, body string
				status            int
				code              string
			}{
				{"without power", bob, `{"new_version":"` + c.to + `"}`, 403, "M_FORBIDDEN"},
				{"unknown version", alice, `{"new_version":"99"}`, 400, "M_UNSUPPORTED_ROOM_VERSION"},
				{"no version", alice, `{}`, 400, "M_BAD_JSON"},
				{"bad creator", alice, `{"new_version":"12","additional_creators":["x"]}`, 400, "M_INVALID_PARAM"},
			} {
				if r := ts.do("POST", up, bad.token, bad.body); r.status != bad.status || r.errcode() != bad.code {
					t.Errorf("%s: %d %s", bad.name, r.status, r.body)
				}
			}
			if r := ts.do("POST", rmPath("!nope:test.local", "/upgrade"), alice, `{"new_version":"12"}`); r.status != 404 {
				t.Errorf("unknown room: %d %s", r.status, r.body)
			}

			newRoom := ts.rmOK("POST", up, alice, `{"new_version":"`+c.to+`"}`).field("replacement_room")
			if newRoom == "" || newRoom == old {
				t.Fatalf("replacement_room %q", newRoom)
			}
			get := func(room, path string) map[string]any {
				var m map[string]any
				rmDecode(t, ts.rmOK("GET", rmPath(room, "/state/"+path), alice, ""), &m)
				return m
			}
			if ts := get(old, "m.room.tombstone"); ts["replacement_room"] != newRoom {
				t.Errorf("tombstone: %v", ts)
			}
			create := get(newRoom, "m.room.create")
			pred, _ := create["predecessor"].(map[string]any)
			if create["room_version"] != c.to || pred["room_id"] != old {
				t.Errorf("new create: %v", create)
			}
			if _, has := pred["event_id"]; has == (c.to == "12") {
				t.Errorf("predecessor event_id presence in v%s: %v", c.to, pred)
			}
			for path, want := range map[string][2]any{
				"m.room.name":                       {"name", "Old"},
				"m.room.topic":                      {"topic", "t"},
				"m.room.history_visibility":         {"history_visibility", "joined"},
				"m.room.join_rules":                 {"join_rule", "public"},
				"m.room.canonical_alias":            {"alias", "#room:test.local"},
				"m.room.power_levels":               {"users_default", 5.0},
				"m.room.member/@mallory:test.local": {"membership", "ban"},
			} {
				if got := get(newRoom, path)[want[0].(string)]; got != want[1] {
					t.Errorf("new room %s.%s = %v, want %v", path, want[0], got, want[1])
				}
			}
			var pl struct {
				Users map[string]int `json:"users"`
			}
			b, _ := json.Marshal(get(newRoom, "m.room.power_levels"))
			json.Unmarshal(b, &pl)
			_, listed := pl.Users["@alice:test.local"]
			if listed == (c.to == "12") {
				t.Errorf("upgrader listed in v%s power levels: %v", c.to, pl.Users)
			}
			if r := ts.rmOK("GET", rmV3+"/directory/room/"+url.PathEscape("#room:test.local"), "", ""); r.field("room_id") != newRoom {
				t.Errorf("alias not moved: %s", r.body)
			}
			if r := ts.rmOK("GET", rmV3+"/directory/list/room/"+url.PathEscape(newRoom), "", ""); r.field("visibility") != "public" {
				t.Errorf("new room not published: %s", r.body)
			}
			if r := ts.rmOK("GET", rmV3+"/directory/list/room/"+url.PathEscape(old), "", ""); r.field("visibility") != "private" {
				t.Errorf("old room still published: %s", r.body)
			}
			if ca := get(old, "m.room.canonical_alias"); len(ca) != 0 {
				t.Errorf("old room keeps its canonical alias: %v", ca)
			}
			oldPL := get(old, "m.room.power_levels")
			if oldPL["events_default"] != 50.0 || oldPL["invite"] != 50.0 {
				t.Errorf("old room power levels not restricted: %v", oldPL)
			}
			// bob, not a moderator, can no longer talk in the old room.
			if r := ts.do("PUT", rmPath(old, "/send/m.room.message/late"), bob, `{"body":"hi"}`); r.status != 403 {
				t.Errorf("bob talks in the old room: %d %s", r.status, r.body)
			}
			// And may join the new one.
			ts.rmOK("POST", rmPath(newRoom, "/join"), bob, `{}`)
		})
	}
}
