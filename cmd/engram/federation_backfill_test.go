package main

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
)

// Two servers, A and B. History that only A holds reaches B's users by
// backfill; createRoom invites users of B; a user of B knocks on a room of
// A.

// startFedPair starts two federating servers on the given loopback IPs.
func startFedPair(t *testing.T, ips [2]string) (a, b *fedNode) {
	t.Helper()
	dir := t.TempDir()
	caFile, certs, keys := testCA(t, dir, ips[:])
	nodes := make([]*fedNode, 0, 2)
	t.Cleanup(func() {
		// B first: its idle keep-alive connections to A would hold A's
		// federation listener's graceful shutdown until the kill timeout.
		for i := len(nodes) - 1; i >= 0; i-- {
			nodes[i].stop()
		}
		if t.Failed() {
			for _, n := range nodes {
				t.Logf("logs of %s:\n%s", n.name, n.logs)
			}
		}
	})
	for i, ip := range ips {
		fed, cl := freeAddrOn(t, ip), freeAddrOn(t, ip)
		n := &fedNode{t: t, name: fed, ip: ip, dir: filepath.Join(dir, ip), client: "http://" + cl, clientLn: cl}
		n.args = []string{"serve", "--server-name", fed, "--data-dir", n.dir, "--client-listen", cl,
			"--federation-listen", fed, "--tls-cert", certs[i], "--tls-key", keys[i], "--federation-ca", caFile,
			"--enable-registration", "--log-level", "warn"}
		nodes = append(nodes, n)
		n.start()
	}
	return nodes[0], nodes[1]
}

type pagedEvent struct {
	EventID string `json:"event_id"`
	Type    string `json:"type"`
	Sender  string `json:"sender"`
}

// page is one /messages request.
func page(t *testing.T, n *fedNode, token, room, query string) (chunk []pagedEvent, end string) {
	t.Helper()
	var out struct {
		Chunk []pagedEvent `json:"chunk"`
		End   string       `json:"end"`
	}
	code, err := call("GET", n.client+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?"+query, token, nil, &out)
	if err != nil || code != 200 {
		t.Fatalf("messages on %s (%s): %d %v", n.name, query, code, err)
	}
	return out.Chunk, out.End
}

// pageAll pages a room backwards from the newest event to the end, limit
// events at a time, and returns the events newest first and the end token
// of every page.
func pageAll(t *testing.T, n *fedNode, token, room string, limit int) ([]pagedEvent, []string) {
	t.Helper()
	var all []pagedEvent
	var ends []string
	seen := map[string]bool{}
	from := ""
	for i := 0; ; i++ {
		if i > 200 {
			t.Fatal("pagination does not end")
		}
		q := fmt.Sprintf("dir=b&limit=%d", limit)
		if from != "" {
			q += "&from=" + url.QueryEscape(from)
		}
		chunk, end := page(t, n, token, room, q)
		for _, e := range chunk {
			if seen[e.EventID] {
				t.Fatalf("event %s (%s) returned twice", e.EventID, e.Type)
			}
			seen[e.EventID] = true
		}
		all = append(all, chunk...)
		if end == "" {
			return all, ends
		}
		ends = append(ends, end)
		from = end
	}
}

func ids(evs []pagedEvent) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.EventID
	}
	return out
}

func joinVia(t *testing.T, n *fedNode, token, room, via string) {
	t.Helper()
	code, err := call("POST", n.client+"/_matrix/client/v3/join/"+url.PathEscape(room)+"?server_name="+url.QueryEscape(via), token, map[string]any{}, nil)
	if err != nil || code != 200 {
		t.Fatalf("join on %s: %d %v\n%s", n.name, code, err, n.logs)
	}
}

func TestFederationBackfill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two servers")
	}
	a, b := startFedPair(t, [2]string{"127.0.0.11", "127.0.0.12"})
	alice, bob := register(t, a.client, "alice"), register(t, b.client, "bob")
	bobID := "@bob:" + b.name

	t.Run("history", func(t *testing.T) {
		// A has history (history_visibility shared, from the preset) before
		// B takes part in the room.
		room := createRoom(t, a.client, alice)
		if code, err := call("PUT", a.client+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.topic", alice, map[string]any{"topic": "old times"}, nil); err != nil || code != 200 {
			t.Fatalf("topic: %d %v", code, err)
		}
		for i := 0; i < 25; i++ {
			sendMsg(t, a, alice, room, fmt.Sprintf("before B %d", i))
		}
		joinVia(t, b, bob, room, a.name)
		eventually(t, "A to see bob joined", func() bool { return membership(a, alice, room, bobID) == "join" })
		after := sendMsg(t, a, alice, room, "after B joined")
		eventually(t, "B to have the new message", func() bool {
			chunk, _ := page(t, b, bob, room, "dir=b&limit=5")
			for _, e := range chunk {
				if e.EventID == after {
					return true
				}
			}
			return false
		})

		want, _ := pageAll(t, a, alice, room, 50) // A's whole history, newest first
		got, ends := pageAll(t, b, bob, room, 7)
		if strings.Join(ids(got), "\n") != strings.Join(ids(want), "\n") {
			t.Fatalf("B's history (%d events) differs from A's (%d):\nB: %v\nA: %v", len(got), len(want), ids(got), ids(want))
		}
		if last := got[len(got)-1]; last.Type != "m.room.create" {
			t.Fatalf("history ends with %s, not the room's creation", last.Type)
		}
		backfilled := 0
		for _, e := range ends {
			if strings.HasPrefix(e, "b") {
				backfilled++
			}
		}
		if backfilled == 0 {
			t.Fatalf("no page ended in the backfilled history: %v", ends)
		}

		// Paging again fetches nothing twice; so does paging after a restart.
		if again, _ := pageAll(t, b, bob, room, 11); strings.Join(ids(again), ",") != strings.Join(ids(want), ",") {
			t.Fatalf("second pagination: %d events", len(again))
		}
		b.stop()
		b.start()
		if again, _ := pageAll(t, b, bob, room, 500); strings.Join(ids(again), ",") != strings.Join(ids(want), ",") {
			t.Fatalf("pagination after restart: %d events", len(again))
		}

		// Forwards from a token in the backfilled history: the newer
		// events, oldest first, on into the timeline.
		var mid string
		for _, e := range ends {
			if strings.HasPrefix(e, "b") {
				mid = e
				break
			}
		}
		var fwd []pagedEvent
		from := mid
		for i := 0; from != "" && i < 100; i++ {
			chunk, end := page(t, b, bob, room, "dir=f&limit=4&from="+url.QueryEscape(from))
			fwd = append(fwd, chunk...)
			from = end
		}
		idx := -1
		for i, e := range got {
			if len(fwd) > 0 && e.EventID == fwd[0].EventID {
				idx = i
			}
		}
		if idx < 0 || len(fwd) != idx+1 {
			t.Fatalf("forward pagination from %s: %d events, first at %d", mid, len(fwd), idx)
		}
		for i, e := range fwd {
			if e.EventID != got[idx-i].EventID {
				t.Fatalf("forward event %d is %s, want %s", i, e.EventID, got[idx-i].EventID)
			}
		}

		// A backfilled event by ID, and its context.
		old := got[len(got)-3]
		if code, err := call("GET", b.client+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/event/"+url.PathEscape(old.EventID), bob, nil, nil); err != nil || code != 200 {
			t.Fatalf("backfilled event: %d %v", code, err)
		}
		var ctx struct {
			Before []pagedEvent `json:"events_before"`
			After  []pagedEvent `json:"events_after"`
		}
		if code, err := call("GET", b.client+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/context/"+url.PathEscape(old.EventID)+"?limit=4", bob, nil, &ctx); err != nil || code != 200 {
			t.Fatalf("context: %d %v", code, err)
		}
		if len(ctx.Before) != 2 || ctx.Before[0].EventID != got[len(got)-2].EventID || len(ctx.After) != 2 || ctx.After[0].EventID != got[len(got)-4].EventID {
			t.Fatalf("context of %s: before %v after %v", old.EventID, ids(ctx.Before), ids(ctx.After))
		}
	})

	t.Run("visibility", func(t *testing.T) {
		// history_visibility joined: what was said before bob joined stays
		// hidden from him, backfilled or not.
		var cr struct {
			RoomID string `json:"room_id"`
		}
		body := map[string]any{"preset": "public_chat", "initial_state": []any{map[string]any{
			"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "joined"}}}}
		if code, err := call("POST", a.client+"/_matrix/client/v3/createRoom", alice, body, &cr); err != nil || code != 200 {
			t.Fatalf("createRoom: %d %v", code, err)
		}
		room := cr.RoomID
		secret := map[string]bool{}
		for i := 0; i < 5; i++ {
			secret[sendMsg(t, a, alice, room, fmt.Sprintf("before bob %d", i))] = true
		}
		joinVia(t, b, bob, room, a.name)
		got, _ := pageAll(t, b, bob, room, 3)
		joined, created := false, false
		for _, e := range got {
			if secret[e.EventID] {
				t.Fatalf("bob sees %s, sent before he joined", e.EventID)
			}
			joined = joined || (e.Type == "m.room.member" && e.Sender == bobID)
			// Sent before any history_visibility event: "shared", the
			// default, and bob joined after it.
			created = created || e.Type == "m.room.create"
		}
		if !joined || !created {
			t.Fatalf("bob's own join or the room's creation is missing: %v", got)
		}
	})
}

func TestFederationRemoteInviteAndKnock(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two servers")
	}
	a, b := startFedPair(t, [2]string{"127.0.0.13", "127.0.0.14"})
	alice, bob, dave := register(t, a.client, "alice"), register(t, b.client, "bob"), register(t, b.client, "dave")
	bobID, daveID := "@bob:"+b.name, "@dave:"+b.name

	t.Run("createRoom invite", func(t *testing.T) {
		var cr struct {
			RoomID string `json:"room_id"`
		}
		body := map[string]any{"preset": "private_chat", "invite": []string{bobID}, "is_direct": true, "name": "for bob"}
		if code, err := call("POST", a.client+"/_matrix/client/v3/createRoom", alice, body, &cr); err != nil || code != 200 {
			t.Fatalf("createRoom: %d %v", code, err)
		}
		eventually(t, "bob's invite in his sync on B, with the room's name", func() bool {
			s := syncBody(b, bob)
			i := strings.Index(s, `"invite":{`)
			// The stripped state A sent with the invite (invite_room_state).
			return i >= 0 && strings.Contains(s[i:], cr.RoomID) && strings.Contains(s[i:], `"for bob"`) && strings.Contains(s[i:], `"m.room.create"`)
		})
		joinVia(t, b, bob, cr.RoomID, a.name)
		eventually(t, "A to see bob joined", func() bool { return membership(a, alice, cr.RoomID, bobID) == "join" })
	})

	t.Run("knock", func(t *testing.T) {
		var cr struct {
			RoomID string `json:"room_id"`
		}
		body := map[string]any{"preset": "private_chat", "initial_state": []any{map[string]any{
			"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "knock"}}}}
		if code, err := call("POST", a.client+"/_matrix/client/v3/createRoom", alice, body, &cr); err != nil || code != 200 {
			t.Fatalf("createRoom: %d %v", code, err)
		}
		room := cr.RoomID
		// Without a server to ask, B cannot find a v12 room.
		if code, _ := call("POST", b.client+"/_matrix/client/v3/knock/"+url.PathEscape(room), dave, map[string]any{}, nil); code == 200 {
			t.Fatal("knock without via succeeded")
		}
		var out struct {
			RoomID string `json:"room_id"`
		}
		code, err := call("POST", b.client+"/_matrix/client/v3/knock/"+url.PathEscape(room)+"?via="+url.QueryEscape(a.name), dave, map[string]any{"reason": "let me in"}, &out)
		if err != nil || code != 200 || out.RoomID != room {
			t.Fatalf("knock: %d %v %+v\n%s", code, err, out, b.logs)
		}
		eventually(t, "A to see dave knocking", func() bool { return membership(a, alice, room, daveID) == "knock" })
		eventually(t, "the knock in dave's sync on B", func() bool {
			s := syncBody(b, dave)
			i := strings.Index(s, `"knock":{`)
			return i >= 0 && strings.Contains(s[i:], room) && strings.Contains(s[i:], `"knock_state"`) && strings.Contains(s[i:], `"m.room.join_rules"`)
		})
		// A's admin accepts the knock with an invite; dave joins.
		if code, err := call("POST", a.client+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/invite", alice, map[string]any{"user_id": daveID}, nil); err != nil || code != 200 {
			t.Fatalf("invite: %d %v\n%s", code, err, a.logs)
		}
		eventually(t, "dave's invite on B", func() bool {
			s := syncBody(b, dave)
			i := strings.Index(s, `"invite":{`)
			return i >= 0 && strings.Contains(s[i:], room)
		})
		joinVia(t, b, dave, room, a.name)
		eventually(t, "A to see dave joined", func() bool { return membership(a, alice, room, daveID) == "join" })
		m := sendMsg(t, b, dave, room, "thanks for letting me in")
		eventually(t, "A to have dave's message", func() bool { return hasAll(t, a, alice, room, m) })
	})
}
