package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Config selects a scenario and its parameters. Zero values mean "the
// scenario's default" (see Defaults), so a test sets only what it wants to
// shrink.
type Config struct {
	Scenario string // one of Scenarios()
	HS       string // client-server API base URL, e.g. http://127.0.0.1:8008
	HS2      string // second homeserver (federated only)

	// SharedSecret switches registration from open registration to the
	// Synapse-style /_synapse/admin/v1/register API on HS; SharedSecret2
	// does the same for HS2.
	SharedSecret      string
	SharedSecret2     string
	RegistrationToken string // answered to m.login.registration_token stages
	Insecure          bool   // skip TLS verification (self-signed test servers)

	Users       int     // busy-room: members; join-storm: joiners
	Senders     int     // concurrent senders (fan-out: concurrent requests of the one sender)
	Messages    int     // messages sent in the measured phase
	Listeners   int     // long-polling /sync listeners
	Rooms       int     // initial-sync: rooms of the user; fan-out: rooms
	History     int     // initial-sync: messages per room
	StateEvents int     // state-heavy: bench.state events in the room
	PageLimit   int     // initial-sync: /messages limit per page
	Repeat      int     // initial-sync, state-heavy: repetitions of the measured read
	Concurrency int     // join-storm: concurrent joins (default: all at once)
	MessageSize int     // pad message bodies to about this many bytes
	Rate        float64 // target send rate in messages/s; 0 = as fast as possible
	LazyLoad    bool    // initial syncs use lazy_load_members

	SyncTimeout      time.Duration // long-poll timeout of listeners' /sync (30s)
	Grace            time.Duration // wait for deliveries after the last send (30s)
	RequestTimeout   time.Duration // deadline of every non-long-poll request (60s)
	SetupConcurrency int           // parallel requests during setup (32)

	// Log receives phase lines (and a progress bar when Progress is set);
	// nil keeps the run silent.
	Log      io.Writer
	Progress bool
	// HTTPClient replaces the default fasthttp transport with net/http
	// through this client (tests, custom TLS); it costs the generator
	// more CPU per request.
	HTTPClient *http.Client
}

// scenario describes one load pattern: its defaults and the parameters
// (flag names) it reads, so the CLI can reject flags that would be
// silently ignored.
type scenario struct {
	name     string
	summary  string
	params   []string
	defaults func(c *Config)
	run      func(ctx context.Context, r *runner) error
}

var scenarios = []scenario{
	{
		name:    "busy-room",
		summary: "U members, S concurrent senders, L long-polling listeners in one room",
		params:  []string{"users", "senders", "messages", "listeners", "rate", "msg-size", "sync-timeout", "grace"},
		defaults: func(c *Config) {
			setDefault(&c.Users, 200)
			setDefault(&c.Senders, 64)
			setDefault(&c.Messages, 20000)
			setDefault(&c.Listeners, 50)
		},
		run: runBusyRoom,
	},
	{
		name:    "join-storm",
		summary: "N users join one room concurrently; then a newcomer joins and syncs",
		params:  []string{"users", "concurrency", "lazy-load"},
		defaults: func(c *Config) {
			setDefault(&c.Users, 1000)
		},
		run: runJoinStorm,
	},
	{
		name:    "initial-sync",
		summary: "a user in R rooms with H messages each: initial /sync and /messages back-pagination",
		params:  []string{"rooms", "history", "page-limit", "repeat", "lazy-load"},
		defaults: func(c *Config) {
			setDefault(&c.Rooms, 50)
			setDefault(&c.History, 200)
			setDefault(&c.PageLimit, 100)
			setDefault(&c.Repeat, 3)
		},
		run: runInitialSync,
	},
	{
		name:    "state-heavy",
		summary: "a room with K state events: newcomer join, GET /state, initial /sync",
		params:  []string{"state", "repeat", "lazy-load"},
		defaults: func(c *Config) {
			setDefault(&c.StateEvents, 10000)
			setDefault(&c.Repeat, 3)
		},
		run: runStateHeavy,
	},
	{
		name:    "fan-out",
		summary: "one sender, L listeners spread over R rooms: delivery latency",
		params:  []string{"rooms", "listeners", "messages", "senders", "rate", "msg-size", "sync-timeout", "grace"},
		defaults: func(c *Config) {
			setDefault(&c.Rooms, 20)
			setDefault(&c.Listeners, 200)
			setDefault(&c.Messages, 2000)
			setDefault(&c.Senders, 1)
		},
		run: runFanOut,
	},
	{
		name:    "federated",
		summary: "senders on --hs, listeners on --hs2 in one room: delivery latency across federation",
		params:  []string{"hs2", "shared-secret2", "senders", "listeners", "messages", "rate", "msg-size", "sync-timeout", "grace"},
		defaults: func(c *Config) {
			setDefault(&c.Senders, 2)
			setDefault(&c.Listeners, 2)
			setDefault(&c.Messages, 500)
		},
		run: runFederated,
	},
}

// commonParams are flags every scenario accepts.
var commonParams = []string{"hs", "scenario", "shared-secret", "registration-token", "insecure",
	"json", "plot", "quiet", "timeout", "request-timeout", "setup-concurrency"}

// Scenarios lists the scenario names in a stable order.
func Scenarios() []string {
	out := make([]string, len(scenarios))
	for i, s := range scenarios {
		out[i] = s.name
	}
	return out
}

func findScenario(name string) (*scenario, bool) {
	for i := range scenarios {
		if scenarios[i].name == name {
			return &scenarios[i], true
		}
	}
	return nil, false
}

func setDefault(p *int, v int) {
	if *p == 0 {
		*p = v
	}
}

// Defaults returns c with every zero field set to the default of its
// scenario. An unknown scenario only gets the common defaults.
func Defaults(c Config) Config {
	if s, ok := findScenario(c.Scenario); ok {
		s.defaults(&c)
	}
	if c.SyncTimeout == 0 {
		c.SyncTimeout = 30 * time.Second
	}
	if c.Grace == 0 {
		c.Grace = 30 * time.Second
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 60 * time.Second
	}
	setDefault(&c.SetupConcurrency, 32)
	return c
}

// maxSeenCells bounds listeners x messages: each cell is an 8-byte
// timestamp, so this caps that table near 400 MB.
const maxSeenCells = 50_000_000

// Validate checks a configuration after Defaults.
func (c *Config) Validate() error {
	s, ok := findScenario(c.Scenario)
	if !ok {
		if c.Scenario == "" {
			return fmt.Errorf("bench: no scenario (one of %s)", strings.Join(Scenarios(), ", "))
		}
		return fmt.Errorf("bench: unknown scenario %q (one of %s)", c.Scenario, strings.Join(Scenarios(), ", "))
	}
	if err := checkURL("hs", c.HS); err != nil {
		return err
	}
	if s.name == "federated" {
		if err := checkURL("hs2", c.HS2); err != nil {
			return err
		}
	}
	type bound struct {
		name string
		v    int
		used bool
	}
	uses := func(p string) bool { return slices.Contains(s.params, p) }
	for _, b := range []bound{
		{"users", c.Users, uses("users")},
		{"senders", c.Senders, uses("senders")},
		{"messages", c.Messages, uses("messages")},
		{"listeners", c.Listeners, uses("listeners")},
		{"rooms", c.Rooms, uses("rooms")},
		{"history", c.History, uses("history")},
		{"state", c.StateEvents, uses("state")},
		{"page-limit", c.PageLimit, uses("page-limit")},
		{"repeat", c.Repeat, uses("repeat")},
		{"setup-concurrency", c.SetupConcurrency, true},
	} {
		if b.used && b.v < 1 {
			return fmt.Errorf("bench: --%s must be at least 1, got %d", b.name, b.v)
		}
		if b.v > 10_000_000 {
			return fmt.Errorf("bench: --%s %d is too large", b.name, b.v)
		}
	}
	if c.Concurrency < 0 {
		return fmt.Errorf("bench: --concurrency must not be negative")
	}
	if c.MessageSize < 0 || c.MessageSize > 60000 {
		return fmt.Errorf("bench: --msg-size must be in [0, 60000] (events are capped at 64 KiB)")
	}
	if c.Rate < 0 {
		return fmt.Errorf("bench: --rate must not be negative")
	}
	if c.SyncTimeout < 0 || c.Grace < 0 || c.RequestTimeout <= 0 {
		return fmt.Errorf("bench: timeouts must be positive")
	}
	if s.name == "busy-room" {
		if c.Senders > c.Users {
			return fmt.Errorf("bench: --senders %d exceeds --users %d (each sender is a member)", c.Senders, c.Users)
		}
		if c.Listeners > c.Users {
			return fmt.Errorf("bench: --listeners %d exceeds --users %d (each listener is a member)", c.Listeners, c.Users)
		}
	}
	if uses("listeners") && uses("messages") && int64(c.Listeners)*int64(c.Messages) > maxSeenCells {
		return fmt.Errorf("bench: --listeners x --messages = %d exceeds %d", int64(c.Listeners)*int64(c.Messages), maxSeenCells)
	}
	return nil
}

func checkURL(name, raw string) error {
	if raw == "" {
		return fmt.Errorf("bench: --%s URL is required", name)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("bench: --%s: %w", name, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("bench: --%s %q: want http(s)://host[:port]", name, raw)
	}
	return nil
}

// params reports the effective parameters of c's scenario for Result.
func (c *Config) params() map[string]float64 {
	s, _ := findScenario(c.Scenario)
	all := map[string]float64{
		"users": float64(c.Users), "senders": float64(c.Senders), "messages": float64(c.Messages),
		"listeners": float64(c.Listeners), "rooms": float64(c.Rooms), "history": float64(c.History),
		"state": float64(c.StateEvents), "page-limit": float64(c.PageLimit), "repeat": float64(c.Repeat),
		"concurrency": float64(c.Concurrency), "msg-size": float64(c.MessageSize), "rate": c.Rate,
		"sync-timeout": c.SyncTimeout.Seconds(), "grace": c.Grace.Seconds(),
	}
	if c.LazyLoad {
		all["lazy-load"] = 1
	}
	out := map[string]float64{}
	if s == nil {
		return out
	}
	for _, p := range s.params {
		if v, ok := all[p]; ok {
			out[p] = v
		}
	}
	return out
}
