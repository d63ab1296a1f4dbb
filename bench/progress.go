package bench

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// isTerminal reports whether w is a character device (a terminal), the
// only place a redrawn progress bar makes sense. No dependency: the file
// mode of stderr says it.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// logger writes phase lines, and on a terminal a live progress bar.
type logger struct {
	w   io.Writer // nil: silent
	bar bool
	mu  sync.Mutex
}

func (l *logger) printf(format string, args ...any) {
	if l == nil || l.w == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format+"\n", args...)
}

// phase is one step with a known amount of work.
type phase struct {
	l       *logger
	label   string
	total   int64
	done    atomic.Int64
	started time.Time
	stop    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
}

// start begins a phase. On a terminal a goroutine redraws the bar five
// times a second until finish.
func (l *logger) start(label string, total int) *phase {
	p := &phase{l: l, label: label, total: int64(total), started: time.Now(), stop: make(chan struct{})}
	if l != nil && l.w != nil && l.bar {
		p.wg.Add(1)
		go p.loop()
	}
	return p
}

func (p *phase) add(n int64) { p.done.Add(n) }

func (p *phase) loop() {
	defer p.wg.Done()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.draw(false)
		}
	}
}

func (p *phase) draw(final bool) {
	p.l.mu.Lock()
	defer p.l.mu.Unlock()
	line := renderBar(p.label, p.done.Load(), p.total, time.Since(p.started), 30)
	end := ""
	if final {
		end = "\n"
	}
	// \r returns to column 0, \x1b[K clears the rest of the line.
	fmt.Fprintf(p.l.w, "\r%s\x1b[K%s", line, end)
}

// finish ends the phase: the bar gets its final state, or without a
// terminal one summary line is printed.
func (p *phase) finish() {
	p.once.Do(func() {
		close(p.stop)
		p.wg.Wait()
		if p.l == nil || p.l.w == nil {
			return
		}
		if p.l.bar {
			p.draw(true)
			return
		}
		p.l.printf("%s: %d/%d in %s", p.label, p.done.Load(), p.total, time.Since(p.started).Round(time.Millisecond))
	})
}

// renderBar formats "label [=====>    ] 12/100  12% 3.1s".
func renderBar(label string, done, total int64, elapsed time.Duration, width int) string {
	frac := 0.0
	if total > 0 {
		frac = float64(done) / float64(total)
	}
	frac = max(0, min(1, frac))
	filled := int(frac * float64(width))
	var b strings.Builder
	b.WriteString(label)
	b.WriteString(" [")
	b.WriteString(strings.Repeat("=", filled))
	if filled < width {
		b.WriteByte('>')
		b.WriteString(strings.Repeat(" ", width-filled-1))
	}
	fmt.Fprintf(&b, "] %d/%d %3.0f%% %s", done, total, frac*100, elapsed.Round(100*time.Millisecond))
	return b.String()
}
