package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"engram/dag"
)

// End-to-end encryption across two engram servers: device keys of a user on
// B are visible to a user on A (and cached, and refreshed by device list
// updates), one-time keys are claimed once through federation, to-device
// messages are delivered once both ways, and a new device on B reaches A's
// sync as device_lists.changed.

type e2eeDev struct {
	user, device, token string
	pub                 ed25519.PublicKey
	priv                ed25519.PrivateKey
}

func newE2EEDev(t *testing.T, n *fedNode, token string) *e2eeDev {
	t.Helper()
	var who struct {
		UserID   string `json:"user_id"`
		DeviceID string `json:"device_id"`
	}
	if code, err := call("GET", n.client+"/_matrix/client/v3/account/whoami", token, nil, &who); err != nil || code != 200 {
		t.Fatalf("whoami: %d %v", code, err)
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	return &e2eeDev{user: who.UserID, device: who.DeviceID, token: token, pub: pub, priv: priv}
}

func (d *e2eeDev) sign(t *testing.T, obj map[string]any) map[string]any {
	t.Helper()
	raw, _ := json.Marshal(obj)
	signed, err := dag.SignJSON(raw, d.user, "ed25519:"+d.device, d.priv)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	json.Unmarshal(signed, &out)
	return out
}

// upload uploads the device's keys and n signed one-time keys.
func (d *e2eeDev) upload(t *testing.T, n *fedNode, otks int) {
	t.Helper()
	enc := base64.RawStdEncoding.EncodeToString
	dk := d.sign(t, map[string]any{"user_id": d.user, "device_id": d.device,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"ed25519:" + d.device: enc(d.pub), "curve25519:" + d.device: enc(d.pub)}})
	keys := map[string]any{}
	for i := 0; i < otks; i++ {
		keys[fmt.Sprintf("signed_curve25519:K%d", i)] = d.sign(t, map[string]any{"key": enc([]byte(fmt.Sprintf("otk-%s-%d-....", d.device, i)))})
	}
	body := map[string]any{"device_keys": dk, "one_time_keys": keys}
	if code, err := call("POST", n.client+"/_matrix/client/v3/keys/upload", d.token, body, nil); err != nil || code != 200 {
		t.Fatalf("keys/upload on %s: %d %v", n.name, code, err)
	}
}

type keysQueryAnswer struct {
	DeviceKeys map[string]map[string]json.RawMessage `json:"device_keys"`
	Failures   map[string]json.RawMessage            `json:"failures"`
}

func queryKeys(t *testing.T, n *fedNode, token, user string) keysQueryAnswer {
	t.Helper()
	var out keysQueryAnswer
	if code, err := call("POST", n.client+"/_matrix/client/v3/keys/query", token, map[string]any{"device_keys": map[string]any{user: []string{}}}, &out); err != nil || code != 200 {
		t.Fatalf("keys/query on %s: %d %v", n.name, code, err)
	}
	return out
}

// toDeviceEvents syncs from since and returns the to-device events and the
// next token.
func toDeviceEvents(t *testing.T, n *fedNode, token, since string) ([]map[string]any, string) {
	t.Helper()
	var out struct {
		NextBatch string `json:"next_batch"`
		ToDevice  struct {
			Events []map[string]any `json:"events"`
		} `json:"to_device"`
		DeviceLists struct {
			Changed []string `json:"changed"`
		} `json:"device_lists"`
	}
	u := n.client + "/_matrix/client/v3/sync?timeout=0"
	if since != "" {
		u += "&since=" + url.QueryEscape(since)
	}
	if code, err := call("GET", u, token, nil, &out); err != nil || code != 200 {
		t.Fatalf("sync on %s: %d %v", n.name, code, err)
	}
	return out.ToDevice.Events, out.NextBatch
}

func deviceListsChanged(t *testing.T, n *fedNode, token, since string) ([]string, string) {
	t.Helper()
	var out struct {
		NextBatch   string `json:"next_batch"`
		DeviceLists struct {
			Changed []string `json:"changed"`
		} `json:"device_lists"`
	}
	u := n.client + "/_matrix/client/v3/sync?timeout=0&since=" + url.QueryEscape(since)
	if code, err := call("GET", u, token, nil, &out); err != nil || code != 200 {
		t.Fatalf("sync on %s: %d %v", n.name, code, err)
	}
	return out.DeviceLists.Changed, out.NextBatch
}

// signKeyObject signs a key object with a cross-signing key (whose key ID
// is base64, which dag.SignJSON does not take): ed25519 over the canonical
// JSON without signatures and unsigned.
func signKeyObject(t *testing.T, obj map[string]any, user, keyID string, priv ed25519.PrivateKey) json.RawMessage {
	t.Helper()
	c := map[string]any{}
	for k, v := range obj {
		if k != "signatures" && k != "unsigned" {
			c[k] = v
		}
	}
	raw, _ := json.Marshal(c)
	canon, err := dag.Canonical(nil, raw, false)
	if err != nil {
		t.Fatal(err)
	}
	sigs := map[string]map[string]string{}
	if old, ok := obj["signatures"].(map[string]any); ok {
		for u, m := range old {
			sigs[u] = map[string]string{}
			for k, v := range m.(map[string]any) {
				sigs[u][k] = v.(string)
			}
		}
	}
	if sigs[user] == nil {
		sigs[user] = map[string]string{}
	}
	sigs[user][keyID] = base64.RawStdEncoding.EncodeToString(ed25519.Sign(priv, canon))
	out := map[string]any{}
	for k, v := range obj {
		out[k] = v
	}
	out["signatures"] = sigs
	b, _ := json.Marshal(out)
	return b
}

func login(t *testing.T, n *fedNode, user string) string {
	t.Helper()
	var out struct {
		AccessToken string `json:"access_token"`
	}
	body := map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": user}, "password": "pw-" + user}
	if code, err := call("POST", n.client+"/_matrix/client/v3/login", "", body, &out); err != nil || code != 200 {
		t.Fatalf("login %s on %s: %d %v", user, n.name, code, err)
	}
	return out.AccessToken
}

func TestFederationE2EE(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two servers")
	}
	nodes, _ := startFedNodes(t, "127.0.0.5", "127.0.0.6")
	a, b := nodes[0], nodes[1]
	aliceTok, bobTok := register(t, a.client, "alice"), register(t, b.client, "bob")
	alice, bob := newE2EEDev(t, a, aliceTok), newE2EEDev(t, b, bobTok)
	room := createRoom(t, a.client, aliceTok)
	if code, err := call("POST", b.client+"/_matrix/client/v3/join/"+room+"?server_name="+a.name, bobTok, map[string]any{}, nil); err != nil || code != 200 {
		t.Fatalf("join: %d %v\n%s", code, err, b.logs)
	}
	eventually(t, "A to see bob joined", func() bool { return membership(a, aliceTok, room, bob.user) == "join" })
	alice.upload(t, a, 2)
	bob.upload(t, b, 3)
	_, aliceSince := toDeviceEvents(t, a, aliceTok, "")
	_, bobSince := toDeviceEvents(t, b, bobTok, "")

	// Keys of a user on B, queried by a user on A.
	t.Run("keys query", func(t *testing.T) {
		q := queryKeys(t, a, aliceTok, bob.user)
		if len(q.Failures) != 0 {
			t.Fatalf("failures: %s", q.Failures)
		}
		raw, ok := q.DeviceKeys[bob.user][bob.device]
		if !ok {
			t.Fatalf("bob's device missing: %+v", q.DeviceKeys)
		}
		if err := dag.VerifyJSON(raw, bob.user, "ed25519:"+bob.device, bob.pub); err != nil {
			t.Fatalf("bob's device keys do not verify: %v: %s", err, raw)
		}
		// And the other way.
		q = queryKeys(t, b, bobTok, alice.user)
		if _, ok := q.DeviceKeys[alice.user][alice.device]; !ok || len(q.Failures) != 0 {
			t.Fatalf("alice's device from B: %+v", q)
		}
	})

	// One-time keys are claimed through federation, each once.
	t.Run("keys claim", func(t *testing.T) {
		seen := map[string]bool{}
		for i := 0; i < 3; i++ {
			var out struct {
				OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
				Failures    map[string]json.RawMessage                       `json:"failures"`
			}
			body := map[string]any{"one_time_keys": map[string]any{bob.user: map[string]string{bob.device: "signed_curve25519"}}}
			if code, err := call("POST", a.client+"/_matrix/client/v3/keys/claim", aliceTok, body, &out); err != nil || code != 200 {
				t.Fatalf("claim: %d %v", code, err)
			}
			ks := out.OneTimeKeys[bob.user][bob.device]
			if len(ks) != 1 || len(out.Failures) != 0 {
				t.Fatalf("claim %d: %+v", i, out)
			}
			for id := range ks {
				if seen[id] {
					t.Fatalf("key %s claimed twice", id)
				}
				seen[id] = true
			}
		}
		var out struct {
			OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
		}
		body := map[string]any{"one_time_keys": map[string]any{bob.user: map[string]string{bob.device: "signed_curve25519"}}}
		call("POST", a.client+"/_matrix/client/v3/keys/claim", aliceTok, body, &out)
		if len(out.OneTimeKeys[bob.user][bob.device]) != 0 {
			t.Fatalf("a fourth key from three: %+v", out)
		}
	})

	// To-device messages cross once, both ways.
	t.Run("to-device", func(t *testing.T) {
		send := func(n *fedNode, token, txn, to, device, body string) {
			msg := map[string]any{"messages": map[string]any{to: map[string]any{device: map[string]string{"body": body}}}}
			if code, err := call("PUT", n.client+"/_matrix/client/v3/sendToDevice/m.test/"+txn, token, msg, nil); err != nil || code != 200 {
				t.Fatalf("sendToDevice: %d %v", code, err)
			}
		}
		send(a, aliceTok, "t1", bob.user, bob.device, "hello bob")
		send(a, aliceTok, "t1", bob.user, bob.device, "hello bob") // a retry: same txn
		send(b, bobTok, "t1", alice.user, "*", "hello alice")
		collect := func(n *fedNode, token string, since *string, want string) []map[string]any {
			var got []map[string]any
			eventually(t, "to-device on "+n.name, func() bool {
				evs, next := toDeviceEvents(t, n, token, *since)
				*since = next
				got = append(got, evs...)
				return len(got) > 0
			})
			time.Sleep(1500 * time.Millisecond) // a duplicate would arrive by now
			evs, next := toDeviceEvents(t, n, token, *since)
			*since = next
			got = append(got, evs...)
			if len(got) != 1 || got[0]["type"] != "m.test" || !strings.Contains(fmt.Sprint(got[0]["content"]), want) {
				t.Fatalf("to-device on %s: %+v", n.name, got)
			}
			return got
		}
		if got := collect(b, bobTok, &bobSince, "hello bob"); got[0]["sender"] != alice.user {
			t.Fatalf("sender: %+v", got)
		}
		if got := collect(a, aliceTok, &aliceSince, "hello alice"); got[0]["sender"] != bob.user {
			t.Fatalf("sender: %+v", got)
		}
	})

	// A new device of bob's reaches alice: device_lists.changed on A and
	// the new device in A's key query (the cached list was updated).
	t.Run("device list update", func(t *testing.T) {
		_, since := deviceListsChanged(t, a, aliceTok, aliceSince)
		bob2 := newE2EEDev(t, b, login(t, b, "bob"))
		bob2.upload(t, b, 1)
		eventually(t, "A's sync to list bob as changed", func() bool {
			changed, next := deviceListsChanged(t, a, aliceTok, since)
			since = next
			for _, u := range changed {
				if u == bob.user {
					return true
				}
			}
			return false
		})
		eventually(t, "A to know bob's second device", func() bool {
			q := queryKeys(t, a, aliceTok, bob.user)
			_, ok1 := q.DeviceKeys[bob.user][bob.device]
			_, ok2 := q.DeviceKeys[bob.user][bob2.device]
			return ok1 && ok2
		})
		// A logout removes it again.
		if code, err := call("POST", b.client+"/_matrix/client/v3/logout", bob2.token, map[string]any{}, nil); err != nil || code != 200 {
			t.Fatalf("logout: %d %v", code, err)
		}
		eventually(t, "A to forget bob's second device", func() bool {
			q := queryKeys(t, a, aliceTok, bob.user)
			_, ok1 := q.DeviceKeys[bob.user][bob.device]
			_, ok2 := q.DeviceKeys[bob.user][bob2.device]
			return ok1 && !ok2
		})
	})

	// Cross-signing keys uploaded on B reach A (m.signing_key_update
	// patches A's cached entry; a self-signing signature of a device is an
	// m.device_list_update).
	t.Run("signing key update", func(t *testing.T) {
		enc := base64.RawStdEncoding.EncodeToString
		mPub, mPriv, _ := ed25519.GenerateKey(rand.Reader)
		sPub, sPriv, _ := ed25519.GenerateKey(rand.Reader)
		master := map[string]any{"user_id": bob.user, "usage": []string{"master"}, "keys": map[string]string{"ed25519:" + enc(mPub): enc(mPub)}}
		selfObj := map[string]any{"user_id": bob.user, "usage": []string{"self_signing"}, "keys": map[string]string{"ed25519:" + enc(sPub): enc(sPub)}}
		signed := signKeyObject(t, selfObj, bob.user, "ed25519:"+enc(mPub), mPriv)
		queryKeys(t, a, aliceTok, bob.user) // A caches bob's keys
		body := map[string]any{"master_key": master, "self_signing_key": json.RawMessage(signed)}
		if code, err := call("POST", b.client+"/_matrix/client/v3/keys/device_signing/upload", bob.token, body, nil); err != nil || code != 200 {
			t.Fatalf("device_signing/upload: %d %v", code, err)
		}
		var out struct {
			Master map[string]json.RawMessage `json:"master_keys"`
			Self   map[string]json.RawMessage `json:"self_signing_keys"`
		}
		eventually(t, "A to see bob's cross-signing keys", func() bool {
			call("POST", a.client+"/_matrix/client/v3/keys/query", aliceTok, map[string]any{"device_keys": map[string]any{bob.user: []string{}}}, &out)
			return strings.Contains(string(out.Master[bob.user]), enc(mPub)) && strings.Contains(string(out.Self[bob.user]), enc(sPub))
		})
		// The self-signing key signs bob's device; A sees the signature.
		dk := bob.sign(t, map[string]any{"user_id": bob.user, "device_id": bob.device,
			"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
			"keys":       map[string]string{"ed25519:" + bob.device: enc(bob.pub), "curve25519:" + bob.device: enc(bob.pub)}})
		sig := signKeyObject(t, dk, bob.user, "ed25519:"+enc(sPub), sPriv)
		if code, err := call("POST", b.client+"/_matrix/client/v3/keys/signatures/upload", bob.token, map[string]any{bob.user: map[string]any{bob.device: json.RawMessage(sig)}}, nil); err != nil || code != 200 {
			t.Fatalf("signatures/upload: %d %v", code, err)
		}
		eventually(t, "A to see the self-signing signature on bob's device", func() bool {
			q := queryKeys(t, a, aliceTok, bob.user)
			return strings.Contains(string(q.DeviceKeys[bob.user][bob.device]), "ed25519:"+enc(sPub))
		})
	})
}
