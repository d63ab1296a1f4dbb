package federation

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"engram/dag"
	"engram/dag/rooms"
	"engram/projections"
)

// TestRestrictedJoin: make_join into a restricted room names a local user
// who may invite when the joining user is in an allowed room, and refuses
// with the spec's codes otherwise; send_join countersigns and accepts it.
func TestRestrictedJoin(t *testing.T) {
	w := newFedWorld(t)
	seq := w.f.rooms
	alice, bob, carol := "@alice:a.example", "@bob:"+remoteName, "@carol:"+remoteName
	s := func(x string) *string { return &x }
	obj := func(v any) json.RawMessage { b, _ := json.Marshal(v); return b }
	if _, err := seq.Send(rooms.Event{Room: w.room, Sender: bob, Type: "m.room.member", StateKey: s(bob), Content: obj(map[string]any{"membership": "join"})}); err != nil {
		t.Fatal(err)
	}
	restricted := func(allowRoom string) string {
		room, err := seq.CreateRoom("12", []rooms.Event{
			{Sender: alice, Type: "m.room.create", StateKey: s(""), Content: obj(map[string]any{"room_version": "12"})},
			{Sender: alice, Type: "m.room.member", StateKey: s(alice), Content: obj(map[string]any{"membership": "join"})},
			{Sender: alice, Type: "m.room.power_levels", StateKey: s(""), Content: obj(map[string]any{"users": map[string]any{}})},
			{Sender: alice, Type: "m.room.join_rules", StateKey: s(""), Content: obj(map[string]any{"join_rule": "restricted",
				"allow": []any{map[string]any{"type": "m.room_membership", "room_id": allowRoom}}})},
		})
		if err != nil {
			t.Fatal(err)
		}
		return room
	}
	call := func(h func(*req) error, params map[string]string, query string, body []byte) (int, string, string) {
		t.Helper()
		r := &req{ctx: &fasthttp.RequestCtx{}, f: w.f, params: params, origin: remoteName, body: body}
		r.ctx.Request.SetRequestURI("/x?" + query)
		if err := h(r); err != nil {
			var fe *fedError
			if !errors.As(err, &fe) {
				t.Fatalf("non-Matrix error: %v", err)
			}
			return fe.status, fe.code, fe.Error()
		}
		return r.ctx.Response.StatusCode(), "", string(r.ctx.Response.Body())
	}
	makeJoin := w.f.handleMakeMembership("join")
	room := restricted(w.room)

	if code, errcode, _ := call(makeJoin, map[string]string{"roomId": room, "userId": carol}, "ver=12", nil); code != 403 || errcode != "M_FORBIDDEN" {
		t.Errorf("user in no allowed room: %d %s", code, errcode)
	}
	if code, errcode, _ := call(makeJoin, map[string]string{"roomId": restricted("!unknown:elsewhere"), "userId": bob}, "ver=12", nil); code != 400 || errcode != "M_UNABLE_TO_AUTHORISE_JOIN" {
		t.Errorf("allowed room unknown here: %d %s", code, errcode)
	}
	code, _, body := call(makeJoin, map[string]string{"roomId": room, "userId": bob}, "ver=12", nil)
	if code != 200 {
		t.Fatalf("make_join: %d", code)
	}
	var mk struct {
		Event json.RawMessage `json:"event"`
	}
	json.Unmarshal([]byte(body), &mk)
	if !strings.Contains(string(mk.Event), `"join_authorised_via_users_server":"`+alice+`"`) {
		t.Fatalf("template does not name alice: %s", mk.Event)
	}

	// The joining server signs the template; send_join countersigns it.
	var tmpl map[string]json.RawMessage
	json.Unmarshal(mk.Event, &tmpl)
	tmpl["origin_server_ts"] = json.RawMessage("1")
	raw, _ := json.Marshal(tmpl)
	ver := dag.Version("12")
	raw, err := dag.AddContentHash(raw, ver)
	if err != nil {
		t.Fatal(err)
	}
	if raw, err = dag.SignEvent(raw, ver, remoteName, w.remote.ID, w.remote.Key); err != nil {
		t.Fatal(err)
	}
	ev, err := dag.ParseEvent(raw, ver)
	if err != nil {
		t.Fatal(err)
	}
	code, errcode, body := call(w.f.handleSendJoin, map[string]string{"roomId": room, "eventId": ev.ID}, "", raw)
	if code != 200 {
		t.Fatalf("send_join: %d %s %s", code, errcode, body)
	}
	var sj struct {
		Event json.RawMessage `json:"event"`
	}
	json.Unmarshal([]byte(body), &sj)
	if !strings.Contains(string(sj.Event), `"a.example":{`) {
		t.Errorf("join not countersigned: %s", sj.Event)
	}
	if m, err := w.f.store.MemberOf(room, bob); err != nil || m.Membership != projections.MemberJoin {
		t.Errorf("bob not joined: %+v %v", m, err)
	}
}
