package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// req is one inbound federation request.
type req struct {
	ctx    *fasthttp.RequestCtx
	f      *Federation
	params map[string]string
	origin string // authenticated origin ("" on public routes)
	body   []byte
}

func (r *req) param(name string) string { return r.params[name] }
func (r *req) query(name string) string { return string(r.ctx.QueryArgs().Peek(name)) }

// fedError is a Matrix error answer.
type fedError struct {
	status int
	code   string
	msg    string
}

func (e *fedError) Error() string { return e.code + ": " + e.msg }

func ferr(status int, code, msg string) *fedError { return &fedError{status, code, msg} }

func (r *req) json(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	r.raw(200, b)
	return nil
}

func (r *req) raw(status int, b []byte) {
	r.ctx.Response.Header.SetContentType("application/json")
	r.ctx.SetStatusCode(status)
	r.ctx.SetBody(b)
}

type route struct {
	method string
	parts  []string
	authed bool
	h      func(*req) error
}

func (f *Federation) routes() []route {
	var rs []route
	add := func(method, path string, authed bool, h func(*req) error) {
		rs = append(rs, route{method, strings.Split(strings.Trim(path, "/"), "/"), authed, h})
	}
	add("GET", "/_matrix/key/v2/server", false, f.handleKeys)
	add("GET", "/_matrix/key/v2/server/{keyId}", false, f.handleKeys)
	add("GET", "/_matrix/key/v2/query/{serverName}", false, f.handleKeyQueryGet)
	add("POST", "/_matrix/key/v2/query", false, f.handleKeyQuery)
	add("GET", "/_matrix/federation/v1/version", false, f.handleVersion)
	add("PUT", "/_matrix/federation/v1/send/{txnId}", true, f.handleSend)
	add("GET", "/_matrix/federation/v1/make_join/{roomId}/{userId}", true, f.handleMakeMembership("join"))
	add("GET", "/_matrix/federation/v1/make_leave/{roomId}/{userId}", true, f.handleMakeMembership("leave"))
	add("PUT", "/_matrix/federation/v2/send_join/{roomId}/{eventId}", true, f.handleSendJoin)
	add("PUT", "/_matrix/federation/v2/send_leave/{roomId}/{eventId}", true, f.handleSendLeave)
	add("GET", "/_matrix/federation/v1/event/{eventId}", true, f.handleEvent)
	add("GET", "/_matrix/federation/v1/state/{roomId}", true, f.handleState(false))
	add("GET", "/_matrix/federation/v1/state_ids/{roomId}", true, f.handleState(true))
	add("GET", "/_matrix/federation/v1/event_auth/{roomId}/{eventId}", true, f.handleEventAuth)
	add("GET", "/_matrix/federation/v1/backfill/{roomId}", true, f.handleBackfill)
	add("POST", "/_matrix/federation/v1/get_missing_events/{roomId}", true, f.handleMissingEvents)
	add("GET", "/_matrix/federation/v1/query/directory", true, f.handleQueryDirectory)
	add("GET", "/_matrix/federation/v1/query/profile", true, f.handleQueryProfile)
	add("PUT", "/_matrix/federation/v2/invite/{roomId}/{eventId}", true, f.handleInvite)
	add("GET", "/_matrix/federation/v1/make_knock/{roomId}/{userId}", true, f.handleMakeKnock)
	add("PUT", "/_matrix/federation/v1/send_knock/{roomId}/{eventId}", true, f.handleSendKnock)
	add("GET", "/_matrix/federation/v1/publicRooms", true, f.handlePublicRooms)
	add("POST", "/_matrix/federation/v1/publicRooms", true, f.handlePublicRooms)
	add("GET", "/_matrix/federation/v1/timestamp_to_event/{roomId}", true, f.handleTimestampToEvent)
	rs = append(rs, f.e2eeRoutes()...) // e2ee.go
	// Spaces and OpenID: hierarchy.go, openid.go.
	rs = append(rs, f.hierarchyOpenIDRoutes()...)
	return rs
}

// Handler returns the fasthttp handler of the federation listener.
func (f *Federation) Handler() fasthttp.RequestHandler {
	rs := f.routes()
	return func(ctx *fasthttp.RequestCtx) {
		if !f.inflight.enter() {
			writeErr(ctx, ferr(503, "M_UNKNOWN", "Server is shutting down"))
			return
		}
		defer f.inflight.leave()
		defer func() {
			if p := recover(); p != nil {
				f.logger.Error("federation handler panic", "path", string(ctx.Path()), "panic", p)
				writeErr(ctx, ferr(500, "M_UNKNOWN", "Internal server error"))
			}
		}()
		f.serve(ctx, rs)
	}
}

func (f *Federation) serve(ctx *fasthttp.RequestCtx, rs []route) {
	path := string(ctx.URI().PathOriginal())
	segs := strings.Split(strings.Trim(path, "/"), "/")
	method := string(ctx.Method())
	methodMismatch := false
	for _, rt := range rs {
		ps, ok := matchRoute(rt.parts, segs)
		if !ok {
			continue
		}
		if rt.method != method {
			methodMismatch = true
			continue
		}
		r := &req{ctx: ctx, f: f, params: ps, body: ctx.PostBody()}
		if len(r.body) > f.cfg.MaxBodyBytes {
			writeErr(ctx, ferr(413, "M_TOO_LARGE", "Request too large"))
			return
		}
		if rt.authed {
			h := string(ctx.Request.Header.Peek("Authorization"))
			if h == "" {
				writeErr(ctx, ferr(401, "M_UNAUTHORIZED", "Missing X-Matrix authorization"))
				return
			}
			var content []byte
			if len(r.body) > 0 {
				content = r.body
			}
			origin, err := f.verifyRequest(method, string(ctx.RequestURI()), content, h)
			if err != nil {
				f.logger.Debug("federation auth failed", "err", err)
				writeErr(ctx, ferr(401, "M_UNAUTHORIZED", "Invalid X-Matrix signature"))
				return
			}
			r.origin = origin
			f.client.ResetBackoff(origin)
			f.sender.wake(origin)
			if room := ps["roomId"]; room != "" && !f.ServerAllowed(room, origin) {
				writeErr(ctx, ferr(403, "M_FORBIDDEN", "Server is banned from the room by its ACL"))
				return
			}
		}
		if err := rt.h(r); err != nil {
			var fe *fedError
			if !errors.As(err, &fe) {
				f.logger.Error("federation request failed", "path", path, "err", err)
				fe = ferr(500, "M_UNKNOWN", "Internal server error")
			}
			writeErr(ctx, fe)
		}
		return
	}
	if methodMismatch {
		writeErr(ctx, ferr(405, "M_UNRECOGNIZED", "Method not allowed"))
		return
	}
	writeErr(ctx, ferr(404, "M_UNRECOGNIZED", "Unrecognized request"))
}

func matchRoute(parts, segs []string) (map[string]string, bool) {
	if len(parts) != len(segs) {
		return nil, false
	}
	var ps map[string]string
	for i, p := range parts {
		if strings.HasPrefix(p, "{") {
			v, err := url.PathUnescape(segs[i])
			if err != nil {
				return nil, false
			}
			if ps == nil {
				ps = map[string]string{}
			}
			ps[p[1:len(p)-1]] = v
			continue
		}
		if p != segs[i] {
			return nil, false
		}
	}
	return ps, true
}

func writeErr(ctx *fasthttp.RequestCtx, e *fedError) {
	b, _ := json.Marshal(map[string]string{"errcode": e.code, "error": e.msg})
	ctx.Response.Header.SetContentType("application/json")
	ctx.SetStatusCode(e.status)
	ctx.SetBody(b)
}

// Serve serves the federation API on a (TLS) listener until Shutdown.
func (f *Federation) Serve(ln net.Listener) error {
	srv := &fasthttp.Server{
		Handler:               f.Handler(),
		Name:                  "engram",
		MaxRequestBodySize:    f.cfg.MaxBodyBytes,
		ReadTimeout:           90 * time.Second,
		WriteTimeout:          90 * time.Second,
		IdleTimeout:           120 * time.Second,
		NoDefaultServerHeader: true,
		CloseOnShutdown:       true,
	}
	// Serve and Shutdown run on different goroutines.
	f.httpMu.Lock()
	if f.shutDown {
		f.httpMu.Unlock()
		return ln.Close()
	}
	f.http = srv
	f.httpMu.Unlock()
	return srv.Serve(ln)
}

// Shutdown stops the listener and the sender.
func (f *Federation) Shutdown() {
	f.sender.stop()
	f.httpMu.Lock()
	srv := f.http
	f.shutDown = true
	f.httpMu.Unlock()
	if srv != nil {
		// Bounded as the client listener's: a peer's idle keep-alive
		// connection counts as busy until its read timeout.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.ShutdownWithContext(ctx)
	}
	// Handlers still running (an inbound transaction fetching missing
	// events) use the store, which the caller closes next: wait for them,
	// bounded by the federation client's timeouts.
	if !f.inflight.drain(30 * time.Second) {
		f.logger.Warn("federation: handlers still running at shutdown")
	}
}

// inflight counts the requests being handled; once draining, it turns new
// ones away (a WaitGroup may not grow while someone waits on it).
type inflight struct {
	mu      sync.Mutex
	n       int
	closing bool
	idle    chan struct{} // closed when n drops to 0 while closing
}

func (c *inflight) enter() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	c.n++
	return true
}

func (c *inflight) leave() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n--
	if c.n == 0 && c.idle != nil {
		close(c.idle)
		c.idle = nil
	}
}

// drain turns new requests away and waits up to timeout for the running
// ones; it reports whether they all finished.
func (c *inflight) drain(timeout time.Duration) bool {
	c.mu.Lock()
	c.closing = true
	if c.n == 0 {
		c.mu.Unlock()
		return true
	}
	if c.idle == nil {
		c.idle = make(chan struct{})
	}
	idle := c.idle
	c.mu.Unlock()
	select {
	case <-idle:
		return true
	case <-time.After(timeout):
		return false
	}
}

func (f *Federation) handleKeys(r *req) error {
	b, err := f.ourKeys()
	if err != nil {
		return err
	}
	r.raw(200, b)
	return nil
}

func (f *Federation) handleVersion(r *req) error {
	return r.json(map[string]any{"server": map[string]string{"name": "engram", "version": "0.1"}})
}

// handleKeyQuery is the notary: POST /_matrix/key/v2/query.
func (f *Federation) handleKeyQuery(r *req) error {
	var body struct {
		ServerKeys map[string]map[string]struct {
			MinimumValidUntilTS int64 `json:"minimum_valid_until_ts"`
		} `json:"server_keys"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil {
		return ferr(400, "M_BAD_JSON", "Invalid key query")
	}
	out := []json.RawMessage{}
	for server, ids := range body.ServerKeys {
		var minValid int64
		for _, c := range ids {
			minValid = max(minValid, c.MinimumValidUntilTS)
		}
		if b, err := f.keys.notaryResponse(server, minValid); err == nil {
			out = append(out, b)
		}
	}
	return r.json(map[string]any{"server_keys": out})
}

func (f *Federation) handleKeyQueryGet(r *req) error {
	var minValid int64
	fmt.Sscan(r.query("minimum_valid_until_ts"), &minValid)
	out := []json.RawMessage{}
	if b, err := f.keys.notaryResponse(r.param("serverName"), minValid); err == nil {
		out = append(out, b)
	}
	return r.json(map[string]any{"server_keys": out})
}
