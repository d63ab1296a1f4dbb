package bench

import (
	"math"
	"slices"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ten := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	hundred := make([]float64, 100)
	for i := range hundred {
		hundred[i] = float64(i + 1)
	}
	tests := []struct {
		name   string
		sorted []float64
		p      float64
		want   float64
	}{
		{"empty", nil, 50, 0},
		{"single p0", []float64{7}, 0, 7},
		{"single p50", []float64{7}, 50, 7},
		{"single p100", []float64{7}, 100, 7},
		{"ten p0", ten, 0, 1},
		{"ten p10", ten, 10, 1},
		{"ten p11", ten, 11, 2},
		{"ten p50", ten, 50, 5},
		{"ten p90", ten, 90, 9}, // exactly 9 of 10 samples are <= 9
		{"ten p91", ten, 91, 10},
		{"ten p99", ten, 99, 10},
		{"ten p100", ten, 100, 10},
		{"hundred p1", hundred, 1, 1},
		{"hundred p50", hundred, 50, 50},
		{"hundred p99", hundred, 99, 99},
		{"hundred p99.9", hundred, 99.9, 100},
		{"negative p", ten, -5, 1},
		{"p above 100", ten, 250, 10},
		{"NaN p", ten, math.NaN(), 1},
		{"two p50", []float64{1, 2}, 50, 1},
		{"two p51", []float64{1, 2}, 51, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("Percentile(%v, %v) = %v, want %v", tt.sorted, tt.p, got, tt.want)
			}
		})
	}
}

// TestPercentileDefinition checks the nearest-rank definition directly on
// random-looking data: the result is a sample, at least p% of samples are
// <= it, and fewer than p% are < it.
func TestPercentileDefinition(t *testing.T) {
	var s []float64
	x := uint32(12345)
	for range 997 {
		x = x*1664525 + 1013904223
		s = append(s, float64(x%10000)/7)
	}
	slices.Sort(s)
	for _, p := range []float64{0.1, 1, 25, 50, 75, 90, 99, 99.9} {
		v := Percentile(s, p)
		if !slices.Contains(s, v) {
			t.Fatalf("p%v = %v is not a sample", p, v)
		}
		le, lt := 0, 0
		for _, y := range s {
			if y <= v {
				le++
			}
			if y < v {
				lt++
			}
		}
		n := float64(len(s))
		if float64(le)/n*100 < p || float64(lt)/n*100 >= p {
			t.Errorf("p%v = %v: %d <= and %d < of %d", p, v, le, lt, len(s))
		}
	}
}

func TestSummarize(t *testing.T) {
	samples := []float64{5, 1, 3, 2, 4, 0, 1000, 0.5}
	orig := slices.Clone(samples)
	d := Summarize("x", samples)
	if !slices.Equal(samples, orig) {
		t.Fatalf("Summarize modified its input")
	}
	if d.Name != "x" || d.Count != 8 || d.Min != 0 || d.Max != 1000 {
		t.Fatalf("bad summary %+v", d)
	}
	if want := (5 + 1 + 3 + 2 + 4 + 0 + 1000 + 0.5) / 8; d.Mean != want {
		t.Errorf("mean %v, want %v", d.Mean, want)
	}
	if d.P50 != 2 || d.P99 != 1000 {
		t.Errorf("p50 %v p99 %v", d.P50, d.P99)
	}
	if len(d.CDF) != len(CDFPercentiles) {
		t.Fatalf("cdf has %d points", len(d.CDF))
	}
	for i := 1; i < len(d.CDF); i++ {
		if d.CDF[i][0] <= d.CDF[i-1][0] || d.CDF[i][1] < d.CDF[i-1][1] {
			t.Fatalf("cdf not monotone at %d: %v %v", i, d.CDF[i-1], d.CDF[i])
		}
	}
	var total float64
	for i, h := range d.Histogram {
		total += h[1]
		if i > 0 && h[0] <= d.Histogram[i-1][0] {
			t.Fatalf("histogram bounds not increasing: %v", d.Histogram)
		}
	}
	if total != 8 {
		t.Errorf("histogram holds %v samples, want 8", total)
	}
	if e := Summarize("empty", nil); e.Count != 0 || e.CDF != nil || e.Histogram != nil {
		t.Errorf("empty summary %+v", e)
	}
}

func TestHistBucket(t *testing.T) {
	for _, v := range []float64{0.0005, 0.001, 0.0123, 1, 1.0001, 9.99, 10, 12345} {
		b := histBucket(v)
		up := histUpper(b)
		if v > up*(1+1e-9) {
			t.Errorf("%v above its bucket bound %v", v, up)
		}
		if b > 0 && v <= histUpper(b-1)*(1-1e-9) {
			t.Errorf("%v belongs below bucket %d (%v)", v, b, histUpper(b-1))
		}
	}
}

func TestRecorder(t *testing.T) {
	var r recorder
	r.add(1500 * time.Microsecond)
	r.add(2 * time.Millisecond)
	d := r.dist("r")
	if d.Count != 2 || d.Min != 1.5 || d.Max != 2 {
		t.Errorf("%+v", d)
	}
}

func BenchmarkSummarize(b *testing.B) {
	s := make([]float64, 100000)
	x := uint32(1)
	for i := range s {
		x = x*1664525 + 1013904223
		s[i] = float64(x%100000) / 100
	}
	b.ReportAllocs()
	for b.Loop() {
		Summarize("bench", s)
	}
}

// TestSortSamples: the radix sort agrees with slices.Sort, and inputs it
// does not handle (negative, -0, NaN) still come out sorted.
func TestSortSamples(t *testing.T) {
	x := uint64(7)
	rnd := func() uint64 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		return x
	}
	cases := map[string]func(i int) float64{
		"latencies":  func(int) float64 { return float64(rnd()%10_000_000) / 1e6 },
		"few values": func(int) float64 { return float64(rnd() % 3) },
		"zeros":      func(int) float64 { return 0 },
		"wide":       func(int) float64 { return math.Float64frombits(rnd() >> 1) }, // any non-negative, incl. +Inf and NaN patterns
		"negative":   func(int) float64 { return float64(int(rnd()%1000) - 500) },
		"minus zero": func(i int) float64 {
			if i%7 == 0 {
				return math.Copysign(0, -1)
			}
			return float64(i % 5)
		},
		"inf": func(i int) float64 {
			if i%3 == 0 {
				return math.Inf(1)
			}
			return 2.5
		},
	}
	for name, gen := range cases {
		for _, n := range []int{0, 1, 10, 1023, 1024, 5000} {
			s := make([]float64, n)
			for i := range s {
				s[i] = gen(i)
			}
			want := slices.Clone(s)
			slices.Sort(want)
			sortSamples(s)
			for i := range s {
				if math.Float64bits(s[i]) != math.Float64bits(want[i]) && !(math.IsNaN(s[i]) && math.IsNaN(want[i])) && s[i] != want[i] {
					t.Fatalf("%s n=%d: [%d] = %v, want %v", name, n, i, s[i], want[i])
				}
			}
		}
	}
}

func BenchmarkSortSamples(b *testing.B) {
	s := make([]float64, 500_000)
	x := uint32(1)
	for i := range s {
		x = x*1664525 + 1013904223
		s[i] = float64(x%100_000_000) / 1e6
	}
	c := make([]float64, len(s))
	b.Run("radix", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			copy(c, s)
			sortSamples(c)
		}
	})
	b.Run("slices.Sort", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			copy(c, s)
			slices.Sort(c)
		}
	})
}

// TestHistogramShortcut: histogram's bucket shortcut gives the buckets of
// histBucket for every sample, including samples at and next to bucket
// bounds.
func TestHistogramShortcut(t *testing.T) {
	var s []float64
	for i := 0; i <= 80; i++ {
		u := histUpper(i)
		s = append(s, u, math.Nextafter(u, 0), math.Nextafter(u, math.Inf(1)), u*(1+1e-9), u*(1-1e-9), u*1.05)
	}
	s = append(s, 0, 0.0005, 0.001, 1e-9)
	slices.Sort(s)
	got := histogram(s)
	var want [][2]float64
	cur, count := -1, 0
	for _, v := range s {
		if b := histBucket(v); b != cur {
			if count > 0 {
				want = append(want, [2]float64{roundSig(histUpper(cur)), float64(count)})
			}
			cur, count = b, 0
		}
		count++
	}
	want = append(want, [2]float64{roundSig(histUpper(cur)), float64(count)})
	if !slices.Equal(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
}
