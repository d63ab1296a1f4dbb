package bench

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestCompareGolden(t *testing.T) {
	a := sampleResult("http://a.example:8008", 1)
	b := sampleResult("http://b.example:8008", 2)
	b.Params["users"] = 8
	b.Counts.Undelivered = 3
	b.addMetric("only_in_b", 5, "ms", "lower")
	b.Latencies = append(b.Latencies, Summarize("only_in_b", []float64{1, 2, 3}))
	var out strings.Builder
	if err := Compare(&out, a, b, "a.json", "b.json"); err != nil {
		t.Fatal(err)
	}
	golden(t, "compare.golden", out.String())
}

func TestCompareErrors(t *testing.T) {
	a := sampleResult("http://a", 1)
	b := sampleResult("http://b", 1)
	b.Scenario = "join-storm"
	var out strings.Builder
	if err := Compare(&out, a, b, "a", "b"); err == nil || !strings.Contains(err.Error(), "scenarios differ") {
		t.Errorf("err = %v", err)
	}
	if err := Compare(&out, a, nil, "a", "b"); err == nil {
		t.Error("nil result accepted")
	}
	if out.Len() != 0 {
		t.Errorf("wrote output on error: %q", out.String())
	}
}

func TestRatioVerdict(t *testing.T) {
	tests := []struct {
		a, b   float64
		better string
		ratio  string
		verd   string
	}{
		{100, 200, "higher", "2.00x", "better"},
		{100, 200, "lower", "2.00x", "worse"},
		{100, 50, "lower", "0.50x", "better"},
		{100, 101, "lower", "1.01x", "~same"},
		{0, 0, "lower", "1.00x", "same"},
		{0, 5, "lower", "-", "worse"},
		{5, 0, "higher", "0.00x", "worse"},
		{3, 4, "", "1.33x", ""},
	}
	for _, tt := range tests {
		if r := ratio(tt.a, tt.b); r != tt.ratio {
			t.Errorf("ratio(%v,%v) = %s, want %s", tt.a, tt.b, r, tt.ratio)
		}
		if v := verdict(tt.a, tt.b, tt.better); v != tt.verd {
			t.Errorf("verdict(%v,%v,%s) = %s, want %s", tt.a, tt.b, tt.better, v, tt.verd)
		}
	}
}
