package api

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
)

// Helpers of the rooms tests (prefixed rm to stay clear of other areas').

var rmTxn atomic.Int64

const rmV3 = "/_matrix/client/v3"

// rmCreate creates a room and returns its ID.
func (ts *testServer) rmCreate(tok, body string) string {
	ts.t.Helper()
	r := ts.do("POST", rmV3+"/createRoom", tok, body)
	if r.status != 200 {
		ts.t.Fatalf("createRoom %s: %d %s", body, r.status, r.body)
	}
	return r.field("room_id")
}

// rmSend sends an m.room.message with the given body and returns its ID.
func (ts *testServer) rmSend(tok, room, text string) string {
	ts.t.Helper()
	r := ts.do("PUT", fmt.Sprintf("%s/rooms/%s/send/m.room.message/rm%d", rmV3, url.PathEscape(room), rmTxn.Add(1)), tok,
		fmt.Sprintf(`{"msgtype":"m.text","body":%q}`, text))
	if r.status != 200 {
		ts.t.Fatalf("send: %d %s", r.status, r.body)
	}
	return r.field("event_id")
}

// rmState sends a state event and returns its ID.
func (ts *testServer) rmState(tok, room, typ, sk, content string) string {
	ts.t.Helper()
	r := ts.do("PUT", fmt.Sprintf("%s/rooms/%s/state/%s/%s", rmV3, url.PathEscape(room), typ, url.PathEscape(sk)), tok, content)
	if r.status != 200 {
		ts.t.Fatalf("state %s: %d %s", typ, r.status, r.body)
	}
	return r.field("event_id")
}

// rmOK posts and fails the test unless the answer is 200.
func (ts *testServer) rmOK(method, path, tok, body string) resp {
	ts.t.Helper()
	r := ts.do(method, path, tok, body)
	if r.status != 200 {
		ts.t.Fatalf("%s %s: %d %s", method, path, r.status, r.body)
	}
	return r
}

func rmPath(room string, rest ...string) string {
	return rmV3 + "/rooms/" + url.PathEscape(room) + strings.Join(rest, "")
}

// rmEvent is a client event as the tests read it.
type rmEvent struct {
	EventID  string          `json:"event_id"`
	Type     string          `json:"type"`
	Sender   string          `json:"sender"`
	StateKey *string         `json:"state_key"`
	Content  json.RawMessage `json:"content"`
	Redacts  string          `json:"redacts"`
	Unsigned struct {
		RedactedBecause *rmEvent        `json:"redacted_because"`
		PrevContent     json.RawMessage `json:"prev_content"`
		ReplacesState   string          `json:"replaces_state"`
		TransactionID   string          `json:"transaction_id"`
	} `json:"unsigned"`
}

func (e rmEvent) body() string {
	var c struct {
		Body string `json:"body"`
	}
	json.Unmarshal(e.Content, &c)
	return c.Body
}

func rmBodies(evs []rmEvent) []string {
	var out []string
	for _, e := range evs {
		if b := e.body(); b != "" {
			out = append(out, b)
		}
	}
	return out
}

func rmDecode(t testing.TB, r resp, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

type rmPage struct {
	Chunk []rmEvent `json:"chunk"`
	State []rmEvent `json:"state"`
	Start string    `json:"start"`
	End   string    `json:"end"`
}

// rmMessages pages a room's whole visible history backwards and returns it oldest first.
func (ts *testServer) rmMessages(tok, room, query string) ([]rmEvent, resp) {
	ts.t.Helper()
	var all []rmEvent
	from := ""
	for i := 0; i < 100; i++ {
		q := "?dir=b&limit=3" + query
		if from != "" {
			q += "&from=" + from
		}
		r := ts.do("GET", rmPath(room, "/messages"+q), tok, "")
		if r.status != 200 {
			return nil, r
		}
		var p rmPage
		rmDecode(ts.t, r, &p)
		all = append(all, p.Chunk...)
		if p.End == "" {
			break
		}
		from = p.End
	}
	for i, j := 0, len(all)-1; i < j; i, j = i+1, j-1 {
		all[i], all[j] = all[j], all[i]
	}
	return all, resp{status: 200}
}

func rmSame(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
