// Package progress reports the progress of long work: a redrawn bar with rate and ETA on a terminal, plain log
// lines (at most one every few seconds) otherwise.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// Bar tracks done/total units of work. It is safe for concurrent use.
type Bar struct {
	mu       sync.Mutex
	w        io.Writer
	tty      bool
	label    string
	unit     string
	total    int64
	done     int64
	start    time.Time
	last     time.Time
	every    time.Duration
	extra    string
	finished bool
}

// New starts a bar writing to w; total may be 0 when unknown. unit names what is counted ("tok", "B", "lines").
func New(w io.Writer, label string, total int64, unit string) *Bar {
	b := &Bar{w: w, label: label, unit: unit, total: total, start: time.Now(), every: 5 * time.Second}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		b.tty, b.every = true, 200*time.Millisecond
	}
	return b
}

// Add counts n more units done.
func (b *Bar) Add(n int64) { b.Set(b.current()+n, "") }

func (b *Bar) current() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.done
}

// Set records done units and an extra status text (e.g. "loss 1.23 lr 2e-4"), redrawing when due.
func (b *Bar) Set(done int64, extra string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done = done
	if extra != "" {
		b.extra = extra
	}
	if now := time.Now(); now.Sub(b.last) >= b.every || (b.total > 0 && done >= b.total) {
		b.last = now
		b.draw(false)
	}
}

// Finish draws the final state and ends the line.
func (b *Bar) Finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished {
		return
	}
	b.finished = true
	b.draw(true)
}

func (b *Bar) draw(final bool) {
	el := time.Since(b.start).Seconds()
	rate := 0.0
	if el > 0 {
		rate = float64(b.done) / el
	}
	var s strings.Builder
	fmt.Fprintf(&s, "%s %s", b.label, human(b.done, b.unit))
	if b.total > 0 {
		frac := float64(b.done) / float64(b.total)
		if frac > 1 {
			frac = 1
		}
		if b.tty {
			const width = 24
			fill := int(frac * width)
			fmt.Fprintf(&s, " [%s%s]", strings.Repeat("=", fill), strings.Repeat(" ", width-fill))
		}
		fmt.Fprintf(&s, "/%s %3.0f%%", human(b.total, b.unit), 100*frac)
		if rate > 0 && b.done < b.total {
			eta := time.Duration(float64(b.total-b.done) / rate * float64(time.Second))
			fmt.Fprintf(&s, " ETA %s", eta.Round(time.Second))
		}
	}
	fmt.Fprintf(&s, " %s/s", human(int64(rate), b.unit))
	if b.extra != "" {
		s.WriteString(" " + b.extra)
	}
	if b.tty {
		end := ""
		if final {
			end = "\n"
		}
		fmt.Fprintf(b.w, "\r\x1b[K%s%s", s.String(), end)
		return
	}
	fmt.Fprintln(b.w, s.String())
}

// human formats a count; bytes get binary units.
func human(n int64, unit string) string {
	if unit != "B" {
		return fmt.Sprintf("%d %s", n, unit)
	}
	const k = 1024
	switch {
	case n >= k*k*k:
		return fmt.Sprintf("%.2f GiB", float64(n)/(k*k*k))
	case n >= k*k:
		return fmt.Sprintf("%.1f MiB", float64(n)/(k*k))
	case n >= k:
		return fmt.Sprintf("%.1f KiB", float64(n)/k)
	}
	return fmt.Sprintf("%d B", n)
}
