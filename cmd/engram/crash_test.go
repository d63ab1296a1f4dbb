package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The HTTP-level crash test: a real engram process takes concurrent sends,
// is killed with SIGKILL at a random moment, restarts on the same data, and
// must hold every send it acknowledged; replay --verify must then agree.

var engramBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "engram-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	engramBin = filepath.Join(dir, "engram")
	out, err := exec.Command("go", "build", "-o", engramBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building engram: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// server is a running engram child process.
type server struct {
	t    *testing.T
	cmd  *exec.Cmd
	url  string
	dir  string
	addr string
	logs *bytes.Buffer
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func startServer(t *testing.T, dir, addr string) *server {
	t.Helper()
	s := &server{t: t, dir: dir, addr: addr, url: "http://" + addr, logs: &bytes.Buffer{}}
	s.cmd = exec.Command(engramBin, "serve", "--dev", "--data-dir", dir, "--client-listen", addr, "--log-level", "warn")
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	s.cmd.Env = append(os.Environ(), "ENGRAM_PASSWORD_COST=4")
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(s.url + "/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return s
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.cmd.Process.Kill()
	t.Fatalf("server did not start:\n%s", s.logs.String())
	return nil
}

func (s *server) kill() {
	s.cmd.Process.Signal(syscall.SIGKILL)
	s.cmd.Wait()
}

func (s *server) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		s.cmd.Process.Kill()
		s.t.Errorf("server did not stop on SIGTERM:\n%s", s.logs.String())
	}
}

var client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

// call does one JSON request and decodes the answer into out (if not nil).
func call(method, url, token string, body any, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: %w: %s", method, url, err, b)
		}
	}
	return resp.StatusCode, nil
}

func register(t *testing.T, base, user string) string {
	t.Helper()
	var first struct {
		Session string `json:"session"`
	}
	body := map[string]any{"username": user, "password": "pw-" + user}
	if code, err := call("POST", base+"/_matrix/client/v3/register", "", body, &first); err != nil || code != 401 {
		t.Fatalf("register %s: %d %v", user, code, err)
	}
	body["auth"] = map[string]any{"type": "m.login.dummy", "session": first.Session}
	var done struct {
		AccessToken string `json:"access_token"`
	}
	if code, err := call("POST", base+"/_matrix/client/v3/register", "", body, &done); err != nil || code != 200 {
		t.Fatalf("register %s: %d %v", user, code, err)
	}
	return done.AccessToken
}

func createRoom(t *testing.T, base, token string) string {
	t.Helper()
	var out struct {
		RoomID string `json:"room_id"`
	}
	if code, err := call("POST", base+"/_matrix/client/v3/createRoom", token, map[string]any{"preset": "public_chat"}, &out); err != nil || code != 200 {
		t.Fatalf("createRoom: %d %v", code, err)
	}
	return out.RoomID
}

// roomEventIDs pages a room's whole history backwards.
func roomEventIDs(t *testing.T, base, token, room string) map[string]bool {
	t.Helper()
	seen := map[string]bool{}
	from := ""
	for i := 0; i < 10000; i++ {
		var page struct {
			Chunk []struct {
				EventID string `json:"event_id"`
			} `json:"chunk"`
			End string `json:"end"`
		}
		url := base + "/_matrix/client/v3/rooms/" + room + "/messages?dir=b&limit=500"
		if from != "" {
			url += "&from=" + from
		}
		if code, err := call("GET", url, token, nil, &page); err != nil || code != 200 {
			t.Fatalf("messages: %d %v", code, err)
		}
		for _, e := range page.Chunk {
			if seen[e.EventID] {
				t.Fatalf("event %s returned twice", e.EventID)
			}
			seen[e.EventID] = true
		}
		if page.End == "" {
			return seen
		}
		from = page.End
	}
	t.Fatal("pagination did not end")
	return nil
}

func TestCrashHTTPAcknowledgedSendsSurvive(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	srv := startServer(t, dir, addr)
	token := register(t, srv.url, "crash")
	room := createRoom(t, srv.url, token)

	acked := map[string]bool{}
	for round := 0; round < 3; round++ {
		var (
			mu   sync.Mutex
			wg   sync.WaitGroup
			stop = make(chan struct{})
		)
		for w := 0; w < 16; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 0; i < 100000; i++ {
					select {
					case <-stop:
						return
					default:
					}
					var out struct {
						EventID string `json:"event_id"`
					}
					url := fmt.Sprintf("%s/_matrix/client/v3/rooms/%s/send/m.room.message/r%d-w%d-%d", srv.url, room, round, w, i)
					code, err := call("PUT", url, token, map[string]any{"msgtype": "m.text", "body": "hello"}, &out)
					if err != nil || code != 200 {
						return // the server died under us: this send was not acknowledged
					}
					mu.Lock()
					acked[out.EventID] = true
					mu.Unlock()
				}
			}(w)
		}
		time.Sleep(time.Duration(200+rand.IntN(400)) * time.Millisecond)
		srv.kill()
		close(stop)
		wg.Wait()

		srv = startServer(t, dir, addr)
		have := roomEventIDs(t, srv.url, token, room)
		for id := range acked {
			if !have[id] {
				t.Fatalf("round %d: acknowledged event %s lost after kill -9", round, id)
			}
		}
		t.Logf("round %d: %d acknowledged sends, %d events present", round, len(acked), len(have))
	}
	srv.stop()

	out, err := exec.Command(engramBin, "replay", "--data-dir", dir, "--verify").CombinedOutput()
	if err != nil {
		t.Fatalf("replay --verify: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "replayed") {
		t.Fatalf("replay output: %s", out)
	}
}
