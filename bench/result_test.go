package bench

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"
)

// sampleResult builds a deterministic Result; scale stretches latencies
// and divides throughput, to make a "slower server" for compare tests.
func sampleResult(server string, scale float64) *Result {
	send := make([]float64, 200)
	deliv := make([]float64, 400)
	for i := range send {
		send[i] = scale * (1 + float64(i%50)/10)
	}
	for i := range deliv {
		deliv[i] = scale * float64(i%100) / 5
	}
	r := &Result{
		Format:          ResultFormat,
		Scenario:        "busy-room",
		Server:          server,
		Software:        "Fake 1.0",
		RunID:           "0123abcd",
		Started:         time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Params:          map[string]float64{"users": 4, "senders": 2, "messages": 200, "listeners": 2, "rate": 0},
		SetupSeconds:    1.25,
		MeasuredSeconds: 3.5 * scale,
		Counts:          Counts{Sent: 200, Expected: 400, Delivered: 400, Operations: 50, Retries: 1},
		Latencies:       []Dist{Summarize("send", send), Summarize("delivery", deliv)},
		Notes:           []string{"a note"},
	}
	r.addMetric("send_throughput", 1000/scale, "msg/s", "higher")
	r.addMetric("send_duration", 0.2*scale, "s", "lower")
	return r
}

func TestResultJSONRoundTrip(t *testing.T) {
	r := sampleResult("http://a.example:8008", 1)
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	got, err := ReadResult(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, r) {
		t.Fatalf("round trip differs:\n got %+v\nwant %+v", got, r)
	}
	// And once more: encoding the decoded value gives the same bytes.
	var b1, b2 bytes.Buffer
	_ = r.WriteJSON(&b1)
	_ = got.WriteJSON(&b2)
	if !bytes.Equal(b1.Bytes(), b2.Bytes()) {
		t.Fatal("re-encoding differs")
	}
}

func TestReadResultErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "EOF"},
		{"garbage", "not json", "invalid character"},
		{"wrong format", `{"format": 99, "scenario": "busy-room"}`, "format 99"},
		{"no format", `{"scenario": "busy-room"}`, "format 0"},
		{"no scenario", `{"format": 1}`, "no scenario"},
		{"wrong type", `{"format": "1"}`, "cannot unmarshal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadResult(strings.NewReader(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "bench: ") {
				t.Fatalf("err = %v, want containing %q", err, tt.want)
			}
		})
	}
}

func TestWriteTable(t *testing.T) {
	r := sampleResult("http://a.example:8008", 1)
	var b strings.Builder
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"scenario  busy-room   run 0123abcd",
		"server    http://a.example:8008 (Fake 1.0)",
		"params    listeners=2 messages=200 rate=0 senders=2 users=4",
		"send_throughput  1000",
		"note: a note",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	for _, d := range []string{"send", "delivery"} {
		found := false
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) > 0 && f[0] == d {
				found = true
			}
		}
		if !found {
			t.Errorf("no latency row %q:\n%s", d, out)
		}
	}
}

func TestFormatNum(t *testing.T) {
	tests := map[float64]string{0: "0", 12: "12", -3: "-3", 0.1234: "0.123", 1.234: "1.23", 123.45: "123.5", 1e20: "100000000000000000000.0"}
	for in, want := range tests {
		if got := formatNum(in); got != want {
			t.Errorf("formatNum(%v) = %q, want %q", in, got, want)
		}
	}
}

func FuzzReadResult(f *testing.F) {
	var buf bytes.Buffer
	_ = sampleResult("http://a", 1).WriteJSON(&buf)
	f.Add(buf.Bytes())
	f.Add([]byte(`{"format":1,"scenario":"x","latencies":[{"name":"a","cdf":[[1,2]]}]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ReadResult(bytes.NewReader(data))
		if err != nil {
			return
		}
		// Whatever decodes must render without panicking.
		_ = r.WriteTable(&bytes.Buffer{})
		_ = WriteSVG(&bytes.Buffer{}, "fuzz", SeriesOf(r, ""))
		_ = Compare(&bytes.Buffer{}, r, r, "a", "b")
	})
}
