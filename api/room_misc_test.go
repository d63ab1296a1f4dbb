package api

import (
	"net/url"
	"strconv"
	"testing"

	"engram/projections"
)

// TestTimestampToEvent: /v1/rooms/{roomId}/timestamp_to_event both ways.
func TestTimestampToEvent(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	alice, bob := ts.register("alice"), ts.register("bob")
	room := ts.rmCreate(alice, `{"preset":"private_chat"}`)
	createID := ts.rmOK("GET", rmPath(room, "/state/m.room.create?format=event"), alice, "").field("event_id")
	var last string
	for i := 0; i < 5; i++ {
		last = ts.rmSend(alice, room, "m")
	}
	var ev struct {
		TS int64 `json:"origin_server_ts"`
	}
	rmDecode(t, ts.rmOK("GET", rmPath(room, "/event/", url.PathEscape(last)), alice, ""), &ev)
	path := func(q string) string {
		return "/_matrix/client/v1/rooms/" + url.PathEscape(room) + "/timestamp_to_event" + q
	}
	future := strconv.FormatInt(ev.TS+3600_000, 10)
	cases := []struct {
		name, query, token string
		status             int
		code, event        string
	}{
		{"forward from the epoch", "?dir=f&ts=0", alice, 200, "", createID},
		{"backward from the future", "?dir=b&ts=" + future, alice, 200, "", last},
		{"backward at the last event", "?dir=b&ts=" + strconv.FormatInt(ev.TS, 10), alice, 200, "", last},
		{"forward from the future", "?dir=f&ts=" + future, alice, 404, "M_NOT_FOUND", ""},
		{"backward from the epoch", "?dir=b&ts=0", alice, 404, "M_NOT_FOUND", ""},
		{"bad dir", "?dir=x&ts=0", alice, 400, "M_INVALID_PARAM", ""},
		{"no ts", "?dir=f", alice, 400, "M_MISSING_PARAM", ""},
		{"bad ts", "?dir=f&ts=soon", alice, 400, "M_INVALID_PARAM", ""},
		{"outsider", "?dir=f&ts=0", bob, 403, "M_FORBIDDEN", ""},
	}
	for _, c := range cases {
		r := ts.do("GET", path(c.query), c.token, "")
		if r.status != c.status || r.errcode() != c.code || (c.event != "" && r.field("event_id") != c.event) {
			t.Errorf("%s: %d %s", c.name, r.status, r.body)
		}
	}
}

// TestReports: reporting events, rooms and users is logged.
func TestReports(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	alice, bob := ts.register("alice"), ts.register("bob")
	room := ts.rmCreate(alice, `{"preset":"public_chat"}`)
	msg := ts.rmSend(alice, room, "rude")
	other := ts.rmCreate(alice, `{}`)
	otherMsg := ts.rmSend(alice, other, "elsewhere")
	report := func(id string) string { return rmPath(room, "/report/", url.PathEscape(id)) }
	cases := []struct {
		name, path, token, body string
		status                  int
		code                    string
	}{
		{"event, not joined", report(msg), bob, `{"reason":"x"}`, 404, "M_NOT_FOUND"},
		{"join", rmPath(room, "/join"), bob, `{}`, 200, ""},
		{"event", report(msg), bob, `{"reason":"rude","score":-100}`, 200, ""},
		{"event without reason", report(msg), bob, `{}`, 200, ""},
		{"bad score", report(msg), bob, `{"reason":"x","score":5}`, 400, "M_INVALID_PARAM"},
		{"unknown event", report("$nope"), bob, `{"reason":"x"}`, 404, "M_NOT_FOUND"},
		{"event of another room", report(otherMsg), bob, `{"reason":"x"}`, 404, "M_NOT_FOUND"},
		{"room", rmPath(other, "/report"), bob, `{"reason":"bad room"}`, 200, ""},
		{"room without reason", rmPath(other, "/report"), bob, `{}`, 400, "M_BAD_JSON"},
		{"unknown room", rmPath("!nope:test.local", "/report"), bob, `{"reason":"x"}`, 404, "M_NOT_FOUND"},
		{"user", rmV3 + "/users/" + url.PathEscape("@alice:test.local") + "/report", bob, `{"reason":"mean"}`, 200, ""},
		{"remote user", rmV3 + "/users/" + url.PathEscape("@x:elsewhere.example") + "/report", bob, `{"reason":"mean"}`, 200, ""},
		{"unknown user", rmV3 + "/users/" + url.PathEscape("@nobody:test.local") + "/report", bob, `{"reason":"x"}`, 404, "M_NOT_FOUND"},
		{"bad user", rmV3 + "/users/nobody/report", bob, `{"reason":"x"}`, 400, "M_INVALID_PARAM"},
		{"user without reason", rmV3 + "/users/" + url.PathEscape("@alice:test.local") + "/report", bob, `{}`, 400, "M_BAD_JSON"},
	}
	for _, c := range cases {
		r := ts.do("POST", c.path, c.token, c.body)
		if r.status != c.status || r.errcode() != c.code {
			t.Errorf("%s: got %d %s, want %d %s", c.name, r.status, r.body, c.status, c.code)
		}
	}
	var got []projections.ReportRecord
	ts.srv.store.Reports(0, func(_ uint64, r *projections.ReportRecord) bool {
		got = append(got, *r)
		return true
	})
	if len(got) != 5 {
		t.Fatalf("reports: %+v", got)
	}
	if r := got[0]; r.Reporter != "@bob:test.local" || r.EventID != msg || r.Reason != "rude" || r.Score == nil || *r.Score != -100 || r.TS == 0 {
		t.Errorf("event report: %+v", r)
	}
	if r := got[2]; r.RoomID != other || r.EventID != "" || r.Reason != "bad room" {
		t.Errorf("room report: %+v", r)
	}
	if r := got[3]; r.UserID != "@alice:test.local" || r.Reason != "mean" {
		t.Errorf("user report: %+v", r)
	}
}
