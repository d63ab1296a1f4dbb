package api

import (
	"net/url"
	"testing"
)

// TestRedaction: who may redact what, and how redacted events are served
// on every read path.
func TestRedaction(t *testing.T) {
	for _, version := range []string{"10", "12"} { // redacts at the top level, then in content
		t.Run("v"+version, func(t *testing.T) {
			ts := newTestServer(t, Config{EnableRegistration: true})
			alice, bob := ts.register("alice"), ts.register("bob")
			room := ts.rmCreate(alice, `{"preset":"public_chat","topic":"secret topic","room_version":"`+version+`"}`)
			ts.rmOK("POST", rmPath(room, "/join"), bob, `{}`)
			aliceMsg := ts.rmSend(alice, room, "alice says")
			bobMsg := ts.rmSend(bob, room, "bob says")
			bobMsg2 := ts.rmSend(bob, room, "bob again")
			createID := ts.rmOK("GET", rmPath(room, "/state/m.room.create?format=event"), alice, "").field("event_id")
			topicID := ts.rmOK("GET", rmPath(room, "/state/m.room.topic?format=event"), alice, "").field("event_id")
			redact := func(id, txn string) string { return rmPath(room, "/redact/", url.PathEscape(id), "/", txn) }
			steps := []struct {
				name, path, token, body string
				status                  int
				code                    string
			}{
				{"others' event without power", redact(aliceMsg, "t1"), bob, `{}`, 403, "M_FORBIDDEN"},
				{"own event", redact(bobMsg, "t2"), bob, `{"reason":"oops"}`, 200, ""},
				{"unknown event without power", redact("$nope", "t3"), bob, `{}`, 404, "M_NOT_FOUND"},
				{"moderator redacts others'", redact(bobMsg2, "t4"), alice, `{}`, 200, ""},
				{"create event", redact(createID, "t5"), alice, `{}`, 403, "M_FORBIDDEN"},
				{"state event", redact(topicID, "t6"), alice, `{}`, 200, ""},
				{"unknown room", rmPath("!nope:test.local", "/redact/", url.PathEscape(aliceMsg), "/t7"), alice, `{}`, 404, "M_NOT_FOUND"},
				{"not json", redact(aliceMsg, "t8"), alice, `{"reason":`, 400, "M_NOT_JSON"},
				{"through /send without power", rmPath(room, "/send/m.room.redaction/s1"), bob, `{"redacts":"` + aliceMsg + `"}`, 403, "M_FORBIDDEN"},
				{"through /send without redacts", rmPath(room, "/send/m.room.redaction/s2"), bob, `{}`, 400, "M_BAD_JSON"},
			}
			ids := map[string]string{}
			for _, st := range steps {
				r := ts.do("PUT", st.path, st.token, st.body)
				if r.status != st.status || r.errcode() != st.code {
					t.Fatalf("%s: got %d %s, want %d %s", st.name, r.status, r.body, st.status, st.code)
				}
				ids[st.name] = r.field("event_id")
			}
			// The same transaction is the same redaction.
			if again := ts.rmOK("PUT", redact(bobMsg, "t2"), bob, `{"reason":"oops"}`).field("event_id"); again != ids["own event"] {
				t.Errorf("repeated transaction: %s vs %s", again, ids["own event"])
			}
			// /event: redacted content, redacted_because.
			var ev rmEvent
			rmDecode(t, ts.rmOK("GET", rmPath(room, "/event/", url.PathEscape(bobMsg)), alice, ""), &ev)
			if string(ev.Content) != "{}" || ev.Unsigned.RedactedBecause == nil || ev.Unsigned.RedactedBecause.EventID != ids["own event"] {
				t.Errorf("redacted event: %+v", ev)
			}
			if rb := ev.Unsigned.RedactedBecause; rb != nil && (rb.Redacts != bobMsg || rb.Type != "m.room.redaction") {
				t.Errorf("redacted_because: %+v", rb)
			}
			// /messages serves the redacted forms; the unredacted message stays.
			evs, _ := ts.rmMessages(alice, room, "")
			bodies := rmBodies(evs)
			if !rmSame(bodies, []string{"alice says"}) {
				t.Errorf("bodies after redactions: %v", bodies)
			}
			// The redacted topic is served empty by /state.
			if r := ts.rmOK("GET", rmPath(room, "/state/m.room.topic"), alice, ""); string(r.body) != "{}" {
				t.Errorf("redacted topic: %s", r.body)
			}
			// /sync too.
			r := ts.rmOK("GET", rmV3+"/sync", bob, "")
			var sync struct {
				Rooms struct {
					Join map[string]struct {
						Timeline struct {
							Events []rmEvent `json:"events"`
						} `json:"timeline"`
					} `json:"join"`
				} `json:"rooms"`
			}
			rmDecode(t, r, &sync)
			for _, e := range sync.Rooms.Join[room].Timeline.Events {
				if e.EventID == bobMsg2 && (string(e.Content) != "{}" || e.Unsigned.RedactedBecause == nil) {
					t.Errorf("sync serves an unredacted event: %+v", e)
				}
			}
		})
	}
}
