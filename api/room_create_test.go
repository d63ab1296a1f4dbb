package api

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
)

// TestCreateRoomOptions checks every createRoom field lands in the room.
func TestCreateRoomOptions(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	alice, bob := ts.register("alice"), ts.register("bob")
	room := ts.rmCreate(alice, `{
		"preset":"public_chat","visibility":"public","room_alias_name":"pub",
		"name":"The Pub","topic":"Happy hour",
		"creation_content":{"m.federate":false,"type":"m.space","creator":"@mallory:test.local"},
		"power_level_content_override":{"events_default":10},
		"initial_state":[
			{"type":"m.room.topic","content":{"topic":"overridden"}},
			{"type":"m.room.join_rules","content":{"join_rule":"knock"}},
			{"type":"org.example.custom","state_key":"k","content":{"v":1}}
		],
		"invite":["@bob:test.local"],"is_direct":true}`)

	state := func(path string) map[string]any {
		var m map[string]any
		rmDecode(t, ts.rmOK("GET", rmPath(room, "/state/"+path), alice, ""), &m)
		return m
	}
	cases := []struct {
		path, key string
		want      any
	}{
		{"m.room.name", "name", "The Pub"},
		{"m.room.topic", "topic", "Happy hour"},
		{"m.room.canonical_alias", "alias", "#pub:test.local"},
		{"m.room.join_rules", "join_rule", "knock"}, // initial_state wins over the preset
		{"m.room.history_visibility", "history_visibility", "shared"},
		{"m.room.power_levels", "events_default", 10.0},
		{"m.room.create", "m.federate", false},
		{"m.room.create", "type", "m.space"},
		{"m.room.create", "room_version", "12"},
		{"org.example.custom/k", "v", 1.0},
		{"m.room.member/@bob:test.local", "membership", "invite"},
		{"m.room.member/@bob:test.local", "is_direct", true},
	}
	for _, c := range cases {
		if got := state(c.path)[c.key]; got != c.want {
			t.Errorf("%s.%s = %v, want %v", c.path, c.key, got, c.want)
		}
	}
	if _, ok := state("m.room.create")["creator"]; ok {
		t.Error("v12 create content has a creator")
	}
	topic, _ := json.Marshal(state("m.room.topic")["m.topic"])
	if !strings.Contains(string(topic), `"mimetype":"text/plain"`) {
		t.Errorf("topic has no text/plain m.topic: %s", topic)
	}
	// public_chat sends no guest_access.
	if r := ts.do("GET", rmPath(room, "/state/m.room.guest_access"), alice, ""); r.status != 404 {
		t.Errorf("guest_access in a public_chat room: %d %s", r.status, r.body)
	}
	if r := ts.rmOK("GET", rmV3+"/directory/room/"+url.PathEscape("#pub:test.local"), "", ""); r.field("room_id") != room {
		t.Errorf("alias: %s", r.body)
	}
	if r := ts.rmOK("GET", rmV3+"/directory/list/room/"+url.PathEscape(room), "", ""); r.field("visibility") != "public" {
		t.Errorf("directory: %s", r.body)
	}
	// bob's invite shows in his sync.
	if r := ts.rmOK("GET", rmV3+"/sync", bob, ""); !strings.Contains(string(r.body), room) {
		t.Errorf("bob's sync lacks the invite: %s", r.body)
	}
}

// TestCreateRoomTrusted: trusted_private_chat gives invitees the creator's
// power: additional_creators in v12, power level 100 before.
func TestCreateRoomTrusted(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	alice := ts.register("alice")
	ts.register("bob")
	v12 := ts.rmCreate(alice, `{"preset":"trusted_private_chat","invite":["@bob:test.local"]}`)
	var create map[string]any
	rmDecode(t, ts.rmOK("GET", rmPath(v12, "/state/m.room.create"), alice, ""), &create)
	if ac, _ := json.Marshal(create["additional_creators"]); string(ac) != `["@bob:test.local"]` {
		t.Errorf("v12 additional_creators: %s", ac)
	}
	var pl struct {
		Users  map[string]int `json:"users"`
		Events map[string]int `json:"events"`
	}
	rmDecode(t, ts.rmOK("GET", rmPath(v12, "/state/m.room.power_levels"), alice, ""), &pl)
	if len(pl.Users) != 0 || pl.Events["m.room.tombstone"] != 150 {
		t.Errorf("v12 power levels: %+v", pl)
	}
	v11 := ts.rmCreate(alice, `{"preset":"trusted_private_chat","invite":["@bob:test.local"],"room_version":"11"}`)
	rmDecode(t, ts.rmOK("GET", rmPath(v11, "/state/m.room.power_levels"), alice, ""), &pl)
	if pl.Users["@alice:test.local"] != 100 || pl.Users["@bob:test.local"] != 100 {
		t.Errorf("v11 power levels: %+v", pl)
	}
	var gaccess map[string]any
	rmDecode(t, ts.rmOK("GET", rmPath(v11, "/state/m.room.guest_access"), alice, ""), &gaccess)
	if gaccess["guest_access"] != "can_join" {
		t.Errorf("guest_access: %v", gaccess)
	}
}

// TestCreateRoomErrors: bad requests are refused with the spec's codes and
// append nothing.
func TestCreateRoomErrors(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	alice := ts.register("alice")
	ts.rmCreate(alice, `{"room_alias_name":"taken"}`)
	cases := []struct {
		name, body string
		status     int
		code       string
	}{
		{"alias taken", `{"room_alias_name":"taken"}`, 400, "M_ROOM_IN_USE"},
		{"alias with colon", `{"room_alias_name":"a:b"}`, 400, "M_INVALID_PARAM"},
		{"alias with space", `{"room_alias_name":"a b"}`, 400, "M_INVALID_PARAM"},
		{"unknown version", `{"room_version":"99"}`, 400, "M_UNSUPPORTED_ROOM_VERSION"},
		{"unknown preset", `{"preset":"party"}`, 400, "M_INVALID_PARAM"},
		{"bad visibility", `{"visibility":"secret"}`, 400, "M_INVALID_PARAM"},
		{"bad invitee", `{"invite":["bob"]}`, 400, "M_INVALID_PARAM"},
		{"creation_content not an object", `{"creation_content":5}`, 400, "M_BAD_JSON"},
		{"override not an object", `{"power_level_content_override":[1]}`, 400, "M_BAD_JSON"},
		{"name not a string", `{"name":5}`, 400, "M_BAD_JSON"},
		{"initial_state without type", `{"initial_state":[{"content":{}}]}`, 400, "M_INVALID_ROOM_STATE"},
		{"initial_state content not an object", `{"initial_state":[{"type":"m.room.name","content":"x"}]}`, 400, "M_INVALID_ROOM_STATE"},
		{"initial_state create", `{"initial_state":[{"type":"m.room.create","content":{}}]}`, 400, "M_INVALID_ROOM_STATE"},
		{"creator cannot set state", `{"room_version":"11","power_level_content_override":{"users":{"@alice:test.local":0}}}`, 400, "M_INVALID_ROOM_STATE"},
		{"not json", `{"name":`, 400, "M_NOT_JSON"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := ts.log.Last()
			r := ts.do("POST", rmV3+"/createRoom", alice, c.body)
			if r.status != c.status || r.errcode() != c.code {
				t.Errorf("got %d %s, want %d %s", r.status, r.body, c.status, c.code)
			}
			if after := ts.log.Last(); after != before {
				t.Errorf("appended %d records", after-before)
			}
		})
	}
}
