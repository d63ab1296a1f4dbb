package api

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
)

var relTxn atomic.Int64

// relSend sends an event of type typ with content and returns its ID.
func (ts *testServer) relSend(tok, room, typ, content string) string {
	ts.t.Helper()
	r := ts.do("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/%s/rel%d", url.PathEscape(room), typ, relTxn.Add(1)), tok, content)
	if r.status != 200 {
		ts.t.Fatalf("send %s: %d %s", typ, r.status, r.body)
	}
	return r.field("event_id")
}

func (ts *testServer) relRoom(tok, body string) string {
	ts.t.Helper()
	r := ts.do("POST", "/_matrix/client/v3/createRoom", tok, body)
	if r.status != 200 {
		ts.t.Fatalf("createRoom: %d %s", r.status, r.body)
	}
	return r.field("room_id")
}

func (ts *testServer) relJoin(tok, room string) {
	ts.t.Helper()
	if r := ts.do("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), tok, `{}`); r.status != 200 {
		ts.t.Fatalf("join: %d %s", r.status, r.body)
	}
}

func relMsg(body string) string { return fmt.Sprintf(`{"msgtype":"m.text","body":%q}`, body) }

func relTo(rel, parent, extra string) string {
	return fmt.Sprintf(`"m.relates_to":{"rel_type":%q,"event_id":%q%s}`, rel, parent, extra)
}

func relEdit(parent, body string) string {
	return fmt.Sprintf(`{"msgtype":"m.text","body":"* %s","m.new_content":{"msgtype":"m.text","body":%q},%s}`, body, body, relTo("m.replace", parent, ""))
}

func relReply(parent, body string) string {
	return fmt.Sprintf(`{"msgtype":"m.text","body":%q,%s}`, body, relTo("m.thread", parent, ""))
}

type relEvent struct {
	EventID  string          `json:"event_id"`
	Sender   string          `json:"sender"`
	TS       int64           `json:"origin_server_ts"`
	Content  json.RawMessage `json:"content"`
	Unsigned struct {
		Relations struct {
			Replace *relEvent `json:"m.replace"`
			Thread  *struct {
				LatestEvent  relEvent `json:"latest_event"`
				Count        int      `json:"count"`
				Participated bool     `json:"current_user_participated"`
			} `json:"m.thread"`
			Reference *struct {
				Chunk []struct {
					EventID string `json:"event_id"`
				} `json:"chunk"`
			} `json:"m.reference"`
		} `json:"m.relations"`
	} `json:"unsigned"`
}

type relPage struct {
	Chunk          []relEvent `json:"chunk"`
	NextBatch      string     `json:"next_batch"`
	PrevBatch      string     `json:"prev_batch"`
	RecursionDepth *int       `json:"recursion_depth"`
}

func relIDs(evs []relEvent) []string {
	out := []string{}
	for _, e := range evs {
		out = append(out, e.EventID)
	}
	return out
}

func relDecode(t testing.TB, r resp, v any) {
	t.Helper()
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode: %v: %s", err, r.body)
	}
}

func (ts *testServer) getEventJSON(tok, room, id string) relEvent {
	ts.t.Helper()
	var e relEvent
	relDecode(ts.t, ts.do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/event/"+url.PathEscape(id), tok, ""), &e)
	return e
}

func relPath(room, parent string, rest ...string) string {
	p := "/_matrix/client/v1/rooms/" + url.PathEscape(room) + "/relations/" + url.PathEscape(parent)
	for _, s := range rest {
		p += "/" + url.PathEscape(s)
	}
	return p
}

func TestRelationsPagination(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	a := ts.register("alice")
	room := ts.relRoom(a, `{"preset":"public_chat"}`)
	root := ts.relSend(a, room, "m.room.message", relMsg("root"))
	var kids []string
	for i := 0; i < 7; i++ {
		kids = append(kids, ts.relSend(a, room, "m.room.message", relReply(root, fmt.Sprintf("r%d", i))))
	}
	ref := ts.relSend(a, room, "m.room.message", fmt.Sprintf(`{"msgtype":"m.text","body":"ref",%s}`, relTo("m.reference", root, "")))
	react := ts.relSend(a, room, "m.reaction", fmt.Sprintf(`{%s}`, relTo("m.annotation", root, `,"key":"👍"`)))
	// An unrelated event and a relation to another event do not show up.
	other := ts.relSend(a, room, "m.room.message", relMsg("other"))
	ts.relSend(a, room, "m.room.message", relReply(other, "elsewhere"))

	// Backwards (default), most recent first, pages of 3, all the way.
	var got []string
	path := relPath(room, root, "m.thread") + "?limit=3"
	next := ""
	for i := 0; i < 5; i++ {
		q := path
		if next != "" {
			q += "&from=" + next
		}
		var p relPage
		relDecode(t, ts.do("GET", q, a, ""), &p)
		got = append(got, relIDs(p.Chunk)...)
		if next != "" && p.PrevBatch != next {
			t.Errorf("prev_batch %q, want %q", p.PrevBatch, next)
		}
		next = p.NextBatch
		if next == "" {
			break
		}
	}
	var want []string
	for i := len(kids) - 1; i >= 0; i-- {
		want = append(want, kids[i])
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("backwards pages:\n got %v\nwant %v", got, want)
	}

	cases := []struct {
		name  string
		path  string
		want  []string
		depth bool
	}{
		{"all types", relPath(room, root) + "?limit=20", []string{react, ref, kids[6], kids[5], kids[4], kids[3], kids[2], kids[1], kids[0]}, false},
		{"annotations", relPath(room, root, "m.annotation"), []string{react}, false},
		{"annotation by type", relPath(room, root, "m.annotation", "m.reaction"), []string{react}, false},
		{"wrong event type", relPath(room, root, "m.annotation", "m.room.message"), []string{}, false},
		{"forwards", relPath(room, root, "m.thread") + "?dir=f&limit=2", []string{kids[0], kids[1]}, false},
		{"limit 0", relPath(room, root) + "?limit=0", []string{}, false},
		{"no children", relPath(room, react), []string{}, false},
		{"recurse", relPath(room, root, "m.thread") + "?recurse=true&limit=2", []string{kids[6], kids[5]}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var p relPage
			relDecode(t, ts.do("GET", c.path, a, ""), &p)
			if strings.Join(relIDs(p.Chunk), ",") != strings.Join(c.want, ",") {
				t.Errorf("got %v, want %v", relIDs(p.Chunk), c.want)
			}
			if (p.RecursionDepth != nil) != c.depth {
				t.Errorf("recursion_depth %v", p.RecursionDepth)
			}
		})
	}

	// Forwards pagination from a next_batch continues after it.
	var p1, p2 relPage
	relDecode(t, ts.do("GET", relPath(room, root, "m.thread")+"?dir=f&limit=4", a, ""), &p1)
	relDecode(t, ts.do("GET", relPath(room, root, "m.thread")+"?dir=f&limit=4&from="+p1.NextBatch, a, ""), &p2)
	if all := append(relIDs(p1.Chunk), relIDs(p2.Chunk)...); strings.Join(all, ",") != strings.Join(kids, ",") || p2.NextBatch != "" {
		t.Fatalf("forward pages: %v then %v (next %q)", relIDs(p1.Chunk), relIDs(p2.Chunk), p2.NextBatch)
	}
}

func TestRelationsRecurse(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	a := ts.register("alice")
	room := ts.relRoom(a, `{}`)
	root := ts.relSend(a, room, "m.room.message", relMsg("root"))
	reply := ts.relSend(a, room, "m.room.message", relReply(root, "reply"))
	edit := ts.relSend(a, room, "m.room.message", relEdit(reply, "reply!"))
	var direct, deep relPage
	relDecode(t, ts.do("GET", relPath(room, root), a, ""), &direct)
	relDecode(t, ts.do("GET", relPath(room, root)+"?recurse=true", a, ""), &deep)
	if strings.Join(relIDs(direct.Chunk), ",") != reply {
		t.Errorf("direct: %v", relIDs(direct.Chunk))
	}
	if strings.Join(relIDs(deep.Chunk), ",") != edit+","+reply || deep.RecursionDepth == nil || *deep.RecursionDepth != 3 {
		t.Errorf("recursive: %v depth %v", relIDs(deep.Chunk), deep.RecursionDepth)
	}
}

func TestEditAggregation(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	a, b := ts.register("alice"), ts.register("bob")
	room := ts.relRoom(a, `{"preset":"public_chat"}`)
	ts.relJoin(b, room)
	orig := ts.relSend(a, room, "m.room.message", relMsg("v0"))
	e1 := ts.relSend(a, room, "m.room.message", relEdit(orig, "v1"))
	e2 := ts.relSend(a, room, "m.room.message", relEdit(orig, "v2"))
	// Not valid: another sender, another type, no m.new_content.
	ts.relSend(b, room, "m.room.message", relEdit(orig, "bob's"))
	ts.relSend(a, room, "m.other", relEdit(orig, "other type"))
	ts.relSend(a, room, "m.room.message", fmt.Sprintf(`{"body":"x",%s}`, relTo("m.replace", orig, "")))
	// An edit of an edit is not bundled on the edit.
	ts.relSend(a, room, "m.room.message", relEdit(e1, "edit of edit"))

	// "The most recent event is determined by comparing origin_server_ts;
	// if two or more replacement events have identical origin_server_ts,
	// the event with the lexicographically largest event_id is treated as
	// more recent."
	ev1, ev2 := ts.getEventJSON(a, room, e1), ts.getEventJSON(a, room, e2)
	latest, older := e2, e1
	if ev1.TS > ev2.TS || (ev1.TS == ev2.TS && e1 > e2) {
		latest, older = e1, e2
	}
	ev := ts.getEventJSON(b, room, orig)
	rep := ev.Unsigned.Relations.Replace
	if rep == nil || rep.EventID != latest {
		t.Fatalf("m.replace bundle: %+v", rep)
	}
	if !strings.Contains(string(ev.Content), `"v0"`) {
		t.Errorf("original content replaced: %s", ev.Content)
	}
	if ev := ts.getEventJSON(b, room, e1); ev.Unsigned.Relations.Replace != nil {
		t.Errorf("edit of an edit bundled: %+v", ev.Unsigned.Relations.Replace)
	}
	// Redacting the latest edit falls back to the previous one.
	if r := ts.do("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/redact/"+url.PathEscape(latest)+"/rr1", a, `{}`); r.status != 200 {
		t.Fatalf("redact: %d %s", r.status, r.body)
	}
	if ev := ts.getEventJSON(b, room, orig); ev.Unsigned.Relations.Replace == nil || ev.Unsigned.Relations.Replace.EventID != older {
		t.Fatalf("after redacting the latest edit: %+v", ev.Unsigned.Relations.Replace)
	}
	// The bundle shows in /messages too; a redacted original has none.
	var msgs struct {
		Chunk []relEvent `json:"chunk"`
	}
	relDecode(t, ts.do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?dir=b&limit=50", b, ""), &msgs)
	found := false
	for _, e := range msgs.Chunk {
		if e.EventID == orig {
			found = e.Unsigned.Relations.Replace != nil && e.Unsigned.Relations.Replace.EventID == older
		}
	}
	if !found {
		t.Errorf("/messages lacks the m.replace bundle")
	}
	if r := ts.do("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/redact/"+url.PathEscape(orig)+"/rr2", a, `{}`); r.status != 200 {
		t.Fatalf("redact: %d %s", r.status, r.body)
	}
	if ev := ts.getEventJSON(b, room, orig); ev.Unsigned.Relations.Replace != nil {
		t.Errorf("redacted original still bundles its edit")
	}
}

func TestReactionCountsAndReferences(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	a, b := ts.register("alice"), ts.register("bob")
	room := ts.relRoom(a, `{"preset":"public_chat"}`)
	ts.relJoin(b, room)
	msg := ts.relSend(a, room, "m.room.message", relMsg("hello"))
	up := fmt.Sprintf(`{%s}`, relTo("m.annotation", msg, `,"key":"👍"`))
	r1 := ts.relSend(a, room, "m.reaction", up)
	ts.relSend(b, room, "m.reaction", up)
	ts.relSend(b, room, "m.reaction", fmt.Sprintf(`{%s}`, relTo("m.annotation", msg, `,"key":"🎉"`)))
	ref := ts.relSend(b, room, "m.room.message", fmt.Sprintf(`{"body":"see",%s}`, relTo("m.reference", msg, "")))

	counts := func() map[string]uint64 {
		ac, err := ts.srv.store.Annotations(room, msg)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]uint64{}
		for _, c := range ac {
			m[c.Type+" "+c.Key] = c.Count
		}
		return m
	}
	if c := counts(); c["m.reaction 👍"] != 2 || c["m.reaction 🎉"] != 1 || len(c) != 2 {
		t.Fatalf("counts: %v", c)
	}
	if r := ts.do("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/redact/"+url.PathEscape(r1)+"/rx", a, `{}`); r.status != 200 {
		t.Fatalf("redact: %d %s", r.status, r.body)
	}
	if c := counts(); c["m.reaction 👍"] != 1 {
		t.Fatalf("counts after redaction: %v", c)
	}
	var p relPage
	relDecode(t, ts.do("GET", relPath(room, msg, "m.annotation"), a, ""), &p)
	if len(p.Chunk) != 2 {
		t.Errorf("annotations after redaction: %v", relIDs(p.Chunk))
	}
	// Annotations are not bundled; references are.
	ev := ts.getEventJSON(a, room, msg)
	if rf := ev.Unsigned.Relations.Reference; rf == nil || len(rf.Chunk) != 1 || rf.Chunk[0].EventID != ref {
		t.Errorf("m.reference bundle: %+v", rf)
	}
	if strings.Contains(string(ts.do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/event/"+url.PathEscape(msg), a, "").body), "m.annotation") {
		t.Errorf("annotations bundled")
	}
}

type threadList struct {
	Chunk     []relEvent `json:"chunk"`
	NextBatch string     `json:"next_batch"`
}

func TestThreads(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	a, b := ts.register("alice"), ts.register("bob")
	room := ts.relRoom(a, `{"preset":"public_chat"}`)
	ts.relJoin(b, room)
	t1 := ts.relSend(a, room, "m.room.message", relMsg("thread one"))
	t2 := ts.relSend(a, room, "m.room.message", relMsg("thread two"))
	t3 := ts.relSend(b, room, "m.room.message", relMsg("thread three"))
	ts.relSend(a, room, "m.room.message", relReply(t1, "1a"))
	ts.relSend(a, room, "m.room.message", relReply(t3, "3a"))
	last2 := ts.relSend(b, room, "m.room.message", relReply(t2, "2a"))
	last1 := ts.relSend(b, room, "m.room.message", relReply(t1, "1b"))
	// Order by latest reply: t1, t2, t3.
	base := "/_matrix/client/v1/rooms/" + url.PathEscape(room) + "/threads"
	var all threadList
	relDecode(t, ts.do("GET", base+"?limit=10", a, ""), &all)
	if strings.Join(relIDs(all.Chunk), ",") != strings.Join([]string{t1, t2, t3}, ",") || all.NextBatch != "" {
		t.Fatalf("threads: %v next %q", relIDs(all.Chunk), all.NextBatch)
	}
	th := all.Chunk[0].Unsigned.Relations.Thread
	if th == nil || th.Count != 2 || th.LatestEvent.EventID != last1 || !th.Participated {
		t.Fatalf("thread summary of t1: %+v", th)
	}
	// Pages of one.
	var got []string
	next := ""
	for i := 0; i < 5; i++ {
		q := base + "?limit=1"
		if next != "" {
			q += "&from=" + next
		}
		var p threadList
		relDecode(t, ts.do("GET", q, a, ""), &p)
		got = append(got, relIDs(p.Chunk)...)
		if next = p.NextBatch; next == "" {
			break
		}
	}
	if strings.Join(got, ",") != strings.Join([]string{t1, t2, t3}, ",") {
		t.Fatalf("paged threads: %v", got)
	}
	// Bob participated in t1 (reply), t2 (reply) and t3 (root); alice in t1, t2 (roots), t3 (reply).
	c := ts.register("carol")
	ts.relJoin(c, room)
	ts.relSend(c, room, "m.room.message", relReply(t2, "2c"))
	var part threadList
	relDecode(t, ts.do("GET", base+"?include=participated", c, ""), &part)
	if strings.Join(relIDs(part.Chunk), ",") != t2 {
		t.Fatalf("carol's threads: %v", relIDs(part.Chunk))
	}
	if th := part.Chunk[0].Unsigned.Relations.Thread; th == nil || th.Count != 2 || !th.Participated {
		t.Fatalf("t2 for carol: %+v", th)
	}
	ev := ts.getEventJSON(b, room, t2)
	if th := ev.Unsigned.Relations.Thread; th == nil || th.LatestEvent.EventID == last2 || th.Participated != true {
		t.Fatalf("t2 for bob: %+v", th)
	}
	// Sync carries the bundle as well.
	sync := ts.do("GET", "/_matrix/client/v3/sync", a, "")
	if !strings.Contains(string(sync.body), `"m.thread"`) {
		t.Errorf("sync lacks thread bundles")
	}
}

func TestRelationErrors(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	a, b := ts.register("alice"), ts.register("bob")
	room := ts.relRoom(a, `{}`) // private: bob is not in it
	msg := ts.relSend(a, room, "m.room.message", relMsg("secret"))
	threads := "/_matrix/client/v1/rooms/" + url.PathEscape(room) + "/threads"
	cases := []struct {
		name, method, path, token, body string
		status                          int
		code                            string
	}{
		{"not in room", "GET", relPath(room, msg), b, "", 403, "M_FORBIDDEN"},
		{"unknown event", "GET", relPath(room, "$nope"), a, "", 404, "M_NOT_FOUND"},
		{"bad dir", "GET", relPath(room, msg) + "?dir=x", a, "", 400, "M_INVALID_PARAM"},
		{"bad limit", "GET", relPath(room, msg) + "?limit=x", a, "", 400, "M_INVALID_PARAM"},
		{"bad from", "GET", relPath(room, msg) + "?from=zz", a, "", 400, "M_INVALID_PARAM"},
		{"bad recurse", "GET", relPath(room, msg) + "?recurse=maybe", a, "", 400, "M_INVALID_PARAM"},
		{"threads not in room", "GET", threads, b, "", 403, "M_FORBIDDEN"},
		{"threads bad include", "GET", threads + "?include=some", a, "", 400, "M_INVALID_PARAM"},
		{"threads zero limit", "GET", threads + "?limit=0", a, "", 400, "M_INVALID_PARAM"},
		{"threads bad from", "GET", threads + "?from=x", a, "", 400, "M_INVALID_PARAM"},
		{"no auth", "GET", relPath(room, msg), "", "", 401, "M_MISSING_TOKEN"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := ts.do(c.method, c.path, c.token, c.body)
			if r.status != c.status || r.errcode() != c.code {
				t.Errorf("got %d %s, want %d %s", r.status, r.body, c.status, c.code)
			}
		})
	}
}

func TestValidateRelation(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	a := ts.register("alice")
	room := ts.relRoom(a, `{}`)
	other := ts.relRoom(a, `{}`)
	msg := ts.relSend(a, room, "m.room.message", relMsg("hi"))
	reply := ts.relSend(a, room, "m.room.message", relReply(msg, "in thread"))
	elsewhere := ts.relSend(a, other, "m.room.message", relMsg("elsewhere"))
	ts.relSend(a, room, "m.reaction", fmt.Sprintf(`{%s}`, relTo("m.annotation", msg, `,"key":"+1"`)))
	cases := []struct {
		name, typ, content, code string
	}{
		{"no relation", "m.room.message", relMsg("x"), ""},
		{"new reaction", "m.reaction", fmt.Sprintf(`{%s}`, relTo("m.annotation", msg, `,"key":"-1"`)), ""},
		{"duplicate reaction", "m.reaction", fmt.Sprintf(`{%s}`, relTo("m.annotation", msg, `,"key":"+1"`)), "M_DUPLICATE_ANNOTATION"},
		{"same key other type", "m.other", fmt.Sprintf(`{%s}`, relTo("m.annotation", msg, `,"key":"+1"`)), ""},
		{"missing key", "m.reaction", fmt.Sprintf(`{%s}`, relTo("m.annotation", msg, "")), "M_BAD_JSON"},
		{"thread off a relation", "m.room.message", relReply(reply, "nested"), "M_UNKNOWN"},
		{"thread off a plain event", "m.room.message", relReply(msg, "ok"), ""},
		{"other room", "m.room.message", relReply(elsewhere, "x"), "M_BAD_JSON"},
		{"unknown parent", "m.room.message", relReply("$unknown", "x"), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := ts.srv.validateRelation(room, "@alice:test.local", c.typ, []byte(c.content))
			code := ""
			if e, ok := err.(*Error); ok {
				code = e.Code
			} else if err != nil {
				t.Fatal(err)
			}
			if code != c.code {
				t.Errorf("got %q (%v), want %q", code, err, c.code)
			}
		})
	}
}
