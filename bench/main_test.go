package bench

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseArgsErrors(t *testing.T) {
	hs := []string{"--hs", "http://127.0.0.1:8008"}
	with := func(extra ...string) []string { return append(append([]string{}, hs...), extra...) }
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"nothing", nil, "--scenario is required"},
		{"no scenario", hs, "--scenario is required"},
		{"unknown scenario", with("--scenario", "busy-rom"), `unknown scenario "busy-rom"`},
		{"no hs", []string{"--scenario", "busy-room"}, "--hs URL is required"},
		{"bad hs scheme", []string{"--hs", "ftp://x", "--scenario", "busy-room"}, "want http(s)://host"},
		{"hs without host", []string{"--hs", "http://", "--scenario", "busy-room"}, "want http(s)://host"},
		{"unknown flag", with("--scenario", "busy-room", "--bogus", "1"), "flag provided but not defined: -bogus"},
		{"bad int", with("--scenario", "busy-room", "--users", "many"), "invalid value"},
		{"bad duration", with("--scenario", "busy-room", "--grace", "5"), "invalid value"},
		{"positional", with("--scenario", "busy-room", "extra"), `unexpected argument "extra"`},
		{"flag of other scenario", with("--scenario", "busy-room", "--state", "10"), "does not use --state"},
		{"two foreign flags", with("--scenario", "join-storm", "--rooms", "1", "--history", "2"), "does not use --history, --rooms"},
		{"hs2 outside federated", with("--scenario", "busy-room", "--hs2", "http://b"), "does not use --hs2"},
		{"federated without hs2", with("--scenario", "federated"), "--hs2 URL is required"},
		{"senders exceed users", with("--scenario", "busy-room", "--users", "4", "--senders", "5"), "--senders 5 exceeds --users 4"},
		{"listeners exceed users", with("--scenario", "busy-room", "--users", "4", "--senders", "1", "--listeners", "5"), "--listeners 5 exceeds --users 4"},
		{"negative users", with("--scenario", "busy-room", "--users", "-1"), "--users must be at least 1"},
		{"negative rate", with("--scenario", "busy-room", "--rate", "-2"), "--rate must not be negative"},
		{"negative concurrency", with("--scenario", "join-storm", "--concurrency", "-2"), "--concurrency must not be negative"},
		{"huge msg-size", with("--scenario", "busy-room", "--msg-size", "70000"), "--msg-size"},
		{"too many cells", with("--scenario", "fan-out", "--listeners", "10000", "--messages", "10000"), "exceeds"},
		{"zero timeout", with("--scenario", "busy-room", "--timeout", "0s"), "--timeout must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseArgs(tt.args)
			if err == nil {
				t.Fatalf("ParseArgs(%q) succeeded, want error %q", tt.args, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "bench: ") {
				t.Fatalf("err = %v, want containing %q", err, tt.want)
			}
		})
	}
}

func TestParseArgsDefaults(t *testing.T) {
	o, err := ParseArgs([]string{"--hs", "http://h:8008", "--scenario", "busy-room", "--senders", "8", "--json", "o.json", "--plot=o.svg", "-quiet"})
	if err != nil {
		t.Fatal(err)
	}
	c := o.Config
	if c.Users != 200 || c.Senders != 8 || c.Messages != 20000 || c.Listeners != 50 {
		t.Errorf("busy-room defaults not applied: %+v", c)
	}
	if c.SyncTimeout != 30*time.Second || c.Grace != 30*time.Second || c.RequestTimeout != time.Minute || c.SetupConcurrency != 32 {
		t.Errorf("common defaults not applied: %+v", c)
	}
	if o.JSONPath != "o.json" || o.PlotPath != "o.svg" || !o.Quiet || o.Timeout != time.Hour {
		t.Errorf("options %+v", o)
	}

	o, err = ParseArgs([]string{"--hs", "https://a", "--hs2", "https://b", "--scenario", "federated", "--shared-secret2", "x"})
	if err != nil {
		t.Fatal(err)
	}
	if o.Config.HS2 != "https://b" || o.Config.SharedSecret2 != "x" || o.Config.Senders != 2 || o.Config.Messages != 500 {
		t.Errorf("federated: %+v", o.Config)
	}
}

// Every scenario's defaults validate, and every parameter a scenario names
// is a real flag.
func TestScenarioTable(t *testing.T) {
	flags := map[string]bool{}
	for _, f := range flagHelp {
		flags[f.name] = true
	}
	for _, s := range scenarios {
		c := Defaults(Config{Scenario: s.name, HS: "http://h", HS2: "http://h2"})
		if err := c.Validate(); err != nil {
			t.Errorf("%s defaults: %v", s.name, err)
		}
		for _, p := range s.params {
			if !flags[p] {
				t.Errorf("%s uses undocumented flag %s", s.name, p)
			}
		}
	}
	for _, p := range commonParams {
		if !flags[p] {
			t.Errorf("common flag %s undocumented", p)
		}
	}
	u := Usage()
	for _, name := range Scenarios() {
		if !strings.Contains(u, name) {
			t.Errorf("usage lacks %s", name)
		}
	}
}

func TestMainUsageAndCompare(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.json"), filepath.Join(dir, "b.json")
	for path, scale := range map[string]float64{a: 1, b: 2} {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := sampleResult("http://x", scale).WriteJSON(f); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	plot := filepath.Join(dir, "cmp.svg")
	tests := []struct {
		name       string
		args       []string
		code       int
		stdout     string
		stderr     string
		wantFile   string
		wantNoFile string
	}{
		{"help", []string{"help"}, ExitOK, "engram bench compare", "", "", ""},
		{"scenarios", []string{"scenarios"}, ExitOK, "state-heavy", "", "", ""},
		{"no args", nil, ExitUsage, "", "--scenario is required", "", ""},
		{"bad flag", []string{"--nope"}, ExitUsage, "", "not defined", "", ""},
		{"compare one file", []string{"compare", a}, ExitUsage, "", "exactly two", "", ""},
		{"compare three files", []string{"compare", a, b, a}, ExitUsage, "", "exactly two", "", ""},
		{"compare bad flag", []string{"compare", "--x", a, b}, ExitUsage, "", "not defined", "", ""},
		{"compare missing file", []string{"compare", a, filepath.Join(dir, "none.json")}, ExitError, "", "none.json", "", ""},
		{"compare bad json", []string{"compare", a, bad}, ExitError, "", "bad.json", "", ""},
		{"compare", []string{"compare", a, b}, ExitOK, "send_throughput  msg/s  1000", "", "", plot},
		{"compare plot after files", []string{"compare", a, b, "--plot", plot}, ExitOK, "delivery p99", "", plot, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.Remove(plot)
			var out, errOut strings.Builder
			code := Main(tt.args, &out, &errOut)
			if code != tt.code {
				t.Fatalf("code %d, want %d\nstdout %s\nstderr %s", code, tt.code, out.String(), errOut.String())
			}
			if !strings.Contains(out.String(), tt.stdout) {
				t.Errorf("stdout lacks %q:\n%s", tt.stdout, out.String())
			}
			if !strings.Contains(errOut.String(), tt.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tt.stderr, errOut.String())
			}
			if tt.wantFile != "" {
				doc, err := os.ReadFile(tt.wantFile)
				if err != nil {
					t.Fatal(err)
				}
				checkSVG(t, doc)
			}
			if tt.wantNoFile != "" {
				if _, err := os.Stat(tt.wantNoFile); err == nil {
					t.Errorf("%s written without --plot", tt.wantNoFile)
				}
			}
		})
	}
}

// A server that refuses connections makes the run fail fast with exit 1.
func TestMainUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	var out, errOut strings.Builder
	code := Main([]string{"--hs", "http://" + addr, "--scenario", "busy-room", "--users", "4", "--senders", "2", "--messages", "20", "--listeners", "2", "--quiet", "--timeout", "20s"}, &out, &errOut)
	if code != ExitError {
		t.Fatalf("code %d, stderr %s", code, errOut.String())
	}
	if !strings.Contains(errOut.String(), "does not answer the client-server API") {
		t.Errorf("stderr: %s", errOut.String())
	}
}
