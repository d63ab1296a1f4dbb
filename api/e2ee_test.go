package api

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"engram/dag"
	"engram/projections"
)

// openTestServerAt runs an in-process server on the data directory dir;
// stop shuts it down so another can open the same directory (a restart).
func openTestServerAt(t *testing.T, dir string) (*testServer, func()) {
	t.Helper()
	key, err := dag.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	return startTestServer(t, dir, Config{EnableRegistration: true}, key)
}

// e2eeDevice is a client device with its ed25519 identity key.
type e2eeDevice struct {
	user, device, token string
	priv                ed25519.PrivateKey
	pub                 string
}

func b64(b []byte) string { return base64.RawStdEncoding.EncodeToString(b) }

// signObject signs obj (without signatures and unsigned) as signer with
// keyID and adds the signature.
func signObject(t *testing.T, obj map[string]any, signer, keyID string, priv ed25519.PrivateKey) map[string]any {
	t.Helper()
	bare := map[string]any{}
	for k, v := range obj {
		if k != "signatures" && k != "unsigned" {
			bare[k] = v
		}
	}
	canon, err := dag.CanonicalValue(bare)
	if err != nil {
		t.Fatal(err)
	}
	sigs, _ := obj["signatures"].(map[string]any)
	if sigs == nil {
		sigs = map[string]any{}
	}
	mine, _ := sigs[signer].(map[string]any)
	if mine == nil {
		mine = map[string]any{}
	}
	mine[keyID] = b64(ed25519.Sign(priv, canon))
	sigs[signer] = mine
	obj["signatures"] = sigs
	return obj
}

func e2eeJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func (ts *testServer) newDevice(t *testing.T, localpart string) *e2eeDevice {
	t.Helper()
	tok := ts.register(localpart)
	who := ts.do("GET", "/_matrix/client/v3/account/whoami", tok, "")
	return deviceFor(t, who.field("user_id"), who.field("device_id"), tok)
}

func deviceFor(t *testing.T, user, device, tok string) *e2eeDevice {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &e2eeDevice{user: user, device: device, token: tok, priv: priv, pub: b64(pub)}
}

func (d *e2eeDevice) deviceKeys(t *testing.T) map[string]any {
	obj := map[string]any{
		"user_id": d.user, "device_id": d.device,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]any{"curve25519:" + d.device: "curve" + d.device, "ed25519:" + d.device: d.pub},
	}
	return signObject(t, obj, d.user, "ed25519:"+d.device, d.priv)
}

func (d *e2eeDevice) signedKey(t *testing.T, key string, fallback bool) map[string]any {
	obj := map[string]any{"key": key}
	if fallback {
		obj["fallback"] = true
	}
	return signObject(t, obj, d.user, "ed25519:"+d.device, d.priv)
}

func (ts *testServer) uploadKeys(t *testing.T, d *e2eeDevice, otks int, fallback string) {
	t.Helper()
	body := map[string]any{"device_keys": d.deviceKeys(t)}
	if otks > 0 {
		m := map[string]any{}
		for i := 0; i < otks; i++ {
			m[fmt.Sprintf("signed_curve25519:K%03d", i)] = d.signedKey(t, fmt.Sprintf("otk-%s-%d", d.device, i), false)
		}
		body["one_time_keys"] = m
	}
	if fallback != "" {
		body["fallback_keys"] = map[string]any{"signed_curve25519:" + fallback: d.signedKey(t, "fb-"+fallback, true)}
	}
	r := ts.do("POST", "/_matrix/client/v3/keys/upload", d.token, e2eeJSON(t, body))
	if r.status != 200 {
		t.Fatalf("keys/upload: %d %s", r.status, r.body)
	}
}

type syncBody struct {
	NextBatch string `json:"next_batch"`
	ToDevice  struct {
		Events []struct {
			Sender  string          `json:"sender"`
			Type    string          `json:"type"`
			Content json.RawMessage `json:"content"`
		} `json:"events"`
	} `json:"to_device"`
	DeviceLists struct {
		Changed []string `json:"changed"`
		Left    []string `json:"left"`
	} `json:"device_lists"`
	OTKCount       map[string]int `json:"device_one_time_keys_count"`
	UnusedFallback []string       `json:"device_unused_fallback_key_types"`
}

func (ts *testServer) syncE2EE(t *testing.T, tok, since string) syncBody {
	t.Helper()
	path := "/_matrix/client/v3/sync?timeout=0"
	if since != "" {
		path += "&since=" + url.QueryEscape(since)
	}
	r := ts.do("GET", path, tok, "")
	if r.status != 200 {
		t.Fatalf("sync: %d %s", r.status, r.body)
	}
	var sb syncBody
	if err := json.Unmarshal(r.body, &sb); err != nil {
		t.Fatalf("sync body: %v: %s", err, r.body)
	}
	return sb
}

func TestKeysUploadBadInput(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	alice := ts.newDevice(t, "alice")
	bob := ts.newDevice(t, "bob")
	ts.uploadKeys(t, bob, 0, "")

	other := *alice
	other.device = "OTHERDEVICE"
	otherUser := *alice
	otherUser.user = bob.user
	badSig := alice.deviceKeys(t)
	badSig["keys"].(map[string]any)["curve25519:"+alice.device] = "tampered"
	wrongKey := deviceFor(t, alice.user, alice.device, alice.token).deviceKeys(t)
	wrongKey["keys"].(map[string]any)["ed25519:"+alice.device] = alice.pub // signed by another key

	cases := []struct {
		name   string
		body   any
		status int
		code   string
	}{
		{"another user's keys", map[string]any{"device_keys": otherUser.deviceKeys(t)}, 400, "M_INVALID_PARAM"},
		{"another device's keys", map[string]any{"device_keys": other.deviceKeys(t)}, 400, "M_INVALID_PARAM"},
		{"tampered keys", map[string]any{"device_keys": badSig}, 400, "M_INVALID_PARAM"},
		{"signed by another key", map[string]any{"device_keys": wrongKey}, 400, "M_INVALID_PARAM"},
		{"unsigned keys", map[string]any{"device_keys": map[string]any{"user_id": alice.user, "device_id": alice.device,
			"algorithms": []string{}, "keys": map[string]any{"ed25519:" + alice.device: alice.pub}}}, 400, "M_INVALID_PARAM"},
		{"bad key ID", map[string]any{"one_time_keys": map[string]any{"nocolon": "x"}}, 400, "M_BAD_JSON"},
		{"valid", map[string]any{"device_keys": alice.deviceKeys(t), "one_time_keys": map[string]any{"signed_curve25519:A": alice.signedKey(t, "a", false)}}, 200, ""},
		{"same one-time key again", map[string]any{"one_time_keys": map[string]any{"signed_curve25519:A": alice.signedKey(t, "a", false)}}, 200, ""},
		{"one-time key ID reused", map[string]any{"one_time_keys": map[string]any{"signed_curve25519:A": alice.signedKey(t, "b", false)}}, 400, "M_UNKNOWN"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := ts.do("POST", "/_matrix/client/v3/keys/upload", alice.token, e2eeJSON(t, c.body))
			if r.status != c.status || (c.code != "" && r.errcode() != c.code) {
				t.Fatalf("got %d %s, want %d %s", r.status, r.body, c.status, c.code)
			}
		})
	}
	r := ts.do("POST", "/_matrix/client/v3/keys/upload", alice.token, `{}`)
	if !strings.Contains(string(r.body), `"signed_curve25519":1`) {
		t.Fatalf("counts: %s", r.body)
	}
	if r := ts.do("PUT", "/_matrix/client/v3/devices/"+alice.device, alice.token, `{"display_name":"Phone"}`); r.status != 200 {
		t.Fatalf("device name: %d %s", r.status, r.body)
	}
	// Only alice's valid keys are stored; bob's are untouched.
	q := ts.do("POST", "/_matrix/client/v3/keys/query", alice.token, e2eeJSON(t, map[string]any{"device_keys": map[string]any{alice.user: []string{}, bob.user: []string{}, "@x:remote.example": []string{}}}))
	var qb struct {
		DeviceKeys map[string]map[string]struct {
			Keys     map[string]string `json:"keys"`
			Unsigned map[string]any    `json:"unsigned"`
		} `json:"device_keys"`
		Failures map[string]any `json:"failures"`
	}
	if err := json.Unmarshal(q.body, &qb); err != nil {
		t.Fatal(err)
	}
	if k := qb.DeviceKeys[alice.user][alice.device].Keys["ed25519:"+alice.device]; k != alice.pub {
		t.Fatalf("alice's key %q: %s", k, q.body)
	}
	if k := qb.DeviceKeys[bob.user][bob.device].Keys["ed25519:"+bob.device]; k != bob.pub {
		t.Fatalf("bob's key %q: %s", k, q.body)
	}
	if n := qb.DeviceKeys[alice.user][alice.device].Unsigned["device_display_name"]; n != "Phone" {
		t.Fatalf("no device_display_name: %s", q.body)
	}
	if _, ok := qb.Failures["remote.example"]; !ok {
		t.Fatalf("remote server not under failures: %s", q.body)
	}
}

func TestClaimExactlyOnce(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	alice := ts.newDevice(t, "alice")
	bob := ts.newDevice(t, "bob")
	const keys, claimers = 10, 32
	ts.uploadKeys(t, bob, keys, "FB1")

	body := e2eeJSON(t, map[string]any{"one_time_keys": map[string]any{bob.user: map[string]string{bob.device: "signed_curve25519"}}})
	got := make([]string, claimers)
	var wg sync.WaitGroup
	for i := 0; i < claimers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r := ts.do("POST", "/_matrix/client/v3/keys/claim", alice.token, body)
			var cb struct {
				OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
			}
			if r.status != 200 || json.Unmarshal(r.body, &cb) != nil {
				t.Errorf("claim: %d %s", r.status, r.body)
				return
			}
			for id := range cb.OneTimeKeys[bob.user][bob.device] {
				got[i] = id
			}
		}(i)
	}
	wg.Wait()
	seen := map[string]int{}
	fallback := 0
	for _, id := range got {
		if id == "signed_curve25519:FB1" {
			fallback++
			continue
		}
		seen[id]++
		if seen[id] > 1 {
			t.Fatalf("one-time key %s handed out twice", id)
		}
	}
	if len(seen) != keys || fallback != claimers-keys {
		t.Fatalf("%d distinct one-time keys and %d fallbacks; want %d and %d (%v)", len(seen), fallback, keys, claimers-keys, got)
	}
	// The fallback key stays (claimed again) and is reported used.
	r := ts.do("POST", "/_matrix/client/v3/keys/claim", alice.token, body)
	if !strings.Contains(string(r.body), "signed_curve25519:FB1") {
		t.Fatalf("fallback key not returned again: %s", r.body)
	}
	sb := ts.syncE2EE(t, bob.token, "")
	if sb.OTKCount["signed_curve25519"] != 0 || len(sb.UnusedFallback) != 0 {
		t.Fatalf("counts %v, unused fallback %v", sb.OTKCount, sb.UnusedFallback)
	}
	// A new fallback key is unused again.
	ts.uploadKeys(t, bob, 0, "FB2")
	if sb := ts.syncE2EE(t, bob.token, ""); !slices.Equal(sb.UnusedFallback, []string{"signed_curve25519"}) {
		t.Fatalf("unused fallback %v", sb.UnusedFallback)
	}
}

func TestToDeviceExactlyOnceAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	ts, stop := openTestServerAt(t, dir)
	alice := ts.newDevice(t, "alice")
	bobTok := ts.register("bob")
	bobUser := "@bob:test.local"
	bob2Tok, bob2Dev := ts.login("bob", "pw")

	send := func(ts *testServer, txn string, n int) {
		t.Helper()
		body := fmt.Sprintf(`{"messages":{%q:{"*":{"n":%d}}}}`, bobUser, n)
		if r := ts.do("PUT", "/_matrix/client/v3/sendToDevice/m.test/"+txn, alice.token, body); r.status != 200 {
			t.Fatalf("sendToDevice: %d %s", r.status, r.body)
		}
	}
	first := ts.syncE2EE(t, bobTok, "")
	for i := 1; i <= 5; i++ {
		send(ts, fmt.Sprintf("t%d", i), i)
	}
	send(ts, "t3", 3) // a retried transaction is not sent twice
	order := func(sb syncBody) []int {
		var out []int
		for _, e := range sb.ToDevice.Events {
			var c struct{ N int }
			json.Unmarshal(e.Content, &c)
			if e.Sender != alice.user || e.Type != "m.test" {
				t.Fatalf("event %+v", e)
			}
			out = append(out, c.N)
		}
		return out
	}
	got := ts.syncE2EE(t, bobTok, first.NextBatch)
	if o := order(got); !slices.Equal(o, []int{1, 2, 3, 4, 5}) {
		t.Fatalf("first delivery %v", o)
	}
	// A retry of the same since (the response was lost) redelivers.
	if o := order(ts.syncE2EE(t, bobTok, first.NextBatch)); !slices.Equal(o, []int{1, 2, 3, 4, 5}) {
		t.Fatalf("redelivery %v", o)
	}
	// The other device got its own copies ('*').
	if o := order(ts.syncE2EE(t, bob2Tok, "")); !slices.Equal(o, []int{1, 2, 3, 4, 5}) {
		t.Fatalf("second device %v (%s)", o, bob2Dev)
	}

	stop()
	ts, stop = openTestServerAt(t, dir)
	next := ts.syncE2EE(t, bobTok, got.NextBatch)
	if len(next.ToDevice.Events) != 0 {
		t.Fatalf("redelivered after ack: %v", order(next))
	}
	send(ts, "t6", 6)
	send(ts, "t7", 7)
	stop()
	ts, _ = openTestServerAt(t, dir)
	send(ts, "t7", 7) // idempotent across restarts too
	last := ts.syncE2EE(t, bobTok, next.NextBatch)
	if o := order(last); !slices.Equal(o, []int{6, 7}) {
		t.Fatalf("after restart %v", o)
	}
	if o := order(ts.syncE2EE(t, bobTok, last.NextBatch)); len(o) != 0 {
		t.Fatalf("delivered twice: %v", o)
	}

	big := fmt.Sprintf(`{"messages":{%q:{"*":{"x":%q}}}}`, bobUser, strings.Repeat("a", 70000))
	if r := ts.do("PUT", "/_matrix/client/v3/sendToDevice/m.test/big", alice.token, big); r.status != 413 || r.errcode() != "M_TOO_LARGE" {
		t.Fatalf("oversized: %d %s", r.status, r.body)
	}
	if r := ts.do("PUT", "/_matrix/client/v3/sendToDevice/m.test/bad", alice.token, fmt.Sprintf(`{"messages":{%q:{"*":5}}}`, bobUser)); r.status != 400 {
		t.Fatalf("non-object content: %d %s", r.status, r.body)
	}
}

func TestDeviceListChanges(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	alice := ts.newDevice(t, "alice")
	bob := ts.newDevice(t, "bob")
	carol := ts.newDevice(t, "carol")
	dave := ts.newDevice(t, "dave")
	room := ts.do("POST", "/_matrix/client/v3/createRoom", alice.token, `{"preset":"public_chat"}`).field("room_id")
	if r := ts.do("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), bob.token, `{}`); r.status != 200 {
		t.Fatalf("join: %d %s", r.status, r.body)
	}
	other := ts.do("POST", "/_matrix/client/v3/createRoom", carol.token, `{"preset":"public_chat"}`).field("room_id")
	if other == "" {
		t.Fatal("no room")
	}
	tokens := map[string]string{}
	for _, d := range []*e2eeDevice{alice, bob, carol, dave} {
		tokens[d.user] = ts.syncE2EE(t, d.token, "").NextBatch
	}
	ts.uploadKeys(t, bob, 0, "")
	cases := []struct {
		who  *e2eeDevice
		want []string
	}{{alice, []string{bob.user}}, {bob, []string{bob.user}}, {carol, nil}, {dave, nil}}
	for _, c := range cases {
		sb := ts.syncE2EE(t, c.who.token, tokens[c.who.user])
		if !slices.Equal(sb.DeviceLists.Changed, c.want) && !(len(c.want) == 0 && len(sb.DeviceLists.Changed) == 0) {
			t.Errorf("%s: changed %v, want %v", c.who.user, sb.DeviceLists.Changed, c.want)
		}
		ch := ts.do("GET", "/_matrix/client/v3/keys/changes?from="+url.QueryEscape(tokens[c.who.user])+"&to="+url.QueryEscape(sb.NextBatch), c.who.token, "")
		if len(c.want) > 0 && !strings.Contains(string(ch.body), c.want[0]) || len(c.want) == 0 && strings.Contains(string(ch.body), bob.user) {
			t.Errorf("%s: /keys/changes %s", c.who.user, ch.body)
		}
		tokens[c.who.user] = sb.NextBatch
	}
	// Dave joins: alice and bob now track him, and he them.
	if r := ts.do("POST", "/_matrix/client/v3/join/"+url.PathEscape(room), dave.token, `{}`); r.status != 200 {
		t.Fatalf("join: %d %s", r.status, r.body)
	}
	if sb := ts.syncE2EE(t, alice.token, tokens[alice.user]); !slices.Contains(sb.DeviceLists.Changed, dave.user) {
		t.Errorf("alice after dave joined: %v", sb.DeviceLists.Changed)
	} else {
		tokens[alice.user] = sb.NextBatch
	}
	if sb := ts.syncE2EE(t, dave.token, tokens[dave.user]); !slices.Contains(sb.DeviceLists.Changed, alice.user) || !slices.Contains(sb.DeviceLists.Changed, bob.user) {
		t.Errorf("dave after joining: %v", sb.DeviceLists.Changed)
	}
	if sb := ts.syncE2EE(t, carol.token, tokens[carol.user]); len(sb.DeviceLists.Changed) != 0 {
		t.Errorf("carol: %v", sb.DeviceLists.Changed)
	}
	// Bob leaves: alice no longer shares a room with him.
	if r := ts.do("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/leave", bob.token, `{}`); r.status != 200 {
		t.Fatalf("leave: %d %s", r.status, r.body)
	}
	if sb := ts.syncE2EE(t, alice.token, tokens[alice.user]); !slices.Equal(sb.DeviceLists.Left, []string{bob.user}) {
		t.Errorf("alice after bob left: left %v", sb.DeviceLists.Left)
	} else {
		tokens[alice.user] = sb.NextBatch
	}
	ts.uploadKeys(t, bob, 0, "")
	if sb := ts.syncE2EE(t, alice.token, tokens[alice.user]); slices.Contains(sb.DeviceLists.Changed, bob.user) {
		t.Errorf("alice hears of bob after he left: %v", sb.DeviceLists.Changed)
	}
}

// crossSigningKey builds a cross-signing key object.
func crossSigningKeyObj(user, usage string, pub ed25519.PublicKey) map[string]any {
	return map[string]any{"user_id": user, "usage": []string{usage}, "keys": map[string]any{"ed25519:" + b64(pub): b64(pub)}}
}

func TestCrossSigning(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	alice := ts.newDevice(t, "alice")
	bob := ts.newDevice(t, "bob")
	ts.uploadKeys(t, alice, 0, "")
	mPub, mPriv, _ := ed25519.GenerateKey(nil)
	sPub, sPriv, _ := ed25519.GenerateKey(nil)
	uPub, _, _ := ed25519.GenerateKey(nil)
	master := crossSigningKeyObj(alice.user, "master", mPub)
	self := signObject(t, crossSigningKeyObj(alice.user, "self_signing", sPub), alice.user, "ed25519:"+b64(mPub), mPriv)
	user := signObject(t, crossSigningKeyObj(alice.user, "user_signing", uPub), alice.user, "ed25519:"+b64(mPub), mPriv)
	badSelf := crossSigningKeyObj(alice.user, "self_signing", sPub)

	if r := ts.do("POST", "/_matrix/client/v3/keys/device_signing/upload", alice.token, e2eeJSON(t, map[string]any{"master_key": master, "self_signing_key": badSelf})); r.status != 400 || r.errcode() != "M_INVALID_SIGNATURE" {
		t.Fatalf("unsigned self-signing key: %d %s", r.status, r.body)
	}
	if r := ts.do("POST", "/_matrix/client/v3/keys/device_signing/upload", alice.token, e2eeJSON(t, map[string]any{"master_key": master, "self_signing_key": self, "user_signing_key": user})); r.status != 200 {
		t.Fatalf("first upload: %d %s", r.status, r.body)
	}
	// Replacing the master key needs the password.
	m2Pub, _, _ := ed25519.GenerateKey(nil)
	if r := ts.do("POST", "/_matrix/client/v3/keys/device_signing/upload", alice.token, e2eeJSON(t, map[string]any{"master_key": crossSigningKeyObj(alice.user, "master", m2Pub)})); r.status != 401 {
		t.Fatalf("replacement without auth: %d %s", r.status, r.body)
	}
	// The self-signing key signs alice's device.
	dk := alice.deviceKeys(t)
	signed := signObject(t, dk, alice.user, "ed25519:"+b64(sPub), sPriv)
	r := ts.do("POST", "/_matrix/client/v3/keys/signatures/upload", alice.token, e2eeJSON(t, map[string]any{alice.user: map[string]any{alice.device: signed}}))
	if r.status != 200 || strings.Contains(string(r.body), alice.device) {
		t.Fatalf("signatures/upload: %d %s", r.status, r.body)
	}
	forged := signObject(t, alice.deviceKeys(t), alice.user, "ed25519:"+b64(sPub), mPriv)
	r = ts.do("POST", "/_matrix/client/v3/keys/signatures/upload", alice.token, e2eeJSON(t, map[string]any{alice.user: map[string]any{alice.device: forged}}))
	if !strings.Contains(string(r.body), "M_INVALID_SIGNATURE") {
		t.Fatalf("forged signature accepted: %s", r.body)
	}
	q := func(tok string) map[string]json.RawMessage {
		r := ts.do("POST", "/_matrix/client/v3/keys/query", tok, e2eeJSON(t, map[string]any{"device_keys": map[string]any{alice.user: []string{}}}))
		var m map[string]json.RawMessage
		json.Unmarshal(r.body, &m)
		return m
	}
	mine, theirs := q(alice.token), q(bob.token)
	if !strings.Contains(string(mine["device_keys"]), "ed25519:"+b64(sPub)) {
		t.Fatalf("self-signing signature not merged: %s", mine["device_keys"])
	}
	if !strings.Contains(string(mine["master_keys"]), b64(mPub)) || !strings.Contains(string(theirs["self_signing_keys"]), b64(sPub)) {
		t.Fatalf("cross-signing keys missing: %s / %s", mine["master_keys"], theirs["self_signing_keys"])
	}
	if !strings.Contains(string(mine["user_signing_keys"]), b64(uPub)) || strings.Contains(string(theirs["user_signing_keys"]), b64(uPub)) {
		t.Fatalf("user-signing key visibility: mine %s, bob's view %s", mine["user_signing_keys"], theirs["user_signing_keys"])
	}
}

func TestKeyBackup(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	tok := ts.register("alice")
	if r := ts.do("GET", "/_matrix/client/v3/room_keys/version", tok, ""); r.status != 404 {
		t.Fatalf("no backup: %d %s", r.status, r.body)
	}
	v1 := ts.do("POST", "/_matrix/client/v3/room_keys/version", tok, `{"algorithm":"m.megolm_backup.v1.curve25519-aes-sha2","auth_data":{"public_key":"abc"}}`).field("version")
	key := func(fmi, fc int, verified bool, tag string) string {
		return fmt.Sprintf(`{"first_message_index":%d,"forwarded_count":%d,"is_verified":%t,"session_data":{"tag":%q}}`, fmi, fc, verified, tag)
	}
	put := func(v, body string) resp {
		return ts.do("PUT", "/_matrix/client/v3/room_keys/keys/!r:test.local/S1?version="+v, tok, body)
	}
	get := func() string {
		r := ts.do("GET", "/_matrix/client/v3/room_keys/keys/!r:test.local/S1?version="+v1, tok, "")
		var k struct {
			SessionData struct{ Tag string } `json:"session_data"`
		}
		json.Unmarshal(r.body, &k)
		return k.SessionData.Tag
	}
	steps := []struct {
		name string
		body string
		want string
	}{
		{"first", key(5, 1, false, "a"), "a"},
		{"worse index", key(6, 0, false, "b"), "a"},
		{"better index", key(2, 3, false, "c"), "c"},
		{"fewer forwards", key(2, 1, false, "d"), "d"},
		{"more forwards", key(2, 2, false, "e"), "d"},
		{"verified wins", key(9, 9, true, "f"), "f"},
		{"unverified loses", key(0, 0, false, "g"), "f"},
	}
	for _, s := range steps {
		if r := put(v1, s.body); r.status != 200 {
			t.Fatalf("%s: %d %s", s.name, r.status, r.body)
		}
		if got := get(); got != s.want {
			t.Fatalf("%s: stored %q, want %q", s.name, got, s.want)
		}
	}
	info := ts.do("GET", "/_matrix/client/v3/room_keys/version", tok, "")
	if !strings.Contains(string(info.body), `"count":1`) || info.field("version") != v1 {
		t.Fatalf("version info %s", info.body)
	}
	v2 := ts.do("POST", "/_matrix/client/v3/room_keys/version", tok, `{"algorithm":"m.megolm_backup.v1.curve25519-aes-sha2","auth_data":{}}`).field("version")
	if r := put(v1, key(0, 0, true, "x")); r.status != 403 || r.errcode() != "M_WRONG_ROOM_KEYS_VERSION" || !strings.Contains(string(r.body), `"current_version":"`+v2+`"`) {
		t.Fatalf("old version: %d %s", r.status, r.body)
	}
	if r := put("99", key(0, 0, true, "x")); r.status != 404 {
		t.Fatalf("unknown version: %d %s", r.status, r.body)
	}
	if r := ts.do("DELETE", "/_matrix/client/v3/room_keys/keys?version="+v1, tok, ""); r.status != 200 || !strings.Contains(string(r.body), `"count":0`) {
		t.Fatalf("delete keys: %d %s", r.status, r.body)
	}
	if r := ts.do("DELETE", "/_matrix/client/v3/room_keys/version/"+v2, tok, ""); r.status != 200 {
		t.Fatalf("delete version: %d %s", r.status, r.body)
	}
	if r := ts.do("GET", "/_matrix/client/v3/room_keys/version", tok, ""); r.field("version") != v1 {
		t.Fatalf("current after delete: %s", r.body)
	}
}

// TestE2EEReplay rebuilds every projection from the log after E2EE traffic
// (uploads, claims, to-device sends and acks, signatures, backups, a
// logout) and checks the rebuilt rows equal the live ones.
func TestE2EEReplay(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	alice := ts.newDevice(t, "alice")
	bob := ts.newDevice(t, "bob")
	ts.uploadKeys(t, alice, 3, "F1")
	ts.uploadKeys(t, bob, 3, "F1")
	claim := e2eeJSON(t, map[string]any{"one_time_keys": map[string]any{bob.user: map[string]string{bob.device: "signed_curve25519"}}})
	for i := 0; i < 5; i++ {
		ts.do("POST", "/_matrix/client/v3/keys/claim", alice.token, claim)
	}
	s0 := ts.syncE2EE(t, bob.token, "")
	for i := 0; i < 3; i++ {
		ts.do("PUT", fmt.Sprintf("/_matrix/client/v3/sendToDevice/m.x/r%d", i), alice.token, fmt.Sprintf(`{"messages":{%q:{"*":{"i":%d}}}}`, bob.user, i))
	}
	s1 := ts.syncE2EE(t, bob.token, s0.NextBatch)
	ts.syncE2EE(t, bob.token, s1.NextBatch) // acks
	tok := alice.token
	v := ts.do("POST", "/_matrix/client/v3/room_keys/version", tok, `{"algorithm":"a","auth_data":{}}`).field("version")
	ts.do("PUT", "/_matrix/client/v3/room_keys/keys/!r:x/S?version="+v, tok, `{"first_message_index":1,"forwarded_count":0,"is_verified":false,"session_data":{}}`)
	ts.do("PUT", "/_matrix/client/v3/room_keys/keys/!r:x/S?version="+v, tok, `{"first_message_index":0,"forwarded_count":0,"is_verified":false,"session_data":{}}`)
	ts.do("DELETE", "/_matrix/client/v3/room_keys/keys/!r:x?version="+v, tok, "")
	mPub, _, _ := ed25519.GenerateKey(nil)
	ts.do("POST", "/_matrix/client/v3/keys/device_signing/upload", tok, e2eeJSON(t, map[string]any{"master_key": crossSigningKeyObj(alice.user, "master", mPub)}))
	ts.do("POST", "/_matrix/client/v3/logout", bob.token, "")

	set, err := projections.All()
	if err != nil {
		t.Fatal(err)
	}
	db, err := set.Rebuild(ts.log, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	bad, err := set.Compare(ts.log.DB(), db)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range bad {
		if strings.HasPrefix(m.Name, "e2ee") || m.Name == "todevice" || m.Name == "backups" {
			t.Errorf("projection %s differs after replay", m.Name)
		}
	}
	// Bob's device is gone, with its keys and inbox.
	if _, err := ts.srv.store.DeviceKeys(bob.user, bob.device); err == nil {
		t.Errorf("keys of a logged-out device remain")
	}
}

// FuzzE2EEParsers feeds arbitrary bytes to the key object checks: they may
// refuse anything but never panic.
func FuzzE2EEParsers(f *testing.F) {
	f.Add([]byte(`{"user_id":"@a:x","device_id":"D","algorithms":[],"keys":{"ed25519:D":"AAAA"},"signatures":{"@a:x":{"ed25519:D":"AAAA"}}}`))
	f.Add([]byte(`{"user_id":"@a:x","usage":["master"],"keys":{"ed25519:AAAA":"AAAA"}}`))
	f.Add([]byte(`{"first_message_index":1,"forwarded_count":0,"is_verified":false,"session_data":{}}`))
	f.Add([]byte(`"key"`))
	f.Add([]byte(`{"keys":{"ed25519:A":"A","ed25519:B":"B"},"signatures":7}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDeviceKeys(b, "@a:x", "D")
		checkCrossSigningKey(b, "@a:x", "master")
		sameKey(b, b)
		sameUnsignedContent(b, b)
		crossSigningPub(b)
		backupKey("!r:x", "s", b)
		if json.Valid(b) {
			mergeSignatures(b, map[string]map[string]string{"@a:x": {"ed25519:K": "sig"}}, map[string]any{"n": 1})
		}
	})
}

func BenchmarkKeysClaim(b *testing.B) {
	ts := newTestServer(b, Config{EnableRegistration: true})
	tok := ts.register("alice")
	who := ts.do("GET", "/_matrix/client/v3/account/whoami", tok, "")
	user, device := who.field("user_id"), who.field("device_id")
	claim := fmt.Sprintf(`{"one_time_keys":{%q:{%q:"signed_curve25519"}}}`, user, device)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%100 == 0 {
			b.StopTimer()
			var sb strings.Builder
			sb.WriteString(`{"one_time_keys":{`)
			for j := 0; j < 100; j++ {
				if j > 0 {
					sb.WriteByte(',')
				}
				fmt.Fprintf(&sb, `"signed_curve25519:B%d_%d":{"key":"k"}`, i, j)
			}
			sb.WriteString(`}}`)
			if r := ts.do("POST", "/_matrix/client/v3/keys/upload", tok, sb.String()); r.status != 200 {
				b.Fatalf("upload: %d %s", r.status, r.body)
			}
			b.StartTimer()
		}
		if r := ts.do("POST", "/_matrix/client/v3/keys/claim", tok, claim); r.status != 200 {
			b.Fatalf("claim: %d %s", r.status, r.body)
		}
	}
}
