package data

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestReviewPath(t *testing.T) {
	for in, want := range map[string]string{"d/scored.jsonl": "d/scored.review.jsonl", "s.json": "s.review.jsonl", "s.txt": "s.txt.review.jsonl"} {
		if got := ReviewPath(in); got != want {
			t.Errorf("ReviewPath(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestExampleHashIgnoresScore: scoring the same example again (other numbers) keeps its hash.
func TestExampleHashIgnoresScore(t *testing.T) {
	a := ExampleHash([]byte(`{"score":{"line":1,"ppl":5},"prompt":"a","response":"b"}`))
	b := ExampleHash([]byte(`{"score":{"line":1,"ppl":7,"reward":0.5},"prompt":"a","response":"b"}`))
	c := ExampleHash([]byte(`{"score":{"line":1,"ppl":5},"prompt":"a","response":"c"}`))
	if a != b || a == c {
		t.Fatalf("hashes %s %s %s", a, b, c)
	}
}

func reviewFixture(t *testing.T) (in string, lines []string) {
	lines = []string{
		`{"score":{"line":1,"ppl":5,"ifd":0.5,"total_tokens":10,"cluster":1},"prompt":"a","response":"1"}`,
		`{"score":{"line":2,"error":"invalid JSON"}}`,
		`{"score":{"line":3,"ppl":50,"ifd":0.7,"total_tokens":10,"cluster":3},"prompt":"b","response":"2"}`,
		`{"score":{"line":4,"ppl":4,"ifd":1.2,"total_tokens":10,"cluster":4},"prompt":"c","response":"3"}`,
		`{"score":{"line":5,"ppl":4,"ifd":0.9,"total_tokens":10,"cluster":5},"prompt":"d","response":"4"}`,
		`{"score":{"line":6,"ppl":3,"ifd":0.8,"total_tokens":10,"cluster":6},"prompt":"e","response":"5"}`,
	}
	return writeFile(t, strings.Join(lines, "\n")+"\n"), lines
}

func writeReview(t *testing.T, recs ...string) string {
	p := filepath.Join(t.TempDir(), "s.review.jsonl")
	if err := os.WriteFile(p, []byte(strings.Join(recs, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func rec(line int, hash, decision, edit string) string {
	s := `{"line":` + strconv.Itoa(line) + `,"hash":"` + hash + `","decision":"` + decision + `"`
	if edit != "" {
		s += `,"edit":` + edit
	}
	return s + "}\n"
}

func readOut(t *testing.T, p string) []string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// TestFilterReview: drops what was dropped, keeps what was kept (as edited) even against the rules, lets
// the rules decide the rest, and with DropUndecided drops the rest.
func TestFilterReview(t *testing.T) {
	in, lines := reviewFixture(t)
	h := func(n int) string { return ExampleHash([]byte(lines[n-1])) }
	rp := writeReview(t,
		rec(1, h(1), "drop", ""),
		rec(3, h(3), "keep", ""), // ppl 50: --max-ppl 10 would drop it; the person's keep wins
		rec(4, h(4), "drop", ""),
		rec(4, h(4), "keep", `{"prompt":"c","response":"three"}`), // the last record of a line wins
		rec(5, h(5), "undecided", ""),
		`{"line":6,"hash":"`+h(6)+`","deci`, // torn: a crash mid-append
	)
	st, err := ReadReview(rp)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "kept.jsonl")
	rep, err := Filter(in, out, FilterOptions{MaxPPL: 10, Review: st, ReviewFile: rp})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`{"prompt":"b","response":"2"}`, `{"prompt":"c","response":"three"}`, `{"prompt":"d","response":"4"}`, `{"prompt":"e","response":"5"}`}
	if got := readOut(t, out); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("kept %q\nwant %q", got, want)
	}
	rv := rep.Review
	if rv == nil || rv.Kept != 2 || rv.Edited != 1 || rv.Dropped != 1 || rv.Undecided != 3 || !rv.TornTail || rv.Records != 5 {
		t.Fatalf("review summary %+v", rv)
	}
	if rep.Reasons["review_drop"] != 1 || rep.Reasons["bad_line"] != 1 {
		t.Errorf("reasons %v", rep.Reasons)
	}
	// drop undecided, keep scores: the edit keeps its score object
	rep, err = Filter(in, out, FilterOptions{Review: st, ReviewFile: rp, DropUndecided: true, KeepScores: true})
	if err != nil {
		t.Fatal(err)
	}
	want = []string{lines[2], `{"score":{"line":4,"ppl":4,"ifd":1.2,"total_tokens":10,"cluster":4},"prompt":"c","response":"three"}`}
	if got := readOut(t, out); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("kept %q\nwant %q", got, want)
	}
	if rep.Reasons["review_undecided"] != 3 {
		t.Errorf("reasons %v", rep.Reasons)
	}
	// keep-top ranks only what the review left to the rules
	if _, err = Filter(in, out, FilterOptions{Review: st, ReviewFile: rp, KeepTop: 0.5, By: "ifd"}); err != nil {
		t.Fatal(err)
	}
	// undecided and readable: 5 (0.9), 6 (0.8) → keep 1 → line 5
	want = []string{`{"prompt":"b","response":"2"}`, `{"prompt":"c","response":"three"}`, `{"prompt":"d","response":"4"}`}
	if got := readOut(t, out); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("keep-top with a review kept %q\nwant %q", got, want)
	}
}

// TestFilterReviewMismatch: a review of other examples is an error naming the line; nothing is written.
func TestFilterReviewMismatch(t *testing.T) {
	in, lines := reviewFixture(t)
	h := func(n int) string { return ExampleHash([]byte(lines[n-1])) }
	out := filepath.Join(t.TempDir(), "kept.jsonl")
	for name, c := range map[string]struct {
		recs []string
		want string
	}{
		"changed example": {[]string{rec(1, h(1), "drop", ""), rec(5, h(3), "keep", ""), rec(6, "ff", "keep", "")}, "at line 5 (and 1 more lines)"},
		"line not there":  {[]string{rec(9, h(1), "drop", "")}, "line 9 is not a line of"},
		// superseded by a record with the right hash: fine
	} {
		rp := writeReview(t, c.recs...)
		st, err := ReadReview(rp)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Filter(in, out, FilterOptions{Review: st, ReviewFile: rp})
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), rp) {
			t.Errorf("%s: err %v, want one with %q and the file name", name, err, c.want)
		}
		if _, serr := os.Stat(out); serr == nil {
			t.Fatalf("%s: output written despite the error", name)
		}
	}
	rp := writeReview(t, rec(5, h(3), "keep", ""), rec(5, h(5), "drop", ""))
	st, _ := ReadReview(rp)
	if _, err := Filter(in, out, FilterOptions{Review: st, ReviewFile: rp}); err != nil {
		t.Errorf("a stale record superseded by a matching one: %v", err)
	}
}

func TestReadReviewErrors(t *testing.T) {
	for body, want := range map[string]string{
		"{\"line\":0,\"hash\":\"a\",\"decision\":\"keep\"}\n":                    "not a line number",
		"{\"line\":1,\"hash\":\"a\",\"decision\":\"maybe\"}\n":                   "decision",
		"{\"line\":1,\"decision\":\"keep\"}\n":                                   "hash",
		"{\"line\":1,\"hash\":\"a\",\"decision\":\"keep\",\"edit\":{\"x\":1}}\n": "edit",
		"not json\n{\"line\":1,\"hash\":\"a\",\"decision\":\"keep\"}\n":          ":1:",
	} {
		if _, err := ReadReview(writeReview(t, body)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err %v, want %q", body, err, want)
		}
	}
	st, err := ReadReview(filepath.Join(t.TempDir(), "none.jsonl"))
	if err != nil || st.Count != 0 {
		t.Errorf("a missing review file: %+v %v", st, err)
	}
}
