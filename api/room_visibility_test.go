package api

import (
	"encoding/json"
	"fmt"
	"net/url"
	"testing"
)

// TestHistoryVisibility: for each history_visibility setting, alice sends
// m1 before inviting bob, m2 while bob is invited, m3 while he is joined
// and m4 after he left; carol never joins. What bob and carol may read
// through /sync, /messages, /event and /context follows the spec's rules.
func TestHistoryVisibility(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	alice, bob, carol := ts.register("alice"), ts.register("bob"), ts.register("carol")
	cases := []struct {
		vis string
		// what bob sees of m1..m4 through /messages after leaving, and /sync while joined
		bobMessages, bobSync []string
		// whether bob may fetch m4 (sent after he left) by ID
		bobM4 bool
		// what carol, never a member, sees (nil: /messages is refused)
		carol []string
	}{
		{"world_readable", []string{"m1", "m2", "m3"}, []string{"m1", "m2", "m3"}, true, []string{"m1", "m2", "m3", "m4"}},
		{"shared", []string{"m1", "m2", "m3"}, []string{"m1", "m2", "m3"}, false, nil},
		{"invited", []string{"m2", "m3"}, []string{"m2", "m3"}, false, nil},
		{"joined", []string{"m3"}, []string{"m3"}, false, nil},
		{"nonsense", []string{"m1", "m2", "m3"}, []string{"m1", "m2", "m3"}, false, nil}, // not understood: shared
	}
	for _, c := range cases {
		t.Run(c.vis, func(t *testing.T) {
			room := ts.rmCreate(alice, fmt.Sprintf(`{"preset":"private_chat","initial_state":[{"type":"m.room.history_visibility","content":{"history_visibility":%q}}]}`, c.vis))
			ids := map[string]string{}
			ids["m1"] = ts.rmSend(alice, room, "m1")
			ts.rmOK("POST", rmPath(room, "/invite"), alice, `{"user_id":"@bob:test.local"}`)
			ids["m2"] = ts.rmSend(alice, room, "m2")
			ts.rmOK("POST", rmPath(room, "/join"), bob, `{}`)
			ids["m3"] = ts.rmSend(alice, room, "m3")

			// /sync while joined.
			filter := url.QueryEscape(`{"room":{"timeline":{"limit":50}}}`)
			sr := ts.rmOK("GET", rmV3+"/sync?filter="+filter, bob, "")
			var sync struct {
				Rooms struct {
					Join map[string]struct {
						Timeline struct {
							Events []rmEvent `json:"events"`
						} `json:"timeline"`
					} `json:"join"`
				} `json:"rooms"`
			}
			rmDecode(t, sr, &sync)
			if got := rmBodies(sync.Rooms.Join[room].Timeline.Events); !rmSame(got, c.bobSync) {
				t.Errorf("bob's sync timeline: %v, want %v", got, c.bobSync)
			}

			ts.rmOK("POST", rmPath(room, "/leave"), bob, `{}`)
			ids["m4"] = ts.rmSend(alice, room, "m4")

			// /messages after leaving: up to the leave, filtered.
			evs, r := ts.rmMessages(bob, room, "")
			if r.status != 200 {
				t.Fatalf("bob /messages: %d %s", r.status, r.body)
			}
			if got := rmBodies(evs); !rmSame(got, c.bobMessages) {
				t.Errorf("bob /messages: %v, want %v", got, c.bobMessages)
			}
			// /event, message by message.
			for _, m := range []string{"m1", "m2", "m3", "m4"} {
				want := contains(c.bobMessages, m) || (m == "m4" && c.bobM4)
				r := ts.do("GET", rmPath(room, "/event/", url.PathEscape(ids[m])), bob, "")
				if (r.status == 200) != want || (!want && r.errcode() != "M_NOT_FOUND") {
					t.Errorf("bob /event %s: %d %s, want visible=%v", m, r.status, r.body, want)
				}
			}
			// /context around m3: what came before is filtered the same way.
			cr := ts.rmOK("GET", rmPath(room, "/context/", url.PathEscape(ids["m3"]), "?limit=20"), bob, "")
			var ctx struct {
				Event        rmEvent   `json:"event"`
				EventsBefore []rmEvent `json:"events_before"`
			}
			rmDecode(t, cr, &ctx)
			var wantBefore []string
			for i := len(c.bobMessages) - 1; i >= 0; i-- {
				if c.bobMessages[i] != "m3" {
					wantBefore = append(wantBefore, c.bobMessages[i])
				}
			}
			if got := rmBodies(ctx.EventsBefore); ctx.Event.EventID != ids["m3"] || !rmSame(got, wantBefore) {
				t.Errorf("bob /context m3: before %v, want %v", got, wantBefore)
			}
			if c.vis != "world_readable" {
				r := ts.do("GET", rmPath(room, "/context/", url.PathEscape(ids["m4"])), bob, "")
				if r.status != 403 || r.errcode() != "M_FORBIDDEN" {
					t.Errorf("bob /context m4: %d %s", r.status, r.body)
				}
			}

			// carol, never a member.
			cevs, cr2 := ts.rmMessages(carol, room, "")
			if c.carol == nil {
				if cr2.status != 403 || cr2.errcode() != "M_FORBIDDEN" {
					t.Errorf("carol /messages: %d %s, want 403", cr2.status, cr2.body)
				}
				for _, m := range []string{"m1", "m3"} {
					if r := ts.do("GET", rmPath(room, "/event/", url.PathEscape(ids[m])), carol, ""); r.status != 404 {
						t.Errorf("carol /event %s: %d %s", m, r.status, r.body)
					}
					if r := ts.do("GET", rmPath(room, "/context/", url.PathEscape(ids[m])), carol, ""); r.status != 403 {
						t.Errorf("carol /context %s: %d %s", m, r.status, r.body)
					}
				}
				if r := ts.do("GET", rmPath(room, "/state"), carol, ""); r.status != 403 {
					t.Errorf("carol /state: %d %s", r.status, r.body)
				}
			} else {
				if got := rmBodies(cevs); !rmSame(got, c.carol) {
					t.Errorf("carol /messages: %v, want %v", got, c.carol)
				}
				if r := ts.do("GET", rmPath(room, "/event/", url.PathEscape(ids["m1"])), carol, ""); r.status != 200 {
					t.Errorf("carol /event m1: %d %s", r.status, r.body)
				}
				if r := ts.do("GET", rmPath(room, "/context/", url.PathEscape(ids["m2"])), carol, ""); r.status != 200 {
					t.Errorf("carol /context m2: %d %s", r.status, r.body)
				}
				if r := ts.do("GET", rmPath(room, "/state"), carol, ""); r.status != 200 {
					t.Errorf("carol /state (peeking): %d %s", r.status, r.body)
				}
			}
		})
	}
}

// TestVisibilityBoundaries: an m.room.history_visibility event is visible
// if the visibility before or after it allows, and a user's own membership
// events if their membership before or after allows.
func TestVisibilityBoundaries(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	alice, bob, carol := ts.register("alice"), ts.register("bob"), ts.register("carol")
	room := ts.rmCreate(alice, `{"preset":"public_chat","initial_state":[{"type":"m.room.history_visibility","content":{"history_visibility":"world_readable"}}]}`)
	early := ts.rmSend(alice, room, "early")
	hv := ts.rmState(alice, room, "m.room.history_visibility", "", `{"history_visibility":"joined"}`)
	late := ts.rmSend(alice, room, "late")
	cases := []struct {
		name, id string
		status   int
	}{
		{"message while world_readable", early, 200},
		{"the change to joined itself", hv, 200},
		{"message while joined", late, 404},
	}
	for _, c := range cases {
		if r := ts.do("GET", rmPath(room, "/event/", url.PathEscape(c.id)), carol, ""); r.status != c.status {
			t.Errorf("carol %s: %d %s", c.name, r.status, r.body)
		}
	}
	// bob joins and leaves the joined-only room: he sees his own join and
	// leave, not what was said before he joined.
	ts.rmOK("POST", rmPath(room, "/join"), bob, `{}`)
	joinEv := ts.rmOK("GET", rmPath(room, "/state/m.room.member/@bob:test.local?format=event"), bob, "").field("event_id")
	ts.rmOK("POST", rmPath(room, "/leave"), bob, `{}`)
	leaveEv := ts.rmOK("GET", rmPath(room, "/state/m.room.member/@bob:test.local?format=event"), bob, "").field("event_id")
	if joinEv == "" || leaveEv == "" || joinEv == leaveEv {
		t.Fatalf("member events: %q %q", joinEv, leaveEv)
	}
	for _, c := range []struct {
		name, id string
		status   int
	}{{"own join", joinEv, 200}, {"own leave", leaveEv, 200}, {"before joining", late, 404}} {
		if r := ts.do("GET", rmPath(room, "/event/", url.PathEscape(c.id)), bob, ""); r.status != c.status {
			t.Errorf("bob %s: %d %s", c.name, r.status, r.body)
		}
	}
	// After leaving, /state is the state when bob left.
	var st []rmEvent
	rmDecode(t, ts.rmOK("GET", rmPath(room, "/state"), bob, ""), &st)
	found := false
	for _, e := range st {
		if e.Type == "m.room.member" && e.StateKey != nil && *e.StateKey == "@bob:test.local" {
			found = true
			var c struct{ Membership string }
			json.Unmarshal(e.Content, &c)
			if c.Membership != "leave" {
				t.Errorf("bob's membership in the state when he left: %s", e.Content)
			}
		}
	}
	if !found {
		t.Errorf("no bob membership in /state: %v", st)
	}
}
