// Package progress reports the progress of long work in one style for every command:
//
//	train [=========>          ] 12/40 steps  30%  1.5 steps/s  ETA 19s  loss 1.234
//
// redrawn in place on a terminal, and as plain lines (at most one every few seconds, the final one once)
// otherwise. The rate and ETA are smoothed over recent updates, so a slow first step does not skew them.
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
	mu        sync.Mutex
	w         io.Writer
	tty       bool
	label     string
	unit      string
	total     int64
	done      int64
	start     time.Time
	last      time.Time
	every     time.Duration
	extra     string
	drawn     string // the last text written, so that nothing is written twice
	rate      float64
	rateAt    time.Time
	rateDone  int64
	finished  bool
	lineOpen  bool // a terminal line was drawn and not yet ended
	startDone int64
}

// New starts a bar writing to w; total may be 0 when unknown. unit names what is counted ("tok", "B", "lines").
func New(w io.Writer, label string, total int64, unit string) *Bar {
	now := time.Now()
	b := &Bar{w: w, label: label, unit: unit, total: total, start: now, rateAt: now, every: 5 * time.Second}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		b.tty, b.every = true, 200*time.Millisecond
	}
	return b
}

// SetInterval changes how often plain (non-terminal) lines are written; tests and short jobs use it.
func (b *Bar) SetInterval(d time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.tty {
		b.every = d
	}
}

// Resume says that done units were finished before this run (a resumed job): they do not count in the rate.
func (b *Bar) Resume(done int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done, b.startDone, b.rateDone = done, done, done
}

// Add counts n more units done.
func (b *Bar) Add(n int64) {
	b.mu.Lock()
	d := b.done + n
	b.mu.Unlock()
	b.Set(d, "")
}

// Set records done units and an extra status text (e.g. "loss 1.23"), redrawing when due.
func (b *Bar) Set(done int64, extra string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished {
		return
	}
	b.done = done
	if extra != "" {
		b.extra = extra
	}
	now := time.Now()
	b.updateRate(now)
	if now.Sub(b.last) >= b.every || b.last.IsZero() && b.tty {
		b.last = now
		b.draw(false)
	}
}

// updateRate keeps an exponentially smoothed rate, updated at most every half second.
func (b *Bar) updateRate(now time.Time) {
	dt := now.Sub(b.rateAt).Seconds()
	if dt < 0.5 && b.rate > 0 {
		return
	}
	if dt <= 0 {
		return
	}
	inst := float64(b.done-b.rateDone) / dt
	if b.rate == 0 {
		b.rate = inst
	} else {
		b.rate = 0.7*b.rate + 0.3*inst
	}
	b.rateAt, b.rateDone = now, b.done
}

// Finish draws the final state once and ends the line.
func (b *Bar) Finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished {
		return
	}
	b.finished = true
	if el := time.Since(b.start).Seconds(); el > 0 {
		b.rate = float64(b.done-b.startDone) / el // the final line shows the average over the whole run
	}
	b.draw(true)
}

// Stop ends the bar without a final line (work was interrupted; the caller says what happened). On a
// terminal the current line is ended so that the next message starts on its own line.
func (b *Bar) Stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished {
		return
	}
	b.finished = true
	if b.lineOpen {
		fmt.Fprintln(b.w)
		b.lineOpen = false
	}
}

// text formats the bar's current text (what a terminal shows, without the bar drawing).
func (b *Bar) text(final bool) string {
	var s strings.Builder
	s.WriteString(b.label)
	if b.total > 0 {
		frac := min(float64(b.done)/float64(b.total), 1)
		if b.tty {
			const width = 20
			fill := int(frac * width)
			head := ""
			if fill < width {
				head = ">"
			}
			fmt.Fprintf(&s, " [%s%s%s]", strings.Repeat("=", fill), head, strings.Repeat(" ", max(width-fill-len(head), 0)))
		}
		fmt.Fprintf(&s, " %s  %3.0f%%", count(b.done, b.total, b.unit), 100*frac)
	} else {
		fmt.Fprintf(&s, " %s", count(b.done, 0, b.unit))
	}
	if b.rate > 0 {
		fmt.Fprintf(&s, "  %s/s", rateString(b.rate, b.unit))
		if b.total > 0 && b.done < b.total && !final {
			eta := time.Duration(float64(b.total-b.done) / b.rate * float64(time.Second))
			fmt.Fprintf(&s, "  ETA %s", roundDuration(eta))
		}
	}
	if final {
		fmt.Fprintf(&s, "  in %s", roundDuration(time.Since(b.start)))
	}
	if b.extra != "" {
		s.WriteString("  " + b.extra)
	}
	return s.String()
}

func (b *Bar) draw(final bool) {
	line := b.text(final)
	if b.tty {
		end := ""
		if final {
			end = "\n"
		}
		fmt.Fprintf(b.w, "\r\x1b[K%s%s", line, end)
		b.lineOpen = !final
		return
	}
	if line == b.drawn {
		return
	}
	b.drawn = line
	fmt.Fprintln(b.w, line)
}

// count formats done/total (total 0: unknown); bytes get binary units.
func count(done, total int64, unit string) string {
	if unit != "B" {
		if total > 0 {
			return fmt.Sprintf("%d/%d %s", done, total, unit)
		}
		return fmt.Sprintf("%d %s", done, unit)
	}
	if total > 0 {
		return human(done) + "/" + human(total)
	}
	return human(done)
}

func rateString(r float64, unit string) string {
	if unit == "B" {
		return human(int64(r))
	}
	switch {
	case r >= 100:
		return fmt.Sprintf("%.0f %s", r, unit)
	case r >= 1:
		return fmt.Sprintf("%.1f %s", r, unit)
	}
	return fmt.Sprintf("%.2f %s", r, unit)
}

// roundDuration keeps two significant units: 1h02m, 3m05s, 12s, 0.4s.
func roundDuration(d time.Duration) string {
	switch {
	case d >= time.Hour:
		return d.Round(time.Minute).String()
	case d >= time.Minute:
		return d.Round(time.Second).String()
	case d >= 10*time.Second:
		return d.Round(time.Second).String()
	}
	return d.Round(100 * time.Millisecond).String()
}

// human formats a byte count in binary units.
func human(n int64) string {
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

// EMA is an exponentially smoothed value (e.g. the training loss shown beside the bar): a single noisy step
// moves it by Alpha of the difference.
type EMA struct {
	Alpha float64
	v     float64
	n     int
}

// Add folds x in and returns the smoothed value; the first value is taken as is, and the first few are
// averaged evenly so that the start is not dominated by the first step.
func (e *EMA) Add(x float64) float64 {
	e.n++
	a := e.Alpha
	if a <= 0 {
		a = 0.1
	}
	a = max(a, 1/float64(e.n))
	e.v += a * (x - e.v)
	return e.v
}

// Value is the current smoothed value.
func (e *EMA) Value() float64 { return e.v }
