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
	"strconv"
	"strings"

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
	MaxPPL    float64
	MinIFD    float64
	MaxIFD    float64
	HasMinIFD bool // MinIFD set (0 is a valid bound)
	HasMaxIFD bool
	KeepTop   float64 // fraction in (0,1]: keep the best of the examples left by the other rules
	// By is the score that ranks: "ifd" (highest kept), "ppl" (lowest kept), "reward" (highest kept) or
	// "label:NAME" (a classifier label, highest kept); also the histogram's metric.
	// "" is ifd for a file scored with --model, else reward, else the first classifier label.
	By           string
	MinReward    float64 // drop examples whose reward is below (with HasMinReward)
	HasMinReward bool
	Labels       []LabelRule // classifier label thresholds
	Dedup        bool        // drop examples whose near-duplicate cluster started at an earlier line
	MinTokens    int         // on total tokens (prompt + response after templating)
	MaxTokens    int
	KeepScores   bool // write the scored line (with "score") instead of the original
	// Review applies a person's decisions (ReadReview of ReviewFile): a dropped example is dropped, a kept
	// one is kept whatever the rules say (edited if it was), an undecided one goes through the rules, or is
	// dropped with DropUndecided. A record whose line or example hash does not match the input is an error.
	Review        *ReviewState
	ReviewFile    string
	DropUndecided bool
	// Select > 0 keeps this many of the examples the other rules (and KeepTop) leave: the best by By, or with
	// Diverse a selection that trades By's quality against redundancy over the embeddings (SelectDiverse).
	Select        int
	Diverse       bool
	Embeddings    string  // the scored file's embeddings ("": EmbeddingsPath(in))
	QualityWeight float64 // SelectOptions.QualityWeight
	Seed          uint64  // SelectOptions.Seed
	Threads       int
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
	Review     *ReviewSummary     `json:"review,omitempty"`
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
		o.By = defaultBy(in)
	}
	metric, err := metricOf(o.By)
	if err != nil {
		return nil, err
	}
	if o.Select < 0 || (o.Diverse && o.Select == 0) {
		return nil, fmt.Errorf("data: filter: --select %d: want a positive number of examples (--diverse needs it)", o.Select)
	}
	if o.KeepTop < 0 || o.KeepTop > 1 || math.IsNaN(o.KeepTop) {
		return nil, fmt.Errorf("data: filter: --keep-top %v not in (0, 1]", o.KeepTop)
	}
	rep := &FilterReport{Input: in, Output: out, Reasons: map[string]int{}, Thresholds: map[string]float64{}, By: o.By}
	rv := newReviewed(o, rep)
	// pass 1: rule-based decisions need no global view except keep-top; collect candidates
	type cand struct {
		v    float64
		line int32
		ord  int32 // the line's row in the embeddings
	}
	var cands []cand
	var all []float64
	ruleReason := func(s *Score) string {
		if s.Error != "" {
			return "bad line: " + s.Error
		}
		if r := o.modelReason(s.ModelScore); r != "" {
			return r
		}
		switch {
		case o.Dedup && s.Cluster != 0 && s.Cluster < s.Line:
			return fmt.Sprintf("near-duplicate of line %d", s.Cluster)
		case o.HasMinReward && s.Reward != nil && *s.Reward < o.MinReward:
			return fmt.Sprintf("reward %.4g < min %.4g", *s.Reward, o.MinReward)
		}
		for _, l := range o.Labels {
			if r := l.reason(s); r != "" {
				return r
			}
		}
		return ""
	}
	reasonKey := func(reason string) string {
		for _, k := range []struct{ p, k string }{{"bad line", "bad_line"}, {"ppl", "max_ppl"}, {"ifd", "ifd"},
			{"near-duplicate", "dedup"}, {"unreadable", "unreadable"}, {"keep-top", "keep_top"},
			{"reward", "min_reward"}, {"label", "label"}, {"not selected", "select"},
			{"review: dropped", "review_drop"}, {"review: undecided", "review_undecided"}} {
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
	err = scanLines(in, func(n int, line []byte) error {
		seenLines++
		rv.hash(n, line)
		ord := int32(seenLines - 1)
		_, s, err := SplitScored(line)
		if err == nil {
			readable++
		}
		if err != nil || s.Error != "" {
			return nil
		}
		if err := o.hasScores(in, n, s); err != nil {
			return err
		}
		v, _ := metric(s)
		all = append(all, v)
		if (o.KeepTop > 0 || o.Select > 0) && ruleReason(s) == "" && !rv.decides(n) {
			cands = append(cands, cand{v, int32(n), ord})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if seenLines > 0 && readable == 0 {
		return nil, fmt.Errorf("data: filter: %s has no scored lines (run lorakit data score first)", in)
	}
	if err := rv.check(in); err != nil {
		return nil, err
	}
	// keep-top: rank candidates (best first), keep ceil(frac·n)
	topKeep := map[int32]bool{}
	if o.KeepTop > 0 {
		sort.SliceStable(cands, func(i, j int) bool {
			if lowerIsBetter(o.By) {
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
	// select: N of what is left, best first or diverse
	selected := map[int32]bool{}
	if o.Select > 0 {
		var pool []cand
		for _, c := range cands {
			if o.KeepTop == 0 || topKeep[c.line] {
				pool = append(pool, c)
			}
		}
		sort.SliceStable(pool, func(i, j int) bool { return pool[i].ord < pool[j].ord })
		ords, vals := make([]int, len(pool)), make([]float64, len(pool))
		for i, c := range pool {
			ords[i], vals[i] = int(c.ord), c.v
			if lowerIsBetter(o.By) {
				vals[i] = -c.v
			}
		}
		picked, err := o.pick(in, ords, vals)
		if err != nil {
			return nil, err
		}
		for _, p := range picked {
			selected[int32(p)] = true
		}
		rep.Thresholds["select"] = float64(o.Select)
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
	if o.HasMinReward {
		rep.Thresholds["min_reward"] = o.MinReward
		if o.By == "reward" {
			rep.Histogram.Cuts = append(rep.Histogram.Cuts, o.MinReward)
		}
	}
	for _, l := range o.Labels {
		rep.Thresholds["label:"+l.String()] = l.Value
		if o.By == "label:"+l.Name {
			rep.Histogram.Cuts = append(rep.Histogram.Cuts, l.Value)
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
			if d, edit := rv.verdict(n); d == DecisionDrop {
				drop(s.Line, rv.dropReason(n))
				return nil
			} else if d == DecisionKeep && (raw != nil || edit != nil) {
				rep.Kept++
				return writeKept(w, rv.kept(raw, edit, line, o.KeepScores))
			}
			if r := ruleReason(s); r != "" {
				drop(s.Line, r)
				return nil
			}
			if o.KeepTop > 0 && !topKeep[int32(n)] {
				v, _ := metric(s)
				drop(s.Line, fmt.Sprintf("keep-top %.4g by %s: %s %.4g not in the best", o.KeepTop, o.By, o.By, v))
				return nil
			}
			if o.Select > 0 && !selected[int32(rep.Lines-1)] {
				how := "best by " + o.By
				if o.Diverse {
					how = "diverse selection weighing " + o.By
				}
				drop(s.Line, fmt.Sprintf("not selected: --select %d (%s)", o.Select, how))
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
			return writeKept(w, raw)
		})
	})
	if err != nil {
		return nil, err
	}
	return rep, nil
}

// pick chooses o.Select of the embedding rows ords (quality vals, higher better): the best, or a diverse
// selection over the embeddings.
func (o *FilterOptions) pick(in string, ords []int, vals []float64) ([]int, error) {
	if !o.Diverse {
		order := make([]int, len(ords))
		for i := range order {
			order[i] = i
		}
		sort.SliceStable(order, func(a, b int) bool { return vals[order[a]] > vals[order[b]] })
		out := make([]int, 0, o.Select)
		for _, i := range order[:min(o.Select, len(order))] {
			out = append(out, ords[i])
		}
		return out, nil
	}
	v, err := LoadVectors(in, o.Embeddings, o.Threads)
	if err != nil {
		return nil, fmt.Errorf("data: filter: --diverse: %w", err)
	}
	var idx []int
	var q []float64
	for i, r := range ords {
		if v.OK[r] {
			idx, q = append(idx, r), append(q, vals[i])
		}
	}
	return v.SelectDiverse(idx, q, o.Select, SelectOptions{QualityWeight: o.QualityWeight, Seed: o.Seed}), nil
}

// modelReason is why the rules on --model's scores (perplexity, IFD, token counts) drop a line ("": they keep
// it, or the line has no such scores: hasScores refuses those when a rule needs them).
func (o *FilterOptions) modelReason(s *ModelScore) string {
	switch {
	case s == nil:
		return ""
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
	}
	return ""
}

// metricOf is the score --by names, as a function of a line's scores (ok false when the line lacks it).
func metricOf(by string) (func(s *Score) (float64, bool), error) {
	switch by {
	case "ifd":
		return func(s *Score) (float64, bool) {
			if s.ModelScore == nil {
				return 0, false
			}
			return s.IFD, true
		}, nil
	case "ppl":
		return func(s *Score) (float64, bool) {
			if s.ModelScore == nil {
				return 0, false
			}
			return s.PPL, true
		}, nil
	case "reward":
		return func(s *Score) (float64, bool) {
			if s.Reward == nil {
				return 0, false
			}
			return *s.Reward, true
		}, nil
	}
	if name, ok := strings.CutPrefix(by, "label:"); ok && name != "" {
		return func(s *Score) (float64, bool) { v, ok := s.Labels[name]; return v, ok }, nil
	}
	return nil, fmt.Errorf("data: filter: --by %q (want ifd, ppl, reward or label:NAME)", by)
}

// lowerIsBetter reports whether the --by score ranks lowest first (perplexity); the others rank highest first.
func lowerIsBetter(by string) bool { return by == "ppl" }

// errStop ends a scan early.
var errStop = errors.New("stop")

// defaultBy is the score FilterOptions.By "" ranks and draws: ifd when the first scored line of in has --model's
// scores, else its reward, else its first classifier label (ifd when there is no scored line).
func defaultBy(in string) string {
	by := "ifd"
	_ = scanLines(in, func(_ int, line []byte) error {
		_, s, err := SplitScored(line)
		if err != nil || s.Error != "" {
			return nil
		}
		switch {
		case s.ModelScore != nil:
		case s.Reward != nil:
			by = "reward"
		case len(s.Labels) > 0:
			by = "label:" + sortedKeys(s.Labels)[0]
		}
		return errStop
	})
	return by
}

// hasScores refuses a scored line that lacks a score the rules need (--model's, a reward or a label), naming
// what to run.
func (o *FilterOptions) hasScores(file string, n int, s *Score) error {
	if s.ModelScore == nil {
		rule := ""
		switch {
		case o.MaxPPL > 0:
			rule = "--max-ppl"
		case o.HasMinIFD || o.HasMaxIFD:
			rule = "--min-ifd/--max-ifd"
		case o.MinTokens > 0 || o.MaxTokens > 0:
			rule = "--min-tokens/--max-tokens"
		case o.By == "ifd" || o.By == "ppl":
			rule = "--by " + o.By
		}
		if rule != "" {
			return fmt.Errorf("data: filter: %s:%d has no perplexity or token counts (scored without --model), which %s needs: score the file with lorakit data score --model DIR", file, n, rule)
		}
	}
	if (o.HasMinReward || o.By == "reward") && s.Reward == nil {
		return fmt.Errorf("data: filter: %s:%d has no score.reward: score the file with lorakit data score --reward-model DIR", file, n)
	}
	need := make([]string, 0, len(o.Labels)+1)
	for _, l := range o.Labels {
		need = append(need, l.Name)
	}
	if name, ok := strings.CutPrefix(o.By, "label:"); ok {
		need = append(need, name)
	}
	for _, name := range need {
		if _, ok := s.Labels[name]; !ok {
			return fmt.Errorf("data: filter: %s:%d has no score.labels.%s (its labels: %v): score the file with lorakit data score --classifier DIR, or name one of its labels", file, n, name, sortedKeys(s.Labels))
		}
	}
	return nil
}

func sortedKeys(m map[string]float64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// LabelRule is a classifier label threshold: --label NAME>=V keeps examples whose score for NAME is at least
// V, --label NAME<=V at most V.
type LabelRule struct {
	Name  string
	Min   bool // >= (else <=)
	Value float64
}

// ParseLabelRule reads "NAME>=V" or "NAME<=V".
func ParseLabelRule(s string) (LabelRule, error) {
	for _, op := range []string{">=", "<="} {
		if name, val, ok := strings.Cut(s, op); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
			name = strings.TrimSpace(name)
			if err != nil || name == "" || math.IsNaN(v) {
				break
			}
			return LabelRule{Name: name, Min: op == ">=", Value: v}, nil
		}
	}
	return LabelRule{}, fmt.Errorf("data: filter: --label %q: want NAME>=VALUE or NAME<=VALUE (e.g. educational>=0.7)", s)
}

func (l LabelRule) String() string {
	if l.Min {
		return fmt.Sprintf("%s>=%g", l.Name, l.Value)
	}
	return fmt.Sprintf("%s<=%g", l.Name, l.Value)
}

// reason is why l drops a line ("" when it keeps it).
func (l LabelRule) reason(s *Score) string {
	v, ok := s.Labels[l.Name]
	switch {
	case !ok:
		return ""
	case l.Min && v < l.Value:
		return fmt.Sprintf("label %s %.4g < min %.4g", l.Name, v, l.Value)
	case !l.Min && v > l.Value:
		return fmt.Sprintf("label %s %.4g > max %.4g", l.Name, v, l.Value)
	}
	return ""
}

func writeKept(w *bufio.Writer, b []byte) error {
	if _, err := w.Write(b); err != nil {
		return err
	}
	return w.WriteByte('\n')
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
