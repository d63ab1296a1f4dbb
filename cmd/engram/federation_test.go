package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"engram/dag"
)

// The federation test: three engram processes on 127.0.0.2, .3 and .4, each
// named by its federation IP:port and serving TLS with a certificate from a
// CA the test makes. A room on A; users of B and C join; messages flow all
// ways; B is stopped while A and C talk and catches up after a restart;
// forged requests and events are refused; a ban on A reaches B and C.

type fedNode struct {
	t        *testing.T
	name     string // server name = federation host:port
	ip       string
	dir      string
	client   string // client API base URL
	clientLn string
	args     []string
	cmd      *exec.Cmd
	logs     *bytes.Buffer
}

func freeAddrOn(t *testing.T, ip string) string {
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Skipf("cannot listen on %s: %v", ip, err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// testCA makes a CA and, for each IP, a server certificate with that IP SAN.
func testCA(t *testing.T, dir string, ips []string) (caFile string, certs, keys []string) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "engram test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	caFile = filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600)
	for i, ip := range ips {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: ip},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			IPAddresses: []net.IP{net.ParseIP(ip)}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, _ := x509.MarshalECPrivateKey(k)
		cf, kf := filepath.Join(dir, ip+".crt"), filepath.Join(dir, ip+".key")
		os.WriteFile(cf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
		os.WriteFile(kf, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
		certs, keys = append(certs, cf), append(keys, kf)
	}
	return caFile, certs, keys
}

func (n *fedNode) start() {
	t := n.t
	n.logs = &bytes.Buffer{}
	n.cmd = exec.Command(engramBin, n.args...)
	n.cmd.Stdout, n.cmd.Stderr = n.logs, n.logs
	n.cmd.Env = append(os.Environ(), "ENGRAM_PASSWORD_COST=4", "ENGRAM_FEDERATION_MAX_BACKOFF=1s")
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(n.client + "/"); err == nil {
			resp.Body.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not start:\n%s", n.name, n.logs)
}

func (n *fedNode) stop() {
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	n.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { n.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		n.cmd.Process.Kill()
		<-done
	}
	n.cmd = nil
}

func sendMsg(t *testing.T, n *fedNode, token, room, body string) string {
	t.Helper()
	var out struct {
		EventID string `json:"event_id"`
	}
	url := fmt.Sprintf("%s/_matrix/client/v3/rooms/%s/send/m.room.message/%d", n.client, room, time.Now().UnixNano())
	code, err := call("PUT", url, token, map[string]any{"msgtype": "m.text", "body": body}, &out)
	if err != nil || code != 200 {
		t.Fatalf("send on %s: %d %v\n%s", n.name, code, err, n.logs)
	}
	return out.EventID
}

// eventually retries cond for up to 30 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func hasAll(t *testing.T, n *fedNode, token, room string, ids ...string) bool {
	seen := roomEventIDs(t, n.client, token, room)
	for _, id := range ids {
		if !seen[id] {
			return false
		}
	}
	return true
}

func membership(n *fedNode, token, room, user string) string {
	var out struct {
		Membership string `json:"membership"`
	}
	code, err := call("GET", n.client+"/_matrix/client/v3/rooms/"+room+"/state/m.room.member/"+user, token, nil, &out)
	if err != nil || code != 200 {
		return ""
	}
	return out.Membership
}

// startFedNodes starts one engram per loopback IP, each with its own server
// name and a certificate of a test CA made here, and returns them with the
// CA file. They are stopped when the test ends, their logs shown if it
// failed.
func startFedNodes(t *testing.T, ips ...string) ([]*fedNode, string) {
	t.Helper()
	dir := t.TempDir()
	caFile, certs, keys := testCA(t, dir, ips)
	var nodes []*fedNode
	t.Cleanup(func() { // also after a failed start: stop those running
		for _, n := range nodes {
			n.stop()
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
			"--enable-registration", "--enable-metrics", "--log-level", "warn"}
		nodes = append(nodes, n)
		n.start()
	}
	return nodes, caFile
}

func TestFederation(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	nodes, _ := startFedNodes(t, "127.0.0.2", "127.0.0.3", "127.0.0.4")
	a, b, c := nodes[0], nodes[1], nodes[2]
	alice, bob, carol := register(t, a.client, "alice"), register(t, b.client, "bob"), register(t, c.client, "carol")
	aliceID, bobID := "@alice:"+a.name, "@bob:"+b.name
	room := createRoom(t, a.client, alice)

	// Users of B and C join through A.
	for _, j := range []struct {
		n     *fedNode
		token string
	}{{b, bob}, {c, carol}} {
		var out struct {
			RoomID string `json:"room_id"`
		}
		code, err := call("POST", j.n.client+"/_matrix/client/v3/join/"+room+"?server_name="+a.name, j.token, map[string]any{}, &out)
		if err != nil || code != 200 || out.RoomID != room {
			t.Fatalf("join on %s: %d %v %+v\n%s", j.n.name, code, err, out, j.n.logs)
		}
	}
	eventually(t, "A to see carol joined", func() bool { return membership(a, alice, room, "@carol:"+c.name) == "join" })
	eventually(t, "B to see carol joined", func() bool { return membership(b, bob, room, "@carol:"+c.name) == "join" })

	// Messages flow all ways.
	m1 := sendMsg(t, a, alice, room, "from A")
	m2 := sendMsg(t, b, bob, room, "from B")
	m3 := sendMsg(t, c, carol, room, "from C")
	for _, x := range []struct {
		n     *fedNode
		token string
	}{{a, alice}, {b, bob}, {c, carol}} {
		eventually(t, "messages on "+x.n.name, func() bool { return hasAll(t, x.n, x.token, room, m1, m2, m3) })
	}

	// Concurrent sends on all three make forks; every server ends with
	// every event and the same current state.
	var mu sync.Mutex
	var forked []string
	var wg sync.WaitGroup
	for _, x := range []struct {
		n     *fedNode
		token string
	}{{a, alice}, {b, bob}, {c, carol}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 8; i++ {
				id := sendMsg(t, x.n, x.token, room, fmt.Sprintf("concurrent %s %d", x.n.name, i))
				mu.Lock()
				forked = append(forked, id)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, x := range []struct {
		n     *fedNode
		token string
	}{{a, alice}, {b, bob}, {c, carol}} {
		eventually(t, "concurrent messages on "+x.n.name, func() bool { return hasAll(t, x.n, x.token, room, forked...) })
	}
	eventually(t, "the same state everywhere", func() bool {
		sa, sb, sc := stateIDs(a, alice, room), stateIDs(b, bob, room), stateIDs(c, carol, room)
		return sa != "" && sa == sb && sb == sc
	})

	// B stops; A and C talk; B catches up after a restart with no gap.
	b.stop()
	var missed []string
	for i := 0; i < 5; i++ {
		missed = append(missed, sendMsg(t, a, alice, room, fmt.Sprintf("A while B is down %d", i)))
		missed = append(missed, sendMsg(t, c, carol, room, fmt.Sprintf("C while B is down %d", i)))
	}
	b.start()
	eventually(t, "B to catch up", func() bool { return hasAll(t, b, bob, room, missed...) })
	eventually(t, "C to have A's messages", func() bool { return hasAll(t, c, carol, room, missed...) })

	// Forged requests and events sent to A are refused, nothing accepted.
	t.Run("forgeries", func(t *testing.T) { testForgeries(t, a, b, c, room, alice) })

	// EDUs, invites, knocks, aliases, profiles, directory, ACLs
	// (federation_more_test.go).
	testFederationFeatures(t, a, b, c, room, alice, bob, carol)

	// A ban on A takes effect on B and C.
	if code, err := call("POST", a.client+"/_matrix/client/v3/rooms/"+room+"/ban", alice, map[string]any{"user_id": bobID}, nil); err != nil || code != 200 {
		t.Fatalf("ban: %d %v", code, err)
	}
	eventually(t, "ban on C", func() bool { return membership(c, carol, room, bobID) == "ban" })
	eventually(t, "ban on B", func() bool {
		url := fmt.Sprintf("%s/_matrix/client/v3/rooms/%s/send/m.room.message/ban%d", b.client, room, time.Now().UnixNano())
		code, _ := call("PUT", url, bob, map[string]any{"msgtype": "m.text", "body": "still here?"}, nil)
		return code == 403
	})
	_ = aliceID

	// A's metrics show its outbound queue (B and C) and its group commits.
	resp, err := http.Get(a.client + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"engram_federation_destinations 2\n", "engram_federation_queue_records ",
		"engram_federation_queue_edus ", `engram_log_group_records_bucket{le="+Inf"} `, "engram_log_fsync_seconds_count ",
		"engram_log_apply_seconds_sum "} {
		if !strings.Contains(string(page), want) {
			t.Errorf("A's metrics lack %q:\n%s", want, page)
		}
	}
}

// stateIDs is a room's current state as a comparable string.
func stateIDs(n *fedNode, token, room string) string {
	var state []struct {
		EventID string `json:"event_id"`
	}
	if code, err := call("GET", n.client+"/_matrix/client/v3/rooms/"+room+"/state", token, nil, &state); err != nil || code != 200 {
		return ""
	}
	ids := make([]string, len(state))
	for i, e := range state {
		ids[i] = e.EventID
	}
	sort.Strings(ids)
	return strings.Join(ids, ",")
}

// fedClient talks TLS to the test servers.
func fedClient(caFile string) *http.Client {
	pool := x509.NewCertPool()
	b, _ := os.ReadFile(caFile)
	pool.AppendCertsFromPEM(b)
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// signedRequest sends a request to dest signed as origin with key.
func signedRequest(t *testing.T, hc *http.Client, method, dest, origin, path string, key dag.SigningKey, body []byte) (int, []byte) {
	t.Helper()
	obj := map[string]any{"method": method, "uri": path, "origin": origin, "destination": dest}
	if body != nil {
		obj["content"] = json.RawMessage(body)
	}
	raw, _ := json.Marshal(obj)
	signed, err := dag.SignJSON(raw, origin, key.ID, key.Key)
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	json.Unmarshal(signed, &s)
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, _ := http.NewRequest(method, "https://"+dest+path, rd)
	req.Header.Set("Authorization", fmt.Sprintf(`X-Matrix origin="%s",destination="%s",key="%s",sig="%s"`, origin, dest, key.ID, s.Signatures[origin][key.ID]))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func testForgeries(t *testing.T, a, b, c *fedNode, room, aliceToken string) {
	hc := fedClient(filepath.Join(filepath.Dir(a.dir), "ca.pem"))
	bKey, err := dag.LoadSigningKey(filepath.Join(b.dir, "signing.key"))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := dag.GenerateSigningKey()
	other.ID = bKey.ID

	// The room's state, to build events against.
	var state []struct {
		Type     string `json:"type"`
		StateKey string `json:"state_key"`
		EventID  string `json:"event_id"`
	}
	if code, err := call("GET", a.client+"/_matrix/client/v3/rooms/"+room+"/state", aliceToken, nil, &state); err != nil || code != 200 {
		t.Fatalf("state: %d %v", code, err)
	}
	var pl, create string
	for _, e := range state {
		switch e.Type {
		case "m.room.power_levels":
			pl = e.EventID
		case "m.room.create":
			create = e.EventID
		}
	}
	latest := sendMsg(t, a, aliceToken, room, "latest")
	ver := dag.Version(dag.DefaultRoomVersion)
	mkEvent := func(sender string, key dag.SigningKey) *dag.Event {
		auth := []string{pl}
		if !ver.RoomIDFromCreate {
			auth = append(auth, create)
		}
		ev, err := dag.Build(dag.ProtoEvent{RoomID: room, Sender: sender, Type: "m.room.message",
			Content: json.RawMessage(`{"msgtype":"m.text","body":"forged"}`), PrevEvents: []string{latest},
			AuthEvents: auth, Depth: 100, OriginServerTS: time.Now().UnixMilli()}, ver, b.name, key.ID, key.Key)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	txn := func(evs ...*dag.Event) []byte {
		pdus := make([]json.RawMessage, len(evs))
		for i, e := range evs {
			pdus[i] = e.Raw
		}
		body, _ := json.Marshal(map[string]any{"origin": b.name, "origin_server_ts": time.Now().UnixMilli(), "pdus": pdus, "edus": []any{}})
		return body
	}
	notStored := func(id string) {
		t.Helper()
		code, _ := call("GET", a.client+"/_matrix/client/v3/rooms/"+room+"/event/"+id, aliceToken, nil, nil)
		if code == 200 {
			t.Errorf("event %s is served", id)
		}
		if hasAll(t, a, aliceToken, room, id) {
			t.Errorf("event %s is in the timeline", id)
		}
	}

	// A wrong X-Matrix origin: signed with B's key, claiming to be C.
	forged := mkEvent("@bob:"+b.name, other)
	code, _ := signedRequest(t, hc, "PUT", a.name, c.name, "/_matrix/federation/v1/send/forge1", bKey, txn(forged))
	if code != 401 {
		t.Errorf("wrong origin: got %d, want 401", code)
	}
	// A request for another destination.
	req0, _ := http.NewRequest("GET", "https://"+a.name+"/_matrix/federation/v1/event/"+latest, nil)
	req0.Header.Set("Authorization", `X-Matrix origin="`+b.name+`",destination="`+c.name+`",key="`+bKey.ID+`",sig="AAAA"`)
	if resp, err := hc.Do(req0); err != nil || resp.StatusCode != 401 {
		t.Errorf("wrong destination: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// No authorization at all.
	req, _ := http.NewRequest("PUT", "https://"+a.name+"/_matrix/federation/v1/send/forge0", bytes.NewReader(txn(forged)))
	if resp, err := hc.Do(req); err != nil || resp.StatusCode != 401 {
		t.Errorf("no auth: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// A properly signed request from B, which is in the room, is served.
	if code, body := signedRequest(t, hc, "GET", a.name, b.name, "/_matrix/federation/v1/event/"+latest, bKey, nil); code != 200 || !strings.Contains(string(body), `"body":"latest"`) {
		t.Errorf("signed /event: %d %s", code, body)
	}
	// A forged event signature in a properly signed transaction.
	code, body := signedRequest(t, hc, "PUT", a.name, b.name, "/_matrix/federation/v1/send/forge2", bKey, txn(forged))
	if code != 200 || !strings.Contains(string(body), forged.ID) || !strings.Contains(string(body), "error") {
		t.Errorf("forged signature: %d %s", code, body)
	}
	notStored(forged.ID)
	// A validly signed event that fails the auth rules (sender not in the room).
	bad := mkEvent("@mallory:"+b.name, bKey)
	code, body = signedRequest(t, hc, "PUT", a.name, b.name, "/_matrix/federation/v1/send/forge3", bKey, txn(bad))
	if code != 200 || !strings.Contains(string(body), "rejected") {
		t.Errorf("unauthorised event: %d %s", code, body)
	}
	notStored(bad.ID)
	// The key server answers, signed.
	resp, err := hc.Get("https://" + a.name + "/_matrix/key/v2/server")
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(kb), `"server_name":"`+a.name+`"`) || !strings.Contains(string(kb), "signatures") {
		t.Errorf("key response: %s", kb)
	}
}
