package federation

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"engram/projections"
)

func httpsClient(t *testing.T) *http.Client {
	pool, _ := testPKI(t)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

func httpsGet(t *testing.T, hc *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestHierarchyFederation: one server asks another for a room's hierarchy
// over TLS with a signed request; the answering side hands origin, room
// and suggested_only to what SetHierarchy installed.
func TestHierarchyFederation(t *testing.T) {
	a, b, c := startLiveFed(t, newKey(t)), startLiveFed(t, newKey(t)), startLiveFed(t, newKey(t))
	const room = "!space:example.org"
	var mu sync.Mutex
	var got []string
	a.SetHierarchy(func(origin, r string, suggested bool) ([]byte, int) {
		mu.Lock()
		got = append(got, origin, r, map[bool]string{true: "suggested", false: "all"}[suggested])
		mu.Unlock()
		if r != room {
			return []byte(`{"errcode":"M_NOT_FOUND","error":"Room does not exist."}`), 404
		}
		return []byte(`{"room":{"room_id":"` + room + `","children_state":[]},"children":[],"inaccessible_children":[]}`), 200
	})

	// Ourselves and an unreachable server are skipped or fail over.
	raw, err := b.Hierarchy([]string{b.name, "127.0.0.1:1", a.name}, room, true)
	if err != nil {
		t.Fatal(err)
	}
	var ans struct {
		Room struct {
			RoomID string `json:"room_id"`
		} `json:"room"`
	}
	if json.Unmarshal(raw, &ans) != nil || ans.Room.RoomID != room {
		t.Errorf("answer %s", raw)
	}
	mu.Lock()
	if strings.Join(got, " ") != b.name+" "+room+" suggested" {
		t.Errorf("handler saw %q", got)
	}
	mu.Unlock()

	for _, tt := range []struct {
		name    string
		servers []string
		room    string
	}{
		{"unknown room", []string{a.name}, "!other:example.org"},
		{"no SetHierarchy", []string{c.name}, room},
		{"nobody to ask", nil, room},
		{"only ourselves", []string{b.name, ""}, room},
	} {
		if raw, err := b.Hierarchy(tt.servers, tt.room, false); err == nil {
			t.Errorf("%s: answer %s", tt.name, raw)
		}
	}
	// An answer about another room is refused.
	a.SetHierarchy(func(string, string, bool) ([]byte, int) {
		return []byte(`{"room":{"room_id":"!else:example.org"},"children":[],"inaccessible_children":[]}`), 200
	})
	if _, err := b.Hierarchy([]string{a.name}, room, false); err == nil {
		t.Error("answer about another room accepted")
	}
	// The endpoint needs a signed request.
	if status, body := httpsGet(t, httpsClient(t), "https://"+a.name+"/_matrix/federation/v1/hierarchy/"+url.PathEscape(room)); status != 401 {
		t.Errorf("unsigned request: %d %s", status, body)
	}
}

// TestOpenIDUserinfo: the token a user requested is exchanged for the
// user ID until it expires; anything else is 401 M_UNKNOWN_TOKEN.
func TestOpenIDUserinfo(t *testing.T) {
	a := startLiveFed(t, newKey(t))
	now := time.Now().UnixMilli()
	add := func(tok, user string, expires int64) {
		h := sha256.Sum256([]byte(tok))
		rec, err := projections.Encode(&projections.OpenIDRecord{UserID: user, TokenHash: h[:], ExpiresTS: expires, TS: now - 10})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.log.Append(rec); err != nil {
			t.Fatal(err)
		}
	}
	add("good", "@alice:"+a.name, now+3600_000)
	add("old", "@bob:"+a.name, now-1)
	hc := httpsClient(t)
	base := "https://" + a.name + "/_matrix/federation/v1/openid/userinfo"
	tests := []struct {
		query  string
		status int
		want   string
	}{
		{"?access_token=good", 200, `{"sub":"@alice:` + a.name + `"}`},
		{"?access_token=old", 401, "M_UNKNOWN_TOKEN"},
		{"?access_token=nope", 401, "M_UNKNOWN_TOKEN"},
		{"", 401, "M_UNKNOWN_TOKEN"},
	}
	for _, tt := range tests {
		status, body := httpsGet(t, hc, base+tt.query)
		if status != tt.status || !strings.Contains(body, tt.want) {
			t.Errorf("%s: %d %s", tt.query, status, body)
		}
	}
}
