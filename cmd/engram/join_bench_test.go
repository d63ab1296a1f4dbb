package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"engram/api"
	"engram/dag/rooms"
)

// The large-room join benchmark (federation issue): a user of B joins a
// room of A whose state holds N joined members. Two engram servers run in
// this process, each with its own log, serving TLS federation on 127.0.0.2
// and 127.0.0.3 with certificates from a CA the test makes. The room is
// filled through A's sequencer (real signed, auth-checked events, appended
// by concurrent Sends so they share fsyncs); what is measured is B's user's
// POST /join/{roomId}?server_name=A until it returns plus the /sync that
// first shows the room.

// joinNode is an in-process engram with federation.
type joinNode struct {
	name   string // server name = federation host:port
	client string // client API base URL
	n      *node
	seq    *rooms.Sequencer
	stop   func()
}

// joinPKI is a test CA and a certificate per IP, as files (the serve
// configuration takes paths).
type joinPKI struct {
	ca          string
	certs, keys map[string]string
}

func newJoinPKI(tb testing.TB, dir string, ips ...string) joinPKI {
	tb.Helper()
	p := joinPKI{certs: map[string]string{}, keys: map[string]string{}}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "engram join bench CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	p.ca = filepath.Join(dir, "ca.pem")
	write := func(path, typ string, der []byte) {
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	write(p.ca, "CERTIFICATE", caDER)
	for i, ip := range ips {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: ip},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			IPAddresses: []net.IP{net.ParseIP(ip)}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			tb.Fatal(err)
		}
		kb, _ := x509.MarshalECPrivateKey(k)
		p.certs[ip], p.keys[ip] = filepath.Join(dir, ip+".crt"), filepath.Join(dir, ip+".key")
		write(p.certs[ip], "CERTIFICATE", der)
		write(p.keys[ip], "EC PRIVATE KEY", kb)
	}
	return p
}

func joinFreeAddr(tb testing.TB, ip string) string {
	tb.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		tb.Skipf("cannot listen on %s: %v", ip, err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startJoinNode starts an engram with federation on ip, wired as serve
// wires it.
func startJoinNode(tb testing.TB, dir, ip string, pki joinPKI) *joinNode {
	tb.Helper()
	fed, cl := joinFreeAddr(tb, ip), joinFreeAddr(tb, ip)
	cfg := Config{ServerName: fed, DataDir: dir, ClientListen: cl, FederationListen: fed,
		TLSCert: pki.certs[ip], TLSKey: pki.keys[ip], FederationCA: pki.ca, EnableRegistration: true, PasswordCost: 4}
	cfg.fillDefaults()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("ENGRAM_JOIN_BENCH_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	n, err := openNode(cfg, logger)
	if err != nil {
		tb.Fatal(err)
	}
	key, err := signingKey(cfg.SigningKeyPath)
	if err != nil {
		tb.Fatal(err)
	}
	seq := rooms.New(rooms.Config{ServerName: cfg.ServerName, KeyID: key.ID, Key: key.Key}, n.log, n.store)
	srv := api.New(api.Config{ServerName: cfg.ServerName, EnableRegistration: true, PasswordCost: 4,
		MaxBodyBytes: cfg.MaxBodyBytes, DefaultRoomVersion: cfg.DefaultRoomVersion, Accounts: accountsConfig(cfg)},
		n.log, n.store, seq, logger)
	ln, err := net.Listen("tcp", cl)
	if err != nil {
		tb.Fatal(err)
	}
	stopFed, err := startFederation(cfg, n, seq, srv, key, logger)
	if err != nil {
		ln.Close()
		tb.Fatal(err)
	}
	go srv.Serve(ln)
	jn := &joinNode{name: fed, client: "http://" + cl, n: n, seq: seq}
	var once sync.Once
	jn.stop = func() {
		once.Do(func() {
			srv.Shutdown()
			stopFed()
			n.close()
		})
	}
	tb.Cleanup(jn.stop)
	return jn
}

// joinRoomOf builds, on A, a public room with members joined members
// besides its creator: concurrent Sends through the sequencer, so the
// events are built, signed and auth-checked as any client's join, and
// share group commits. It returns the room ID.
func joinRoomOf(tb testing.TB, a *joinNode, members int) string {
	tb.Helper()
	token := joinRegister(tb, a.client, "alice")
	var cr struct {
		RoomID string `json:"room_id"`
	}
	if code, err := call("POST", a.client+"/_matrix/client/v3/createRoom", token, map[string]any{"preset": "public_chat"}, &cr); err != nil || code != 200 {
		tb.Fatalf("createRoom: %d %v", code, err)
	}
	room := cr.RoomID
	host := a.name
	workers := 64
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(members) {
					return
				}
				user := fmt.Sprintf("@m%05d:%s", i, host)
				content, _ := json.Marshal(map[string]any{"membership": "join", "displayname": "Member " + strconv.FormatInt(i, 10)})
				if _, err := a.seq.Send(rooms.Event{Room: room, Sender: user, Type: "m.room.member", StateKey: &user, Content: content}); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		tb.Fatal(err)
	}
	return room
}

// joinRegister registers user (dummy auth) and returns an access token.
func joinRegister(tb testing.TB, base, user string) string {
	tb.Helper()
	var first struct {
		Session string `json:"session"`
	}
	body := map[string]any{"username": user, "password": "pw-" + user}
	if code, err := call("POST", base+"/_matrix/client/v3/register", "", body, &first); err != nil || code != 401 {
		tb.Fatalf("register %s: %d %v", user, code, err)
	}
	body["auth"] = map[string]any{"type": "m.login.dummy", "session": first.Session}
	var done struct {
		AccessToken string `json:"access_token"`
	}
	if code, err := call("POST", base+"/_matrix/client/v3/register", "", body, &done); err != nil || code != 200 {
		tb.Fatalf("register %s: %d %v", user, code, err)
	}
	return done.AccessToken
}

// syncJoined does one /sync and reports whether room is in rooms.join,
// with how many m.room.member events its state and timeline carry.
func syncJoined(tb testing.TB, n *joinNode, token, since, room string, timeout int) (next string, joined bool, members int) {
	tb.Helper()
	var out struct {
		NextBatch string `json:"next_batch"`
		Rooms     struct {
			Join map[string]struct {
				State struct {
					Events []struct {
						Type string `json:"type"`
					} `json:"events"`
				} `json:"state"`
				Timeline struct {
					Events []struct {
						Type string `json:"type"`
					} `json:"events"`
				} `json:"timeline"`
			} `json:"join"`
		} `json:"rooms"`
	}
	u := n.client + "/_matrix/client/v3/sync?timeout=" + strconv.Itoa(timeout)
	if since != "" {
		u += "&since=" + url.QueryEscape(since)
	}
	var raw json.RawMessage
	code, err := call("GET", u, token, nil, &raw)
	if os.Getenv("ENGRAM_JOIN_BENCH_DUMP") != "" {
		fmt.Fprintf(os.Stderr, "SYNC %s\n", raw)
	}
	_ = json.Unmarshal(raw, &out)
	if err != nil || code != 200 {
		tb.Fatalf("sync on %s: %d %v", n.name, code, err)
	}
	jr, ok := out.Rooms.Join[room]
	if ok {
		for _, e := range jr.State.Events {
			if e.Type == "m.room.member" {
				members++
			}
		}
		for _, e := range jr.Timeline.Events {
			if e.Type == "m.room.member" {
				members++
			}
		}
	}
	return out.NextBatch, ok, members
}

// joinFromB is the measured part: B's user joins the room through A and
// syncs until the room shows. It returns the member events the first sync
// showing the room carried and how long the join alone took.
func joinFromB(tb testing.TB, b *joinNode, token, since, room, via string) (members int, joinTook time.Duration) {
	tb.Helper()
	start := time.Now()
	var out struct {
		RoomID string `json:"room_id"`
	}
	u := b.client + "/_matrix/client/v3/join/" + url.PathEscape(room) + "?server_name=" + url.QueryEscape(via)
	req, err := http.NewRequest("POST", u, strings.NewReader("{}"))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	// Longer than call's 30 s: a slow join is a figure, not a failure.
	resp, err := (&http.Client{Timeout: 10 * time.Minute}).Do(req)
	if err != nil {
		tb.Fatalf("join from %s: %v", b.name, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err := json.Unmarshal(body, &out); err != nil || resp.StatusCode != 200 || out.RoomID != room {
		tb.Fatalf("join from %s after %v: %d %s", b.name, time.Since(start).Round(time.Millisecond), resp.StatusCode, body)
	}
	joinTook = time.Since(start)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		next, joined, m := syncJoined(tb, b, token, since, room, 5000)
		if joined {
			return m, joinTook
		}
		since = next
	}
	tb.Fatalf("room %s never showed in %s's sync", room, b.name)
	return 0, 0
}

// joinBenchSetup starts A with a room of members joined members, and
// returns a function that starts a fresh B with a registered user who has
// synced once (its since token).
type joinBench struct {
	dir  string
	pki  joinPKI
	a    *joinNode
	room string
}

func newJoinBench(tb testing.TB, members int) *joinBench {
	dir := tb.TempDir()
	pki := newJoinPKI(tb, dir, "127.0.0.2", "127.0.0.3")
	a := startJoinNode(tb, filepath.Join(dir, "a"), "127.0.0.2", pki)
	return &joinBench{dir: dir, pki: pki, a: a, room: joinRoomOf(tb, a, members)}
}

func (jb *joinBench) freshB(tb testing.TB, i int) (b *joinNode, token, since string) {
	b = startJoinNode(tb, filepath.Join(jb.dir, fmt.Sprintf("b%d", i)), "127.0.0.3", jb.pki)
	token = joinRegister(tb, b.client, "bob")
	since, _, _ = syncJoined(tb, b, token, "", jb.room, 0)
	return b, token, since
}

// joinedMembers is GET /joined_members on n: how many members are joined.
func joinedMembers(tb testing.TB, n *joinNode, token, room string) int {
	tb.Helper()
	var out struct {
		Joined map[string]json.RawMessage `json:"joined"`
	}
	code, err := call("GET", n.client+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/joined_members", token, nil, &out)
	if err != nil || code != 200 {
		tb.Fatalf("joined_members on %s: %d %v", n.name, code, err)
	}
	return len(out.Joined)
}

// TestJoinLargeRoom runs the benchmark's scenario on a small room: B's
// user joins, B holds the room's full membership, and A sees the join. No
// timing assertions.
func TestJoinLargeRoom(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two servers")
	}
	const members = 300 // above the 256 events from which the checks run in parallel
	jb := newJoinBench(t, members)
	b, token, since := jb.freshB(t, 0)
	got, _ := joinFromB(t, b, token, since, jb.room, jb.a.name)
	// No lazy loading: the first sync showing the room has its whole
	// state (alice, the members, bob), in state or timeline.
	if got < members+2 {
		t.Fatalf("first sync showing the room has %d member events, want %d", got, members+2)
	}
	// alice + members + bob
	if n, want := joinedMembers(t, b, token, jb.room), members+2; n != want {
		t.Fatalf("B has %d joined members, want %d", n, want)
	}
	var st struct {
		Membership string `json:"membership"`
	}
	bob := "@bob:" + b.name
	tokA := login(t, &fedNode{client: jb.a.client}, "alice")
	eventually(t, "bob joined on A", func() bool {
		code, err := call("GET", jb.a.client+"/_matrix/client/v3/rooms/"+url.PathEscape(jb.room)+"/state/m.room.member/"+url.PathEscape(bob), tokA, nil, &st)
		return err == nil && code == 200 && st.Membership == "join"
	})
	// B's shutdown does not wait for inbound transactions still running
	// (api/federation processPDUs): let the traffic about the join settle.
	waitIdle(t, 30*time.Second)
}

// processCPU is the CPU time this process (A, B and the clients) has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// waitIdle waits until the process has used under 2% of a core in each
// of four consecutive half-seconds, so that the background work of the
// setup (A's federation sender and device-list loops walking 10,000
// joins) does not run during the measurement. Several windows in a row,
// because on a machine others load too a busy process can look quiet for
// one.
func waitIdle(tb testing.TB, max time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(max)
	quiet := 0
	for time.Now().Before(deadline) {
		c0 := processCPU()
		time.Sleep(500 * time.Millisecond)
		if processCPU()-c0 < 10*time.Millisecond {
			if quiet++; quiet == 4 {
				return
			}
		} else {
			quiet = 0
		}
	}
	tb.Logf("process still busy after %v", max)
}

// BenchmarkJoinLargeRoom: ENGRAM_JOIN_BENCH_MEMBERS members (10,000 by
// default). The room is built once (not measured); each iteration starts
// a fresh B (not measured) whose user joins, so every iteration is a first
// join for B, and A's room grows by one member per iteration. Iteration 0
// is also A's first send_join for the room (cold caches). Reported: ns/op
// (POST /join plus the first /sync showing the room), join-ms (the POST
// alone) and cpu-ms (CPU time of the whole process, both servers, during
// the measured part: steadier than wall time on a shared machine). ENGRAM_JOIN_BENCH_CPUPROFILE=file profiles the measured part of
// iteration 0 only.
func BenchmarkJoinLargeRoom(b *testing.B) {
	members := 10000
	if v, err := strconv.Atoi(os.Getenv("ENGRAM_JOIN_BENCH_MEMBERS")); err == nil && v > 0 {
		members = v
	}
	setup := time.Now()
	jb := newJoinBench(b, members)
	fmt.Fprintf(os.Stderr, "join-bench: room of %d members on A in %v\n", members, time.Since(setup).Round(time.Millisecond))
	waitIdle(b, 10*time.Minute)
	fmt.Fprintf(os.Stderr, "join-bench: A idle after %v\n", time.Since(setup).Round(time.Millisecond))
	iter := 0
	b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
		b.ReportAllocs()
		var joinTotal, cpuTotal time.Duration
		b.StopTimer()
		for i := 0; i < b.N; i++ {
			node, token, since := jb.freshB(b, iter)
			waitIdle(b, time.Minute)
			var prof *os.File
			if path := os.Getenv("ENGRAM_JOIN_BENCH_CPUPROFILE"); path != "" && iter == 0 {
				var err error
				if prof, err = os.Create(path); err != nil {
					b.Fatal(err)
				}
				if err := pprof.StartCPUProfile(prof); err != nil {
					b.Fatal(err)
				}
			}
			start, cpu0 := time.Now(), processCPU()
			b.StartTimer()
			got, jt := joinFromB(b, node, token, since, jb.room, jb.a.name)
			b.StopTimer()
			took, cpu := time.Since(start), processCPU()-cpu0
			if prof != nil {
				pprof.StopCPUProfile()
				prof.Close()
			}
			joinTotal += jt
			cpuTotal += cpu
			// On stderr: go test keeps only part of a benchmark's log.
			fmt.Fprintf(os.Stderr, "join-bench: iteration %d: join %v, join+sync %v, CPU %v (%d member events in that sync)\n", iter,
				jt.Round(time.Millisecond), took.Round(time.Millisecond), cpu.Round(time.Millisecond), got)
			if n := joinedMembers(b, node, token, jb.room); n < members+2 {
				b.Fatalf("B has %d joined members, want at least %d", n, members+2)
			}
			// Not measured: what serving the full state to the client costs
			// (the first sync carries it only once sync serves the state
			// before a remote join).
			t0 := time.Now()
			var st []json.RawMessage
			if code, err := call("GET", node.client+"/_matrix/client/v3/rooms/"+url.PathEscape(jb.room)+"/state", token, nil, &st); err != nil || code != 200 {
				b.Fatalf("state on B: %d %v", code, err)
			}
			fmt.Fprintf(os.Stderr, "join-bench: iteration %d: GET /state on B: %d events in %v\n", iter, len(st), time.Since(t0).Round(time.Millisecond))
			// Let B's and A's federation traffic about the join settle: B's
			// shutdown does not wait for its inbound transactions.
			waitIdle(b, time.Minute)
			node.stop()
			iter++
		}
		b.ReportMetric(float64(joinTotal.Milliseconds())/float64(b.N), "join-ms")
		b.ReportMetric(float64(cpuTotal.Milliseconds())/float64(b.N), "cpu-ms")
	})
}
