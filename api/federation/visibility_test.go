package federation

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"engram/dag"
	"engram/dag/rooms"
)

// TestServerHistoryVisibility: with history visibility joined, a server
// whose user joined later cannot fetch the events from before the join
// with /event, and /backfill and /get_missing_events serve them redacted;
// what came after the join is served whole.
func TestServerHistoryVisibility(t *testing.T) {
	w := newFedWorld(t)
	seq := w.f.rooms
	alice, bob := "@alice:a.example", "@bob:"+remoteName
	s := func(x string) *string { return &x }
	send := func(ev rooms.Event) string {
		t.Helper()
		ev.Room = w.room
		res, err := seq.Send(ev)
		if err != nil {
			t.Fatal(err)
		}
		return res.EventID
	}
	send(rooms.Event{Sender: alice, Type: "m.room.history_visibility", StateKey: s(""), Content: json.RawMessage(`{"history_visibility":"joined"}`)})
	before := send(rooms.Event{Sender: alice, Type: "m.room.message", Content: json.RawMessage(`{"msgtype":"m.text","body":"secret"}`)})
	join := send(rooms.Event{Sender: bob, Type: "m.room.member", StateKey: s(bob), Content: json.RawMessage(`{"membership":"join"}`)})
	after := send(rooms.Event{Sender: alice, Type: "m.room.message", Content: json.RawMessage(`{"msgtype":"m.text","body":"hello bob"}`)})

	call := func(h func(*req) error, params map[string]string, query string, body string) (int, string) {
		t.Helper()
		r := &req{ctx: &fasthttp.RequestCtx{}, f: w.f, params: params, origin: remoteName, body: []byte(body)}
		r.ctx.Request.SetRequestURI("/x?" + query)
		if err := h(r); err != nil {
			var fe *fedError
			if !errors.As(err, &fe) {
				t.Fatalf("non-Matrix error: %v", err)
			}
			return fe.status, fe.code
		}
		return r.ctx.Response.StatusCode(), string(r.ctx.Response.Body())
	}
	if code, _ := call(w.f.handleEvent, map[string]string{"eventId": before}, "", ""); code != 404 {
		t.Fatalf("event before the join: %d", code)
	}
	if code, body := call(w.f.handleEvent, map[string]string{"eventId": after}, "", ""); code != 200 || !strings.Contains(body, "hello bob") {
		t.Fatalf("event after the join: %d %s", code, body)
	}
	ids := func(body, field string) map[string]string {
		var v struct {
			PDUs   []json.RawMessage `json:"pdus"`
			Events []json.RawMessage `json:"events"`
		}
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			t.Fatalf("%v: %s", err, body)
		}
		list := v.PDUs
		if field == "events" {
			list = v.Events
		}
		out := map[string]string{}
		for _, raw := range list {
			id, err := dag.EventID(raw, dag.Version("12"))
			if err != nil {
				t.Fatal(err)
			}
			out[id] = string(raw)
		}
		return out
	}
	_, bf := call(w.f.handleBackfill, map[string]string{"roomId": w.room}, "v="+after+"&limit=20", "")
	_, me := call(w.f.handleMissingEvents, map[string]string{"roomId": w.room}, "", `{"earliest_events":[],"latest_events":["`+after+`"],"limit":20}`)
	for name, got := range map[string]map[string]string{"backfill": ids(bf, "pdus"), "missing": ids(me, "events")} {
		// A redacted event keeps its ID (the reference hash is of the
		// redacted form).
		if pdu, ok := got[before]; !ok || strings.Contains(pdu, "secret") {
			t.Errorf("%s: event before the join not served redacted: %q", name, pdu)
		}
		if _, ok := got[join]; !ok {
			t.Errorf("%s: the join is missing", name)
		}
	}
	if !strings.Contains(ids(bf, "pdus")[after], "hello bob") {
		t.Error("backfill: event after the join not served whole")
	}
}
