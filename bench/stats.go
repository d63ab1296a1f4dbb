package bench

import (
	"math"
	"slices"
	"sync"
	"time"
)

// Dist summarises one latency distribution. Every number is computed
// exactly from the recorded samples (sorted), not from a sketch, so two
// runs compare without estimation error. Values are milliseconds.
type Dist struct {
	Name  string  `json:"name"`
	Count int     `json:"count"`
	Min   float64 `json:"min_ms"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
	// CDF holds (percentile, value) points at CDFPercentiles, enough to
	// redraw the distribution from a JSON file (compare --plot).
	CDF [][2]float64 `json:"cdf,omitempty"`
	// Histogram holds (upper bound ms, count) for the non-empty buckets of
	// a log-scaled histogram with HistBucketsPerDecade buckets per decade.
	Histogram [][2]float64 `json:"histogram,omitempty"`
}

// HistBucketsPerDecade is the resolution of Dist.Histogram.
const HistBucketsPerDecade = 10

// CDFPercentiles are the points stored in Dist.CDF: every whole percent
// plus a finer tail, where latency problems live.
var CDFPercentiles = func() []float64 {
	ps := make([]float64, 0, 112)
	for p := 0; p <= 99; p++ {
		ps = append(ps, float64(p))
	}
	for _, p := range []float64{99.1, 99.2, 99.3, 99.4, 99.5, 99.6, 99.7, 99.8, 99.9, 99.95, 99.99, 100} {
		ps = append(ps, p)
	}
	return ps
}()

// Percentile returns the nearest-rank percentile of sorted (ascending):
// the smallest sample such that at least p percent of all samples are
// less than or equal to it. p <= 0 gives the minimum, p >= 100 the
// maximum, an empty slice gives 0.
func Percentile(sorted []float64, p float64) float64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if p <= 0 || math.IsNaN(p) {
		return sorted[0]
	}
	if p >= 100 {
		return sorted[n-1]
	}
	// rank = ceil(p/100 * n), 1-based. The small epsilon keeps exact
	// products such as 0.9*10 from rounding up to the next rank.
	rank := int(math.Ceil(p/100*float64(n) - 1e-9))
	if rank < 1 {
		rank = 1
	}
	if rank > n {
		rank = n
	}
	return sorted[rank-1]
}

// Summarize builds a Dist from samples in milliseconds. It sorts a copy;
// samples is left untouched.
func Summarize(name string, samplesMS []float64) Dist {
	d := Dist{Name: name, Count: len(samplesMS)}
	if len(samplesMS) == 0 {
		return d
	}
	s := slices.Clone(samplesMS)
	sortSamples(s)
	var sum float64
	for _, v := range s {
		sum += v
	}
	d.Min = s[0]
	d.Max = s[len(s)-1]
	d.Mean = sum / float64(len(s))
	d.P50 = Percentile(s, 50)
	d.P90 = Percentile(s, 90)
	d.P99 = Percentile(s, 99)
	d.P999 = Percentile(s, 99.9)
	d.CDF = make([][2]float64, len(CDFPercentiles))
	for i, p := range CDFPercentiles {
		d.CDF[i] = [2]float64{p, Percentile(s, p)}
	}
	d.Histogram = histogram(s)
	return d
}

// sortSamples sorts s ascending, as slices.Sort does. A delivery
// distribution holds a sample per message and listener (half a million
// for 10,000 messages to 50 listeners), and comparison sorting it cost
// the generator more than reading the answers. Latencies are never
// negative, and the IEEE 754 bits of non-negative floats order as
// unsigned integers, so they are radix sorted: a pass per byte of the
// bits that differs between samples. Anything else (negative, -0, NaN)
// and small inputs go to slices.Sort.
func sortSamples(s []float64) {
	if len(s) < 1024 {
		slices.Sort(s)
		return
	}
	keys := make([]uint64, len(s))
	var diff uint64 // the bits in which some key differs from the first
	for i, v := range s {
		if !(v >= 0) || math.Signbit(v) {
			slices.Sort(s)
			return
		}
		keys[i] = math.Float64bits(v)
		diff |= keys[i] ^ keys[0]
	}
	tmp := make([]uint64, len(s))
	for shift := uint(0); shift < 64; shift += 8 {
		if byte(diff>>shift) == 0 {
			continue // every key has the same byte here
		}
		var c [256]int
		for _, k := range keys {
			c[byte(k>>shift)]++
		}
		pos := 0
		for d, n := range c {
			c[d] = pos
			pos += n
		}
		for _, k := range keys {
			d := byte(k >> shift)
			tmp[c[d]] = k
			c[d]++
		}
		keys, tmp = tmp, keys
	}
	for i, k := range keys {
		s[i] = math.Float64frombits(k)
	}
}

// histBucket returns the index of the log bucket holding v (ms). Bucket i
// covers (10^((i-1)/k - 3), 10^(i/k - 3)] with k buckets per decade, so
// bucket 0 holds everything up to 1 microsecond.
func histBucket(v float64) int {
	if v <= 0.001 {
		return 0
	}
	i := int(math.Ceil((math.Log10(v) + 3) * HistBucketsPerDecade))
	if i < 0 {
		return 0
	}
	return i
}

func histUpper(i int) float64 {
	return math.Pow(10, float64(i)/HistBucketsPerDecade-3)
}

func histogram(sorted []float64) [][2]float64 {
	var out [][2]float64
	cur, count := -1, 0
	// (lo, hi) is the inside of bucket cur with a margin far larger than
	// the rounding of histBucket's logarithm: a sample there is in cur
	// without computing it, which spares a logarithm per sample.
	var lo, hi float64
	for _, v := range sorted {
		b := cur
		if !(v > lo && v < hi) {
			b = histBucket(v)
			lo, hi = 0, 0
			if b >= 1 {
				lo, hi = histUpper(b-1)*(1+1e-9), histUpper(b)*(1-1e-9)
			}
		}
		if b != cur {
			if count > 0 {
				out = append(out, [2]float64{roundSig(histUpper(cur)), float64(count)})
			}
			cur, count = b, 0
		}
		count++
	}
	if count > 0 {
		out = append(out, [2]float64{roundSig(histUpper(cur)), float64(count)})
	}
	return out
}

// roundSig keeps 6 significant digits so bucket bounds print cleanly and
// survive a JSON round trip unchanged.
func roundSig(v float64) float64 {
	if v == 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return v
	}
	mag := math.Pow(10, 5-math.Floor(math.Log10(math.Abs(v))))
	return math.Round(v*mag) / mag
}

// recorder collects latency samples from many goroutines.
type recorder struct {
	mu      sync.Mutex
	samples []float64
}

func (r *recorder) add(d time.Duration) {
	ms := float64(d) / float64(time.Millisecond)
	r.mu.Lock()
	r.samples = append(r.samples, ms)
	r.mu.Unlock()
}

func (r *recorder) dist(name string) Dist {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Summarize(name, r.samples)
}

func durMS(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
