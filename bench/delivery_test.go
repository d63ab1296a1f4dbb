package bench

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseSeq(t *testing.T) {
	const prefix = "bench abcd1234 "
	tests := []struct {
		body string
		want int
	}{
		{"bench abcd1234 0", 0},
		{"bench abcd1234 17", 17},
		{"bench abcd1234 17 xxxxxxxx", 17},
		{"bench abcd1234 99", 99},
		{"bench abcd1234 100", -1}, // out of range
		{"bench abcd1234 -1", -1},
		{"bench abcd1234 ", -1},
		{"bench abcd1234 1x", -1},
		{"bench other 5", -1},
		{"hello", -1},
		{"", -1},
		{"bench abcd1234 +5", 5}, // as strconv.Atoi reads it
		{"bench abcd1234 -0", 0},
		{"bench abcd1234 007", 7},
		{"bench abcd1234 +", -1},
		{"bench abcd1234 99999999999999999999999", -1},
	}
	for _, tt := range tests {
		if got := parseSeq(tt.body, prefix, 100); got != tt.want {
			t.Errorf("parseSeq(%q) = %d, want %d", tt.body, got, tt.want)
		}
		if got := parseSeqBytes([]byte(tt.body), prefix, 100); got != tt.want {
			t.Errorf("parseSeqBytes(%q) = %d, want %d", tt.body, got, tt.want)
		}
	}
}

// atoiParseSeq is the definition parseSeq implements without allocating.
func atoiParseSeq(body, prefix string, n int) int {
	if !strings.HasPrefix(body, prefix) {
		return -1
	}
	rest := body[len(prefix):]
	if i := strings.IndexByte(rest, ' '); i >= 0 {
		rest = rest[:i]
	}
	seq, err := strconv.Atoi(rest)
	if err != nil || seq < 0 || seq >= n {
		return -1
	}
	return seq
}

func FuzzParseSeq(f *testing.F) {
	for _, s := range []string{"bench r 1", "bench r 12 pad", "bench r ", "bench r 99999999999999999999", "x", "bench r -0", "bench r +12", "bench r 0009"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		seq := parseSeq(body, "bench r ", 1000)
		if seq < -1 || seq >= 1000 {
			t.Fatalf("parseSeq(%q) = %d out of range", body, seq)
		}
		if want := atoiParseSeq(body, "bench r ", 1000); seq != want {
			t.Fatalf("parseSeq(%q) = %d, strconv.Atoi reading %d", body, seq, want)
		}
	})
}

func TestMessageContent(t *testing.T) {
	c := messageContent("bench r ", 42, 0)
	if c["body"] != "bench r 42" || c["msgtype"] != "m.text" {
		t.Fatalf("%v", c)
	}
	c = messageContent("bench r ", 42, 500)
	body := c["body"].(string)
	if len(body) != 500 || parseSeq(body, "bench r ", 100) != 42 {
		t.Fatalf("padded body len %d, seq %d", len(body), parseSeq(body, "bench r ", 100))
	}
}

func TestListenerRecord(t *testing.T) {
	l := &listener{seen: make([]atomic.Int64, 10)}
	p := "bench r "
	evs := []clientEvent{
		{Type: "m.room.member"},
		{Type: "m.room.message"},
		{Type: "m.room.message"},
		{Type: "m.room.message"},
	}
	evs[1].Content.Body = p + "3"
	evs[2].Content.Body = "someone else"
	evs[3].Content.Body = p + "5"
	if l.record(evs, p, 100) {
		t.Fatal("first sight reported as already seen")
	}
	if l.seenCount.Load() != 2 || l.seen[3].Load() != 101 || l.seen[5].Load() != 101 {
		t.Fatalf("count %d seen3 %d seen5 %d", l.seenCount.Load(), l.seen[3].Load(), l.seen[5].Load())
	}
	// A second sighting keeps the first timestamp and reports overlap.
	if !l.record(evs[3:], p, 200) {
		t.Fatal("overlap not reported")
	}
	if l.seen[5].Load() != 101 || l.seenCount.Load() != 2 {
		t.Fatal("second sighting changed state")
	}
}

func TestRenderBar(t *testing.T) {
	tests := []struct {
		done, total int64
		want        string
	}{
		{0, 10, "x [>         ] 0/10   0% 1.5s"},
		{5, 10, "x [=====>    ] 5/10  50% 1.5s"},
		{10, 10, "x [==========] 10/10 100% 1.5s"},
		{12, 10, "x [==========] 12/10 100% 1.5s"},
		{0, 0, "x [>         ] 0/0   0% 1.5s"},
	}
	for _, tt := range tests {
		if got := renderBar("x", tt.done, tt.total, 1500*time.Millisecond, 10); got != tt.want {
			t.Errorf("renderBar(%d/%d) = %q, want %q", tt.done, tt.total, got, tt.want)
		}
	}
}

func TestLoggerWithoutTerminal(t *testing.T) {
	var b strings.Builder
	l := &logger{w: &b}
	p := l.start("phase", 3)
	p.add(3)
	p.finish()
	p.finish() // idempotent
	if !strings.HasPrefix(b.String(), "phase: 3/3 in ") || strings.Count(b.String(), "\n") != 1 {
		t.Fatalf("%q", b.String())
	}
	var silent *logger
	silent.printf("no panic on nil logger")
	q := silent.start("x", 1)
	q.finish()
	if isTerminal(&b) {
		t.Fatal("a strings.Builder is not a terminal")
	}
}

func TestParallel(t *testing.T) {
	var n atomic.Int64
	if err := parallel(context.Background(), 100, 7, func(ctx context.Context, i int) error {
		n.Add(1)
		return nil
	}); err != nil || n.Load() != 100 {
		t.Fatalf("err %v n %d", err, n.Load())
	}
	boom := errors.New("boom")
	var after atomic.Int64
	err := parallel(context.Background(), 10000, 4, func(ctx context.Context, i int) error {
		if i == 10 {
			return boom
		}
		if i > 200 {
			after.Add(1)
		}
		return nil
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err %v", err)
	}
	if after.Load() > 9000 {
		t.Errorf("parallel kept going after the error (%d calls)", after.Load())
	}
	if err := parallel(context.Background(), 0, 4, nil); err != nil {
		t.Fatal(err)
	}
	var m atomic.Int64
	forEach(context.Background(), 50, 0, func(int) { m.Add(1) })
	if m.Load() != 50 {
		t.Fatalf("forEach ran %d", m.Load())
	}
}
