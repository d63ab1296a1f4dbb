package federation

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Client makes signed requests to other servers. Connections are pooled
// per destination (one http.Transport pool keyed by the server name); each
// destination's discovery result is cached; an unreachable destination is
// backed off exponentially.
type Client struct {
	f  *Federation
	hc *http.Client

	mu       sync.Mutex
	resolved map[string]resolvedServer
	backoff  map[string]*backoffState

	// LookupSRV is net.DefaultResolver.LookupSRV; tests replace it.
	LookupSRV func(ctx context.Context, service, proto, name string) (string, []*net.SRV, error)
	// WellKnown fetches /.well-known/matrix/server; tests replace it.
	WellKnown func(ctx context.Context, host string) (string, bool)
}

type backoffState struct {
	failures int
	until    time.Time
}

// resolvedServer is the outcome of server discovery ("Resolving server
// names"): where to connect, which Host header to send and which name the
// certificate must carry.
type resolvedServer struct {
	addr    string // host:port to dial
	host    string // Host header
	tlsName string // name the certificate is checked against (and SNI)
	expires time.Time
}

type ctxKey struct{}

// ErrBackoff: the destination failed recently and is not retried yet.
var ErrBackoff = errors.New("federation: destination is backed off")

// HTTPError is a non-2xx answer.
type HTTPError struct {
	Status int
	Body   []byte
}

func (e *HTTPError) Error() string {
	b := e.Body
	if len(b) > 200 {
		b = b[:200]
	}
	return fmt.Sprintf("federation: HTTP %d: %s", e.Status, b)
}

func newClient(f *Federation) *Client {
	c := &Client{f: f, resolved: map[string]resolvedServer{}, backoff: map[string]*backoffState{},
		LookupSRV: net.DefaultResolver.LookupSRV}
	c.WellKnown = c.wellKnown
	tr := &http.Transport{
		DialTLSContext:      c.dialTLS,
		MaxIdleConnsPerHost: 8,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   false,
	}
	c.hc = &http.Client{Transport: tr, Timeout: 60 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return c
}

func (c *Client) tlsConfig(name string) *tls.Config {
	return &tls.Config{ServerName: name, RootCAs: c.f.cfg.RootCAs, MinVersion: tls.VersionTLS12}
}

func (c *Client) dialTLS(ctx context.Context, network, _ string) (net.Conn, error) {
	rs, ok := ctx.Value(ctxKey{}).(resolvedServer)
	if !ok {
		return nil, errors.New("federation: dial without a resolved destination")
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: c.tlsConfig(rs.tlsName)}
	return d.DialContext(ctx, network, rs.addr)
}

// splitHostPort splits a server name into host and optional port; IPv6
// literals are bracketed.
func splitHostPort(name string) (host string, port int, ok bool) {
	if strings.HasPrefix(name, "[") {
		end := strings.IndexByte(name, ']')
		if end < 0 {
			return "", 0, false
		}
		host = name[1:end]
		rest := name[end+1:]
		if rest == "" {
			return host, 0, true
		}
		if !strings.HasPrefix(rest, ":") {
			return "", 0, false
		}
		p, err := strconv.Atoi(rest[1:])
		if err != nil || p <= 0 || p > 65535 {
			return "", 0, false
		}
		return host, p, true
	}
	if i := strings.LastIndexByte(name, ':'); i >= 0 {
		p, err := strconv.Atoi(name[i+1:])
		if err != nil || p <= 0 || p > 65535 {
			return "", 0, false
		}
		return name[:i], p, name[:i] != ""
	}
	return name, 0, name != ""
}

// resolve runs server discovery for a server name, cached.
func (c *Client) resolve(ctx context.Context, name string) (resolvedServer, error) {
	c.mu.Lock()
	rs, ok := c.resolved[name]
	c.mu.Unlock()
	if ok && time.Now().Before(rs.expires) {
		return rs, nil
	}
	rs, err := c.discover(ctx, name)
	if err != nil {
		return rs, err
	}
	c.mu.Lock()
	c.resolved[name] = rs
	c.mu.Unlock()
	return rs, nil
}

func (c *Client) discover(ctx context.Context, name string) (resolvedServer, error) {
	host, port, ok := splitHostPort(name)
	if !ok {
		return resolvedServer{}, fmt.Errorf("federation: invalid server name %q", name)
	}
	exp := time.Now().Add(time.Hour)
	// 1. "If the hostname is an IP literal, then that IP address should be
	// used, together with the given port number, or 8448 if no port is given."
	// 2. "If the hostname is not an IP literal, and the server name includes
	// an explicit port, resolve the hostname to an IP address [...]."
	if net.ParseIP(host) != nil || port != 0 {
		if port == 0 {
			port = 8448
		}
		return resolvedServer{addr: net.JoinHostPort(host, strconv.Itoa(port)), host: name, tlsName: host, expires: exp}, nil
	}
	// 3. /.well-known/matrix/server.
	if d, ok := c.WellKnown(ctx, host); ok {
		dh, dp, ok := splitHostPort(d)
		if ok {
			if net.ParseIP(dh) != nil || dp != 0 {
				if dp == 0 {
					dp = 8448
				}
				return resolvedServer{addr: net.JoinHostPort(dh, strconv.Itoa(dp)), host: d, tlsName: dh, expires: exp}, nil
			}
			if a, ok := c.srv(ctx, dh); ok {
				return resolvedServer{addr: a, host: d, tlsName: dh, expires: exp}, nil
			}
			return resolvedServer{addr: net.JoinHostPort(dh, "8448"), host: d, tlsName: dh, expires: exp}, nil
		}
	}
	// 4-6. SRV _matrix-fed._tcp, then the deprecated _matrix._tcp, then 8448.
	if a, ok := c.srv(ctx, host); ok {
		return resolvedServer{addr: a, host: name, tlsName: host, expires: exp}, nil
	}
	return resolvedServer{addr: net.JoinHostPort(host, "8448"), host: name, tlsName: host, expires: exp}, nil
}

func (c *Client) srv(ctx context.Context, host string) (string, bool) {
	for _, svc := range []string{"matrix-fed", "matrix"} {
		_, addrs, err := c.LookupSRV(ctx, svc, "tcp", host)
		if err == nil && len(addrs) > 0 {
			t := strings.TrimSuffix(addrs[0].Target, ".")
			return net.JoinHostPort(t, strconv.Itoa(int(addrs[0].Port))), true
		}
	}
	return "", false
}

// wellKnown fetches https://host/.well-known/matrix/server and returns its
// m.server, if any.
func (c *Client) wellKnown(ctx context.Context, host string) (string, bool) {
	rs := resolvedServer{addr: net.JoinHostPort(host, "443"), host: host, tlsName: host}
	ctx, cancel := context.WithTimeout(context.WithValue(ctx, ctxKey{}, rs), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "https://"+host+"/.well-known/matrix/server", nil)
	if err != nil {
		return "", false
	}
	// A separate pool entry from the destination's own connections.
	req.URL.Host = "wellknown." + host
	req.Host = host
	resp, err := c.hc.Do(req)
	if err != nil {
		return "", false
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return "", false
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", false
	}
	var wk struct {
		Server string `json:"m.server"`
	}
	if json.Unmarshal(b, &wk) != nil || wk.Server == "" {
		return "", false
	}
	return wk.Server, true
}

// ResetBackoff forgets a destination's failures (it just talked to us).
func (c *Client) ResetBackoff(dest string) {
	c.mu.Lock()
	delete(c.backoff, dest)
	c.mu.Unlock()
}

// BackedOff reports whether dest is in backoff now.
func (c *Client) BackedOff(dest string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.backoff[dest]
	return b != nil && time.Now().Before(b.until)
}

func (c *Client) failed(dest string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.backoff[dest]
	if b == nil {
		b = &backoffState{}
		c.backoff[dest] = b
	}
	b.failures++
	d := time.Second << min(b.failures, 20)
	if d > c.f.cfg.MaxBackoff {
		d = c.f.cfg.MaxBackoff
	}
	b.until = time.Now().Add(d)
	delete(c.resolved, dest)
}

// Do sends a signed request to dest and decodes a JSON answer into out (if
// not nil). body is marshalled unless it is []byte or json.RawMessage.
func (c *Client) Do(ctx context.Context, dest, method, path string, body, out any) error {
	raw, err := c.DoRaw(ctx, dest, method, path, body)
	if err != nil {
		return err
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("federation: answer of %s: %w", dest, err)
		}
	}
	return nil
}

// DoRaw is Do returning the answer's bytes.
func (c *Client) DoRaw(ctx context.Context, dest, method, path string, body any) ([]byte, error) {
	var content []byte
	switch b := body.(type) {
	case nil:
	case []byte:
		content = b
	case json.RawMessage:
		content = b
	default:
		var err error
		if content, err = json.Marshal(b); err != nil {
			return nil, err
		}
	}
	return c.do(ctx, dest, method, path, content, true)
}

// getUnsigned fetches a public resource (the key server).
func (c *Client) getUnsigned(dest, path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return c.do(ctx, dest, "GET", path, nil, false)
}

func (c *Client) do(ctx context.Context, dest, method, path string, content []byte, sign bool) ([]byte, error) {
	if dest == c.f.cfg.ServerName {
		return nil, errors.New("federation: request to ourselves")
	}
	if c.BackedOff(dest) {
		return nil, ErrBackoff
	}
	rs, err := c.resolve(ctx, dest)
	if err != nil {
		return nil, err
	}
	var rd io.Reader
	if content != nil {
		rd = bytes.NewReader(content)
	}
	req, err := http.NewRequestWithContext(context.WithValue(ctx, ctxKey{}, rs), method, "https://"+dest+path, rd)
	if err != nil {
		return nil, err
	}
	req.URL.Host = dest
	req.Host = rs.host
	if content != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if sign {
		h, err := c.f.authHeader(method, path, dest, content)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", h)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.failed(dest)
		return nil, fmt.Errorf("federation: %s %s: %w", method, dest, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 100<<20))
	if err != nil {
		c.failed(dest)
		return nil, err
	}
	c.ResetBackoff(dest)
	if resp.StatusCode/100 != 2 {
		return nil, &HTTPError{Status: resp.StatusCode, Body: b}
	}
	return b, nil
}
