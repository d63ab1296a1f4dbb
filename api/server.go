// Package api serves engram's HTTP APIs on fasthttp: the client-server API
// (and /_synapse/admin) on the client listener. Handlers parse and validate
// input, hand writes to the room sequencer or the account service (which
// append to the log and answer only once the write is durable), and answer
// reads from the projections.
package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/valyala/fasthttp"

	"engram/dag/rooms"
	"engram/log"
	"engram/projections"
)

// Config is what the API needs to know of the server's configuration.
type Config struct {
	ServerName               string
	EnableRegistration       bool
	RegistrationSharedSecret string
	MaxBodyBytes             int // request bodies above this get 413 M_TOO_LARGE
	PasswordCost             int // bcrypt cost
	DefaultRoomVersion       string
	EnableMetrics            bool // serve Prometheus metrics at /metrics
	// Accounts configures registration, login, tokens and rate limits (api/accounts.go).
	Accounts AccountConfig
	// TURN is the TURN server handed to VoIP clients (none if no URIs).
	TURN TURNConfig
	// DisablePresence turns presence off (config presence_enabled: false):
	// no presence in /sync, and PUT /presence is accepted and ignored.
	DisablePresence bool
}

// Server is the client-server API.
type Server struct {
	cfg      Config
	log      *log.Log
	store    *projections.Store
	rooms    *rooms.Sequencer
	accounts *accounts
	logger   *slog.Logger
	rt       router
	http     *fasthttp.Server
	started  time.Time
	metrics  metrics
	// remoteJoin joins a room through federation (see SetRemoteJoin).
	remoteJoin func(room, user string, via []string) (string, error)
	// fed is the server-server API, when federation runs (SetFederation,
	// api/fed_bridge.go).
	fed Federation
	// e2ee coordinates end-to-end encryption writes (api/e2ee.go).
	e2ee e2eeState
	// hub holds /sync's in-memory streams (typing, presence) and background
	// workers (pushers); api/sync_hub.go.
	hub *syncHub
}

// New builds the API server.
func New(cfg Config, l *log.Log, store *projections.Store, seq *rooms.Sequencer, logger *slog.Logger) *Server {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.DefaultRoomVersion == "" {
		cfg.DefaultRoomVersion = "12"
	}
	if cfg.PasswordCost == 0 {
		cfg.PasswordCost = 10
	}
	s := &Server{cfg: cfg, log: l, store: store, rooms: seq, logger: logger, started: time.Now()}
	s.accounts = newAccounts(s)
	s.routes()
	s.http = &fasthttp.Server{
		Handler:            s.Handle,
		Name:               "engram",
		MaxRequestBodySize: cfg.MaxBodyBytes,
		ReadTimeout:        90 * time.Second,
		WriteTimeout:       90 * time.Second,
		IdleTimeout:        120 * time.Second,
		ErrorHandler: func(ctx *fasthttp.RequestCtx, err error) {
			if errors.Is(err, fasthttp.ErrBodyTooLarge) {
				writeError(ctx, errTooLarge())
				return
			}
			writeError(ctx, merr(400, "M_UNKNOWN", "Malformed request"))
		},
		NoDefaultServerHeader: true,
		Logger:                fasthttpLogger{logger},
		CloseOnShutdown:       true,
	}
	return s
}

// Serve serves the API on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error { return s.http.Serve(ln) }

// Shutdown stops accepting requests and waits for those in flight.
//
// It waits at most shutdownGrace: fasthttp counts a keep-alive connection
// waiting for its next request as busy until its read timeout, so a client
// holding one open would otherwise delay shutdown by that long. Requests
// still running after the grace period find the log closed and fail; none
// was acknowledged.
func (s *Server) Shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	err := s.http.ShutdownWithContext(ctx)
	s.hub.close()
	if errors.Is(err, context.DeadlineExceeded) {
		err = nil
	}
	return err
}

// shutdownGrace bounds how long Shutdown waits for requests in flight.
const shutdownGrace = 5 * time.Second

// Handle is the fasthttp entry point.
func (s *Server) Handle(ctx *fasthttp.RequestCtx) {
	// CORS: web clients (Element) call from another origin.
	h := &ctx.Response.Header
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization")
	method := string(ctx.Method())
	if method == fasthttp.MethodOptions {
		return
	}
	var params [8]string
	rt, ps, other := s.rt.match(method, ctx.URI().PathOriginal(), params[:0])
	if rt == nil {
		if other {
			writeError(ctx, errMethod())
		} else {
			writeError(ctx, errUnrecognized())
		}
		return
	}
	start := time.Now()
	defer func() { s.observe(rt, ctx.Response.StatusCode(), time.Since(start)) }()
	r := &Req{ctx: ctx, s: s, route: rt, params: ps}
	if rt.auth {
		if e := s.authenticate(r); e != nil {
			writeError(ctx, e)
			return
		}
	}
	if err := s.safeCall(rt.h, r); err != nil {
		var me *Error
		if !errors.As(err, &me) {
			s.logger.Error("request failed", "path", string(ctx.Path()), "err", err)
			me = errUnknown("Internal server error")
		}
		writeError(ctx, me)
	}
}

// safeCall turns a panic in a handler into a 500: nothing panics the server.
func (s *Server) safeCall(h handler, r *Req) (err error) {
	defer func() {
		if p := recover(); p != nil {
			s.logger.Error("handler panic", "path", string(r.ctx.Path()), "panic", p)
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return h(r)
}

// accessToken extracts the token from the Authorization header or the
// deprecated access_token query parameter.
func accessToken(ctx *fasthttp.RequestCtx) []byte {
	if a := ctx.Request.Header.Peek("Authorization"); len(a) > 0 {
		if len(a) > 7 && bytes.EqualFold(a[:7], []byte("Bearer ")) {
			return bytes.TrimSpace(a[7:])
		}
		return nil
	}
	return ctx.QueryArgs().Peek("access_token")
}

func tokenHash(tok []byte) []byte {
	h := sha256.Sum256(tok)
	return h[:]
}

func (s *Server) authenticate(r *Req) *Error {
	tok := accessToken(r.ctx)
	if len(tok) == 0 {
		return merr(401, "M_MISSING_TOKEN", "Missing access token")
	}
	user, device, e := s.cachedTokenOwner(tok) // api/tokens.go, api/accounts.go: expiry, soft logout
	if e != nil {
		return e
	}
	r.User, r.Device = user, device
	return nil
}

// body returns the request body, enforcing the configured limit.
func (r *Req) body() ([]byte, *Error) {
	b := r.ctx.PostBody()
	if len(b) > r.s.cfg.MaxBodyBytes {
		return nil, errTooLarge()
	}
	return b, nil
}

// decode parses the JSON body into v: invalid JSON is M_NOT_JSON, valid JSON
// of the wrong shape M_BAD_JSON. An empty body decodes as {}.
func (r *Req) decode(v any) *Error {
	b, e := r.body()
	if e != nil {
		return e
	}
	if len(bytes.TrimSpace(b)) == 0 {
		b = []byte("{}")
	}
	return decodeJSON(b, v)
}

func decodeJSON(b []byte, v any) *Error {
	if !json.Valid(b) {
		return errNotJSON("Content not JSON.")
	}
	if t := bytes.TrimSpace(b); len(t) == 0 || t[0] != '{' {
		return errBadJSON("Body must be a JSON object")
	}
	if err := json.Unmarshal(b, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return errBadJSON(fmt.Sprintf("Wrong type for %q: expected %s", te.Field, te.Type))
		}
		return errBadJSON(err.Error())
	}
	return nil
}

// json writes v as a JSON response with status 200.
func (r *Req) json(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	r.raw(200, b)
	return nil
}

// raw writes pre-encoded JSON.
func (r *Req) raw(status int, b []byte) {
	r.ctx.Response.Header.SetContentType("application/json")
	r.ctx.SetStatusCode(status)
	r.ctx.SetBody(b)
}

// jsonStatus writes v as a JSON response with the given status.
func (r *Req) jsonStatus(status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	r.raw(status, b)
	return nil
}

// fasthttpLogger sends fasthttp's own messages (malformed requests, closed
// connections) to the structured log at debug level: they are client faults.
type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	f.l.Debug(fmt.Sprintf(format, args...))
}
