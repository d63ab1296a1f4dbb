package api

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Helpers of the sync-area tests (prefixed sy to stay clear of other
// areas').

var syTxn atomic.Int64

const syV3 = "/_matrix/client/v3"

// syEvent is an event of a /sync response as the tests read it.
type syEvent struct {
	EventID  string          `json:"event_id"`
	Type     string          `json:"type"`
	Sender   string          `json:"sender"`
	StateKey *string         `json:"state_key"`
	Content  json.RawMessage `json:"content"`
	Unsigned json.RawMessage `json:"unsigned"`
}

func (e syEvent) field(name string) any {
	var c map[string]any
	json.Unmarshal(e.Content, &c)
	return c[name]
}

type syCounts struct {
	Highlight int `json:"highlight_count"`
	Notify    int `json:"notification_count"`
}

type syJoined struct {
	Timeline struct {
		Events    []syEvent `json:"events"`
		Limited   bool      `json:"limited"`
		PrevBatch string    `json:"prev_batch"`
	} `json:"timeline"`
	State       struct{ Events []syEvent } `json:"state"`
	Ephemeral   struct{ Events []syEvent } `json:"ephemeral"`
	AccountData struct{ Events []syEvent } `json:"account_data"`
	Unread      *syCounts                  `json:"unread_notifications"`
	ThreadCount map[string]syCounts        `json:"unread_thread_notifications"`
	Summary     map[string]json.RawMessage `json:"summary"`
}

type sySync struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join   map[string]syJoined `json:"join"`
		Leave  map[string]syJoined `json:"leave"`
		Invite map[string]struct {
			InviteState struct{ Events []syEvent } `json:"invite_state"`
		} `json:"invite"`
		Knock map[string]struct {
			KnockState struct{ Events []syEvent } `json:"knock_state"`
		} `json:"knock"`
	} `json:"rooms"`
	Presence    struct{ Events []syEvent } `json:"presence"`
	AccountData struct{ Events []syEvent } `json:"account_data"`
	ToDevice    *struct{ Events []any }    `json:"to_device"`
	raw         []byte
}

func (s *sySync) types(room string, section string) []string {
	j := s.Rooms.Join[room]
	var evs []syEvent
	switch section {
	case "timeline":
		evs = j.Timeline.Events
	case "state":
		evs = j.State.Events
	case "ephemeral":
		evs = j.Ephemeral.Events
	case "account_data":
		evs = j.AccountData.Events
	}
	var out []string
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

// sySync runs GET /sync with the query (without "?") and decodes it.
func (ts *testServer) sySync(tok, query string) *sySync {
	ts.t.Helper()
	r := ts.do("GET", syV3+"/sync?"+query, tok, "")
	if r.status != 200 {
		ts.t.Fatalf("sync %s: %d %s", query, r.status, r.body)
	}
	var s sySync
	if err := json.Unmarshal(r.body, &s); err != nil {
		ts.t.Fatalf("sync body: %v: %s", err, r.body)
	}
	s.raw = r.body
	return &s
}

// syAfter is an incremental sync that returns at once.
func (ts *testServer) syAfter(tok, since string, extra ...string) *sySync {
	ts.t.Helper()
	return ts.sySync(tok, "timeout=0&since="+url.QueryEscape(since)+strings.Join(extra, ""))
}

func (ts *testServer) syCreate(tok, body string) string {
	ts.t.Helper()
	r := ts.do("POST", syV3+"/createRoom", tok, body)
	if r.status != 200 {
		ts.t.Fatalf("createRoom: %d %s", r.status, r.body)
	}
	return r.field("room_id")
}

func (ts *testServer) syJoin(tok, room string) {
	ts.t.Helper()
	if r := ts.do("POST", syV3+"/join/"+url.PathEscape(room), tok, `{}`); r.status != 200 {
		ts.t.Fatalf("join: %d %s", r.status, r.body)
	}
}

// sySend sends an event with JSON content and returns its ID.
func (ts *testServer) sySend(tok, room, typ, content string) string {
	ts.t.Helper()
	r := ts.do("PUT", fmt.Sprintf("%s/rooms/%s/send/%s/sy%d", syV3, url.PathEscape(room), typ, syTxn.Add(1)), tok, content)
	if r.status != 200 {
		ts.t.Fatalf("send: %d %s", r.status, r.body)
	}
	return r.field("event_id")
}

func (ts *testServer) syMsg(tok, room, body string) string {
	ts.t.Helper()
	return ts.sySend(tok, room, "m.room.message", fmt.Sprintf(`{"msgtype":"m.text","body":%q}`, body))
}

func (ts *testServer) syState(tok, room, typ, sk, content string) string {
	ts.t.Helper()
	r := ts.do("PUT", fmt.Sprintf("%s/rooms/%s/state/%s/%s", syV3, url.PathEscape(room), typ, url.PathEscape(sk)), tok, content)
	if r.status != 200 {
		ts.t.Fatalf("state %s: %d %s", typ, r.status, r.body)
	}
	return r.field("event_id")
}

func (ts *testServer) syOK(method, path, tok, body string) resp {
	ts.t.Helper()
	r := ts.do(method, syV3+path, tok, body)
	if r.status != 200 {
		ts.t.Fatalf("%s %s: %d %s", method, path, r.status, r.body)
	}
	return r
}

// syPoll starts a long-poll sync and returns a channel with its result; it
// returns once the sync is parked waiting.
func (ts *testServer) syPoll(tok, since, extra string) <-chan *sySync {
	ts.t.Helper()
	before := ts.srv.hub.waiting.Load()
	out := make(chan *sySync, 1)
	go func() {
		r := ts.do("GET", syV3+"/sync?timeout=20000&since="+url.QueryEscape(since)+extra, tok, "")
		var s sySync
		json.Unmarshal(r.body, &s)
		s.raw = r.body
		out <- &s
	}()
	for i := 0; ts.srv.hub.waiting.Load() <= before; i++ {
		if i > 4000 {
			ts.t.Fatal("long-poll never parked")
		}
		time.Sleep(time.Millisecond)
	}
	return out
}

func syWait(t testing.TB, ch <-chan *sySync) *sySync {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(15 * time.Second):
		t.Fatal("long-poll did not return")
		return nil
	}
}

func syPath(room string, rest ...string) string {
	return "/rooms/" + url.PathEscape(room) + strings.Join(rest, "")
}

func syHas(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// syRoomPair registers alice and bob, alice creates a public room, bob
// joins.
func syRoomPair(t testing.TB, cfg Config) (ts *testServer, alice, bob, room string) {
	ts = newTestServer(t, cfg)
	alice, bob = ts.register("alice"), ts.register("bob")
	room = ts.syCreate(alice, `{"preset":"public_chat"}`)
	ts.syJoin(bob, room)
	return ts, alice, bob, room
}
