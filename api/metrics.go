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
// histograms, plus gauges and counters other parts register as readers.

// latencyBuckets are histogram upper bounds, in seconds.
var latencyBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// histogram is a fixed-bucket, lock-free latency histogram.
type histogram struct {
	counts [15]atomic.Uint64 // one per bucket, plus +Inf
	sumNS  atomic.Uint64
}

func (h *histogram) observe(d time.Duration) {
	s := d.Seconds()
	i := sort.SearchFloat64s(latencyBuckets, s)
	h.counts[i].Add(1)
	h.sumNS.Add(uint64(d))
}

// routeMetrics are a route's counters.
type routeMetrics struct {
	byClass [6]atomic.Uint64 // status / 100
	latency histogram
}

// Gauge is a metric read when /metrics is scraped.
type Gauge struct {
	Name, Help, Type string // Type: gauge or counter
	Read             func() float64
}

// metrics is the server's registry.
type metrics struct {
	gauges      []Gauge
	syncWaiters atomic.Int64
}

// AddMetric registers a gauge or counter read at scrape time (log stats,
// cache hit ratios, federation queue depths, ...).
func (s *Server) AddMetric(g Gauge) { s.metrics.gauges = append(s.metrics.gauges, g) }

func (s *Server) observe(rt *route, status int, d time.Duration) {
	c := status / 100
	if c < 0 || c > 5 {
		c = 0
	}
	rt.metrics.byClass[c].Add(1)
	rt.metrics.latency.observe(d)
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
		h := &rt.metrics.latency
		var cum uint64
		total := uint64(0)
		for i := range h.counts {
			total += h.counts[i].Load()
		}
		if total == 0 {
			continue
		}
		labels := fmt.Sprintf("method=%q,route=%q", rt.method, rt.pattern)
		for i, ub := range latencyBuckets {
			cum += h.counts[i].Load()
			fmt.Fprintf(&b, "engram_http_request_seconds_bucket{%s,le=\"%s\"} %d\n", labels, strconv.FormatFloat(ub, 'g', -1, 64), cum)
		}
		fmt.Fprintf(&b, "engram_http_request_seconds_bucket{%s,le=\"+Inf\"} %d\n", labels, total)
		fmt.Fprintf(&b, "engram_http_request_seconds_sum{%s} %g\n", labels, float64(h.sumNS.Load())/1e9)
		fmt.Fprintf(&b, "engram_http_request_seconds_count{%s} %d\n", labels, total)
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
