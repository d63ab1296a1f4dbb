package federation

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"engram/dag"
	"engram/dag/rooms"
	"engram/log"
	"engram/projections"
)

// Servers of these tests listen on 127.0.0.1 with TLS certificates of a
// test CA; each is named by its address, an IP literal, so discovery needs
// no DNS.

var (
	pkiOnce sync.Once
	pkiPool *x509.CertPool
	pkiCert tls.Certificate
	pkiErr  error
)

func testPKI(t testing.TB) (*x509.CertPool, tls.Certificate) {
	t.Helper()
	pkiOnce.Do(func() {
		caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "engram federation test CA"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
			KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
		caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
		if err != nil {
			pkiErr = err
			return
		}
		ca, _ := x509.ParseCertificate(caDER)
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			pkiErr = err
			return
		}
		pkiPool = x509.NewCertPool()
		pkiPool.AddCert(ca)
		pkiCert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
	})
	if pkiErr != nil {
		t.Fatal(pkiErr)
	}
	return pkiPool, pkiCert
}

func tlsListener(t testing.TB) (net.Listener, string) {
	t.Helper()
	_, cert := testPKI(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skipf("no loopback: %v", err)
	}
	return tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}), ln.Addr().String()
}

// liveFed is a Federation serving on loopback, with a log and a store.
type liveFed struct {
	*Federation
	name string
	log  *log.Log
	stop func()
}

func startLiveFed(t testing.TB, key dag.SigningKey) *liveFed {
	t.Helper()
	pool, _ := testPKI(t)
	ln, name := tlsListener(t)
	set, _ := projections.All()
	l, err := log.Open(log.Options{Dir: t.TempDir(), Apply: set.Apply, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	st, _ := projections.NewStore(l, l.DB(), 1<<20)
	seq := rooms.New(rooms.Config{ServerName: name, KeyID: key.ID, Key: key.Key}, l, st)
	f := New(Config{ServerName: name, Key: key, RootCAs: pool, MaxBackoff: 50 * time.Millisecond}, l, st, seq)
	// Our own fasthttp server rather than f.Serve: Serve sets f.http in
	// its goroutine, which Shutdown reads, a race the tests need not have.
	hs := &fasthttp.Server{Handler: f.Handler(), CloseOnShutdown: true, IdleTimeout: time.Second}
	go hs.Serve(ln)
	var once sync.Once
	stop := func() {
		once.Do(func() {
			ln.Close()
			_ = hs.Shutdown()
			f.client.hc.CloseIdleConnections()
		})
	}
	t.Cleanup(func() { stop(); st.Close(); l.Close() })
	return &liveFed{Federation: f, name: name, log: l, stop: stop}
}

func newKey(t testing.TB) dag.SigningKey {
	t.Helper()
	k, err := dag.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestOldKeys: retired keys are published in old_verify_keys with their
// expiry, the response is signed by the current key only, our own KeyRing
// accepts an old key for what it signed before it expired, and a remote
// server that fetches our keys verifies an event signed with the old key.
func TestOldKeys(t *testing.T) {
	oldKey, curKey := newKey(t), newKey(t)
	expired := time.Now().Add(-time.Minute).UnixMilli()
	us := startLiveFed(t, curKey)
	us.SetOldKeys([]OldKey{
		{ID: oldKey.ID, Public: oldKey.Public(), ExpiredTS: expired},
		{ID: curKey.ID, Public: curKey.Public(), ExpiredTS: 1}, // the current key is never "old"
		{ID: "ed25519:bad", Public: []byte{1, 2}, ExpiredTS: expired},
	})

	raw, err := us.ourKeys()
	if err != nil {
		t.Fatal(err)
	}
	var resp struct {
		VerifyKeys map[string]struct {
			Key string `json:"key"`
		} `json:"verify_keys"`
		Old map[string]struct {
			Key       string `json:"key"`
			ExpiredTS int64  `json:"expired_ts"`
		} `json:"old_verify_keys"`
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if err := json.Unmarshal(raw, &resp); err != nil {
		t.Fatal(err)
	}
	if len(resp.VerifyKeys) != 1 || resp.VerifyKeys[curKey.ID].Key != curKey.PublicBase64() {
		t.Errorf("verify_keys %+v", resp.VerifyKeys)
	}
	if len(resp.Old) != 1 || resp.Old[oldKey.ID].Key != oldKey.PublicBase64() || resp.Old[oldKey.ID].ExpiredTS != expired {
		t.Errorf("old_verify_keys %+v", resp.Old)
	}
	if sigs := resp.Signatures[us.name]; len(sigs) != 1 || sigs[curKey.ID] == "" {
		t.Errorf("signatures %+v", resp.Signatures)
	}
	if err := dag.VerifyJSON(raw, us.name, curKey.ID, curKey.Public()); err != nil {
		t.Error(err)
	}

	// Our own KeyRing.
	for _, tt := range []struct {
		id string
		ts int64
		ok bool
	}{
		{curKey.ID, 0, true},
		{oldKey.ID, expired - 1, true},
		{oldKey.ID, expired, false},
		{oldKey.ID, 0, false}, // now: requests may not be signed with an old key
		{"ed25519:bad", 1, false},
	} {
		if _, err := us.keys.PublicKey(us.name, tt.id, tt.ts); (err == nil) != tt.ok {
			t.Errorf("own key %s at %d: %v", tt.id, tt.ts, err)
		}
	}

	// A remote server fetches our keys over TLS and verifies events.
	remote := startLiveFed(t, newKey(t))
	ev := func(key dag.SigningKey, ts int64) *dag.Event {
		e, err := dag.Build(dag.ProtoEvent{RoomID: "!r:" + us.name, Sender: "@a:" + us.name, Type: "m.room.message",
			Content: json.RawMessage(`{"body":"x"}`), PrevEvents: []string{"$p"}, AuthEvents: []string{"$a"}, Depth: 3,
			OriginServerTS: ts}, dag.Version("10"), us.name, key.ID, key.Key)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	if _, err := remote.keys.VerifyEvent(ev(oldKey, expired-1000)); err != nil {
		t.Errorf("event signed with the old key before expired_ts: %v", err)
	}
	if _, err := remote.keys.VerifyEvent(ev(oldKey, expired+1000)); err == nil {
		t.Error("event signed with the old key after expired_ts verified")
	}
	if _, err := remote.keys.VerifyEvent(ev(curKey, time.Now().UnixMilli())); err != nil {
		t.Errorf("event signed with the current key: %v", err)
	}
}

// TestNotaryFallback: three servers. The origin's keys are cached by the
// notary; the origin goes away; a third server that trusts the notary
// still gets the origin's keys, and one that trusts nobody does not.
func TestNotaryFallback(t *testing.T) {
	originKey := newKey(t)
	origin := startLiveFed(t, originKey)
	notary := startLiveFed(t, newKey(t))
	client := startLiveFed(t, newKey(t))
	loner := startLiveFed(t, newKey(t))
	client.SetTrustedKeyServers([]string{"", loner.name + "x:1", notary.name, client.name})
	if got := client.keys.trustedNotaries(); len(got) != 2 {
		t.Fatalf("notaries %q: blanks and ourselves must be dropped", got)
	}

	// The notary learns the origin's keys while it is up.
	if _, err := notary.keys.PublicKey(origin.name, originKey.ID, 0); err != nil {
		t.Fatal(err)
	}
	origin.stop()

	if _, err := loner.keys.PublicKey(origin.name, originKey.ID, 0); err == nil {
		t.Fatal("keys of an unreachable server without a notary")
	}
	pub, err := client.keys.PublicKey(origin.name, originKey.ID, 0)
	if err != nil {
		t.Fatalf("through the notary: %v", err)
	}
	if !pub.Equal(originKey.Public()) {
		t.Fatal("wrong key")
	}
	// The answer is cached like a direct one.
	if _, ok := client.keys.lookup(origin.name, originKey.ID, time.Now().UnixMilli()); !ok {
		t.Error("notary answer not cached")
	}
	// A notary asked about a server it cannot reach and never saw has
	// nothing to say.
	if _, err := client.keys.fetchFromNotaries("127.0.0.1:1", "ed25519:x", time.Now().UnixMilli()); err == nil {
		t.Error("keys of an unknown server")
	}
}

// fakeNotary is a notary whose /query answer the test writes.
type fakeNotary struct {
	name   string
	key    dag.SigningKey
	mu     sync.Mutex
	answer func(body []byte) []byte
	bodies []string
}

func startFakeNotary(t *testing.T) *fakeNotary {
	ln, name := tlsListener(t)
	n := &fakeNotary{name: name, key: newKey(t)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_matrix/key/v2/server", func(w http.ResponseWriter, r *http.Request) {
		raw, _ := json.Marshal(map[string]any{"server_name": name, "valid_until_ts": time.Now().Add(time.Hour).UnixMilli(),
			"verify_keys": map[string]any{n.key.ID: map[string]string{"key": n.key.PublicBase64()}}})
		signed, _ := dag.SignJSON(raw, name, n.key.ID, n.key.Key)
		w.Write(signed)
	})
	mux.HandleFunc("POST /_matrix/key/v2/query", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		n.mu.Lock()
		n.bodies = append(n.bodies, string(b))
		ans := n.answer
		n.mu.Unlock()
		w.Write(ans(b))
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return n
}

// TestNotaryAnswerChecks: what a notary says is believed only when the
// notary signed it with its own key, the origin signed it with every key
// it lists, it names the origin, and it is valid long enough.
func TestNotaryAnswerChecks(t *testing.T) {
	n := startFakeNotary(t)
	client := startLiveFed(t, newKey(t))
	client.SetTrustedKeyServers([]string{n.name})
	const origin = "127.0.0.1:1" // nothing listens there
	originKey, otherKey := newKey(t), newKey(t)
	now := time.Now().UnixMilli()

	resp := func(name string, validUntil int64, keys ...dag.SigningKey) []byte {
		vk := map[string]any{}
		for _, k := range keys {
			vk[k.ID] = map[string]string{"key": k.PublicBase64()}
		}
		raw, _ := json.Marshal(map[string]any{"server_name": name, "valid_until_ts": validUntil, "verify_keys": vk, "old_verify_keys": map[string]any{}})
		return raw
	}
	sign := func(raw []byte, server string, k dag.SigningKey) []byte {
		out, err := dag.SignJSON(raw, server, k.ID, k.Key)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	good := sign(resp(origin, now+3600_000, originKey), origin, originKey)
	wrap := func(entries ...[]byte) []byte {
		var es []json.RawMessage
		for _, e := range entries {
			es = append(es, e)
		}
		b, _ := json.Marshal(map[string]any{"server_keys": es})
		return b
	}
	tests := []struct {
		name   string
		answer []byte
		ok     bool
	}{
		{"valid", wrap(sign(good, n.name, n.key)), true},
		{"not signed by the notary", wrap(good), false},
		{"signed by a key the notary does not publish", wrap(sign(good, n.name, otherKey)), false},
		{"origin signature missing", wrap(sign(resp(origin, now+3600_000, originKey), n.name, n.key)), false},
		{"origin signed by another key than listed", wrap(sign(sign(resp(origin, now+3600_000, originKey), origin, otherKey), n.name, n.key)), false},
		{"names another server", wrap(sign(sign(resp("other.example", now+3600_000, originKey), "other.example", originKey), n.name, n.key)), false},
		{"valid_until_ts already past", wrap(sign(sign(resp(origin, now-1000, originKey), origin, originKey), n.name, n.key)), false},
		{"empty", wrap(), false},
		{"not JSON", []byte(`{"server_keys":`), false},
		{"a bad entry, then a good one", wrap([]byte(`"x"`), sign(good, n.name, otherKey), sign(good, n.name, n.key)), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n.mu.Lock()
			n.answer = func([]byte) []byte { return tt.answer }
			n.bodies = nil
			n.mu.Unlock()
			sk, err := client.keys.fetchFromNotaries(origin, originKey.ID, now)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if tt.ok && !sk.keys[originKey.ID].Equal(originKey.Public()) {
				t.Fatal("wrong key")
			}
			n.mu.Lock()
			body := n.bodies[0]
			n.mu.Unlock()
			var q struct {
				ServerKeys map[string]map[string]struct {
					MinimumValidUntilTS int64 `json:"minimum_valid_until_ts"`
				} `json:"server_keys"`
			}
			if json.Unmarshal([]byte(body), &q) != nil || q.ServerKeys[origin][originKey.ID].MinimumValidUntilTS != now {
				t.Errorf("query %s", body)
			}
		})
	}
}

// TestNotaryServesCached: a notary answers from its cache when the
// queried server is down, countersigned.
func TestNotaryServesCached(t *testing.T) {
	originKey := newKey(t)
	origin := startLiveFed(t, originKey)
	notary := startLiveFed(t, newKey(t))
	if _, err := notary.keys.PublicKey(origin.name, originKey.ID, 0); err != nil {
		t.Fatal(err)
	}
	origin.stop()
	if _, err := notary.keys.fetchDirect(origin.name); err == nil {
		t.Fatal("origin still reachable")
	}
	raw, err := notary.keys.notaryResponse(origin.name, time.Now().Add(48*time.Hour).UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	if err := dag.VerifyJSON(raw, notary.name, notary.cfg.Key.ID, notary.cfg.Key.Public()); err != nil {
		t.Error(err)
	}
	if _, err := parseServerKeys(raw, origin.name); err != nil {
		t.Error(err)
	}
	if _, err := notary.keys.notaryResponse("127.0.0.1:1", 0); err == nil {
		t.Error("answer for a server never seen")
	}
}

func TestDecodeKeyPadding(t *testing.T) {
	k := newKey(t)
	for _, s := range []string{k.PublicBase64(), base64.StdEncoding.EncodeToString(k.Public())} {
		if pub, err := decodeKey(s); err != nil || !pub.Equal(k.Public()) {
			t.Errorf("%s: %v", s, err)
		}
	}
	if _, err := decodeKey(strings.Repeat("A", 10)); err == nil {
		t.Error("short key accepted")
	}
}
