package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"engram/dag"
)

// TestRotateKeyCommand: rotate-key replaces the key and keeps the old
// public keys, oldest first, with their rotation times.
func TestRotateKeyCommand(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "signing.key")
	var out, errb bytes.Buffer
	if code := run([]string{"rotate-key", "--data-dir", dir}, nil, &out, &errb); code == 0 {
		t.Fatal("rotated a key that does not exist")
	}
	k1, err := signingKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().UnixMilli()
	if code := run([]string{"rotate-key", "--data-dir", dir}, nil, &out, &errb); code != 0 {
		t.Fatalf("rotate-key: %d %s", code, errb.String())
	}
	k2, err := dag.LoadSigningKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if k2.ID == k1.ID || k2.Key.Equal(k1.Key) {
		t.Fatal("key not replaced")
	}
	if !strings.Contains(out.String(), k2.ID) || !strings.Contains(out.String(), k1.ID) {
		t.Errorf("output %q", out.String())
	}
	// The key file given directly, through the environment.
	t.Setenv("ENGRAM_SIGNING_KEY_PATH", keyPath)
	if code := run([]string{"rotate-key"}, nil, &out, &errb); code != 0 {
		t.Fatalf("rotate-key: %d %s", code, errb.String())
	}
	k3, _ := dag.LoadSigningKey(keyPath)
	old, err := loadOldKeys(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(old) != 2 || old[0].ID != k1.ID || !old[0].Public.Equal(k1.Public()) || old[1].ID != k2.ID || !old[1].Public.Equal(k2.Public()) {
		t.Fatalf("old keys %+v", old)
	}
	if old[0].ExpiredTS < before || old[1].ExpiredTS < old[0].ExpiredTS || k3.ID == k2.ID {
		t.Errorf("expiry times %d %d (rotation at or after %d)", old[0].ExpiredTS, old[1].ExpiredTS, before)
	}
	if fi, err := os.Stat(oldKeysPath(keyPath)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("old keys file: %v %v", fi, err)
	}
	// A crash between the two writes left the current key listed as old
	// too: a rotation then does not list it twice.
	now := time.Now()
	cur, _ := dag.LoadSigningKey(keyPath)
	os.WriteFile(oldKeysPath(keyPath), append(marshalOldKeys(old), fmt.Sprintf("ed25519 %s %s %d\n", cur.Version(), cur.PublicBase64(), now.UnixMilli())...), 0o600)
	if _, _, err := rotateSigningKey(keyPath, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if old, _ = loadOldKeys(keyPath); len(old) != 3 || old[2].ExpiredTS != now.UnixMilli() {
		t.Errorf("after a repaired rotation: %+v", old)
	}
	if code := run([]string{"rotate-key", "extra"}, nil, &out, &errb); code == 0 {
		t.Error("stray argument accepted")
	}
}

func TestParseOldKeys(t *testing.T) {
	k, _ := dag.GenerateSigningKey()
	line := fmt.Sprintf("ed25519 %s %s 1700000000000", k.Version(), k.PublicBase64())
	tests := []struct {
		name string
		in   string
		n    int
		ok   bool
	}{
		{"one key", line + "\n", 1, true},
		{"comments and blanks", "# retired\n\n" + line + "\n  \n", 1, true},
		{"padded base64", strings.Replace(line, k.PublicBase64(), k.PublicBase64()+"=", 1), 1, true},
		{"empty", "", 0, true},
		{"three fields", fmt.Sprintf("ed25519 %s %s", k.Version(), k.PublicBase64()), 0, false},
		{"other algorithm", strings.Replace(line, "ed25519", "rsa", 1), 0, false},
		{"bad key", strings.Replace(line, k.PublicBase64(), "AAAA", 1), 0, false},
		{"bad time", strings.Replace(line, "1700000000000", "soon", 1), 0, false},
		{"zero time", strings.Replace(line, "1700000000000", "0", 1), 0, false},
		{"bad version", strings.Replace(line, k.Version(), "a-b", 1), 0, false},
	}
	for _, tt := range tests {
		keys, err := parseOldKeys([]byte(tt.in))
		if (err == nil) != tt.ok || len(keys) != tt.n {
			t.Errorf("%s: %d keys, %v", tt.name, len(keys), err)
		}
	}
	keys, _ := parseOldKeys([]byte(line))
	if again, err := parseOldKeys(marshalOldKeys(keys)); err != nil || !reflect.DeepEqual(again, keys) {
		t.Errorf("round trip: %+v %v", again, err)
	}
}

func FuzzParseOldKeys(f *testing.F) {
	f.Add("ed25519 a_abcd AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA 1700000000000\n")
	f.Add("# x\ned25519 a b c d e\n")
	f.Fuzz(func(t *testing.T, s string) {
		keys, err := parseOldKeys([]byte(s))
		if err == nil {
			if again, err := parseOldKeys(marshalOldKeys(keys)); err != nil || len(again) != len(keys) {
				t.Fatalf("round trip of %q: %v", s, err)
			}
		}
	})
}

// TestTrustedKeyServersConfig: file, environment and flag, each
// overriding the one before.
func TestTrustedKeyServersConfig(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "engram.yaml")
	os.WriteFile(file, []byte("server_name: x.example\ndata_dir: "+dir+"\ntrusted_key_servers: [matrix.org, notary.example]\n"), 0o600)
	tests := []struct {
		name string
		env  string
		args []string
		want []string
	}{
		{"file", "", nil, []string{"matrix.org", "notary.example"}},
		{"environment", "a.example, b.example", nil, []string{"a.example", "b.example"}},
		{"flag", "a.example", []string{"--trusted-key-servers", "c.example"}, []string{"c.example"}},
		{"flag empties", "", []string{"--trusted-key-servers", ""}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env != "" {
				t.Setenv("ENGRAM_TRUSTED_KEY_SERVERS", tt.env)
			}
			c, err := newServeFlags("serve").resolve(append([]string{"--config", file}, tt.args...))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c.TrustedKeyServers, tt.want) {
				t.Errorf("got %q, want %q", c.TrustedKeyServers, tt.want)
			}
		})
	}
}

// TestFederationKeyRotationSpacesOpenID runs two servers. On A, a space
// with a public and a private child, and an OpenID token. A is stopped,
// its key rotated, and restarted: its key server shows the new key and
// the old one (with expired_ts), signed by the new key; the OpenID token
// still works; B joins the space, which needs the old key to verify the
// space's events; B's user walks the space: the public child, which B
// is not in, comes over federation, the private one is left out.
func TestFederationKeyRotationSpacesOpenID(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two servers")
	}
	nodes, caFile := startFedNodes(t, "127.0.0.5", "127.0.0.6")
	a, b := nodes[0], nodes[1]
	alice, bob := register(t, a.client, "alice"), register(t, b.client, "bob")
	aliceID := "@alice:" + a.name
	hc := fedClient(caFile)

	mk := func(body string) string {
		var out struct {
			RoomID string `json:"room_id"`
		}
		var v any
		json.Unmarshal([]byte(body), &v)
		if code, err := call("POST", a.client+"/_matrix/client/v3/createRoom", alice, v, &out); err != nil || code != 200 {
			t.Fatalf("createRoom: %d %v", code, err)
		}
		return out.RoomID
	}
	space := mk(`{"preset":"public_chat","name":"S","creation_content":{"type":"m.space"}}`)
	pub := mk(`{"preset":"public_chat","name":"R"}`)
	priv := mk(`{"preset":"private_chat","name":"P"}`)
	// Ordered explicitly: without "order", children sent in the same
	// millisecond are ordered by room ID.
	for i, child := range []string{pub, priv} {
		u := a.client + "/_matrix/client/v3/rooms/" + url.PathEscape(space) + "/state/m.space.child/" + url.PathEscape(child)
		if code, err := call("PUT", u, alice, map[string]any{"via": []string{a.name}, "order": string(rune('a' + i))}, nil); err != nil || code != 200 {
			t.Fatalf("m.space.child: %d %v", code, err)
		}
	}
	var oid struct {
		AccessToken string `json:"access_token"`
		ServerName  string `json:"matrix_server_name"`
	}
	if code, err := call("POST", a.client+"/_matrix/client/v3/user/"+url.PathEscape(aliceID)+"/openid/request_token", alice, map[string]any{}, &oid); err != nil || code != 200 || oid.ServerName != a.name {
		t.Fatalf("openid: %d %v %+v", code, err, oid)
	}

	// Rotate A's key.
	keyPath := filepath.Join(a.dir, "signing.key")
	oldKey, err := dag.LoadSigningKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	a.stop()
	if out, err := exec.Command(engramBin, "rotate-key", "--data-dir", a.dir).CombinedOutput(); err != nil {
		t.Fatalf("rotate-key: %v\n%s", err, out)
	}
	newKey, _ := dag.LoadSigningKey(keyPath)
	a.start()

	resp, err := hc.Get("https://" + a.name + "/_matrix/key/v2/server")
	if err != nil {
		t.Fatal(err)
	}
	var raw bytes.Buffer
	raw.ReadFrom(resp.Body)
	resp.Body.Close()
	var kr struct {
		VerifyKeys map[string]struct {
			Key string `json:"key"`
		} `json:"verify_keys"`
		Old map[string]struct {
			Key       string `json:"key"`
			ExpiredTS int64  `json:"expired_ts"`
		} `json:"old_verify_keys"`
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if err := json.Unmarshal(raw.Bytes(), &kr); err != nil {
		t.Fatal(err)
	}
	if len(kr.VerifyKeys) != 1 || kr.VerifyKeys[newKey.ID].Key != newKey.PublicBase64() {
		t.Errorf("verify_keys %+v, want %s", kr.VerifyKeys, newKey.ID)
	}
	if o := kr.Old[oldKey.ID]; len(kr.Old) != 1 || o.Key != oldKey.PublicBase64() || o.ExpiredTS <= 0 || o.ExpiredTS > time.Now().UnixMilli() {
		t.Errorf("old_verify_keys %+v, want %s", kr.Old, oldKey.ID)
	}
	if len(kr.Signatures[a.name]) != 1 {
		t.Errorf("signatures %+v", kr.Signatures)
	}
	if err := dag.VerifyJSON(raw.Bytes(), a.name, newKey.ID, newKey.Public()); err != nil {
		t.Errorf("key response not signed by the new key: %v", err)
	}

	// The OpenID token survived the restart.
	uresp, err := hc.Get("https://" + a.name + "/_matrix/federation/v1/openid/userinfo?access_token=" + url.QueryEscape(oid.AccessToken))
	if err != nil {
		t.Fatal(err)
	}
	var ui struct {
		Sub string `json:"sub"`
	}
	json.NewDecoder(uresp.Body).Decode(&ui)
	uresp.Body.Close()
	if uresp.StatusCode != 200 || ui.Sub != aliceID {
		t.Errorf("userinfo: %d %+v", uresp.StatusCode, ui)
	}

	// B joins the space: its events are signed with A's old key.
	var joined struct {
		RoomID string `json:"room_id"`
	}
	if code, err := call("POST", b.client+"/_matrix/client/v3/join/"+url.PathEscape(space)+"?server_name="+url.QueryEscape(a.name), bob, map[string]any{}, &joined); err != nil || code != 200 || joined.RoomID != space {
		t.Fatalf("join through A after the rotation: %d %v %+v", code, err, joined)
	}

	walk := func(n *fedNode, token string) []string {
		var h struct {
			Rooms []struct {
				Name string `json:"name"`
			} `json:"rooms"`
		}
		u := n.client + "/_matrix/client/v1/rooms/" + url.PathEscape(space) + "/hierarchy"
		if code, err := call("GET", u, token, nil, &h); err != nil || code != 200 {
			t.Fatalf("hierarchy on %s: %d %v", n.name, code, err)
		}
		var names []string
		for _, r := range h.Rooms {
			names = append(names, r.Name)
		}
		return names
	}
	if got := walk(a, alice); !reflect.DeepEqual(got, []string{"S", "R", "P"}) {
		t.Errorf("hierarchy on A: %v", got)
	}
	if got := walk(b, bob); !reflect.DeepEqual(got, []string{"S", "R"}) {
		t.Errorf("hierarchy on B: %v", got)
	}
}
