package api

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// fakeMemberFed records the remote invites and knocks the client API asks
// of the federation.
type fakeMemberFed struct {
	Federation
	mu       sync.Mutex
	invites  []string
	knocks   []string
	knockErr error
}

func (f *fakeMemberFed) SendEDU([]string, string, any) {}

func (f *fakeMemberFed) Invite(room, sender, target string, content json.RawMessage) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.invites = append(f.invites, target+" "+string(content))
	return "$invite", nil
}

func (f *fakeMemberFed) Knock(room, user string, via []string, extra json.RawMessage) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.knocks = append(f.knocks, room+" "+user+" via "+strings.Join(via, ",")+" "+string(extra))
	return "$knock", f.knockErr
}

type statusErr int

func (e statusErr) Error() string   { return fmt.Sprintf("HTTP %d", int(e)) }
func (e statusErr) StatusCode() int { return int(e) }

// TestCreateRoomRemoteInvites: invitees of other servers are invited over
// federation once the room exists, not with an invite sequenced here only.
func TestCreateRoomRemoteInvites(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	ff := &fakeMemberFed{}
	ts.srv.fed = ff
	alice := ts.register("alice")
	ts.register("carol")
	carol := "@carol:" + ts.srv.cfg.ServerName
	r := ts.do("POST", "/_matrix/client/v3/createRoom", alice, `{"preset":"private_chat","is_direct":true,"invite":["@bob:remote.test","`+carol+`"]}`)
	if r.status != 200 {
		t.Fatalf("createRoom: %d %s", r.status, r.body)
	}
	room := r.field("room_id")
	if len(ff.invites) != 1 || !strings.HasPrefix(ff.invites[0], "@bob:remote.test ") || !strings.Contains(ff.invites[0], `"is_direct":true`) {
		t.Fatalf("remote invites: %v", ff.invites)
	}
	base := "/_matrix/client/v3/rooms/" + url.PathEscape(room) + "/state/m.room.member/"
	if r := ts.do("GET", base+carol, alice, ""); r.status != 200 || !strings.Contains(string(r.body), `"invite"`) {
		t.Fatalf("local invitee: %d %s", r.status, r.body)
	}
	if r := ts.do("GET", base+"@bob:remote.test", alice, ""); r.status != 404 {
		t.Fatalf("remote invitee has a local-only invite: %d %s", r.status, r.body)
	}
}

// TestKnockRemote: a knock on a room this server does not know goes to the
// federation with the via and server_name servers and the knock content.
func TestKnockRemote(t *testing.T) {
	ts := newTestServer(t, Config{EnableRegistration: true})
	ff := &fakeMemberFed{}
	ts.srv.fed = ff
	bob := ts.register("bob")
	room := "!r:remote.test"
	r := ts.do("POST", "/_matrix/client/v3/knock/"+url.PathEscape(room)+"?via=a.test&server_name=b.test", bob, `{"reason":"hi"}`)
	if r.status != 200 || r.field("room_id") != room {
		t.Fatalf("knock: %d %s", r.status, r.body)
	}
	if len(ff.knocks) != 1 || !strings.Contains(ff.knocks[0], " via a.test,b.test ") || !strings.Contains(ff.knocks[0], `"reason":"hi"`) || !strings.Contains(ff.knocks[0], `"membership":"knock"`) {
		t.Fatalf("knocks: %v", ff.knocks)
	}
	for _, c := range []struct {
		err  error
		want int
	}{{statusErr(403), 403}, {statusErr(404), 404}, {fmt.Errorf("unreachable"), 403}} {
		ff.knockErr = c.err
		if r := ts.do("POST", "/_matrix/client/v3/knock/"+url.PathEscape(room), bob, `{}`); r.status != c.want {
			t.Fatalf("knock failing with %v: %d %s", c.err, r.status, r.body)
		}
	}
}

// TestPageTokens: both kinds of pagination token parse and print back.
func TestPageTokens(t *testing.T) {
	for _, c := range []struct {
		in   string
		ok   bool
		want pagePos
	}{
		{"t12", true, pagePos{pos: 12}},
		{"s12_3", true, pagePos{pos: 12}},
		{"b65536", true, pagePos{pos: 65536, bf: true}},
		{"b0", true, pagePos{bf: true}},
		{"b", false, pagePos{}},
		{"b-1", false, pagePos{}},
		{"x1", false, pagePos{}},
		{"", false, pagePos{}},
	} {
		got, ok := parsePagePos(c.in)
		if ok != c.ok || (ok && got != c.want) {
			t.Errorf("%q: %+v %v", c.in, got, ok)
		}
		if ok && c.in[0] != 's' && got.token() != c.in {
			t.Errorf("%q prints as %q", c.in, got.token())
		}
	}
}

func FuzzPagePos(f *testing.F) {
	for _, s := range []string{"t1", "b1", "s1_2", "b18446744073709551615", "bx"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, ok := parsePagePos(s)
		if !ok {
			return
		}
		if q, ok := parsePagePos(p.token()); !ok || q != p {
			t.Fatalf("%q -> %+v -> %q -> %+v", s, p, p.token(), q)
		}
	})
}
