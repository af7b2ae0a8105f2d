package data

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"

	"github.com/lorakit/lorakit/internal/atomicfile"
	"github.com/lorakit/lorakit/internal/outdir"
)

// SplitScored separates a line written by ScoreFile into the original example (byte for byte) and its
// score. raw is nil for a line that was bad at scoring time. Lines edited by hand (score not the first
// key) still work; then raw is the object re-encoded without "score".
func SplitScored(line []byte) (raw []byte, sc *Score, err error) {
	line = bytes.TrimSpace(line)
	dec := json.NewDecoder(bytes.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, nil, errors.New("not a JSON object")
	}
	if tok, err := dec.Token(); err == nil && tok == "score" {
		var s Score
		if err := dec.Decode(&s); err != nil {
			return nil, nil, fmt.Errorf("score: %v", err)
		}
		rest := bytes.TrimSpace(line[dec.InputOffset():])
		if len(rest) > 0 && rest[0] == ',' {
			return append([]byte("{"), rest[1:]...), &s, nil
		}
		if string(rest) == "}" {
			return nil, &s, nil
		}
		return nil, nil, errors.New("malformed scored line")
	}
	// general case
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(line, &obj); err != nil {
		return nil, nil, fmt.Errorf("invalid JSON: %v", err)
	}
	rs, ok := obj["score"]
	if !ok {
		return nil, nil, errors.New(`no "score" field (not written by lorakit data score)`)
	}
	var s Score
	if err := json.Unmarshal(rs, &s); err != nil {
		return nil, nil, fmt.Errorf("score: %v", err)
	}
	delete(obj, "score")
	if len(obj) == 0 {
		return nil, &s, nil
	}
	raw, err = json.Marshal(obj)
	return raw, &s, err
}

// FilterOptions selects what Filter keeps. Zero values disable a rule.
type FilterOptions struct {
	MaxPPL     float64
	MinIFD     float64
	MaxIFD     float64
	HasMinIFD  bool // MinIFD set (0 is a valid bound)
	HasMaxIFD  bool
	KeepTop    float64 // fraction in (0,1]: keep the best of the examples left by the other rules
	By         string  // "ifd" (highest kept) or "ppl" (lowest kept); also the histogram's metric
	Dedup      bool    // drop examples whose near-duplicate cluster started at an earlier line
	MinTokens  int     // on total tokens (prompt + response after templating)
	MaxTokens  int
	KeepScores bool // write the scored line (with "score") instead of the original
	// OnDrop is called for every dropped line with its reason (may be nil).
	OnDrop func(line int, reason string)
}

// Dropped is one dropped line.
type Dropped struct {
	Line   int    `json:"line"`
	Reason string `json:"reason"`
}

// FilterReport says what Filter did; every input line is kept, dropped (with a reason) or bad.
type FilterReport struct {
	Input      string             `json:"input"`
	Output     string             `json:"output"`
	Lines      int                `json:"lines"`
	Kept       int                `json:"kept"`
	Dropped    int                `json:"dropped"`
	Reasons    map[string]int     `json:"reasons"`
	Thresholds map[string]float64 `json:"thresholds"`
	By         string             `json:"by"`
	Histogram  Histogram          `json:"histogram"`
	DroppedAt  []Dropped          `json:"dropped_lines"`           // the first MaxReportedDrops
	DroppedCut bool               `json:"dropped_lines_truncated"` // more were dropped than listed
}

// MaxReportedDrops bounds the dropped lines listed in a FilterReport (all go to OnDrop).
const MaxReportedDrops = 100000

// Histogram of a score over all scored lines, with the cut values.
type Histogram struct {
	Metric string    `json:"metric"`
	Lo     float64   `json:"lo"`
	Hi     float64   `json:"hi"`
	Counts []int     `json:"counts"`
	Cuts   []float64 `json:"cuts"`
}

const histBins = 40

// Filter reads a scored file (from ScoreFile) and writes the kept examples to out (atomically), in
// their original form unless KeepScores. Two passes over the input: the first collects the
// metric for the histogram and --keep-top; memory is 16 bytes per line.
//
// complexity: the two passes over the file and the --keep-top/--max-*/--dedup rules, each a guarded line.
func Filter(in, out string, o FilterOptions) (*FilterReport, error) {
	if err := outdir.NotInput("data filter: --out", out, in); err != nil {
		return nil, err
	}
	if o.By == "" {
		o.By = "ifd"
	}
	if o.By != "ifd" && o.By != "ppl" {
		return nil, fmt.Errorf("data: filter: --by %q (want ifd or ppl)", o.By)
	}
	if o.KeepTop < 0 || o.KeepTop > 1 || math.IsNaN(o.KeepTop) {
		return nil, fmt.Errorf("data: filter: --keep-top %v not in (0, 1]", o.KeepTop)
	}
	rep := &FilterReport{Input: in, Output: out, Reasons: map[string]int{}, Thresholds: map[string]float64{}, By: o.By}
	metric := func(s *Score) float64 {
		if o.By == "ppl" {
			return s.PPL
		}
		return s.IFD
	}
	// pass 1: rule-based decisions need no global view except keep-top; collect candidates
	type cand struct {
		v    float64
		line int32
	}
	var cands []cand
	var all []float64
	ruleReason := func(s *Score) string {
		switch {
		case s.Error != "":
			return "bad line: " + s.Error
		case o.MaxPPL > 0 && s.PPL > o.MaxPPL:
			return fmt.Sprintf("ppl %.4g > max %.4g", s.PPL, o.MaxPPL)
		case o.HasMinIFD && s.IFD < o.MinIFD:
			return fmt.Sprintf("ifd %.4g < min %.4g", s.IFD, o.MinIFD)
		case o.HasMaxIFD && s.IFD > o.MaxIFD:
			return fmt.Sprintf("ifd %.4g > max %.4g", s.IFD, o.MaxIFD)
		case o.MinTokens > 0 && s.TotalTokens < o.MinTokens:
			return fmt.Sprintf("%d tokens < min %d", s.TotalTokens, o.MinTokens)
		case o.MaxTokens > 0 && s.TotalTokens > o.MaxTokens:
			return fmt.Sprintf("%d tokens > max %d", s.TotalTokens, o.MaxTokens)
		case o.Dedup && s.Cluster != 0 && s.Cluster < s.Line:
			return fmt.Sprintf("near-duplicate of line %d", s.Cluster)
		}
		return ""
	}
	reasonKey := func(reason string) string {
		for _, k := range []struct{ p, k string }{{"bad line", "bad_line"}, {"ppl", "max_ppl"}, {"ifd", "ifd"},
			{"near-duplicate", "dedup"}, {"unreadable", "unreadable"}, {"keep-top", "keep_top"}} {
			if len(reason) >= len(k.p) && reason[:len(k.p)] == k.p {
				if k.k == "ifd" {
					if bytes.Contains([]byte(reason), []byte("< min")) {
						return "min_ifd"
					}
					return "max_ifd"
				}
				return k.k
			}
		}
		if bytes.Contains([]byte(reason), []byte("< min")) {
			return "min_tokens"
		}
		return "max_tokens"
	}
	seenLines, readable := 0, 0
	err := scanLines(in, func(n int, line []byte) error {
		seenLines++
		_, s, err := SplitScored(line)
		if err == nil {
			readable++
		}
		if err != nil || s.Error != "" {
			return nil
		}
		all = append(all, metric(s))
		if o.KeepTop > 0 && ruleReason(s) == "" {
			cands = append(cands, cand{metric(s), int32(n)})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if seenLines > 0 && readable == 0 {
		return nil, fmt.Errorf("data: filter: %s has no scored lines (run lorakit data score first)", in)
	}
	// keep-top: rank candidates (best first), keep ceil(frac·n)
	topKeep := map[int32]bool{}
	if o.KeepTop > 0 {
		sort.SliceStable(cands, func(i, j int) bool {
			if o.By == "ppl" {
				return cands[i].v < cands[j].v
			}
			return cands[i].v > cands[j].v
		})
		k := int(math.Ceil(o.KeepTop * float64(len(cands))))
		for _, c := range cands[:k] {
			topKeep[c.line] = true
		}
		if k > 0 && k < len(cands) {
			rep.Thresholds["keep_top_"+o.By] = cands[k-1].v
		}
	}
	// histogram
	rep.Histogram = makeHist(o.By, all)
	if o.MaxPPL > 0 {
		rep.Thresholds["max_ppl"] = o.MaxPPL
		if o.By == "ppl" {
			rep.Histogram.Cuts = append(rep.Histogram.Cuts, o.MaxPPL)
		}
	}
	if o.HasMinIFD {
		rep.Thresholds["min_ifd"] = o.MinIFD
		if o.By == "ifd" {
			rep.Histogram.Cuts = append(rep.Histogram.Cuts, o.MinIFD)
		}
	}
	if o.HasMaxIFD {
		rep.Thresholds["max_ifd"] = o.MaxIFD
		if o.By == "ifd" {
			rep.Histogram.Cuts = append(rep.Histogram.Cuts, o.MaxIFD)
		}
	}
	if v, ok := rep.Thresholds["keep_top_"+o.By]; ok {
		rep.Histogram.Cuts = append(rep.Histogram.Cuts, v)
	}
	// pass 2: write
	drop := func(line int, reason string) {
		rep.Dropped++
		rep.Reasons[reasonKey(reason)]++
		if len(rep.DroppedAt) < MaxReportedDrops {
			rep.DroppedAt = append(rep.DroppedAt, Dropped{line, reason})
		} else {
			rep.DroppedCut = true
		}
		if o.OnDrop != nil {
			o.OnDrop(line, reason)
		}
	}
	err = atomicfile.Write(out, func(w *bufio.Writer) error {
		return scanLines(in, func(n int, line []byte) error {
			rep.Lines++
			raw, s, err := SplitScored(line)
			if err != nil {
				drop(n, "unreadable scored line: "+err.Error())
				return nil
			}
			if r := ruleReason(s); r != "" {
				drop(s.Line, r)
				return nil
			}
			if o.KeepTop > 0 && !topKeep[int32(n)] {
				drop(s.Line, fmt.Sprintf("keep-top %.4g by %s: %s %.4g not in the best", o.KeepTop, o.By, o.By, metric(s)))
				return nil
			}
			if raw == nil {
				drop(s.Line, "bad line: no example")
				return nil
			}
			rep.Kept++
			if o.KeepScores {
				raw = bytes.TrimSpace(line)
			}
			if _, err := w.Write(raw); err != nil {
				return err
			}
			return w.WriteByte('\n')
		})
	})
	if err != nil {
		return nil, err
	}
	return rep, nil
}

// scanLines calls fn with the 1-based number and content of every non-blank line of path.
func scanLines(path string, fn func(n int, line []byte) error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("data: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<20)
	n := 0
	for {
		b, tooLong, err := readLine(br)
		if err == io.EOF && b == nil {
			return nil
		}
		if err != nil && err != io.EOF {
			return fmt.Errorf("data: %s: %w", path, err)
		}
		n++
		if tooLong {
			return fmt.Errorf("data: %s:%d: line longer than %d bytes", path, n, MaxLineBytes)
		}
		if len(bytes.TrimSpace(b)) > 0 {
			if ferr := fn(n, b); ferr != nil {
				return ferr
			}
		}
		if err == io.EOF {
			return nil
		}
	}
}

func makeHist(metric string, vals []float64) Histogram {
	h := Histogram{Metric: metric, Counts: make([]int, histBins)}
	var finite []float64
	for _, v := range vals {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			finite = append(finite, v)
		}
	}
	if len(finite) == 0 {
		return h
	}
	sort.Float64s(finite)
	// clip the range to the 0.5–99.5 percentiles so one outlier does not flatten the picture
	lo := finite[int(0.005*float64(len(finite)-1))]
	hi := finite[int(math.Ceil(0.995*float64(len(finite)-1)))]
	if hi <= lo {
		hi = lo + 1
	}
	h.Lo, h.Hi = lo, hi
	for _, v := range finite {
		b := int((v - lo) / (hi - lo) * histBins)
		b = max(0, min(histBins-1, b))
		h.Counts[b]++
	}
	return h
}
