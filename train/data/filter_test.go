package data

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFilter(t *testing.T) {
	lines := []string{
		`{"score":{"line":1,"ppl":5,"ifd":0.5,"total_tokens":10,"cluster":1},"prompt":"a","response":"1"}`,
		`{"score":{"line":2,"error":"invalid JSON"}}`,
		`{"score":{"line":3,"ppl":50,"ifd":0.7,"total_tokens":10,"cluster":3},"prompt":"b","response":"2"}`,
		`{"score":{"line":4,"ppl":4,"ifd":1.2,"total_tokens":10,"cluster":4},"prompt":"c","response":"3"}`,
		`{"score":{"line":5,"ppl":4,"ifd":0.9,"total_tokens":10,"cluster":1},"prompt":"a","response":"1 "}`,
		`{"score":{"line":6,"ppl":3,"ifd":0.8,"total_tokens":2,"cluster":6},"prompt":"d","response":"4"}`,
		`{"score":{"line":7,"ppl":3,"ifd":0.6,"total_tokens":12,"cluster":7},"prompt":"e","response":"5"}`,
		`{"score":{"line":8,"ppl":3,"ifd":0.3,"total_tokens":12,"cluster":8},"prompt":"f","response":"6"}`,
		`not json`,
		`{"prompt":"g","score":{"line":10,"ppl":3,"ifd":0.95,"total_tokens":12,"cluster":10}}`,
	}
	in := writeFile(t, strings.Join(lines, "\n")+"\n")
	out := filepath.Join(t.TempDir(), "clean.jsonl")
	var drops []int
	rep, err := Filter(in, out, FilterOptions{MaxPPL: 10, MaxIFD: 1, HasMaxIFD: true, Dedup: true, MinTokens: 5,
		KeepTop: 0.5, By: "ifd", OnDrop: func(l int, _ string) { drops = append(drops, l) }})
	if err != nil {
		t.Fatal(err)
	}
	// candidates after rules: lines 1 (0.5), 7 (0.6), 8 (0.3), 10 (0.95) → keep top 2 by ifd: 10, 7
	f, _ := os.Open(out)
	defer f.Close()
	var kept []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		kept = append(kept, sc.Text())
	}
	want := []string{`{"prompt":"e","response":"5"}`, `{"prompt":"g"}`}
	if strings.Join(kept, "\n") != strings.Join(want, "\n") {
		t.Fatalf("kept %q", kept)
	}
	if rep.Lines != 10 || rep.Kept != 2 || rep.Dropped != 8 || len(drops) != 8 {
		t.Fatalf("report %+v drops %v", rep, drops)
	}
	for k, n := range map[string]int{"bad_line": 1, "max_ppl": 1, "max_ifd": 1, "dedup": 1, "min_tokens": 1, "keep_top": 2, "unreadable": 1} {
		if rep.Reasons[k] != n {
			t.Errorf("reason %s: %d want %d (%v)", k, rep.Reasons[k], n, rep.Reasons)
		}
	}
	if len(rep.Histogram.Cuts) != 2 || rep.Thresholds["keep_top_ifd"] != 0.6 {
		t.Errorf("cuts %v thresholds %v", rep.Histogram.Cuts, rep.Thresholds)
	}
	svg := filepath.Join(t.TempDir(), "h.svg")
	if err := WriteHistogramSVG(svg, rep.Histogram, "IFD"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(svg)
	if !strings.Contains(string(b), "<svg") || !strings.Contains(string(b), "cut 0.6") {
		t.Fatalf("svg %s", b)
	}
	// an unscored file is refused
	if _, err := Filter(writeFile(t, `{"prompt":"a","response":"b"}`+"\n"), out, FilterOptions{}); err == nil {
		t.Fatal("unscored input accepted")
	}
	// keep scores
	rep, err = Filter(in, out, FilterOptions{KeepScores: true})
	if err != nil || rep.Kept != 8 {
		t.Fatalf("%+v %v", rep, err)
	}
}
