package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"time"
)

// Exit codes of Main.
const (
	ExitOK       = 0 // run completed with no failures
	ExitError    = 1 // the run could not complete (unreachable server, setup failure, I/O)
	ExitUsage    = 2 // bad arguments
	ExitFailures = 3 // the run completed but counted failures or undelivered messages
)

// Main is the entry point of `engram bench`; args are the arguments after
// "bench". It returns the process exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "compare":
			return mainCompare(args[1:], stdout, stderr)
		case "help", "-h", "-help", "--help":
			fmt.Fprint(stdout, Usage())
			return ExitOK
		case "scenarios":
			for _, s := range scenarios {
				fmt.Fprintf(stdout, "%-13s %s\n", s.name, s.summary)
			}
			return ExitOK
		}
	}
	opts, err := ParseArgs(args)
	if err != nil {
		fmt.Fprintf(stderr, "%v\n\n%s", err, Usage())
		return ExitUsage
	}
	if path := os.Getenv("ENGRAM_BENCH_CPUPROFILE"); path != "" {
		// The load generator shares the machine with the server it loads:
		// its own cost is worth seeing.
		f, err := os.Create(path)
		if err != nil {
			fmt.Fprintf(stderr, "bench: %v\n", err)
			return ExitError
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "bench: %v\n", err)
			return ExitError
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()

	cfg := opts.Config
	if !opts.Quiet {
		cfg.Log = stderr
		cfg.Progress = isTerminal(stderr)
	}
	res, err := Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		return ExitError
	}
	if err := res.WriteTable(stdout); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return ExitError
	}
	if opts.JSONPath != "" {
		if err := writeFile(opts.JSONPath, res.WriteJSON); err != nil {
			fmt.Fprintf(stderr, "%v\n", err)
			return ExitError
		}
	}
	if opts.PlotPath != "" {
		title := fmt.Sprintf("engram bench %s: %s", res.Scenario, describe(res))
		err := writeFile(opts.PlotPath, func(w io.Writer) error { return WriteSVG(w, title, SeriesOf(res, "")) })
		if err != nil {
			fmt.Fprintf(stderr, "%v\n", err)
			return ExitError
		}
	}
	c := res.Counts
	if c.SendFailures > 0 || c.Undelivered > 0 || c.Failures > 0 {
		return ExitFailures
	}
	return ExitOK
}

// Options is the parsed command line of a run.
type Options struct {
	Config   Config
	JSONPath string
	PlotPath string
	Quiet    bool
	Timeout  time.Duration // whole run, setup included
}

// ParseArgs parses the run command line (everything after "bench"). It
// rejects flags the chosen scenario would ignore, so a typo in a scenario
// name or a misplaced flag cannot silently produce a different benchmark.
func ParseArgs(args []string) (*Options, error) {
	var o Options
	c := &o.Config
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.HS, "hs", "", "")
	fs.StringVar(&c.HS2, "hs2", "", "")
	fs.StringVar(&c.Scenario, "scenario", "", "")
	fs.StringVar(&c.SharedSecret, "shared-secret", "", "")
	fs.StringVar(&c.SharedSecret2, "shared-secret2", "", "")
	fs.StringVar(&c.RegistrationToken, "registration-token", "", "")
	fs.BoolVar(&c.Insecure, "insecure", false, "")
	fs.IntVar(&c.Users, "users", 0, "")
	fs.IntVar(&c.Senders, "senders", 0, "")
	fs.IntVar(&c.Messages, "messages", 0, "")
	fs.IntVar(&c.Listeners, "listeners", 0, "")
	fs.IntVar(&c.Rooms, "rooms", 0, "")
	fs.IntVar(&c.History, "history", 0, "")
	fs.IntVar(&c.StateEvents, "state", 0, "")
	fs.IntVar(&c.PageLimit, "page-limit", 0, "")
	fs.IntVar(&c.Repeat, "repeat", 0, "")
	fs.IntVar(&c.Concurrency, "concurrency", 0, "")
	fs.IntVar(&c.MessageSize, "msg-size", 0, "")
	fs.Float64Var(&c.Rate, "rate", 0, "")
	fs.BoolVar(&c.LazyLoad, "lazy-load", false, "")
	fs.DurationVar(&c.SyncTimeout, "sync-timeout", 0, "")
	fs.DurationVar(&c.Grace, "grace", 0, "")
	fs.DurationVar(&c.RequestTimeout, "request-timeout", 0, "")
	fs.IntVar(&c.SetupConcurrency, "setup-concurrency", 0, "")
	fs.StringVar(&o.JSONPath, "json", "", "")
	fs.StringVar(&o.PlotPath, "plot", "", "")
	fs.BoolVar(&o.Quiet, "quiet", false, "")
	fs.DurationVar(&o.Timeout, "timeout", time.Hour, "")
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("bench: unexpected argument %q", fs.Arg(0))
	}
	s, ok := findScenario(c.Scenario)
	if !ok {
		if c.Scenario == "" {
			return nil, fmt.Errorf("bench: --scenario is required (one of %s)", strings.Join(Scenarios(), ", "))
		}
		return nil, fmt.Errorf("bench: unknown scenario %q (one of %s)", c.Scenario, strings.Join(Scenarios(), ", "))
	}
	var unused []string
	fs.Visit(func(f *flag.Flag) {
		if !slices.Contains(commonParams, f.Name) && !slices.Contains(s.params, f.Name) {
			unused = append(unused, "--"+f.Name)
		}
	})
	if len(unused) > 0 {
		return nil, fmt.Errorf("bench: scenario %s does not use %s", s.name, strings.Join(unused, ", "))
	}
	if o.Timeout <= 0 {
		return nil, errors.New("bench: --timeout must be positive")
	}
	*c = Defaults(*c)
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &o, nil
}

// mainCompare implements `engram bench compare [--plot out.svg] a.json b.json`.
func mainCompare(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench compare", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	plot := fs.String("plot", "", "")
	// Accept flags before, between or after the two files.
	var files []string
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			fmt.Fprintf(stderr, "bench: compare: %v\n\n%s", err, Usage())
			return ExitUsage
		}
		if fs.NArg() == 0 {
			break
		}
		files = append(files, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(files) != 2 {
		fmt.Fprintf(stderr, "bench: compare needs exactly two result files, got %d\n\n%s", len(files), Usage())
		return ExitUsage
	}
	a, err := ReadResultFile(files[0])
	if err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		return ExitError
	}
	b, err := ReadResultFile(files[1])
	if err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		return ExitError
	}
	if err := Compare(stdout, a, b, files[0], files[1]); err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		return ExitError
	}
	if *plot != "" {
		series := append(SeriesOf(a, "a: "), SeriesOf(b, "b: ")...)
		title := fmt.Sprintf("engram bench %s: a=%s b=%s", a.Scenario, filepath.Base(files[0]), filepath.Base(files[1]))
		if err := writeFile(*plot, func(w io.Writer) error { return WriteSVG(w, title, series) }); err != nil {
			fmt.Fprintf(stderr, "%v\n", err)
			return ExitError
		}
	}
	return ExitOK
}

func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return nil
}

// flagHelp documents every run flag, in the order Usage prints them.
var flagHelp = []struct{ name, arg, help string }{
	{"hs", "URL", "homeserver client-server API base URL (required)"},
	{"hs2", "URL", "second homeserver (federated)"},
	{"scenario", "NAME", "scenario to run (required)"},
	{"shared-secret", "S", "register via /_synapse/admin/v1/register with this secret instead of open registration"},
	{"shared-secret2", "S", "the same for --hs2"},
	{"registration-token", "T", "answer m.login.registration_token stages with T"},
	{"insecure", "", "skip TLS certificate verification"},
	{"users", "N", "members (busy-room) / joiners (join-storm)"},
	{"senders", "N", "concurrent senders (fan-out: concurrent requests of the one sender)"},
	{"messages", "N", "messages sent in the measured phase"},
	{"listeners", "N", "long-polling /sync listeners"},
	{"rooms", "N", "rooms"},
	{"history", "N", "messages per room before the initial sync"},
	{"state", "N", "bench.state events in the room"},
	{"page-limit", "N", "/messages page size"},
	{"repeat", "N", "repetitions of the measured read"},
	{"concurrency", "N", "joins in flight (0: all at once)"},
	{"msg-size", "BYTES", "pad message bodies to about this size"},
	{"rate", "MSG/S", "target send rate (0: as fast as possible)"},
	{"lazy-load", "", "measured initial syncs use lazy_load_members"},
	{"sync-timeout", "DUR", "listeners' /sync long-poll timeout (30s)"},
	{"grace", "DUR", "wait for outstanding deliveries after the last send (30s)"},
	{"request-timeout", "DUR", "deadline of each request (60s)"},
	{"setup-concurrency", "N", "parallel requests during setup (32)"},
	{"timeout", "DUR", "deadline of the whole run (1h)"},
	{"json", "FILE", "write the result as JSON"},
	{"plot", "FILE", "write an SVG latency chart"},
	{"quiet", "", "no progress output on stderr"},
}

// Usage returns the CLI help text.
func Usage() string {
	var b strings.Builder
	b.WriteString(`usage:
  engram bench --hs URL --scenario NAME [flags] [--json out.json] [--plot out.svg]
  engram bench compare [--plot out.svg] a.json b.json
  engram bench scenarios

Load generator speaking only the Matrix client-server API, so the same
scenario runs against any homeserver. Users are registered with random
names per run (open registration with m.login.dummy, or --shared-secret).

scenarios (defaults in parentheses):
`)
	for _, s := range scenarios {
		d := Defaults(Config{Scenario: s.name})
		p := d.params()
		fmt.Fprintf(&b, "  %-13s %s\n", s.name, s.summary)
		var parts []string
		for _, name := range s.params {
			v, ok := p[name]
			switch {
			case !ok || name == "sync-timeout" || name == "grace":
				parts = append(parts, "--"+name)
			case v == 0 && name == "concurrency":
				parts = append(parts, "--"+name+" (all)")
			case v == 0 && name == "rate":
				parts = append(parts, "--"+name+" (max)")
			default:
				parts = append(parts, fmt.Sprintf("--%s (%s)", name, formatNum(v)))
			}
		}
		fmt.Fprintf(&b, "  %-13s %s\n", "", strings.Join(parts, " "))
	}
	b.WriteString("\nflags:\n")
	for _, f := range flagHelp {
		left := "--" + f.name
		if f.arg != "" {
			left += " " + f.arg
		}
		fmt.Fprintf(&b, "  %-26s %s\n", left, f.help)
	}
	b.WriteString(`
exit status: 0 ok, 1 error, 2 usage, 3 completed with failures or undelivered messages
`)
	return b.String()
}
