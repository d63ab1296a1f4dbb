package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// ResultFormat is the version of the JSON layout of Result; compare refuses
// files with a different major version.
const ResultFormat = 1

// Result is the outcome of one scenario run: what was measured, how many
// operations succeeded, and the latency distributions. It is what Run
// returns, what --json writes and what compare reads.
type Result struct {
	Format   int       `json:"format"`
	Scenario string    `json:"scenario"`
	Server   string    `json:"server"`             // --hs
	Server2  string    `json:"server2,omitempty"`  // --hs2 (federated)
	Software string    `json:"software,omitempty"` // implementation name/version, best effort
	RunID    string    `json:"run_id"`             // random prefix of user names and message markers
	Started  time.Time `json:"started"`
	// Params are the effective scenario parameters after defaults.
	Params map[string]float64 `json:"params"`
	// SetupSeconds is the time spent registering, creating rooms and
	// joining; it is not part of any measurement.
	SetupSeconds    float64 `json:"setup_seconds"`
	MeasuredSeconds float64 `json:"measured_seconds"`
	Counts          Counts  `json:"counts"`
	// Metrics are single numbers (throughput, one-shot timings).
	Metrics []Metric `json:"metrics"`
	// Latencies are distributions, in milliseconds.
	Latencies []Dist `json:"latencies"`
	// Notes explain anything a reader should know to trust the numbers
	// (gaps filled by pagination, retries, early deliveries).
	Notes []string `json:"notes,omitempty"`
}

// Counts are the operation tallies a test can assert on. A healthy run has
// SendFailures, Undelivered and Failures all zero.
type Counts struct {
	Sent         int64 `json:"sent"`          // messages (or state events) the server acknowledged in the measured phase
	SendFailures int64 `json:"send_failures"` // sends that ended in an error
	Expected     int64 `json:"expected"`      // deliveries expected: acknowledged sends x listeners that should see them
	Delivered    int64 `json:"delivered"`     // of Expected, seen by a listener's /sync (or gap pagination)
	Undelivered  int64 `json:"undelivered"`   // Expected - Delivered after the grace period
	Operations   int64 `json:"operations"`    // other measured operations attempted (joins, syncs, pages, GET /state)
	Failures     int64 `json:"failures"`      // of Operations, failed
	Retries      int64 `json:"retries"`       // requests repeated after 429 or a transient error, all phases
}

// Metric is one named number. Better says how to read a ratio: "higher"
// (throughput) or "lower" (time).
type Metric struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
	Better string  `json:"better"`
}

func (r *Result) addMetric(name string, v float64, unit, better string) {
	r.Metrics = append(r.Metrics, Metric{Name: name, Value: v, Unit: unit, Better: better})
}

func (r *Result) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// Metric returns the named metric and whether it exists.
func (r *Result) Metric(name string) (Metric, bool) {
	for _, m := range r.Metrics {
		if m.Name == name {
			return m, true
		}
	}
	return Metric{}, false
}

// Latency returns the named distribution and whether it exists.
func (r *Result) Latency(name string) (Dist, bool) {
	for _, d := range r.Latencies {
		if d.Name == name {
			return d, true
		}
	}
	return Dist{}, false
}

// WriteJSON writes r as indented JSON.
func (r *Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("bench: write json: %w", err)
	}
	return nil
}

// ReadResult decodes a Result written by WriteJSON.
func ReadResult(rd io.Reader) (*Result, error) {
	var r Result
	dec := json.NewDecoder(rd)
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("bench: read result: %w", err)
	}
	if r.Format != ResultFormat {
		return nil, fmt.Errorf("bench: read result: format %d, want %d", r.Format, ResultFormat)
	}
	if r.Scenario == "" {
		return nil, fmt.Errorf("bench: read result: no scenario")
	}
	return &r, nil
}

// ReadResultFile reads a JSON result from a file.
func ReadResultFile(path string) (*Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	defer f.Close()
	r, err := ReadResult(f)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, path)
	}
	return r, nil
}

// WriteTable prints the human-readable report of one run.
func (r *Result) WriteTable(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "scenario  %s   run %s\n", r.Scenario, r.RunID)
	fmt.Fprintf(&b, "server    %s", r.Server)
	if r.Software != "" {
		fmt.Fprintf(&b, " (%s)", r.Software)
	}
	b.WriteByte('\n')
	if r.Server2 != "" {
		fmt.Fprintf(&b, "server2   %s\n", r.Server2)
	}
	if len(r.Params) > 0 {
		b.WriteString("params    ")
		b.WriteString(formatParams(r.Params))
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "setup     %.2fs   measured %.2fs\n\n", r.SetupSeconds, r.MeasuredSeconds)

	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	c := r.Counts
	fmt.Fprintf(tw, "sent\tsend fail\texpected\tdelivered\tundelivered\tops\tfailures\tretries\t\n")
	fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", c.Sent, c.SendFailures, c.Expected, c.Delivered, c.Undelivered, c.Operations, c.Failures, c.Retries)
	tw.Flush()

	if len(r.Metrics) > 0 {
		b.WriteByte('\n')
		tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "metric\tvalue\tunit\n")
		for _, m := range r.Metrics {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", m.Name, formatNum(m.Value), m.Unit)
		}
		tw.Flush()
	}
	if len(r.Latencies) > 0 {
		b.WriteByte('\n')
		tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "latency (ms)\tn\tmin\tmean\tp50\tp90\tp99\tp99.9\tmax\t\n")
		for _, d := range r.Latencies {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", d.Name, d.Count,
				formatNum(d.Min), formatNum(d.Mean), formatNum(d.P50), formatNum(d.P90),
				formatNum(d.P99), formatNum(d.P999), formatNum(d.Max))
		}
		tw.Flush()
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	_, err := io.WriteString(w, trimLines(b.String()))
	return err
}

func formatParams(p map[string]float64) string {
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + formatNum(p[k])
	}
	return strings.Join(parts, " ")
}

// formatNum prints integers without decimals and other values with a
// precision that suits their size.
func formatNum(v float64) string {
	switch {
	case v == float64(int64(v)) && v < 1e15 && v > -1e15:
		return strconv.FormatInt(int64(v), 10)
	case v >= 100 || v <= -100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case v >= 1 || v <= -1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}
