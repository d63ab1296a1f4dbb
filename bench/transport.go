package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// The load generator shares its machine with the homeserver it measures,
// so every CPU cycle it spends per request is one the server does not get.
// With net/http a request cost two goroutine hand-offs (the transport's
// read and write loops), a context timer, a header map and a fresh body
// buffer; at thousands of messages per second that made the generator as
// expensive as the server. The default transport is therefore fasthttp's
// HostClient: the request is written and its answer read on the calling
// goroutine, and an exchange (one per sender worker, one per listener)
// reuses its request, response and body buffers for the whole run.
//
// net/http remains for Config.HTTPClient (tests, custom TLS) and when the
// environment names a proxy for the homeserver (HTTP_PROXY and friends),
// which fasthttp's client does not read.
//
// fasthttp has no context: a request ends when it is answered or its
// deadline passes. Cancellation (the end of the measured phase for
// listeners in a 30 s long poll, or an interrupted run) closes the
// connections instead: every connection of a HostClient is dialled through
// a connTracker, and closing the tracker closes them, which fails the
// requests on them at once and refuses new dials.

// connTracker records the open connections of one HostClient so they can
// be closed when a context ends.
type connTracker struct {
	mu     sync.Mutex
	conns  map[*trackedConn]struct{}
	closed bool
	dialer net.Dialer
}

var errTrackerClosed = errors.New("bench: connection pool closed (run cancelled)")

func newConnTracker() *connTracker {
	return &connTracker{
		conns:  map[*trackedConn]struct{}{},
		dialer: net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second},
	}
}

func (t *connTracker) dial(addr string) (net.Conn, error) {
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed {
		return nil, errTrackerClosed
	}
	c, err := t.dialer.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, t: t}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		c.Close()
		return nil, errTrackerClosed
	}
	t.conns[tc] = struct{}{}
	return tc, nil
}

// closeAll closes every open connection and refuses later dials.
func (t *connTracker) closeAll() {
	t.mu.Lock()
	t.closed = true
	conns := make([]*trackedConn, 0, len(t.conns))
	for c := range t.conns {
		conns = append(conns, c)
	}
	t.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

type trackedConn struct {
	net.Conn
	t    *connTracker
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.t.mu.Lock()
		delete(c.t.conns, c)
		c.t.mu.Unlock()
	})
	return c.Conn.Close()
}

// fastClient is a fasthttp HostClient with the tracker of its connections.
type fastClient struct {
	hc      *fasthttp.HostClient
	tracker *connTracker
}

// newFastClient returns a client for the host of base (scheme://host[:port]).
// maxConns bounds its connections; a request waits up to wait for one.
// readBuf sizes each connection's read buffer: an answer that fits is
// read with one system call.
func newFastClient(base *url.URL, insecure bool, maxConns int, wait time.Duration, readBuf int) *fastClient {
	isTLS := base.Scheme == "https"
	t := newConnTracker()
	hc := &fasthttp.HostClient{
		Addr:  fasthttp.AddMissingPort(base.Host, isTLS),
		Name:  "engram-bench",
		IsTLS: isTLS,
		Dial:  t.dial,
		// TLS handshakes happen on the first write; this bounds them (and
		// every write) like net/http's TLSHandshakeTimeout did.
		WriteTimeout:        10 * time.Second,
		MaxConns:            maxConns,
		MaxConnWaitTimeout:  wait,
		MaxIdleConnDuration: 90 * time.Second,
		// Room IDs, transaction IDs and tokens are escaped by the bench;
		// the path goes out exactly as built.
		DisablePathNormalizing: true,
		MaxResponseBodySize:    maxBody,
		ReadBufferSize:         readBuf,
	}
	if isTLS {
		hc.TLSConfig = &tls.Config{InsecureSkipVerify: insecure} //nolint:gosec // opt-in for self-signed test servers
	}
	return &fastClient{hc: hc, tracker: t}
}

// close ends every request in flight and closes the idle connections.
func (c *fastClient) close() {
	c.tracker.closeAll()
	c.hc.CloseIdleConnections()
}

// exchange is one goroutine's reusable request state: the request and
// response objects and the URI buffer survive from one request to the
// next, so a sender or listener allocates nothing per request. An answer
// body returned by roundTrip is valid until the next roundTrip on the same
// exchange. An exchange is not safe for concurrent use.
type exchange struct {
	srv  *server
	fc   *fastClient // nil: the server's net/http client
	req  *fasthttp.Request
	resp *fasthttp.Response
	uri  []byte
	body []byte // net/http: the last answer
	hdr  http.Header
	// token is the access token in req's Authorization header (authSet:
	// the header has been written once).
	token   string
	authSet bool
}

// newExchange returns an exchange on fc, or on the server's shared client
// when fc is nil.
func (s *server) newExchange(fc *fastClient) *exchange {
	if fc == nil {
		fc = s.fc
	}
	x := &exchange{srv: s, fc: fc}
	if fc != nil {
		x.req = new(fasthttp.Request)
		x.resp = new(fasthttp.Response)
		// A body-less POST goes out without Content-Type, as with
		// net/http (fasthttp would add a form type).
		x.req.Header.SetNoDefaultContentType(true)
	}
	return x
}

// roundTrip performs one HTTP request to the server's base URL plus uri
// (path and query). It returns the status and the answer body.
func (x *exchange) roundTrip(ctx context.Context, method string, uri []byte, token string, payload []byte, timeout time.Duration) (int, []byte, error) {
	if err := ctx.Err(); err != nil {
		return 0, nil, err
	}
	if x.fc == nil {
		return x.roundTripStd(ctx, method, uri, token, payload, timeout)
	}
	req, resp := x.req, x.resp
	x.uri = append(append(x.uri[:0], x.srv.base...), uri...)
	req.SetRequestURIBytes(x.uri)
	req.Header.SetMethod(method)
	// The request object keeps its headers between requests; they are
	// rewritten only when they change.
	if token != x.token || !x.authSet {
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		} else {
			req.Header.Del("Authorization")
		}
		x.token, x.authSet = token, true
	}
	if payload != nil {
		req.Header.SetContentType("application/json")
		req.SetBodyRaw(payload)
	} else {
		// A reused request keeps the previous body's Content-Length,
		// which a GET would otherwise still announce.
		req.ResetBody()
		req.Header.SetContentLength(0)
		req.Header.Del("Content-Type")
	}
	if err := x.fc.hc.DoTimeout(req, resp, timeout); err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return 0, nil, fmt.Errorf("%w (%v)", cerr, err)
		}
		return 0, nil, err
	}
	return resp.StatusCode(), resp.Body(), nil
}

// retryAfter returns the Retry-After header of the last answer.
func (x *exchange) retryAfter() string {
	if x.fc == nil {
		return x.hdr.Get("Retry-After")
	}
	return string(x.resp.Header.Peek("Retry-After"))
}

func (x *exchange) roundTripStd(ctx context.Context, method string, uri []byte, token string, payload []byte, timeout time.Duration) (int, []byte, error) {
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(rctx, method, x.srv.base+string(uri), rd)
	if err != nil {
		return 0, nil, err
	}
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := x.srv.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	x.hdr = resp.Header
	data := x.body[:0]
	if n := resp.ContentLength; n >= 0 && n <= maxBody {
		// One buffer of the announced size, not ReadAll's doublings.
		if int64(cap(data)) < n {
			data = make([]byte, n)
		}
		data = data[:n]
		var m int
		m, err = io.ReadFull(resp.Body, data)
		data = data[:m]
	} else {
		data, err = readAllInto(data, io.LimitReader(resp.Body, maxBody))
	}
	x.body = data
	if err != nil {
		return resp.StatusCode, data, fmt.Errorf("read body: %w", err)
	}
	return resp.StatusCode, data, nil
}

// readAllInto appends r's content to dst.
func readAllInto(dst []byte, r io.Reader) ([]byte, error) {
	for {
		if len(dst) == cap(dst) {
			dst = append(dst, 0)[:len(dst)]
		}
		n, err := r.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst, err
		}
	}
}

// useNetHTTP reports whether requests to base must go through net/http:
// the environment names a proxy for it.
func useNetHTTP(base *url.URL) bool {
	p, err := http.ProxyFromEnvironment(&http.Request{URL: base})
	return err != nil || p != nil
}
