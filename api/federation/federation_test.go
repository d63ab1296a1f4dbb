package federation

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"engram/dag"
)

func testFed(t *testing.T, name string) *Federation {
	t.Helper()
	k, err := dag.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	return New(Config{ServerName: name, Key: k}, nil, nil, nil)
}

func TestParseXMatrix(t *testing.T) {
	tests := []struct {
		in   string
		want xMatrix
		ok   bool
	}{
		{`X-Matrix origin="a.example",destination="b.example",key="ed25519:k",sig="c2ln"`, xMatrix{"a.example", "b.example", "ed25519:k", "c2ln"}, true},
		{`X-Matrix origin=a.example,key="ed25519:k",sig="c2ln"`, xMatrix{"a.example", "", "ed25519:k", "c2ln"}, true},
		{`x-matrix origin="a:8448", key="ed25519:k", sig="c2ln", destination="b"`, xMatrix{"a:8448", "b", "ed25519:k", "c2ln"}, true},
		{`X-Matrix origin="a\"b",key="k",sig="s"`, xMatrix{`a"b`, "", "k", "s"}, true},
		{`Bearer abc`, xMatrix{}, false},
		{`X-Matrix origin="a",key="k"`, xMatrix{}, false},
		{`X-Matrix origin="a,key="k",sig="s"`, xMatrix{}, false},
		{`X-Matrix =x`, xMatrix{}, false},
		{``, xMatrix{}, false},
	}
	for _, tt := range tests {
		got, err := parseXMatrix(tt.in)
		if (err == nil) != tt.ok || (tt.ok && got != tt.want) {
			t.Errorf("parseXMatrix(%q) = %+v, %v; want %+v ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func FuzzParseXMatrix(f *testing.F) {
	f.Add(`X-Matrix origin="a.example",destination="b.example",key="ed25519:k",sig="c2ln"`)
	f.Add(`X-Matrix origin=a,key=k,sig=s`)
	f.Add(`X-Matrix origin="\`)
	f.Fuzz(func(t *testing.T, s string) { _, _ = parseXMatrix(s) })
}

// A request signed by a server verifies, and any change breaks it.
func TestRequestSignature(t *testing.T) {
	f := testFed(t, "hs.example")
	body := []byte(`{"pdus":[],"origin":"hs.example"}`)
	h, err := f.authHeader("PUT", "/_matrix/federation/v1/send/1", "hs.example", body)
	if err != nil {
		t.Fatal(err)
	}
	if origin, err := f.verifyRequest("PUT", "/_matrix/federation/v1/send/1", body, h); err != nil || origin != "hs.example" {
		t.Fatalf("verify: %q %v", origin, err)
	}
	bad := []struct{ method, uri, body, header string }{
		{"POST", "/_matrix/federation/v1/send/1", string(body), h},
		{"PUT", "/_matrix/federation/v1/send/2", string(body), h},
		{"PUT", "/_matrix/federation/v1/send/1", `{"pdus":[1]}`, h},
		{"PUT", "/_matrix/federation/v1/send/1", string(body), strings.Replace(h, `destination="hs.example"`, `destination="other.example"`, 1)},
		{"PUT", "/_matrix/federation/v1/send/1", string(body), strings.Replace(h, `sig="`, `sig="AA`, 1)},
	}
	for i, b := range bad {
		if _, err := f.verifyRequest(b.method, b.uri, []byte(b.body), b.header); err == nil {
			t.Errorf("case %d verified", i)
		}
	}
}

func TestServerKeys(t *testing.T) {
	f := testFed(t, "hs.example")
	raw, err := f.ourKeys()
	if err != nil {
		t.Fatal(err)
	}
	sk, err := parseServerKeys(raw, "hs.example")
	if err != nil {
		t.Fatal(err)
	}
	if !sk.keys[f.cfg.Key.ID].Equal(f.cfg.Key.Public()) {
		t.Fatal("key not returned")
	}
	if _, err := parseServerKeys(raw, "other.example"); err == nil {
		t.Error("wrong server name accepted")
	}
	tampered := []byte(strings.Replace(string(raw), `"server_name"`, `"extra":1,"server_name"`, 1))
	if _, err := parseServerKeys(tampered, "hs.example"); err == nil {
		t.Error("tampered key response accepted")
	}
}

func TestSplitHostPort(t *testing.T) {
	tests := []struct {
		in   string
		host string
		port int
		ok   bool
	}{
		{"example.org", "example.org", 0, true},
		{"example.org:8448", "example.org", 8448, true},
		{"1.2.3.4", "1.2.3.4", 0, true},
		{"1.2.3.4:99", "1.2.3.4", 99, true},
		{"[::1]", "::1", 0, true},
		{"[::1]:8448", "::1", 8448, true},
		{"[::1", "", 0, false},
		{"example.org:x", "", 0, false},
		{"example.org:70000", "", 0, false},
		{":80", "", 0, false},
	}
	for _, tt := range tests {
		h, p, ok := splitHostPort(tt.in)
		if ok != tt.ok || (ok && (h != tt.host || p != tt.port)) {
			t.Errorf("splitHostPort(%q) = %q %d %v", tt.in, h, p, ok)
		}
	}
}

// Server discovery, steps of "Resolving server names", with DNS and
// .well-known faked.
func TestDiscover(t *testing.T) {
	f := testFed(t, "us.example")
	c := f.client
	c.WellKnown = func(_ context.Context, host string) (string, bool) {
		switch host {
		case "delegated.example":
			return "target.example", true
		case "delegated-port.example":
			return "target.example:1234", true
		case "delegated-ip.example":
			return "10.0.0.1", true
		}
		return "", false
	}
	c.LookupSRV = func(_ context.Context, svc, _, name string) (string, []*net.SRV, error) {
		switch {
		case svc == "matrix-fed" && name == "target.example":
			return "", []*net.SRV{{Target: "srv.target.example.", Port: 5555}}, nil
		case svc == "matrix-fed" && name == "srvonly.example":
			return "", []*net.SRV{{Target: "a.srvonly.example.", Port: 6666}}, nil
		case svc == "matrix" && name == "legacy.example":
			return "", []*net.SRV{{Target: "b.legacy.example.", Port: 7777}}, nil
		}
		return "", nil, errors.New("no SRV")
	}
	tests := []struct{ name, addr, host, tlsName string }{
		{"1.2.3.4", "1.2.3.4:8448", "1.2.3.4", "1.2.3.4"},
		{"1.2.3.4:99", "1.2.3.4:99", "1.2.3.4:99", "1.2.3.4"},
		{"[::1]:99", "[::1]:99", "[::1]:99", "::1"},
		{"plain.example:1234", "plain.example:1234", "plain.example:1234", "plain.example"},
		{"delegated.example", "srv.target.example:5555", "target.example", "target.example"},
		{"delegated-port.example", "target.example:1234", "target.example:1234", "target.example"},
		{"delegated-ip.example", "10.0.0.1:8448", "10.0.0.1", "10.0.0.1"},
		{"srvonly.example", "a.srvonly.example:6666", "srvonly.example", "srvonly.example"},
		{"legacy.example", "b.legacy.example:7777", "legacy.example", "legacy.example"},
		{"nothing.example", "nothing.example:8448", "nothing.example", "nothing.example"},
	}
	for _, tt := range tests {
		rs, err := c.discover(context.Background(), tt.name)
		if err != nil || rs.addr != tt.addr || rs.host != tt.host || rs.tlsName != tt.tlsName {
			t.Errorf("discover(%q) = %+v, %v; want %s %s %s", tt.name, rs, err, tt.addr, tt.host, tt.tlsName)
		}
	}
	if _, err := c.discover(context.Background(), "bad:name:x"); err == nil {
		t.Error("invalid server name resolved")
	}
}

func TestBackoff(t *testing.T) {
	f := testFed(t, "us.example")
	c := f.client
	if c.BackedOff("x.example") {
		t.Fatal("backed off before any failure")
	}
	c.failed("x.example")
	if !c.BackedOff("x.example") {
		t.Fatal("not backed off after a failure")
	}
	if _, err := c.DoRaw(context.Background(), "x.example", "GET", "/", nil); !errors.Is(err, ErrBackoff) {
		t.Fatalf("request during backoff: %v", err)
	}
	c.ResetBackoff("x.example")
	if c.BackedOff("x.example") {
		t.Fatal("still backed off after reset")
	}
}
