package api

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Prometheus metrics, written in the text exposition format by hand (no
// client library): per-route request counts by status class and latency
// histograms, plus gauges, counters and histograms other parts register.

// latencyBuckets are histogram upper bounds, in seconds.
var latencyBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// maxHistBuckets bounds a histogram's bucket count, so counts is an array and a
// zero Histogram is ready to use.
const maxHistBuckets = 16

// Histogram is a fixed-bucket, lock-free histogram. The zero value measures
// latencies in seconds (latencyBuckets); NewHistogram sets other bounds.
type Histogram struct {
	bounds []float64                         // increasing upper bounds; nil: latencyBuckets
	counts [maxHistBuckets + 1]atomic.Uint64 // one per bound, then +Inf
	sum    atomic.Uint64                     // float64 bits
}

// NewHistogram returns a histogram with the given increasing upper bounds
// (at most 16).
func NewHistogram(bounds ...float64) *Histogram {
	if len(bounds) > maxHistBuckets || !sort.Float64sAreSorted(bounds) {
		panic("api: histogram bounds must be increasing, at most 16")
	}
	return &Histogram{bounds: bounds}
}

func (h *Histogram) buckets() []float64 {
	if h.bounds == nil {
		return latencyBuckets
	}
	return h.bounds
}

// Observe counts one value.
func (h *Histogram) Observe(v float64) {
	h.counts[sort.SearchFloat64s(h.buckets(), v)].Add(1)
	for {
		old := h.sum.Load()
		if h.sum.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

// ObserveDuration counts d in seconds.
func (h *Histogram) ObserveDuration(d time.Duration) { h.Observe(d.Seconds()) }

// write appends h's _bucket, _sum and _count lines (labels may be empty);
// an empty histogram writes nothing.
func (h *Histogram) write(b *strings.Builder, name, labels string) {
	bounds := h.buckets()
	var total uint64
	for i := 0; i <= len(bounds); i++ {
		total += h.counts[i].Load()
	}
	if total == 0 {
		return
	}
	sep := ""
	if labels != "" {
		sep = ","
	}
	var cum uint64
	for i, ub := range bounds {
		cum += h.counts[i].Load()
		fmt.Fprintf(b, "%s_bucket{%s%sle=\"%s\"} %d\n", name, labels, sep, strconv.FormatFloat(ub, 'g', -1, 64), cum)
	}
	fmt.Fprintf(b, "%s_bucket{%s%sle=\"+Inf\"} %d\n", name, labels, sep, total)
	if labels != "" {
		labels = "{" + labels + "}"
	}
	fmt.Fprintf(b, "%s_sum%s %g\n%s_count%s %d\n", name, labels, math.Float64frombits(h.sum.Load()), name, labels, total)
}

// routeMetrics are a route's counters.
type routeMetrics struct {
	byClass [6]atomic.Uint64 // status / 100
	latency Histogram
}

// Gauge is a metric read when /metrics is scraped.
type Gauge struct {
	Name, Help, Type string // Type: gauge or counter
	Read             func() float64
}

// namedHistogram is a histogram another part registered.
type namedHistogram struct {
	name, help string
	h          *Histogram
}

// metrics is the server's registry.
type metrics struct {
	gauges      []Gauge
	histograms  []namedHistogram
	syncWaiters atomic.Int64
}

// AddMetric registers a gauge or counter read at scrape time (log stats,
// cache hit ratios, federation queue depths, ...).
func (s *Server) AddMetric(g Gauge) { s.metrics.gauges = append(s.metrics.gauges, g) }

// AddHistogram registers a histogram others observe into (log group sizes,
// fsync latency, ...).
func (s *Server) AddHistogram(name, help string, h *Histogram) {
	s.metrics.histograms = append(s.metrics.histograms, namedHistogram{name, help, h})
}

func (s *Server) observe(rt *route, status int, d time.Duration) {
	c := status / 100
	if c < 0 || c > 5 {
		c = 0
	}
	rt.metrics.byClass[c].Add(1)
	rt.metrics.latency.ObserveDuration(d)
}

func (s *Server) metricsPage(r *Req) error {
	var b strings.Builder
	b.WriteString("# HELP engram_http_requests_total HTTP requests by route and status class.\n# TYPE engram_http_requests_total counter\n")
	routes := s.rt.all()
	for _, rt := range routes {
		for c := 1; c <= 5; c++ {
			if n := rt.metrics.byClass[c].Load(); n > 0 {
				fmt.Fprintf(&b, "engram_http_requests_total{method=%q,route=%q,code=\"%dxx\"} %d\n", rt.method, rt.pattern, c, n)
			}
		}
	}
	b.WriteString("# HELP engram_http_request_seconds HTTP request latency by route.\n# TYPE engram_http_request_seconds histogram\n")
	for _, rt := range routes {
		rt.metrics.latency.write(&b, "engram_http_request_seconds", fmt.Sprintf("method=%q,route=%q", rt.method, rt.pattern))
	}
	for _, nh := range s.metrics.histograms {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s histogram\n", nh.name, nh.help, nh.name)
		nh.h.write(&b, nh.name, "")
	}
	fmt.Fprintf(&b, "# HELP engram_sync_waiters Long-polling /sync requests waiting.\n# TYPE engram_sync_waiters gauge\nengram_sync_waiters %d\n", s.metrics.syncWaiters.Load())
	fmt.Fprintf(&b, "# HELP engram_log_position Last durable log position.\n# TYPE engram_log_position counter\nengram_log_position %d\n", s.log.Last())
	for _, g := range s.metrics.gauges {
		v := g.Read()
		if math.IsNaN(v) {
			continue
		}
		typ := g.Type
		if typ == "" {
			typ = "gauge"
		}
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n%s %g\n", g.Name, g.Help, g.Name, typ, g.Name, v)
	}
	r.ctx.Response.Header.SetContentType("text/plain; version=0.0.4")
	r.ctx.SetBodyString(b.String())
	return nil
}
