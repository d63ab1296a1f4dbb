package federation

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"engram/dag"
	"engram/dag/rooms"
	"engram/log"
	"engram/projections"
)

// remoteName is an IP literal with a closed port: fetches from it fail at
// once, without DNS.
const remoteName = "127.0.0.1:1"

type fedWorld struct {
	f      *Federation
	room   string
	remote dag.SigningKey
	latest string
	pl     string
}

func newFedWorld(t testing.TB) *fedWorld {
	t.Helper()
	set, _ := projections.All()
	l, err := log.Open(log.Options{Dir: t.TempDir(), Apply: set.Apply, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	st, _ := projections.NewStore(l, l.DB(), 1<<20)
	key, _ := dag.GenerateSigningKey()
	t.Cleanup(func() { st.Close(); l.Close() })
	seq := rooms.New(rooms.Config{ServerName: "a.example", KeyID: key.ID, Key: key.Key}, l, st)
	f := New(Config{ServerName: "a.example", Key: key, MaxBackoff: time.Second}, l, st, seq)
	remote, _ := dag.GenerateSigningKey()
	f.keys.cache[remoteName] = &serverKeys{keys: map[string]ed25519.PublicKey{remote.ID: remote.Key.Public().(ed25519.PublicKey)}, validUntil: 1 << 62}
	alice := "@alice:a.example"
	obj := func(v any) json.RawMessage { b, _ := json.Marshal(v); return b }
	s := func(x string) *string { return &x }
	room, err := seq.CreateRoom("12", []rooms.Event{
		{Sender: alice, Type: "m.room.create", StateKey: s(""), Content: obj(map[string]any{"room_version": "12"})},
		{Sender: alice, Type: "m.room.member", StateKey: s(alice), Content: obj(map[string]any{"membership": "join"})},
		{Sender: alice, Type: "m.room.power_levels", StateKey: s(""), Content: obj(map[string]any{"users": map[string]any{}})},
		{Sender: alice, Type: "m.room.join_rules", StateKey: s(""), Content: obj(map[string]any{"join_rule": "public"})},
	})
	if err != nil {
		t.Fatal(err)
	}
	res, err := seq.Send(rooms.Event{Room: room, Sender: alice, Type: "m.room.message", Content: obj(map[string]any{"body": "hi"})})
	if err != nil {
		t.Fatal(err)
	}
	pl, _ := st.StateEvent(room, "m.room.power_levels", "")
	return &fedWorld{f: f, room: room, remote: remote, latest: res.EventID, pl: pl}
}

// event builds a message event of the remote server.
func (w *fedWorld) event(t testing.TB, sender string, auth []string, i int) *dag.Event {
	ev, err := dag.Build(dag.ProtoEvent{RoomID: w.room, Sender: sender, Type: "m.room.message",
		Content: json.RawMessage(fmt.Sprintf(`{"msgtype":"m.text","body":"m%d"}`, i)), PrevEvents: []string{w.latest},
		AuthEvents: auth, Depth: 10, OriginServerTS: time.Now().UnixMilli()}, dag.Version("12"), remoteName, w.remote.ID, w.remote.Key)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func (w *fedWorld) send(t *testing.T, txn string, body []byte) (int, string) {
	t.Helper()
	r := &req{ctx: &fasthttp.RequestCtx{}, f: w.f, params: map[string]string{"txnId": txn}, origin: remoteName, body: body}
	if err := w.f.handleSend(r); err != nil {
		var fe *fedError
		if !errors.As(err, &fe) {
			t.Fatalf("non-Matrix error: %v", err)
		}
		return fe.status, fe.code
	}
	return r.ctx.Response.StatusCode(), string(r.ctx.Response.Body())
}

func txnBody(pdus []json.RawMessage, edus int) []byte {
	e := make([]json.RawMessage, edus)
	for i := range e {
		e[i] = json.RawMessage(`{"edu_type":"m.typing","content":{}}`)
	}
	if pdus == nil {
		pdus = []json.RawMessage{}
	}
	b, _ := json.Marshal(map[string]any{"origin": remoteName, "origin_server_ts": 1, "pdus": pdus, "edus": e})
	return b
}

// TestSendErrors: malformed and oversized transactions are refused whole;
// bad PDUs get per-PDU errors (or are dropped when they have no room we
// know); nothing panics.
func TestSendErrors(t *testing.T) {
	w := newFedWorld(t)
	many := make([]json.RawMessage, 51)
	for i := range many {
		many[i] = json.RawMessage(`{}`)
	}
	forged := w.event(t, "@bob:"+remoteName, []string{w.pl}, 1)
	var tampered map[string]any
	json.Unmarshal(forged.Raw, &tampered)
	tampered["content"] = map[string]any{"body": "changed"}
	tamperedRaw, _ := json.Marshal(tampered)
	notMember := w.event(t, "@bob:"+remoteName, []string{w.pl}, 2)
	missingAuth := w.event(t, "@bob:"+remoteName, []string{"$unknownauthevent"}, 3)
	otherRoom := strings.Replace(string(w.event(t, "@bob:"+remoteName, []string{w.pl}, 4).Raw), w.room, "!nowhere", 1)

	tests := []struct {
		name   string
		body   []byte
		status int
		want   []string // substrings of the answer
		absent []string
	}{
		{"not JSON", []byte(`{"pdus":`), 400, []string{"M_BAD_JSON"}, nil},
		{"pdus not a list", []byte(`{"pdus":{}}`), 400, []string{"M_BAD_JSON"}, nil},
		{"51 PDUs", txnBody(many, 0), 400, []string{"M_TOO_LARGE"}, nil},
		{"101 EDUs", txnBody(nil, 101), 400, []string{"M_TOO_LARGE"}, nil},
		{"PDU not an object", txnBody([]json.RawMessage{json.RawMessage(`[1]`), json.RawMessage(`"x"`)}, 0), 200, []string{`"pdus":{}`}, nil},
		{"unknown room", txnBody([]json.RawMessage{json.RawMessage(otherRoom)}, 0), 200, []string{`"pdus":{}`}, nil},
		{"bad content hash or signature", txnBody([]json.RawMessage{tamperedRaw}, 0), 200, []string{forged.ID, "error"}, nil},
		{"sender not in room", txnBody([]json.RawMessage{notMember.Raw}, 0), 200, []string{notMember.ID, "rejected"}, nil},
		{"missing auth chain", txnBody([]json.RawMessage{missingAuth.Raw}, 0), 200, []string{missingAuth.ID, "error"}, nil},
		{"malformed EDUs", txnBody(nil, 3), 200, []string{`"pdus":{}`}, nil},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := w.send(t, fmt.Sprintf("t%d", i), tt.body)
			if status != tt.status {
				t.Fatalf("status %d (%s), want %d", status, body, tt.status)
			}
			for _, s := range tt.want {
				if !strings.Contains(body, s) {
					t.Errorf("answer %s lacks %q", body, s)
				}
			}
		})
	}
	// Nothing of it was accepted into the room.
	for _, id := range []string{forged.ID, notMember.ID, missingAuth.ID} {
		if _, st, err := w.f.store.EventPos(id); err == nil && st == projections.Accepted {
			t.Errorf("%s accepted", id)
		}
	}
	// A retried transaction ID gets the first answer.
	_, a1 := w.send(t, "t7", txnBody(nil, 0))
	if !strings.Contains(a1, "rejected") {
		t.Errorf("retry answered %s", a1)
	}
}

// TestEDUDispatch: registered handlers get their EDUs, unknown types and
// malformed EDUs are ignored, a panicking handler is contained.
func TestEDUDispatch(t *testing.T) {
	f := testFed(t, "a.example")
	var got []string
	f.HandleEDU("m.test", func(origin string, c json.RawMessage) { got = append(got, origin+" "+string(c)) })
	f.HandleEDU("m.boom", func(string, json.RawMessage) { panic("boom") })
	f.processEDUs("b.example", []json.RawMessage{
		json.RawMessage(`{"edu_type":"m.test","content":{"a":1}}`),
		json.RawMessage(`{"edu_type":"m.unknown","content":{}}`),
		json.RawMessage(`{"edu_type":"m.boom","content":{}}`),
		json.RawMessage(`[]`), json.RawMessage(`{"content":{}}`), json.RawMessage(`null`),
		json.RawMessage(`{"edu_type":"m.test","content":"x"}`),
	})
	want := []string{`b.example {"a":1}`, `b.example "x"`}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestACL(t *testing.T) {
	tests := []struct {
		acl    string
		server string
		want   bool
	}{
		{`{"allow":["*"]}`, "evil.example", true},
		{`{"allow":["*"],"deny":["evil.example"]}`, "evil.example:8448", false},
		{`{"allow":["*"],"deny":["*.evil.example"]}`, "a.evil.example", false},
		{`{"allow":["*"],"deny":["*.evil.example"]}`, "evil.example", true},
		{`{"allow":["good.example"]}`, "other.example", false},
		{`{"allow":["good.example"]}`, "GOOD.example", true},
		{`{"allow":["?ood.example"]}`, "good.example", true},
		{`{}`, "good.example", false},
		{`{"allow":["*"],"allow_ip_literals":false}`, "127.0.0.3:8448", false},
		{`{"allow":["*"],"allow_ip_literals":false}`, "[::1]:8448", false},
		{`{"allow":["*"]}`, "[::1]:8448", true},
		{`{"allow":["*"],"deny":[1,null,"[x"]}`, "x", true},
	}
	for _, tt := range tests {
		a := parseACL([]byte(`{"content":` + tt.acl + `}`))
		if got := a.allows(tt.server); got != tt.want {
			t.Errorf("%s allows %s = %v, want %v", tt.acl, tt.server, got, tt.want)
		}
	}
}

func FuzzACL(f *testing.F) {
	f.Add(`{"content":{"allow":["*"],"deny":["*.x"]}}`, "a.x:1")
	f.Add(`{"content":{"allow":["[["]}}`, "[")
	f.Fuzz(func(t *testing.T, pdu, server string) { _ = parseACL([]byte(pdu)).allows(server) })
}

// BenchmarkVerifyTransaction: checks 1 to 3 (format, hashes, signatures)
// of a 50-PDU transaction, on every core.
func BenchmarkVerifyTransaction(b *testing.B) {
	w := newFedWorld(b)
	raws := make([]json.RawMessage, maxPDUs)
	for i := range raws {
		raws[i] = w.event(b, "@bob:"+remoteName, []string{w.pl}, i).Raw
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		parsed := make([]*dag.Event, 0, len(raws))
		for _, raw := range raws {
			ev, err := w.f.parsePDU(raw)
			if err != nil {
				b.Fatal(err)
			}
			parsed = append(parsed, ev)
		}
		out, _ := w.f.verifyAll(parsed)
		for _, ev := range out {
			if ev == nil {
				b.Fatal("verification failed")
			}
		}
	}
}
