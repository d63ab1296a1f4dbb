package dag

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

var allVersions = []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"}

// redactionEvent wraps content of the given type in an event carrying every
// top-level key some version keeps, plus some no version keeps.
func redactionEvent(typ, content string) string {
	return fmt.Sprintf(`{
		"age_ts": 1, "auth_events": ["$a"], "content": %s, "depth": 5,
		"event_id": "$e:x", "foo": "bar", "hashes": {"sha256": "h"},
		"membership": "join", "origin": "x", "origin_server_ts": 7,
		"prev_events": ["$p"], "prev_state": [], "redacts": "$r",
		"room_id": "!r:x", "sender": "@s:x",
		"signatures": {"x": {"ed25519:1": "sig"}}, "state_key": "",
		"type": %q, "unsigned": {"age": 3}}`, content, typ)
}

// redactedEvent is what redactionEvent must become: the top-level keys of the
// v1 list, minus origin, membership and prev_state from v11 on.
func redactedEvent(typ, content string, v11 bool) string {
	old := ""
	if !v11 {
		old = `"membership":"join","origin":"x",`
	}
	prevState := ""
	if !v11 {
		prevState = `"prev_state":[],`
	}
	return `{"auth_events":["$a"],"content":` + content + `,"depth":5,"event_id":"$e:x","hashes":{"sha256":"h"},` +
		old + `"origin_server_ts":7,"prev_events":["$p"],` + prevState +
		`"room_id":"!r:x","sender":"@s:x","signatures":{"x":{"ed25519:1":"sig"}},"state_key":"","type":"` + typ + `"}`
}

func TestRedactPerVersion(t *testing.T) {
	const (
		member = `{"displayname":"A","join_authorised_via_users_server":"@x:y","membership":"join",` +
			`"third_party_invite":{"display_name":"d","signed":{"mxid":"@a:b","token":"t"}}}`
		create      = `{"additional_creators":["@c:d"],"creator":"@a:b","m.federate":false,"room_version":"1"}`
		joinRules   = `{"allow":[{"room_id":"!o:x","type":"m.room_membership"}],"join_rule":"restricted","other":1}`
		powerLevels = `{"ban":50,"events":{"m.room.name":50},"events_default":0,"invite":0,"kick":50,` +
			`"notifications":{"room":50},"redact":50,"state_default":50,"users":{"@a:b":100},"users_default":0,"x":1}`
		plKept      = `"ban":50,"events":{"m.room.name":50},"events_default":0,`
		plKeptTail  = `"kick":50,"redact":50,"state_default":50,"users":{"@a:b":100},"users_default":0`
		aliases     = `{"aliases":["#a:b"],"x":1}`
		history     = `{"history_visibility":"shared","x":1}`
		redaction   = `{"reason":"spam","redacts":"$r"}`
		message     = `{"body":"hi","msgtype":"m.text"}`
		relatesTo   = `{"body":"hi","m.relates_to":{"event_id":"$x","rel_type":"m.annotation"}}`
		tpiNoSigned = `{"membership":"invite","third_party_invite":{"display_name":"d"}}`
		tpiNotObj   = `{"membership":"invite","third_party_invite":"x"}`
	)
	// want maps a version range to the expected content; ranges are
	// "from" versions, the last one at or below the version applies.
	tests := []struct {
		typ, content string
		want         map[int]string
	}{
		{"m.room.member", member, map[int]string{
			1:  `{"membership":"join"}`,
			9:  `{"join_authorised_via_users_server":"@x:y","membership":"join"}`,
			11: `{"join_authorised_via_users_server":"@x:y","membership":"join","third_party_invite":{"signed":{"mxid":"@a:b","token":"t"}}}`,
		}},
		{"m.room.member", tpiNoSigned, map[int]string{1: `{"membership":"invite"}`, 11: `{"membership":"invite","third_party_invite":{}}`}},
		{"m.room.member", tpiNotObj, map[int]string{1: `{"membership":"invite"}`}},
		{"m.room.create", create, map[int]string{1: `{"creator":"@a:b"}`, 11: create}},
		{"m.room.join_rules", joinRules, map[int]string{
			1: `{"join_rule":"restricted"}`,
			8: `{"allow":[{"room_id":"!o:x","type":"m.room_membership"}],"join_rule":"restricted"}`,
		}},
		{"m.room.power_levels", powerLevels, map[int]string{
			1:  `{` + plKept + plKeptTail + `}`,
			11: `{` + plKept + `"invite":0,` + plKeptTail + `}`,
		}},
		{"m.room.aliases", aliases, map[int]string{1: `{"aliases":["#a:b"]}`, 6: `{}`}},
		{"m.room.history_visibility", history, map[int]string{1: `{"history_visibility":"shared"}`}},
		{"m.room.redaction", redaction, map[int]string{1: `{}`, 11: `{"redacts":"$r"}`}},
		{"m.room.message", message, map[int]string{1: `{}`}},
		{"m.reaction", relatesTo, map[int]string{1: `{}`}},
		{"m.room.name", `{"name":"n"}`, map[int]string{1: `{}`}},
		{"m.room.member", `{}`, map[int]string{1: `{}`}},
	}
	for _, tt := range tests {
		for _, id := range allVersions {
			ver := Version(id)
			n := 0
			fmt.Sscan(id, &n)
			want, best := "", 0
			for from, c := range tt.want {
				if from <= n && from > best {
					want, best = c, from
				}
			}
			got, err := Redact([]byte(redactionEvent(tt.typ, tt.content)), ver)
			if err != nil {
				t.Fatalf("%s v%s: %v", tt.typ, id, err)
			}
			if exp := redactedEvent(tt.typ, want, n >= 11); string(got) != exp {
				t.Errorf("%s %s v%s:\n got %s\nwant %s", tt.typ, tt.content, id, got, exp)
			}
			// Redaction is idempotent.
			again, err := Redact(got, ver)
			if err != nil || string(again) != string(got) {
				t.Errorf("%s v%s: redacting twice gives %s, %v", tt.typ, id, again, err)
			}
		}
	}
}

func TestRedactEscapedKeysAndTypes(t *testing.T) {
	// A key or type spelled with escapes is the same string after decoding,
	// so "m.room.member" written with \u escapes keeps membership.
	raw := `{"content":{"membersh\u0069p":"join","x":1},"type":"m.room.m\u0065mber","s\u0065nder":"@a:b"}`
	got, err := Redact([]byte(raw), &RoomV10)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"content":{"membership":"join"},"sender":"@a:b","type":"m.room.member"}`; string(got) != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestRedactErrors(t *testing.T) {
	tests := []struct {
		name, raw string
		want      error
	}{
		{"not json", `{`, ErrBadJSON},
		{"not object", `[]`, ErrBadEvent},
		{"no type", `{"content":{}}`, ErrBadEvent},
		{"type not string", `{"type":1,"content":{}}`, ErrBadEvent},
		{"no content", `{"type":"m.room.message"}`, ErrBadEvent},
		{"content not object", `{"type":"m.room.message","content":[]}`, ErrBadEvent},
		{"float in strict version", `{"type":"x","content":{"a":1.5}}`, ErrBadJSON},
	}
	for _, tt := range tests {
		if _, err := Redact([]byte(tt.raw), &RoomV11); !errors.Is(err, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, err, tt.want)
		}
	}
	// Lenient versions keep floats in content they keep.
	got, err := Redact([]byte(`{"type":"m.room.power_levels","content":{"ban":50.5}}`), &RoomV5)
	if err != nil || !strings.Contains(string(got), `"ban":50.5`) {
		t.Errorf("v5 float power level: %s, %v", got, err)
	}
}
