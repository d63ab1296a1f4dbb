package bench

import (
	"fmt"
	"io"
	"math"
	"strings"
)

// PlotSeries is one latency distribution to draw, under a legend label.
type PlotSeries struct {
	Label string
	Dist  Dist
}

// SeriesOf returns the latency distributions of r as plot series, each
// label prefixed with prefix (empty for a single run).
func SeriesOf(r *Result, prefix string) []PlotSeries {
	out := make([]PlotSeries, 0, len(r.Latencies))
	for _, d := range r.Latencies {
		if d.Count == 0 {
			continue
		}
		out = append(out, PlotSeries{Label: prefix + d.Name, Dist: d})
	}
	return out
}

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"}

// Chart geometry. Two panels share the width: on top latency by
// percentile (HdrHistogram style: the percentile axis stretches the tail,
// 90 / 99 / 99.9 / 99.99 are equally spaced), below a log-bucket histogram.
const (
	svgW      = 1000
	svgH      = 720
	padL      = 80
	padR      = 260 // legend
	topY      = 50
	topH      = 300
	botY      = 420
	botH      = 240
	plotW     = svgW - padL - padR
	pctMaxPos = 4.5 // x position of p100 on the percentile axis
)

// WriteSVG draws series as a self-contained SVG document: no scripts, no
// external fonts or styles, so it renders anywhere and diffs as text.
func WriteSVG(w io.Writer, title string, series []PlotSeries) error {
	var b strings.Builder
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>`+"\n")
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", svgW, svgH, svgW, svgH)
	fmt.Fprintf(&b, `<rect x="0" y="0" width="%d" height="%d" fill="#ffffff"/>`+"\n", svgW, svgH)
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="16" font-weight="bold">%s</text>`+"\n", padL, esc(truncate(title, 110)))

	if len(series) == 0 {
		fmt.Fprintf(&b, `<text x="%d" y="%d">no samples</text>`+"\n", padL, topY+topH/2)
		b.WriteString("</svg>\n")
		_, err := io.WriteString(w, b.String())
		return err
	}

	// Latency range over all series, as whole decades.
	lo, hi := math.Inf(1), 0.0
	for _, s := range series {
		for _, pt := range s.Dist.CDF {
			if v := pt[1]; v > 0 {
				lo = math.Min(lo, v)
				hi = math.Max(hi, v)
			}
		}
		if s.Dist.Min > 0 {
			lo = math.Min(lo, s.Dist.Min)
		}
		hi = math.Max(hi, s.Dist.Max)
	}
	if math.IsInf(lo, 1) || hi <= 0 {
		lo, hi = 0.1, 1
	}
	dLo := math.Floor(math.Log10(lo))
	dHi := math.Ceil(math.Log10(hi))
	if dHi <= dLo {
		dHi = dLo + 1
	}
	// logPos maps a latency to [0,1] on the decade range; zero and
	// negatives sit on the left edge.
	logPos := func(v float64) float64 {
		if v <= 0 {
			return 0
		}
		return math.Max(0, math.Min(1, (math.Log10(v)-dLo)/(dHi-dLo)))
	}

	// --- top panel: latency by percentile ---
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-weight="bold">latency by percentile</text>`+"\n", padL, topY-8)
	frame(&b, padL, topY, plotW, topH)
	pctPos := func(p float64) float64 {
		if p >= 100 {
			return pctMaxPos / pctMaxPos
		}
		x := math.Log10(1 / (1 - p/100))
		return math.Min(x, 4) / pctMaxPos
	}
	for _, t := range []struct {
		p     float64
		label string
	}{{0, "0%"}, {50, "50%"}, {90, "90%"}, {99, "99%"}, {99.9, "99.9%"}, {99.99, "99.99%"}, {100, "max"}} {
		x := float64(padL) + pctPos(t.p)*plotW
		gridV(&b, x, topY, topH)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x, topY+topH+16, t.label)
	}
	for d := dLo; d <= dHi; d++ {
		y := float64(topY+topH) - logPos(math.Pow(10, d))*topH
		gridH(&b, padL, y, plotW)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", padL-6, y+4, fmtMS(math.Pow(10, d)))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle" transform="rotate(-90 %d %d)">latency</text>`+"\n", 18, topY+topH/2, 18, topY+topH/2)
	for i, s := range series {
		var pts []string
		for _, pt := range s.Dist.CDF {
			x := float64(padL) + pctPos(pt[0])*plotW
			y := float64(topY+topH) - logPos(pt[1])*topH
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", palette[i%len(palette)], strings.Join(pts, " "))
	}

	// --- bottom panel: histogram ---
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-weight="bold">histogram (share of samples per bucket)</text>`+"\n", padL, botY-8)
	frame(&b, padL, botY, plotW, botH)
	maxFrac := 0.0
	for _, s := range series {
		for _, h := range s.Dist.Histogram {
			if s.Dist.Count > 0 {
				maxFrac = math.Max(maxFrac, h[1]/float64(s.Dist.Count))
			}
		}
	}
	if maxFrac <= 0 {
		maxFrac = 1
	}
	for d := dLo; d <= dHi; d++ {
		x := float64(padL) + logPos(math.Pow(10, d))*plotW
		gridV(&b, x, botY, botH)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x, botY+botH+16, fmtMS(math.Pow(10, d)))
	}
	for _, f := range []float64{0, 0.5, 1} {
		y := float64(botY+botH) - f*botH
		gridH(&b, padL, y, plotW)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%.0f%%</text>`+"\n", padL-6, y+4, f*maxFrac*100)
	}
	width := math.Pow(10, 1.0/HistBucketsPerDecade)
	for i, s := range series {
		if s.Dist.Count == 0 {
			continue
		}
		var path strings.Builder
		base := float64(botY + botH)
		for _, h := range s.Dist.Histogram {
			x0 := float64(padL) + logPos(h[0]/width)*plotW
			x1 := float64(padL) + logPos(h[0])*plotW
			if x1-x0 < 1 {
				// Buckets below the axis (0 ms samples) get one bucket's
				// width at the left edge instead of vanishing.
				x1 = x0 + plotW/((dHi-dLo)*HistBucketsPerDecade)
			}
			y := base - h[1]/float64(s.Dist.Count)/maxFrac*botH
			fmt.Fprintf(&path, "M%.1f,%.1fV%.1fH%.1fV%.1f", x0, base, y, x1, base)
		}
		fmt.Fprintf(&b, `<path fill="%s" fill-opacity="0.25" stroke="%s" stroke-width="1.5" d="%s"/>`+"\n", palette[i%len(palette)], palette[i%len(palette)], path.String())
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">latency</text>`+"\n", padL+plotW/2, botY+botH+34)

	// --- legend ---
	lx := padL + plotW + 20
	for i, s := range series {
		y := topY + 10 + i*36
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="14" height="14" fill="%s"/>`+"\n", lx, y, palette[i%len(palette)])
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", lx+20, y+11, esc(truncate(s.Label, 28)))
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="10" fill="#555">n=%d p50=%s p99=%s</text>`+"\n", lx+20, y+25, s.Dist.Count, fmtMS(s.Dist.P50), fmtMS(s.Dist.P99))
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func frame(b *strings.Builder, x, y, w, h int) {
	fmt.Fprintf(b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333"/>`+"\n", x, y, w, h)
}

func gridV(b *strings.Builder, x float64, y, h int) {
	fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", x, y, x, y+h)
}

func gridH(b *strings.Builder, x int, y float64, w int) {
	fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", x, y, x+w, y)
}

// fmtMS prints a millisecond value with a unit that keeps it short.
func fmtMS(ms float64) string {
	switch {
	case ms >= 1000:
		return trimFloat(ms/1000) + " s"
	case ms >= 1:
		return trimFloat(ms) + " ms"
	case ms > 0:
		return trimFloat(ms*1000) + " µs"
	default:
		return "0"
	}
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.3g", v)
	if strings.ContainsAny(s, "e") {
		s = fmt.Sprintf("%.0f", v)
	}
	return s
}

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

var xmlEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&apos;")

// esc escapes text for XML and drops characters XML 1.0 forbids, so any
// label (a server URL, a file name) yields a well-formed document.
func esc(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '\t' || r == '\n' || r == '\r' || (r >= 0x20 && r <= 0xD7FF) || (r >= 0xE000 && r <= 0xFFFD) || (r >= 0x10000 && r <= 0x10FFFF) {
			return r
		}
		return -1
	}, s)
	return xmlEscaper.Replace(s)
}
