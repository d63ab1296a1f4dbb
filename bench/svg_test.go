package bench

import (
	"bytes"
	"encoding/xml"
	"io"
	"strings"
	"testing"
)

// checkSVG parses doc with encoding/xml and fails on any syntax error, an
// unbalanced element, a root that is not <svg>, or a NaN/Inf coordinate.
func checkSVG(t *testing.T, doc []byte) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(doc))
	depth, roots := 0, 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed: %v\n%s", err, doc)
		}
		switch el := tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				roots++
				if el.Name.Local != "svg" || el.Name.Space != "http://www.w3.org/2000/svg" {
					t.Fatalf("root element %v", el.Name)
				}
			}
			depth++
		case xml.EndElement:
			depth--
		}
	}
	if depth != 0 || roots != 1 {
		t.Fatalf("depth %d roots %d", depth, roots)
	}
	for _, bad := range []string{"NaN", "Inf"} {
		if bytes.Contains(doc, []byte(bad)) {
			t.Fatalf("document contains %s", bad)
		}
	}
}

func TestWriteSVG(t *testing.T) {
	r := sampleResult("http://a", 1)
	tests := []struct {
		name   string
		title  string
		series []PlotSeries
	}{
		{"empty", "nothing", nil},
		{"one run", "busy-room", SeriesOf(r, "")},
		{"two runs", "compare", append(SeriesOf(r, "a: "), SeriesOf(sampleResult("http://b", 3), "b: ")...)},
		{"hostile labels", "<script>&\"'\x00\x01\ufffe", []PlotSeries{{Label: "a<b>&c\x07", Dist: Summarize("x", []float64{1, 2})}}},
		{"all zero", "zeros", []PlotSeries{{Label: "z", Dist: Summarize("z", []float64{0, 0, 0})}}},
		{"one sample", "one", []PlotSeries{{Label: "o", Dist: Summarize("o", []float64{42})}}},
		{"wide range", "wide", []PlotSeries{{Label: "w", Dist: Summarize("w", []float64{0.0001, 1e7})}}},
		{"many series", "many", func() []PlotSeries {
			var s []PlotSeries
			for i := 0; i < 20; i++ {
				s = append(s, PlotSeries{Label: strings.Repeat("long label ", 10), Dist: Summarize("m", []float64{float64(i + 1)})})
			}
			return s
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteSVG(&buf, tt.title, tt.series); err != nil {
				t.Fatal(err)
			}
			checkSVG(t, buf.Bytes())
		})
	}
}

func TestSeriesOfSkipsEmpty(t *testing.T) {
	r := sampleResult("http://a", 1)
	r.Latencies = append(r.Latencies, Summarize("empty", nil))
	s := SeriesOf(r, "p: ")
	if len(s) != 2 || s[0].Label != "p: send" || s[1].Label != "p: delivery" {
		t.Fatalf("%+v", s)
	}
}

func TestFmtMS(t *testing.T) {
	tests := map[float64]string{0: "0", 0.01: "10 µs", 1: "1 ms", 250: "250 ms", 1500: "1.5 s", 1e5: "100 s"}
	for in, want := range tests {
		if got := fmtMS(in); got != want {
			t.Errorf("fmtMS(%v) = %q, want %q", in, got, want)
		}
	}
}
