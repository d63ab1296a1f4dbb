// Package bench is engram's load generator: `engram bench`. It speaks only
// the Matrix client-server API over HTTP, so one scenario runs unchanged
// against engram, Synapse, Dendrite or Conduit and the JSON results of two
// runs can be compared side by side.
//
// # Contract
//
// A run has two phases. Setup registers users, creates rooms, joins them
// and brings every listener to a live /sync position; it is timed
// (Result.SetupSeconds) but never measured. The measured phase then does
// the scenario's work, and only it produces metrics and latencies.
//
// Run(ctx, cfg) returns an error only when no meaningful result exists:
// invalid Config, a server that does not answer GET
// /_matrix/client/versions, a failed setup step, or ctx ending. Failures
// during measurement are counted, not returned: a healthy run has
// Counts.SendFailures, Counts.Undelivered and Counts.Failures all zero,
// which is what tests assert. Zero Config fields take the scenario's
// defaults (Defaults), so tests set only what they shrink, e.g.
//
//	bench.Run(ctx, bench.Config{Scenario: "busy-room", HS: url,
//		Users: 4, Senders: 2, Messages: 20, Listeners: 2})
//
// Every request has a deadline (RequestTimeout, or the long-poll timeout
// plus RequestTimeout for /sync), every wait is bounded by ctx, the
// delivery wait by Grace, and pagination loops by a page count derived from
// the data they page over. Nothing waits forever on a misbehaving server.
//
// # Accounts
//
// Users are named bench<run>_<tag><n>, where <run> is 8 random hex digits
// per run, so reruns against the same server never collide. Without
// --shared-secret they register through POST /_matrix/client/v3/register
// with user-interactive auth: "A client should first make a request with no
// `auth` parameter. The homeserver returns an HTTP 401 response" with a
// session; the retry carries {"type":"m.login.dummy","session":...}
// (m.login.registration_token is answered too when --registration-token is
// given). With --shared-secret they register through the Synapse admin API
// /_synapse/admin/v1/register: GET a nonce, POST with mac =
// hex(HMAC-SHA1(secret, nonce NUL user NUL password NUL "notadmin")).
// Register answers carry the access token, so no login is needed.
//
// # Scenarios
//
// busy-room (--users 200 --senders 64 --messages 20000 --listeners 50):
// one public room with U members. The first S members send M messages
// concurrently (PUT /rooms/{id}/send/m.room.message/{txnId}); the last L
// members long-poll /sync with since= and timeout= (--sync-timeout, 30s).
// Reports send throughput, send latency, delivery latency, undelivered
// count. --rate paces sends to a fixed rate for latency-at-load
// comparisons; --msg-size pads bodies.
//
// fan-out (--rooms 20 --listeners 200 --messages 2000 --senders 1): one
// sender user in R rooms, listener i in room i mod R; message i goes to
// room i mod R. --senders is the number of requests the one sender keeps
// in flight.
//
// federated (--hs2 URL --senders 2 --listeners 2 --messages 500): the room
// is created on --hs, senders are users of --hs, listeners are users of
// --hs2 who join by room ID with via/server_name set to the creator's
// server name. Delivery latency then includes the federation hop.
// --shared-secret2 registers on --hs2.
//
// join-storm (--users 1000 [--concurrency N]): N users join one room, all
// at once unless --concurrency limits the joins in flight. Reports join
// latency, joins/s, failures and the joined member count; then a newcomer
// joins the now large room and does an initial sync (newcomer_join,
// newcomer_initial_sync, their sum, and the sync's size).
//
// initial-sync (--rooms 50 --history 200 --page-limit 100 --repeat 3): one
// user in R rooms with H messages each. Measures --repeat initial syncs
// (the server's default filter, as a fresh client; --lazy-load asks for
// lazy_load_members), then pages room 0 back with GET
// /rooms/{id}/messages?dir=b from the sync's prev_batch until the server
// omits end ("Clients should continue to paginate until no end property is
// returned"), and checks all H messages were found.
//
// state-heavy (--state 10000 --repeat 3): a room with K state events of
// type bench.state and distinct state keys (PUT /rooms/{id}/state/...).
// Measures a newcomer's join, --repeat GET /rooms/{id}/state (checking at
// least K events come back) and the newcomer's initial sync. The rate at
// which setup stored the state events is reported as setup_state_rate.
//
// # Delivery latency
//
// Each message body is "bench <run> <n>" (padded with --msg-size); the
// PUT's transaction ID is "<run>-<n>", which makes retries idempotent.
// Listeners match timeline events by that marker. Delivery latency runs
// from the moment the sender read the PUT's answer to the moment a
// listener read the /sync answer holding the event. Because a server may
// wake /sync before the sender has read its answer, such "early"
// deliveries count as 0 ms and are reported in the notes; the second
// distribution, delivery_from_send_start, measures from when the PUT was
// issued and needs no clamping.
//
// Listeners use an uploaded filter (the spec recommends it "for clients
// that reuse the same filter multiple times, for example in long poll
// requests") with timeline limit 200 and lazy-loaded members. When a burst
// exceeds that and the server answers limited=true, the listener pages the
// gap with /messages from prev_batch until it meets history it has seen,
// as a real client would; such events count as delivered when the page
// arrives. After the last send the run waits at most --grace (30s) for
// outstanding deliveries; what is still missing is Counts.Undelivered.
//
// # Numbers
//
// Percentiles are exact nearest-rank values over all recorded samples
// (sorted), not sketch estimates: p is the smallest sample with at least
// p% of samples at or below it. Latencies are milliseconds. Requests
// rejected with 429 M_LIMIT_EXCEEDED wait for Retry-After (or
// retry_after_ms, capped at 10s) and are retried; the wait is inside the
// measured latency and every retry is counted in Counts.Retries. For
// meaningful numbers, raise the server's rate limits (Synapse: rc_message,
// rc_registration, rc_joins) before benchmarking.
//
// The load generator usually shares the machine with the server, so it is
// built to cost little per message (docs/benchmarks.md has the figures).
// Requests go through fasthttp's client on keep-alive connections (up to
// 4096 per host, so concurrent senders and listeners never measure TCP
// handshakes), each sender worker and listener reusing one request,
// response and set of buffers for the whole run; send paths and bodies
// are built into those buffers. Listeners read a /sync answer with a
// scanner that keeps only what delivery accounting needs, as slices of
// the answer, and falls back to encoding/json's reading whenever the
// answer is anything but plain (the two are fuzzed against each other);
// deliveries are recorded in per-listener arrays indexed by message
// number, with atomics. fasthttp has no context: a listener has its own
// client whose connections are closed when the measured phase ends, which
// ends its long poll. Config.HTTPClient, or a proxy named by the
// environment for the homeserver, switches to net/http.
//
// # Output
//
// A table on stdout (counts, metrics, latency percentiles, notes); progress
// on stderr, as a redrawn bar when stderr is a terminal (checked with the
// file mode, no dependency) and as one line per phase otherwise; --quiet
// silences it. --json writes Result (format version ResultFormat), which
// includes 112 CDF points and a log histogram (10 buckets per decade) per
// distribution so charts can be redrawn from the file. --plot writes a
// self-contained SVG: latency by percentile (HdrHistogram-style axis
// stretching the tail) above a histogram.
//
// `engram bench compare [--plot out.svg] a.json b.json` prints every count,
// metric and latency percentile of both runs with the ratio b/a and a
// verdict (better / worse / ~same within 3%) from each metric's direction;
// it refuses runs of different scenarios and warns when parameters differ.
//
// Exit status: 0 ok, 1 error, 2 usage, 3 the run completed but counted
// failures or undelivered messages.
package bench
