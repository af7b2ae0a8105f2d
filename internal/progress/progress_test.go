package progress

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestPlainLinesOnce: off a terminal the first update and the final state are printed, each once, in the
// one style (count/total, percent, rate, ETA while running).
func TestPlainLinesOnce(t *testing.T) {
	var buf bytes.Buffer
	b := New(&buf, "train", 4, "steps")
	for i := int64(1); i <= 4; i++ {
		time.Sleep(5 * time.Millisecond)
		b.Set(i, "loss 1.0")
	}
	b.Finish()
	b.Finish()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want the first and the final line, got %d:\n%s", len(lines), buf.String())
	}
	if !strings.HasPrefix(lines[0], "train 1/4 steps   25%") || !strings.Contains(lines[0], "ETA") {
		t.Errorf("first line %q", lines[0])
	}
	if !strings.HasPrefix(lines[1], "train 4/4 steps  100%") || strings.Contains(lines[1], "ETA") || !strings.Contains(lines[1], "loss 1.0") {
		t.Errorf("final line %q", lines[1])
	}
}

// TestStopPrintsNothing: an interrupted bar leaves the last word to the caller.
func TestStopPrintsNothing(t *testing.T) {
	var buf bytes.Buffer
	b := New(&buf, "score", 10, "lines")
	b.Set(3, "")
	n := buf.Len()
	b.Stop()
	b.Finish()
	if buf.Len() != n {
		t.Errorf("Stop/Finish after Stop wrote %q", buf.String()[n:])
	}
}

func TestTerminalBar(t *testing.T) {
	b := &Bar{label: "train", unit: "steps", total: 40, done: 8, tty: true, rate: 2, start: time.Now()}
	got := b.text(false)
	if !strings.HasPrefix(got, "train [====>               ] 8/40 steps   20%  2.0 steps/s  ETA 16s") {
		t.Errorf("bar %q", got)
	}
}

func TestEMA(t *testing.T) {
	var e EMA
	e.Add(10)
	e.Add(0)
	if v := e.Value(); v != 5 {
		t.Errorf("after 10, 0: %v, want the mean 5 while fewer than 1/alpha values", v)
	}
	for range 100 {
		e.Add(1)
	}
	if v := e.Add(11); v < 1.9 || v > 2.1 {
		t.Errorf("one outlier moved the mean to %v, want about 2", v)
	}
}
