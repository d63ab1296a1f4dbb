package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"engram/dag"
)

// The second round of federation features, run inside TestFederation on
// its three servers (a: alice, b: bob, c: carol; room has all three).

// syncBody is one /sync answer (timeout 0) as text.
func syncBody(n *fedNode, token string) string {
	req, _ := http.NewRequest("GET", n.client+"/_matrix/client/v3/sync?timeout=0", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func testFederationFeatures(t *testing.T, a, b, c *fedNode, room, alice, bob, carol string) {
	aliceID, bobID, carolID := "@alice:"+a.name, "@bob:"+b.name, "@carol:"+c.name

	t.Run("typing", func(t *testing.T) {
		code, err := call("PUT", a.client+"/_matrix/client/v3/rooms/"+room+"/typing/"+aliceID, alice, map[string]any{"typing": true, "timeout": 30000}, nil)
		if err != nil || code != 200 {
			t.Fatalf("typing: %d %v", code, err)
		}
		eventually(t, "B to see alice typing", func() bool {
			s := syncBody(b, bob)
			return strings.Contains(s, `"m.typing"`) && strings.Contains(s, aliceID)
		})
	})

	t.Run("receipts", func(t *testing.T) {
		m := sendMsg(t, a, alice, room, "read me")
		eventually(t, "B to have the message", func() bool { return hasAll(t, b, bob, room, m) })
		code, err := call("POST", b.client+"/_matrix/client/v3/rooms/"+room+"/receipt/m.read/"+m, bob, map[string]any{}, nil)
		if err != nil || code != 200 {
			t.Fatalf("receipt: %d %v", code, err)
		}
		eventually(t, "A to see bob's receipt", func() bool {
			s := syncBody(a, alice)
			return strings.Contains(s, `"m.receipt"`) && strings.Contains(s, bobID) && strings.Contains(s, m)
		})
	})

	t.Run("presence", func(t *testing.T) {
		code, err := call("PUT", b.client+"/_matrix/client/v3/presence/"+bobID+"/status", bob, map[string]any{"presence": "online", "status_msg": "federated"}, nil)
		if err != nil || code != 200 {
			t.Fatalf("presence: %d %v", code, err)
		}
		eventually(t, "A to see bob's presence", func() bool {
			var out struct {
				Presence  string `json:"presence"`
				StatusMsg string `json:"status_msg"`
			}
			code, _ := call("GET", a.client+"/_matrix/client/v3/presence/"+bobID+"/status", alice, nil, &out)
			return code == 200 && out.StatusMsg == "federated"
		})
	})

	t.Run("invites", func(t *testing.T) {
		var cr struct {
			RoomID string `json:"room_id"`
		}
		if code, err := call("POST", a.client+"/_matrix/client/v3/createRoom", alice, map[string]any{"preset": "private_chat"}, &cr); err != nil || code != 200 {
			t.Fatalf("createRoom: %d %v", code, err)
		}
		priv := cr.RoomID
		for _, u := range []string{bobID, carolID} {
			if code, err := call("POST", a.client+"/_matrix/client/v3/rooms/"+priv+"/invite", alice, map[string]any{"user_id": u}, nil); err != nil || code != 200 {
				t.Fatalf("invite %s: %d %v\n%s", u, code, err, a.logs)
			}
		}
		if got := membership(a, alice, priv, bobID); got != "invite" {
			t.Fatalf("bob on A: %q", got)
		}
		eventually(t, "bob's invite in his sync", func() bool {
			s := syncBody(b, bob)
			return strings.Contains(s, `"invite":{"`+priv) || strings.Contains(s, `"`+priv+`":{"invite_state"`)
		})
		// Bob accepts: no server_name; the inviting server is used.
		var jr struct {
			RoomID string `json:"room_id"`
		}
		if code, err := call("POST", b.client+"/_matrix/client/v3/join/"+priv, bob, map[string]any{}, &jr); err != nil || code != 200 {
			t.Fatalf("join after invite: %d %v\n%s", code, err, b.logs)
		}
		eventually(t, "A to see bob joined", func() bool { return membership(a, alice, priv, bobID) == "join" })
		// Carol rejects: make_leave/send_leave through A.
		eventually(t, "carol's invite", func() bool { return strings.Contains(syncBody(c, carol), priv) })
		if code, err := call("POST", c.client+"/_matrix/client/v3/rooms/"+priv+"/leave", carol, map[string]any{}, nil); err != nil || code != 200 {
			t.Fatalf("reject: %d %v\n%s", code, err, c.logs)
		}
		eventually(t, "A to see carol's rejection", func() bool { return membership(a, alice, priv, carolID) == "leave" })
		// A remote user who does not exist is refused by their server.
		if code, _ := call("POST", a.client+"/_matrix/client/v3/rooms/"+priv+"/invite", alice, map[string]any{"user_id": "@nobody:" + b.name}, nil); code == 200 {
			t.Errorf("invite of an unknown remote user succeeded")
		}
		// Bob leaves; A sees it.
		if code, err := call("POST", b.client+"/_matrix/client/v3/rooms/"+priv+"/leave", bob, map[string]any{}, nil); err != nil || code != 200 {
			t.Fatalf("leave: %d %v", code, err)
		}
		eventually(t, "A to see bob left", func() bool { return membership(a, alice, priv, bobID) == "leave" })
	})

	t.Run("alias_profile_directory", func(t *testing.T) {
		pub := createRoom(t, a.client, alice)
		alias := "#fedpub:" + a.name
		if code, err := call("PUT", a.client+"/_matrix/client/v3/directory/room/"+url.PathEscape(alias), alice, map[string]any{"room_id": pub}, nil); err != nil || code != 200 {
			t.Fatalf("alias: %d %v", code, err)
		}
		var out struct {
			RoomID string `json:"room_id"`
		}
		if code, err := call("GET", c.client+"/_matrix/client/v3/directory/room/"+url.PathEscape(alias), carol, nil, &out); err != nil || code != 200 || out.RoomID != pub {
			t.Fatalf("remote alias lookup: %d %v %+v", code, err, out)
		}
		out.RoomID = ""
		if code, err := call("POST", c.client+"/_matrix/client/v3/join/"+url.PathEscape(alias), carol, map[string]any{}, &out); err != nil || code != 200 || out.RoomID != pub {
			t.Fatalf("join by remote alias: %d %v %+v\n%s", code, err, out, c.logs)
		}
		eventually(t, "A to see carol in the alias room", func() bool { return membership(a, alice, pub, carolID) == "join" })

		// Profiles of remote users.
		if code, err := call("PUT", a.client+"/_matrix/client/v3/profile/"+aliceID+"/displayname", alice, map[string]any{"displayname": "Alice A"}, nil); err != nil || code != 200 {
			t.Fatalf("displayname: %d %v", code, err)
		}
		var p struct {
			DisplayName string `json:"displayname"`
		}
		if code, err := call("GET", b.client+"/_matrix/client/v3/profile/"+aliceID, bob, nil, &p); err != nil || code != 200 || p.DisplayName != "Alice A" {
			t.Errorf("remote profile: %d %v %+v", code, err, p)
		}
		p.DisplayName = ""
		if code, err := call("GET", b.client+"/_matrix/client/v3/profile/"+aliceID+"/displayname", bob, nil, &p); err != nil || code != 200 || p.DisplayName != "Alice A" {
			t.Errorf("remote profile field: %d %v %+v", code, err, p)
		}

		// The room directory of another server.
		if code, err := call("PUT", a.client+"/_matrix/client/v3/directory/list/room/"+pub, alice, map[string]any{"visibility": "public"}, nil); err != nil || code != 200 {
			t.Fatalf("publish: %d %v", code, err)
		}
		var dir struct {
			Chunk []struct {
				RoomID string `json:"room_id"`
			} `json:"chunk"`
		}
		if code, err := call("GET", b.client+"/_matrix/client/v3/publicRooms?server="+a.name, bob, nil, &dir); err != nil || code != 200 || len(dir.Chunk) == 0 || dir.Chunk[0].RoomID != pub {
			t.Errorf("remote publicRooms: %d %v %+v", code, err, dir)
		}
	})

	t.Run("acl", func(t *testing.T) {
		acl := map[string]any{"allow": []string{"*"}, "deny": []string{c.ip}, "allow_ip_literals": true}
		if code, err := call("PUT", a.client+"/_matrix/client/v3/rooms/"+room+"/state/m.room.server_acl/", alice, acl, nil); err != nil || code != 200 {
			t.Fatalf("acl: %d %v", code, err)
		}
		hc := fedClient(filepath.Join(filepath.Dir(a.dir), "ca.pem"))
		cKey, err := dag.LoadSigningKey(filepath.Join(c.dir, "signing.key"))
		if err != nil {
			t.Fatal(err)
		}
		bKey, err := dag.LoadSigningKey(filepath.Join(b.dir, "signing.key"))
		if err != nil {
			t.Fatal(err)
		}
		latest := sendMsg(t, a, alice, room, "after acl")
		path := fmt.Sprintf("/_matrix/federation/v1/state_ids/%s?event_id=%s", url.PathEscape(room), url.QueryEscape(latest))
		if code, body := signedRequest(t, hc, "GET", a.name, c.name, path, cKey, nil); code != 403 {
			t.Errorf("denied server: %d %s", code, body)
		}
		if code, body := signedRequest(t, hc, "GET", a.name, b.name, path, bKey, nil); code != 200 {
			t.Errorf("allowed server: %d %s", code, body)
		}
		// A message from C is refused by A.
		m := sendMsg(t, c, carol, room, "from a banned server")
		time.Sleep(time.Second)
		if hasAll(t, a, alice, room, m) {
			t.Errorf("A accepted a PDU from a server its ACL denies")
		}
	})
	_ = json.Marshal
}
