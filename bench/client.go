package bench

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// maxBody caps how much of one response the client reads. A /sync answer
// for a user in many busy rooms can be large, but a homeserver that streams
// without end must not exhaust the load generator's memory.
const maxBody = 256 << 20

// newHTTPClient returns the net/http client used when the environment
// names a proxy for the homeserver. Its Transport keeps enough idle
// keep-alive connections per host for every concurrent sender and
// listener: with Go's default of 2 idle connections per host, a run with
// 64 senders would open and close TCP connections on nearly every request
// and measure the handshake rather than the homeserver.
func newHTTPClient(insecure bool) *http.Client {
	tr := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:          0, // no global limit
		MaxIdleConnsPerHost:   4096,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: 0, // long-polls set their own deadline through ctx
	}
	if insecure {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // opt-in for self-signed test servers
	}
	return &http.Client{Transport: tr}
}

// MatrixError is a non-2xx answer from the homeserver, carrying the standard
// error body ({"errcode": ..., "error": ...}) when the server sent one.
type MatrixError struct {
	Method  string
	Path    string
	Status  int
	ErrCode string
	Message string
	// RetryAfter is the server's rate-limit hint (Retry-After header or the
	// deprecated retry_after_ms field), zero when absent.
	RetryAfter time.Duration
	// Body holds the raw response for answers that need more than errcode,
	// such as the 401 of user-interactive authentication.
	Body []byte
}

func (e *MatrixError) Error() string {
	if e.ErrCode != "" {
		return fmt.Sprintf("bench: %s %s: HTTP %d %s: %s", e.Method, e.Path, e.Status, e.ErrCode, e.Message)
	}
	return fmt.Sprintf("bench: %s %s: HTTP %d", e.Method, e.Path, e.Status)
}

// server is one homeserver's client-server API base URL plus the shared
// HTTP client and counters. Requests go through fasthttp (fc) unless hc is
// set (Config.HTTPClient, or a proxy from the environment).
type server struct {
	base       string // without trailing slash
	hc         *http.Client
	fc         *fastClient
	insecure   bool
	reqTimeout time.Duration
	retries    *atomic.Int64 // retried requests (rate limits, transient errors)
	pool       sync.Pool     // *exchange on the shared client
}

// newServer returns the server at base (validated by Config.Validate).
// hc, when non-nil, replaces the default fasthttp transport.
func newServer(base string, hc *http.Client, insecure bool, reqTimeout time.Duration, retries *atomic.Int64) (*server, error) {
	base = strings.TrimRight(base, "/")
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("bench: bad homeserver URL %q", base)
	}
	s := &server{base: base, hc: hc, insecure: insecure, reqTimeout: reqTimeout, retries: retries}
	if s.hc == nil && useNetHTTP(u) {
		s.hc = newHTTPClient(insecure)
	}
	if s.hc == nil {
		s.fc = newFastClient(u, insecure, 4096, reqTimeout, 8<<10)
	}
	return s, nil
}

// newClient returns a fasthttp client of its own (maxConns connections)
// for a goroutine whose requests must end with a context other than the
// run's, such as a listener's long poll; nil on the net/http transport,
// whose requests follow their context anyway. Its read buffers hold a
// busy /sync answer whole.
func (s *server) newClient(maxConns int) *fastClient {
	if s.fc == nil {
		return nil
	}
	u, _ := url.Parse(s.base) // parsed in newServer
	return newFastClient(u, s.insecure, maxConns, s.reqTimeout, 64<<10)
}

// cancelWith ends every request of c when ctx ends; stop undoes it.
func cancelWith(ctx context.Context, c *fastClient) (stop func() bool) {
	if c == nil {
		return func() bool { return false }
	}
	return context.AfterFunc(ctx, c.close)
}

// close releases the server's connections.
func (s *server) close() {
	if s.fc != nil {
		s.fc.close()
	}
	if s.hc != nil {
		s.hc.CloseIdleConnections()
	}
}

// user is a registered account with its access token.
type user struct {
	srv    *server
	userID string
	token  string
	device string
}

// serverName returns the part of a user ID after the first colon, which is
// the server name other homeservers use to reach this one (for join's via).
func serverName(userID string) string {
	if i := strings.IndexByte(userID, ':'); i >= 0 {
		return userID[i+1:]
	}
	return ""
}

// retryPolicy says which failures of one call are worth repeating.
type retryPolicy int

const (
	// retryRateLimit repeats only 429 M_LIMIT_EXCEEDED answers. Used for
	// requests that are not idempotent.
	retryRateLimit retryPolicy = iota
	// retryTransient also repeats network errors and 5xx answers, for
	// requests the server deduplicates (PUT with a transaction ID, GETs,
	// join).
	retryTransient
)

const maxAttempts = 8

// do sends one request and decodes a 2xx JSON answer into out (if non-nil).
// It returns the raw body length. Rate-limited requests wait for the
// server's hint (capped) and retry; every wait is bounded by ctx.
func (s *server) do(ctx context.Context, method, path string, query url.Values, token string, body any, out any, timeout time.Duration, policy retryPolicy) (int, error) {
	return s.doVia(ctx, nil, method, path, query, token, body, out, timeout, policy)
}

// doVia is do on exchange x; nil takes one from the shared client's pool.
func (s *server) doVia(ctx context.Context, x *exchange, method, path string, query url.Values, token string, body any, out any, timeout time.Duration, policy retryPolicy) (int, error) {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return 0, fmt.Errorf("bench: encode %s %s: %w", method, path, err)
		}
	}
	u := path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	if x == nil {
		if v, ok := s.pool.Get().(*exchange); ok {
			x = v
		} else {
			x = s.newExchange(nil)
		}
		defer s.pool.Put(x)
	}
	data, err := x.call(ctx, method, []byte(u), path, token, payload, timeout, policy)
	if err != nil {
		return len(data), err
	}
	if d, ok := out.(jsonDecoder); ok {
		if err := d.decodeJSON(data); err != nil {
			return len(data), fmt.Errorf("bench: %s %s: decode answer: %w", method, path, err)
		}
	} else if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return len(data), fmt.Errorf("bench: %s %s: decode answer: %w", method, path, err)
		}
	}
	return len(data), nil
}

// call sends one request on x with the retry policy and returns the 2xx
// answer's body, valid until x's next request. label names the request in
// errors (the path without query); timeout 0 is the server's default.
func (x *exchange) call(ctx context.Context, method string, uri []byte, label, token string, payload []byte, timeout time.Duration, policy retryPolicy) ([]byte, error) {
	s := x.srv
	if timeout <= 0 {
		timeout = s.reqTimeout
	}
	var lastErr error
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if attempt > 0 {
			s.retries.Add(1)
			wait := backoff(attempt)
			var me *MatrixError
			if errors.As(lastErr, &me) && me.RetryAfter > 0 {
				wait = min(me.RetryAfter, 10*time.Second)
			}
			if err := sleepCtx(ctx, wait); err != nil {
				return nil, lastErr
			}
		}
		data, err := x.once(ctx, method, uri, label, token, payload, timeout)
		if err == nil {
			return data, nil
		}
		lastErr = err
		if ctx.Err() != nil || !retryable(err, policy) {
			return data, err
		}
	}
	return nil, lastErr
}

func backoff(attempt int) time.Duration {
	d := 50 * time.Millisecond << min(attempt, 7)
	return min(d, 5*time.Second)
}

func retryable(err error, policy retryPolicy) bool {
	var me *MatrixError
	if errors.As(err, &me) {
		if me.Status == http.StatusTooManyRequests || me.ErrCode == "M_LIMIT_EXCEEDED" {
			return true
		}
		return policy == retryTransient && me.Status >= 500
	}
	// Anything else is a transport error (refused, reset, timeout).
	return policy == retryTransient
}

func (x *exchange) once(ctx context.Context, method string, uri []byte, label, token string, payload []byte, timeout time.Duration) ([]byte, error) {
	status, data, err := x.roundTrip(ctx, method, uri, token, payload, timeout)
	if label == "" {
		label = string(uri)
		if i := strings.IndexByte(label, '?'); i >= 0 {
			label = label[:i]
		}
	}
	if err != nil {
		return data, fmt.Errorf("bench: %s %s: %w", method, label, err)
	}
	if status < 200 || status > 299 {
		return data, parseMatrixError(method, label, status, x.retryAfter(), bytes.Clone(data))
	}
	return data, nil
}

func parseMatrixError(method, path string, status int, retryAfter string, data []byte) error {
	me := &MatrixError{Method: method, Path: path, Status: status, Body: data}
	var body struct {
		ErrCode      string `json:"errcode"`
		Error        string `json:"error"`
		RetryAfterMS int64  `json:"retry_after_ms"`
	}
	if json.Unmarshal(data, &body) == nil {
		me.ErrCode = body.ErrCode
		me.Message = body.Error
		if body.RetryAfterMS > 0 {
			me.RetryAfter = time.Duration(body.RetryAfterMS) * time.Millisecond
		}
	}
	// The spec prefers the Retry-After header (seconds) over retry_after_ms.
	if retryAfter != "" {
		if secs, err := strconv.Atoi(retryAfter); err == nil && secs >= 0 {
			me.RetryAfter = time.Duration(secs) * time.Second
		}
	}
	return me
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// --- account registration ---------------------------------------------

type registerAnswer struct {
	UserID      string `json:"user_id"`
	AccessToken string `json:"access_token"`
	DeviceID    string `json:"device_id"`
}

// registerOpen registers through POST /register, following the
// user-interactive authentication flow: "A client should first make a
// request with no `auth` parameter. The homeserver returns an HTTP 401
// response, with a JSON body" holding a session and the flows; the client
// then retries with an auth dict naming a stage. m.login.dummy completes
// a flow made of only that stage; m.login.registration_token is also
// answered when a token was given.
func (s *server) registerOpen(ctx context.Context, username, password, regToken string) (*user, error) {
	body := map[string]any{
		"username":                    username,
		"password":                    password,
		"initial_device_display_name": "engram-bench",
	}
	var ans registerAnswer
	_, err := s.do(ctx, http.MethodPost, "/_matrix/client/v3/register", nil, "", body, &ans, 0, retryRateLimit)
	if err == nil {
		return s.registered(ans, username)
	}
	var me *MatrixError
	if !errors.As(err, &me) || me.Status != http.StatusUnauthorized {
		return nil, err
	}
	var uia struct {
		Session string `json:"session"`
		Flows   []struct {
			Stages []string `json:"stages"`
		} `json:"flows"`
		Completed []string `json:"completed"`
	}
	if jerr := json.Unmarshal(me.Body, &uia); jerr != nil {
		return nil, fmt.Errorf("bench: register %s: bad 401 answer: %w", username, jerr)
	}
	stages, ok := pickFlow(uia.Flows, regToken != "")
	if !ok {
		return nil, fmt.Errorf("bench: register %s: server offers no flow of m.login.dummy / m.login.registration_token (flows %v); use --shared-secret or --registration-token", username, uia.Flows)
	}
	session := uia.Session
	for i, stage := range stages {
		auth := map[string]any{"type": stage, "session": session}
		if stage == "m.login.registration_token" {
			auth["token"] = regToken
		}
		body["auth"] = auth
		ans = registerAnswer{}
		_, err = s.do(ctx, http.MethodPost, "/_matrix/client/v3/register", nil, "", body, &ans, 0, retryRateLimit)
		if err == nil {
			return s.registered(ans, username)
		}
		if !errors.As(err, &me) || me.Status != http.StatusUnauthorized || i == len(stages)-1 {
			return nil, err
		}
		// 401 again: the stage completed, the next one is due.
		var next struct {
			Session string `json:"session"`
		}
		if json.Unmarshal(me.Body, &next) == nil && next.Session != "" {
			session = next.Session
		}
	}
	return nil, err
}

// pickFlow returns the stages of the first flow the bench can complete.
func pickFlow(flows []struct {
	Stages []string `json:"stages"`
}, haveToken bool) ([]string, bool) {
	for _, f := range flows {
		ok := len(f.Stages) > 0
		for _, st := range f.Stages {
			if st != "m.login.dummy" && (st != "m.login.registration_token" || !haveToken) {
				ok = false
				break
			}
		}
		if ok {
			return f.Stages, true
		}
	}
	return nil, false
}

// sharedSecretMAC computes the Synapse admin registration MAC: HMAC-SHA1,
// keyed by the shared secret, over nonce NUL user NUL password NUL
// "admin"|"notadmin", hex encoded.
func sharedSecretMAC(secret, nonce, username, password string, admin bool) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(nonce))
	m.Write([]byte{0})
	m.Write([]byte(username))
	m.Write([]byte{0})
	m.Write([]byte(password))
	m.Write([]byte{0})
	if admin {
		m.Write([]byte("admin"))
	} else {
		m.Write([]byte("notadmin"))
	}
	return hex.EncodeToString(m.Sum(nil))
}

// registerShared registers through /_synapse/admin/v1/register, the
// shared-secret API Synapse, Dendrite and engram serve: GET a nonce, then
// POST the account with its MAC.
func (s *server) registerShared(ctx context.Context, secret, username, password string) (*user, error) {
	const path = "/_synapse/admin/v1/register"
	var nonce struct {
		Nonce string `json:"nonce"`
	}
	if _, err := s.do(ctx, http.MethodGet, path, nil, "", nil, &nonce, 0, retryTransient); err != nil {
		return nil, err
	}
	if nonce.Nonce == "" {
		return nil, fmt.Errorf("bench: GET %s: empty nonce", path)
	}
	body := map[string]any{
		"nonce":    nonce.Nonce,
		"username": username,
		"password": password,
		"admin":    false,
		"mac":      sharedSecretMAC(secret, nonce.Nonce, username, password, false),
	}
	var ans registerAnswer
	if _, err := s.do(ctx, http.MethodPost, path, nil, "", body, &ans, 0, retryRateLimit); err != nil {
		return nil, err
	}
	return s.registered(ans, username)
}

func (s *server) registered(ans registerAnswer, username string) (*user, error) {
	if ans.AccessToken == "" || ans.UserID == "" {
		return nil, fmt.Errorf("bench: register %s: answer has no access_token/user_id (inhibit_login?)", username)
	}
	return &user{srv: s, userID: ans.UserID, token: ans.AccessToken, device: ans.DeviceID}, nil
}

// --- room operations -----------------------------------------------------

func (u *user) createRoom(ctx context.Context, name string) (string, error) {
	body := map[string]any{
		// The public_chat preset gives join_rules public, so the other
		// bench users can join without invites.
		"preset":     "public_chat",
		"name":       name,
		"visibility": "private", // keep bench rooms out of the public directory
	}
	var ans struct {
		RoomID string `json:"room_id"`
	}
	if _, err := u.srv.do(ctx, http.MethodPost, "/_matrix/client/v3/createRoom", nil, u.token, body, &ans, 0, retryRateLimit); err != nil {
		return "", err
	}
	if ans.RoomID == "" {
		return "", errors.New("bench: createRoom: answer has no room_id")
	}
	return ans.RoomID, nil
}

// join joins a room by ID. via names servers to join through; both the
// v1.12 via parameter and the older server_name are sent, so servers on
// either side of that change understand it.
func (u *user) join(ctx context.Context, roomID string, via ...string) error {
	q := url.Values{}
	for _, v := range via {
		if v != "" {
			q.Add("via", v)
			q.Add("server_name", v)
		}
	}
	_, err := u.srv.do(ctx, http.MethodPost, "/_matrix/client/v3/join/"+url.PathEscape(roomID), q, u.token, map[string]any{}, nil, 0, retryTransient)
	return err
}

// sendMessage PUTs one m.room.message. The transaction ID makes retries
// safe: it is "unique across requests with the same access token; it will
// be used by the server to ensure idempotency of requests".
func (u *user) sendMessage(ctx context.Context, roomID, txnID string, content any) (string, error) {
	var ans struct {
		EventID string `json:"event_id"`
	}
	p := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/send/m.room.message/" + url.PathEscape(txnID)
	_, err := u.srv.do(ctx, http.MethodPut, p, nil, u.token, content, &ans, 0, retryTransient)
	return ans.EventID, err
}

func (u *user) putState(ctx context.Context, roomID, evType, stateKey string, content any) error {
	p := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/state/" + url.PathEscape(evType) + "/" + url.PathEscape(stateKey)
	_, err := u.srv.do(ctx, http.MethodPut, p, nil, u.token, content, nil, 0, retryTransient)
	return err
}

// roomState fetches GET /rooms/{id}/state and returns the number of events.
func (u *user) roomState(ctx context.Context, roomID string) (int, int, error) {
	var evs []json.RawMessage
	n, err := u.srv.do(ctx, http.MethodGet, "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state", nil, u.token, nil, &evs, 0, retryTransient)
	return len(evs), n, err
}

func (u *user) joinedMembers(ctx context.Context, roomID string) (int, error) {
	var ans struct {
		Joined map[string]json.RawMessage `json:"joined"`
	}
	_, err := u.srv.do(ctx, http.MethodGet, "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/joined_members", nil, u.token, nil, &ans, 0, retryTransient)
	return len(ans.Joined), err
}

// createFilter uploads a filter and returns its ID. The spec recommends an
// uploaded filter over inline JSON "for clients that reuse the same filter
// multiple times, for example in long poll requests".
func (u *user) createFilter(ctx context.Context, filter any) (string, error) {
	var ans struct {
		FilterID string `json:"filter_id"`
	}
	p := "/_matrix/client/v3/user/" + url.PathEscape(u.userID) + "/filter"
	if _, err := u.srv.do(ctx, http.MethodPost, p, nil, u.token, filter, &ans, 0, retryTransient); err != nil {
		return "", err
	}
	if ans.FilterID == "" {
		return "", errors.New("bench: create filter: answer has no filter_id")
	}
	return ans.FilterID, nil
}

// --- sync and history ----------------------------------------------------

type clientEvent struct {
	EventID  string  `json:"event_id"`
	Type     string  `json:"type"`
	Sender   string  `json:"sender"`
	StateKey *string `json:"state_key,omitempty"`
	Content  struct {
		Body string `json:"body"`
	} `json:"content"`
}

type timeline struct {
	Events    []clientEvent `json:"events"`
	Limited   bool          `json:"limited"`
	PrevBatch string        `json:"prev_batch"`
}

type syncAnswer struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]joinedRoomAnswer `json:"join"`
	} `json:"rooms"`
}

type joinedRoomAnswer struct {
	Timeline timeline `json:"timeline"`
	State    struct {
		Events []json.RawMessage `json:"events"`
	} `json:"state"`
}

// sync calls GET /sync. timeout is the long-poll wait in the query; the
// HTTP deadline is that plus the normal request timeout.
func (u *user) sync(ctx context.Context, since, filter string, timeout time.Duration) (*syncAnswer, int, error) {
	q := url.Values{}
	if since != "" {
		q.Set("since", since)
	}
	if filter != "" {
		q.Set("filter", filter)
	}
	q.Set("timeout", strconv.FormatInt(timeout.Milliseconds(), 10))
	var ans syncAnswer
	n, err := u.srv.do(ctx, http.MethodGet, "/_matrix/client/v3/sync", q, u.token, nil, &ans, timeout+u.srv.reqTimeout, retryRateLimit)
	if err != nil {
		return nil, n, err
	}
	return &ans, n, nil
}

type messagesAnswer struct {
	Start string        `json:"start"`
	End   string        `json:"end"`
	Chunk []clientEvent `json:"chunk"`
}

// messages calls GET /rooms/{id}/messages?dir=b. An empty from starts at
// the newest visible event (allowed since v1.3).
func (u *user) messages(ctx context.Context, roomID, from string, limit int) (*messagesAnswer, error) {
	return u.messagesVia(ctx, nil, roomID, from, limit)
}

// messagesVia is messages on exchange x (nil: the shared client).
func (u *user) messagesVia(ctx context.Context, x *exchange, roomID, from string, limit int) (*messagesAnswer, error) {
	q := url.Values{}
	q.Set("dir", "b")
	if from != "" {
		q.Set("from", from)
	}
	q.Set("limit", strconv.Itoa(limit))
	var ans messagesAnswer
	if _, err := u.srv.doVia(ctx, x, http.MethodGet, "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages", q, u.token, nil, &ans, 0, retryTransient); err != nil {
		return nil, err
	}
	return &ans, nil
}

// checkVersions fails fast when the URL does not serve the client API.
func (s *server) checkVersions(ctx context.Context) error {
	var ans struct {
		Versions []string `json:"versions"`
	}
	if _, err := s.do(ctx, http.MethodGet, "/_matrix/client/versions", nil, "", nil, &ans, 10*time.Second, retryRateLimit); err != nil {
		return err
	}
	if len(ans.Versions) == 0 {
		return fmt.Errorf("bench: %s/_matrix/client/versions lists no versions", s.base)
	}
	return nil
}

// implementation asks the federation version endpoint, which many servers
// also answer on the client port, for a name to print in reports. Best
// effort: an empty string when unavailable.
func (s *server) implementation(ctx context.Context) string {
	var ans struct {
		Server struct {
			Name    string `json:"name"`
			Version string `json:"version"`
		} `json:"server"`
	}
	if _, err := s.do(ctx, http.MethodGet, "/_matrix/federation/v1/version", nil, "", nil, &ans, 3*time.Second, retryRateLimit); err != nil {
		return ""
	}
	return strings.TrimSpace(ans.Server.Name + " " + ans.Server.Version)
}
