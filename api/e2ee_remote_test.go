package api

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"engram/dag/rooms"
	"engram/log"
	"engram/projections"
)

// fakeRemote answers the federation requests E2EE makes, per path.
type fakeRemote struct {
	mu    sync.Mutex
	calls []string
	ans   map[string]string // "METHOD path" -> JSON answer ("" -> error)
}

func (f *fakeRemote) do(_ context.Context, dest, method, path string, body, out any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := method + " " + path
	f.calls = append(f.calls, dest+" "+k)
	a, ok := f.ans[k]
	if !ok || a == "" || dest == "down.test" {
		return errors.New("unreachable")
	}
	return json.Unmarshal([]byte(a), out)
}

func (f *fakeRemote) count(prefix string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if strings.HasPrefix(c, prefix) {
			n++
		}
	}
	return n
}

func (f *fakeRemote) set(k, v string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ans[k] = v
}

// fakeFed records the EDUs the client API sends.
type fakeFed struct {
	Federation
	mu   sync.Mutex
	edus []string
}

func (f *fakeFed) SendEDU(dests []string, typ string, content any) {
	b, _ := json.Marshal(content)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.edus = append(f.edus, strings.Join(dests, ",")+" "+typ+" "+string(b))
}

func remoteDeviceJSON(user, device string) string {
	return `{"user_id":"` + user + `","device_id":"` + device + `","algorithms":["m.olm.v1.curve25519-aes-sha2"],"keys":{"ed25519:` + device + `":"k"}}`
}

func queryDevices(t *testing.T, ts *testServer, tok, user string) (map[string]json.RawMessage, map[string]json.RawMessage) {
	t.Helper()
	r := ts.do("POST", "/_matrix/client/v3/keys/query", tok, `{"device_keys":{"`+user+`":[]}}`)
	if r.status != 200 {
		t.Fatalf("keys/query: %d %s", r.status, r.body)
	}
	var out struct {
		DeviceKeys map[string]map[string]json.RawMessage `json:"device_keys"`
		Failures   map[string]json.RawMessage            `json:"failures"`
	}
	json.Unmarshal(r.body, &out)
	return out.DeviceKeys[user], out.Failures
}

func TestRemoteKeysQueryCacheAndDeviceListChain(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	tok := ts.register("alice")
	const bob = "@bob:remote.test"
	fr := &fakeRemote{ans: map[string]string{
		"POST /_matrix/federation/v1/user/keys/query": `{"device_keys":{"` + bob + `":{"D1":` + remoteDeviceJSON(bob, "D1") +
			`,"EVIL":` + remoteDeviceJSON("@mallory:remote.test", "EVIL") + `}},"master_keys":{"` + bob + `":{"user_id":"` + bob + `","usage":["master"],"keys":{"ed25519:M":"M"}}}}`,
		"GET /_matrix/federation/v1/user/devices/@bob:remote.test": `{"user_id":"` + bob + `","stream_id":5,"devices":[{"device_id":"D1","keys":` +
			remoteDeviceJSON(bob, "D1") + `},{"device_id":"D2","keys":` + remoteDeviceJSON(bob, "D2") + `}]}`,
	}}
	ts.srv.SetE2EEFederation(fr.do)

	// Without federation answers: failures. (Another server.)
	if _, f := queryDevices(t, ts, tok, "@carol:down.test"); f["down.test"] == nil {
		t.Fatalf("failures: %s", f)
	}

	devs, f := queryDevices(t, ts, tok, bob)
	if len(f) != 0 || devs["D1"] == nil || devs["EVIL"] != nil {
		t.Fatalf("first query: %s %s", devs, f)
	}
	queryDevices(t, ts, tok, bob)
	if n := fr.count("remote.test POST"); n != 1 {
		t.Fatalf("second query not from the cache: %d requests", n)
	}

	// An update from another origin is ignored.
	ts.srv.FedDeviceListUpdate("evil.test", json.RawMessage(`{"user_id":"`+bob+`","device_id":"D9","stream_id":1,"prev_id":[]}`))
	// The cached list came from /user/keys/query (no stream ID): an update
	// cannot be chained to it, so the list is resynced with /user/devices.
	ts.srv.FedDeviceListUpdate("remote.test", json.RawMessage(`{"user_id":"`+bob+`","device_id":"D2","stream_id":4,"prev_id":[3],"keys":`+remoteDeviceJSON(bob, "D2")+`}`))
	waitUntil(t, "resync", func() bool {
		e := ts.srv.e2ee.remote.get(bob)
		return e != nil && e.stream == 5
	})
	devs, _ = queryDevices(t, ts, tok, bob)
	if devs["D1"] == nil || devs["D2"] == nil || len(devs) != 2 {
		t.Fatalf("after resync: %s", devs)
	}

	// Chained updates patch the cached list without asking.
	ts.srv.FedDeviceListUpdate("remote.test", json.RawMessage(`{"user_id":"`+bob+`","device_id":"D3","stream_id":6,"prev_id":[5],"keys":`+remoteDeviceJSON(bob, "D3")+`}`))
	ts.srv.FedDeviceListUpdate("remote.test", json.RawMessage(`{"user_id":"`+bob+`","device_id":"D1","stream_id":7,"prev_id":[6],"deleted":true}`))
	ts.srv.FedDeviceListUpdate("remote.test", json.RawMessage(`{"user_id":"`+bob+`","device_id":"D1","stream_id":2,"prev_id":[1],"keys":`+remoteDeviceJSON(bob, "D1")+`}`)) // stale
	devs, _ = queryDevices(t, ts, tok, bob)
	if devs["D1"] != nil || devs["D2"] == nil || devs["D3"] == nil {
		t.Fatalf("after chained updates: %s", devs)
	}
	resyncs := fr.count("remote.test GET")

	// A gap (prev_id not ours) resyncs again.
	ts.srv.FedDeviceListUpdate("remote.test", json.RawMessage(`{"user_id":"`+bob+`","device_id":"D4","stream_id":12,"prev_id":[11]}`))
	waitUntil(t, "second resync", func() bool { return fr.count("remote.test GET") > resyncs })

	// A signing key update patches the cached master key.
	waitUntil(t, "cache refilled", func() bool { return ts.srv.e2ee.remote.get(bob) != nil })
	ts.srv.FedSigningKeyUpdate("remote.test", json.RawMessage(`{"user_id":"`+bob+`","master_key":{"user_id":"`+bob+`","usage":["master"],"keys":{"ed25519:N":"N"}}}`))
	r := ts.do("POST", "/_matrix/client/v3/keys/query", tok, `{"device_keys":{"`+bob+`":[]}}`)
	if !strings.Contains(string(r.body), `"ed25519:N"`) {
		t.Fatalf("master key not updated: %s", r.body)
	}
}

func TestRemoteKeysClaim(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	tok := ts.register("alice")
	fr := &fakeRemote{ans: map[string]string{
		"POST /_matrix/federation/v1/user/keys/claim": `{"one_time_keys":{"@bob:remote.test":{"D1":{"signed_curve25519:AAA":{"key":"x"}}},"@other:remote.test":{"X":{"a:b":"c"}}}}`,
	}}
	ts.srv.SetE2EEFederation(fr.do)
	r := ts.do("POST", "/_matrix/client/v3/keys/claim", tok, `{"one_time_keys":{"@bob:remote.test":{"D1":"signed_curve25519"},"@c:down.test":{"X":"signed_curve25519"}}}`)
	var out struct {
		OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
		Failures    map[string]json.RawMessage                       `json:"failures"`
	}
	json.Unmarshal(r.body, &out)
	if r.status != 200 || out.OneTimeKeys["@bob:remote.test"]["D1"]["signed_curve25519:AAA"] == nil {
		t.Fatalf("claim: %d %s", r.status, r.body)
	}
	if out.OneTimeKeys["@other:remote.test"] != nil {
		t.Fatalf("a user we did not ask for: %s", r.body)
	}
	if out.Failures["down.test"] == nil || out.Failures["remote.test"] != nil {
		t.Fatalf("failures: %s", r.body)
	}
}

func TestFedToDeviceInboundOnce(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	d := ts.newDevice(t, "alice")
	since := ts.syncE2EE(t, d.token, "").NextBatch
	edu := `{"sender":"@bob:remote.test","type":"m.room_key_request","message_id":"m1","messages":{"` + d.user + `":{"*":{"x":1}},"@nobody:elsewhere":{"*":{}}}}`
	ts.srv.FedToDevice("remote.test", json.RawMessage(edu))
	ts.srv.FedToDevice("remote.test", json.RawMessage(edu))                                                      // a repeat
	ts.srv.FedToDevice("evil.test", json.RawMessage(strings.Replace(edu, `"m1"`, `"m2"`, 1)))                    // wrong origin
	ts.srv.FedToDevice("remote.test", json.RawMessage(`{"sender":"@bob:remote.test","type":"t","messages":[]}`)) // bad
	sb := ts.syncE2EE(t, d.token, since)
	if len(sb.ToDevice.Events) != 1 || sb.ToDevice.Events[0].Sender != "@bob:remote.test" || string(sb.ToDevice.Events[0].Content) != `{"x":1}` {
		t.Fatalf("to-device: %+v", sb.ToDevice.Events)
	}
	sb = ts.syncE2EE(t, d.token, sb.NextBatch)
	if len(sb.ToDevice.Events) != 0 {
		t.Fatalf("delivered again: %+v", sb.ToDevice.Events)
	}
}

// TestSendToDeviceRemote: messages for other servers are logged, one
// m.direct_to_device record per server, for the federation sender to
// deliver from the log; a retried transaction logs nothing more.
func TestSendToDeviceRemote(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	d := ts.newDevice(t, "alice")
	body := `{"messages":{"@bob:remote.test":{"D1":{"a":1}},"@carol:other.test":{"*":{"b":2}}}}`
	for i := 0; i < 2; i++ { // the retry sends nothing more
		if r := ts.do("PUT", "/_matrix/client/v3/sendToDevice/m.test/txn1", d.token, body); r.status != 200 {
			t.Fatalf("sendToDevice: %d %s", r.status, r.body)
		}
	}
	var got []*projections.RemoteToDeviceRecord
	err := ts.log.Read(1, func(_ uint64, rec log.Record) error {
		if rec.Kind != projections.KindRemoteToDevice {
			return nil
		}
		v, err := projections.Decode(rec)
		if err != nil {
			return err
		}
		got = append(got, v.(*projections.RemoteToDeviceRecord))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Server != "other.test" || got[1].Server != "remote.test" {
		t.Fatalf("records: %+v", got)
	}
	for _, r := range got {
		if r.Sender != d.user || r.SenderDevice != d.device || r.Type != "m.test" || len(r.MessageID) != 32 || got[0].MessageID != r.MessageID {
			t.Fatalf("record: %+v", r)
		}
	}
	if !strings.Contains(string(got[1].Messages), `"@bob:remote.test":{"D1":{"a":1}}`) {
		t.Fatalf("messages: %s", got[1].Messages)
	}
}

func TestFedKeysAnswers(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	d := ts.newDevice(t, "alice")
	ts.uploadKeys(t, d, 2, "")
	b, status := ts.srv.FedKeysQuery("remote.test", []byte(`{"device_keys":{"`+d.user+`":[],"@x:remote.test":[]}}`))
	if status != 200 || !strings.Contains(string(b), `"`+d.device+`"`) || strings.Contains(string(b), "@x:remote.test") {
		t.Fatalf("query: %d %s", status, b)
	}
	b, status = ts.srv.FedKeysClaim("remote.test", []byte(`{"one_time_keys":{"`+d.user+`":{"`+d.device+`":"signed_curve25519"}}}`))
	if status != 200 || !strings.Contains(string(b), "signed_curve25519:K000") {
		t.Fatalf("claim: %d %s", status, b)
	}
	b, status = ts.srv.FedKeysClaim("remote.test", []byte(`{"one_time_keys":{"`+d.user+`":{"`+d.device+`":"signed_curve25519"}}}`))
	if status != 200 || !strings.Contains(string(b), "signed_curve25519:K001") {
		t.Fatalf("second claim: %d %s", status, b)
	}
	b, status = ts.srv.FedUserDevices("remote.test", d.user)
	var devs struct {
		UserID   string `json:"user_id"`
		StreamID uint64 `json:"stream_id"`
		Devices  []struct {
			DeviceID string          `json:"device_id"`
			Keys     json.RawMessage `json:"keys"`
		} `json:"devices"`
	}
	json.Unmarshal(b, &devs)
	if status != 200 || devs.UserID != d.user || devs.StreamID == 0 || len(devs.Devices) != 1 || devs.Devices[0].DeviceID != d.device || devs.Devices[0].Keys == nil {
		t.Fatalf("devices: %d %s", status, b)
	}
	if _, status := ts.srv.FedUserDevices("remote.test", "@x:remote.test"); status != 400 {
		t.Fatalf("remote user: %d", status)
	}
	for _, bad := range []string{`[`, `{"device_keys":5}`} {
		if _, status := ts.srv.FedKeysQuery("remote.test", []byte(bad)); status != 400 {
			t.Fatalf("bad query %s: %d", bad, status)
		}
	}
	for _, bad := range []string{`[`, `{"one_time_keys":5}`} {
		if _, status := ts.srv.FedKeysClaim("remote.test", []byte(bad)); status != 400 {
			t.Fatalf("bad claim %s: %d", bad, status)
		}
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// FuzzFedE2EEInputs: nothing another server sends in an E2EE request or
// EDU makes the handlers panic.
func FuzzFedE2EEInputs(f *testing.F) {
	for _, s := range []string{
		`{"device_keys":{"@a:test.local":[]}}`,
		`{"one_time_keys":{"@a:test.local":{"D":"signed_curve25519"}}}`,
		`{"sender":"@b:remote.test","type":"t","message_id":"m","messages":{"@a:test.local":{"*":{}}}}`,
		`{"user_id":"@b:remote.test","device_id":"D","stream_id":3,"prev_id":[2],"keys":{"user_id":"@b:remote.test","device_id":"D"}}`,
		`{"user_id":"@b:remote.test","master_key":{"keys":{}}}`,
		`{"user_id":"@b:remote.test","device_id":"D","stream_id":-1,"prev_id":null,"deleted":true}`,
		`[]`, `null`, `{"messages":{"@a:test.local":{"D":[]}}}`,
	} {
		f.Add(s)
	}
	ts := newTestServer(f, Config{EnableRegistration: true})
	ts.register("a")
	f.Fuzz(func(t *testing.T, s string) {
		b := []byte(s)
		ts.srv.FedKeysQuery("remote.test", b)
		ts.srv.FedKeysClaim("remote.test", b)
		ts.srv.FedUserDevices("remote.test", s)
		ts.srv.FedToDevice("remote.test", b)
		ts.srv.FedDeviceListUpdate("remote.test", b)
		ts.srv.FedSigningKeyUpdate("remote.test", b)
	})
}

func BenchmarkFedKeysQuery(b *testing.B) {
	ts := newTestServer(b, Config{EnableRegistration: true})
	var users []string
	for i := 0; i < 10; i++ {
		tok := ts.register("u" + string(rune('a'+i)))
		who := ts.do("GET", "/_matrix/client/v3/account/whoami", tok, "")
		users = append(users, who.field("user_id"))
	}
	q := map[string]any{}
	for _, u := range users {
		q[u] = []string{}
	}
	body, _ := json.Marshal(map[string]any{"device_keys": q})
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, status := ts.srv.FedKeysQuery("remote.test", body); status != 200 {
			b.Fatal(status)
		}
	}
}

// sent returns the EDUs of a type, without repeats: the device list loop
// reads room membership as it is when it gets to a record, so a loop that
// lags behind a join can send the same update (same stream_id) twice, which
// receivers ignore.
func (f *fakeFed) sent(typ string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	seen := map[string]bool{}
	for _, e := range f.edus {
		if strings.Contains(e, " "+typ+" ") && !seen[e] {
			seen[e] = true
			out = append(out, e)
		}
	}
	return out
}

// TestDeviceListUpdatesOutbound: a remote server's first user joining a
// room gets the local members' device lists; later changes of a local
// user's keys and devices go to it as a prev_id chain of updates whose
// stream IDs /user/devices reports too.
func TestDeviceListUpdatesOutbound(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	ff := &fakeFed{}
	ts.srv.fed = ff
	ts.srv.SetE2EEFederation((&fakeRemote{ans: map[string]string{}}).do)
	alice := ts.newDevice(t, "alice")
	ts.uploadKeys(t, alice, 1, "")
	r := ts.do("POST", "/_matrix/client/v3/createRoom", alice.token, `{"preset":"public_chat"}`)
	room := r.field("room_id")
	bob := "@bob:remote.test"
	if _, err := ts.srv.rooms.Send(rooms.Event{Room: room, Sender: bob, Type: "m.room.member", StateKey: &bob, Content: json.RawMessage(`{"membership":"join"}`)}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the join's device list", func() bool { return len(ff.sent("m.device_list_update")) == 1 })
	first := ff.sent("m.device_list_update")[0]
	if !strings.HasPrefix(first, "remote.test ") || !strings.Contains(first, `"device_id":"`+alice.device+`"`) || !strings.Contains(first, `"prev_id":[]`) || !strings.Contains(first, `"keys":{`) {
		t.Fatalf("join update: %s", first)
	}
	var u1 deviceListUpdate
	json.Unmarshal([]byte(first[strings.Index(first, "{"):]), &u1)

	// New device keys: the next update points at the previous one.
	d2 := deviceFor(t, alice.user, alice.device, alice.token)
	ts.uploadKeys(t, d2, 0, "")
	waitUntil(t, "the keys' update", func() bool { return len(ff.sent("m.device_list_update")) >= 2 })

	var u2 deviceListUpdate
	second := ff.sent("m.device_list_update")[1]
	json.Unmarshal([]byte(second[strings.Index(second, "{"):]), &u2)
	if u2.StreamID <= u1.StreamID || len(u2.PrevID) != 1 || u2.PrevID[0] != u1.StreamID || u2.Deleted {
		t.Fatalf("chain: %+v after %+v", u2, u1)
	}

	// A logout deletes the device, next in the chain.
	if r := ts.do("POST", "/_matrix/client/v3/logout", alice.token, `{}`); r.status != 200 {
		t.Fatalf("logout: %d", r.status)
	}
	waitUntil(t, "the logout's update", func() bool { return len(ff.sent("m.device_list_update")) == 3 })
	var u3 deviceListUpdate
	third := ff.sent("m.device_list_update")[2]
	json.Unmarshal([]byte(third[strings.Index(third, "{"):]), &u3)
	if !u3.Deleted || len(u3.PrevID) != 1 || u3.PrevID[0] != u2.StreamID || u3.DeviceID != alice.device {
		t.Fatalf("logout update: %+v after %+v", u3, u2)
	}

	// Outbound stream IDs are what /user/devices reports.
	b, _ := ts.srv.FedUserDevices("remote.test", alice.user)
	if !strings.Contains(string(b), `"stream_id":`+strconv.FormatInt(u3.StreamID, 10)) {
		t.Fatalf("user devices: %s, want stream %d", b, u3.StreamID)
	}
}
