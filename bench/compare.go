package bench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
)

// sameBand is the relative difference under which compare calls two
// numbers "~same": run-to-run noise of a load test is rarely below a few
// percent.
const sameBand = 0.03

// Compare writes a side-by-side table of two runs of the same scenario:
// every count, metric and latency percentile of a and b, the ratio b/a,
// and whether b is better or worse given the metric's direction. labelA
// and labelB name the runs in the header (file names, say).
func Compare(w io.Writer, a, b *Result, labelA, labelB string) error {
	if a == nil || b == nil {
		return fmt.Errorf("bench: compare: missing result")
	}
	if a.Scenario != b.Scenario {
		return fmt.Errorf("bench: compare: scenarios differ (%s vs %s)", a.Scenario, b.Scenario)
	}
	var out strings.Builder
	fmt.Fprintf(&out, "scenario %s\n", a.Scenario)
	fmt.Fprintf(&out, "a: %s  %s\n", labelA, describe(a))
	fmt.Fprintf(&out, "b: %s  %s\n", labelB, describe(b))
	if pa, pb := formatParams(a.Params), formatParams(b.Params); pa != pb {
		fmt.Fprintf(&out, "warning: parameters differ\n  a: %s\n  b: %s\n", pa, pb)
	}
	out.WriteByte('\n')

	tw := tabwriter.NewWriter(&out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "metric\tunit\ta\tb\tb/a\tb vs a\n")
	row := func(name, unit string, va, vb float64, better string) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", name, unit, formatNum(va), formatNum(vb), ratio(va, vb), verdict(va, vb, better))
	}
	ca, cb := a.Counts, b.Counts
	row("sent", "count", float64(ca.Sent), float64(cb.Sent), "")
	row("send_failures", "count", float64(ca.SendFailures), float64(cb.SendFailures), "lower")
	row("delivered", "count", float64(ca.Delivered), float64(cb.Delivered), "")
	row("undelivered", "count", float64(ca.Undelivered), float64(cb.Undelivered), "lower")
	row("operations", "count", float64(ca.Operations), float64(cb.Operations), "")
	row("failures", "count", float64(ca.Failures), float64(cb.Failures), "lower")
	row("retries", "count", float64(ca.Retries), float64(cb.Retries), "lower")
	row("setup", "s", a.SetupSeconds, b.SetupSeconds, "")
	row("measured", "s", a.MeasuredSeconds, b.MeasuredSeconds, "")

	for _, name := range unionNames(a.Metrics, b.Metrics, func(m Metric) string { return m.Name }) {
		ma, okA := a.Metric(name)
		mb, okB := b.Metric(name)
		switch {
		case okA && okB:
			row(name, ma.Unit, ma.Value, mb.Value, ma.Better)
		case okA:
			fmt.Fprintf(tw, "%s\t%s\t%s\t-\t\t\n", name, ma.Unit, formatNum(ma.Value))
		default:
			fmt.Fprintf(tw, "%s\t%s\t-\t%s\t\t\n", name, mb.Unit, formatNum(mb.Value))
		}
	}
	for _, name := range unionNames(a.Latencies, b.Latencies, func(d Dist) string { return d.Name }) {
		da, okA := a.Latency(name)
		db, okB := b.Latency(name)
		for _, q := range []struct {
			suffix string
			get    func(Dist) float64
		}{
			{"p50", func(d Dist) float64 { return d.P50 }},
			{"p90", func(d Dist) float64 { return d.P90 }},
			{"p99", func(d Dist) float64 { return d.P99 }},
			{"max", func(d Dist) float64 { return d.Max }},
		} {
			n := name + " " + q.suffix
			switch {
			case okA && okB:
				row(n, "ms", q.get(da), q.get(db), "lower")
			case okA:
				fmt.Fprintf(tw, "%s\tms\t%s\t-\t\t\n", n, formatNum(q.get(da)))
			default:
				fmt.Fprintf(tw, "%s\tms\t-\t%s\t\t\n", n, formatNum(q.get(db)))
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := io.WriteString(w, trimLines(out.String()))
	return err
}

// trimLines drops the trailing blanks tabwriter leaves after the last
// column, so reports and golden files have no invisible differences.
func trimLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	return strings.Join(lines, "\n")
}

func describe(r *Result) string {
	s := r.Server
	if r.Software != "" {
		s += " (" + r.Software + ")"
	}
	if !r.Started.IsZero() {
		s += " " + r.Started.Format("2006-01-02 15:04Z07:00")
	}
	return s
}

// unionNames lists the names of a in order, then those only in b.
func unionNames[T any](a, b []T, name func(T) string) []string {
	var out []string
	for _, x := range a {
		if n := name(x); !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	for _, x := range b {
		if n := name(x); !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

func ratio(a, b float64) string {
	switch {
	case a == 0 && b == 0:
		return "1.00x"
	case a == 0:
		return "-"
	}
	r := b / a
	if math.IsInf(r, 0) || math.IsNaN(r) {
		return "-"
	}
	return fmt.Sprintf("%.2fx", r)
}

// verdict says whether b is better than a for a metric whose direction is
// better ("higher", "lower", or "" for plain counts).
func verdict(a, b float64, better string) string {
	if better == "" {
		return ""
	}
	if a == b {
		return "same"
	}
	scale := math.Max(math.Abs(a), math.Abs(b))
	if scale > 0 && math.Abs(a-b)/scale < sameBand {
		return "~same"
	}
	if (better == "higher") == (b > a) {
		return "better"
	}
	return "worse"
}
