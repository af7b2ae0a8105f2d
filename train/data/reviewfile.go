package data

// The review file holds a person's decisions about a scored file (`lorakit data review`), one JSON object a
// line, appended as each decision is made:
//
//	{"line":12,"hash":"5be0…","decision":"drop","time":"2026-12-07T05:40:00Z"}
//	{"line":40,"hash":"91c2…","decision":"keep","edit":{"prompt":"…","response":"…"},"time":"…"}
//
// line is the 1-based line of the scored file, hash the ExampleHash of the example on that line; a record
// is the whole state of its example, and the last record of a line wins. decision is keep, drop or
// undecided; edit, when present, is the example as the person edited it (an object in one of the input
// shapes), written instead of the original.
//
// Why append-only: each decision costs one small write and one fsync, whatever the number of decisions
// already made, and a record once acknowledged is never rewritten, so no later crash can take it back. A
// crash in the middle of an append leaves at most that one record torn at the end of the file, without its
// newline; readers ignore it (it was never acknowledged) and ReviewLog cuts it off before appending.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Review decisions.
const (
	DecisionKeep      = "keep"
	DecisionDrop      = "drop"
	DecisionUndecided = "undecided"
)

// ReviewRecord is one line of a review file.
type ReviewRecord struct {
	Line     int             `json:"line"`
	Hash     string          `json:"hash"`
	Decision string          `json:"decision"`
	Edit     json.RawMessage `json:"edit,omitempty"`
	Time     string          `json:"time,omitempty"`
}

// ReviewPath is the review file next to a scored file: SCORED.jsonl → SCORED.review.jsonl.
func ReviewPath(scored string) string {
	ext := filepath.Ext(scored)
	if ext != ".jsonl" && ext != ".json" {
		ext = ""
	}
	return strings.TrimSuffix(scored, ext) + ".review.jsonl"
}

// ExampleHash identifies the example on a scored line: SHA-256 (first 16 bytes, hex) of the example as it
// was in the original file (SplitScored's raw), so that scoring it again with another model keeps the
// review's decisions; a bad line (no example) hashes the whole line.
func ExampleHash(scoredLine []byte) string {
	b := bytes.TrimSpace(scoredLine)
	raw, _, err := SplitScored(b)
	return ExampleHashOf(b, raw, err)
}

// ExampleHashOf is ExampleHash for a line already split by SplitScored (raw, err its results).
func ExampleHashOf(scoredLine, raw []byte, err error) string {
	b := bytes.TrimSpace(scoredLine)
	if err == nil && raw != nil {
		b = raw
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// Validate checks a record's fields (not its hash against a file).
func (r *ReviewRecord) Validate() error {
	if r.Line < 1 {
		return fmt.Errorf("line %d: not a line number", r.Line)
	}
	if r.Hash == "" {
		return errors.New(`missing "hash"`)
	}
	switch r.Decision {
	case DecisionKeep, DecisionDrop, DecisionUndecided:
	default:
		return fmt.Errorf("decision %q (want keep, drop or undecided)", r.Decision)
	}
	if r.Edit != nil {
		if _, err := CheckEdit(r.Edit); err != nil {
			return fmt.Errorf("edit: %w", err)
		}
	}
	return nil
}

// CheckEdit checks that an edited example is one JSON object that training reads (one of the input shapes,
// without a "score"), and returns it compacted to one line.
func CheckEdit(edit json.RawMessage) (json.RawMessage, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, edit); err != nil {
		return nil, fmt.Errorf("not JSON: %v", err)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(buf.Bytes(), &obj); err != nil || obj == nil {
		return nil, errors.New("not a JSON object")
	}
	if _, ok := obj["score"]; ok {
		return nil, errors.New(`an edited example has no "score" field`)
	}
	if _, lerr := ParseLine(buf.Bytes(), "edit", 1); lerr != nil {
		return nil, errors.New(lerr.Reason)
	}
	return buf.Bytes(), nil
}

// ReviewState is what a review file says: the last record of every line.
type ReviewState struct {
	Records map[int]ReviewRecord
	Count   int   // records read (superseded ones included)
	Torn    bool  // the file ended in a torn record (a crash mid-append), ignored
	Good    int64 // bytes up to the end of the last whole record
}

// ReadReview reads a review file. A torn last record (no newline) is ignored and reported in Torn; any
// other bad line is an error naming the file and line. A missing file is an empty review.
func ReadReview(path string) (*ReviewState, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return &ReviewState{Records: map[int]ReviewRecord{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("data: review: %w", err)
	}
	defer f.Close()
	return readReview(f, path)
}

func readReview(r io.Reader, path string) (*ReviewState, error) {
	st := &ReviewState{Records: map[int]ReviewRecord{}}
	br := bufio.NewReaderSize(r, 1<<20)
	for n := 1; ; n++ {
		b, err := br.ReadBytes('\n')
		if err == io.EOF { // a last line without its newline is an append that did not finish
			st.Torn = len(b) > 0
			return st, nil
		}
		if err != nil {
			return nil, fmt.Errorf("data: review %s:%d: %w", path, n, err)
		}
		if len(bytes.TrimSpace(b)) > 0 {
			var rec ReviewRecord
			if err := json.Unmarshal(b, &rec); err != nil {
				return nil, fmt.Errorf("data: review %s:%d: %v", path, n, err)
			}
			if err := rec.Validate(); err != nil {
				return nil, fmt.Errorf("data: review %s:%d: %v", path, n, err)
			}
			st.Records[rec.Line] = rec
			st.Count++
		}
		st.Good += int64(len(b))
	}
}

// ReviewLog appends records to a review file, each one durable (fsynced) before Append returns. It holds
// an exclusive lock on the file, so two reviews cannot write the same file at once.
type ReviewLog struct {
	mu   sync.Mutex
	f    *os.File
	path string
}

// OpenReviewLog opens (or creates) path for appending and returns what it holds. A torn last record left
// by a crash is cut off first (it was never acknowledged); repaired says so.
func OpenReviewLog(path string) (l *ReviewLog, st *ReviewState, repaired bool, err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, nil, false, fmt.Errorf("data: review: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	if err := lockFile(f); err != nil {
		return nil, nil, false, fmt.Errorf("data: review: %s is in use by another lorakit data review (%v)", path, err)
	}
	if st, err = readReview(f, path); err != nil {
		return nil, nil, false, err
	}
	if st.Torn {
		if err := f.Truncate(st.Good); err != nil {
			return nil, nil, false, fmt.Errorf("data: review: cutting the torn last record of %s: %w", path, err)
		}
		if err := f.Sync(); err != nil {
			return nil, nil, false, fmt.Errorf("data: review: %w", err)
		}
		repaired, st.Torn = true, false
	}
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		return nil, nil, false, fmt.Errorf("data: review: %w", err)
	}
	return &ReviewLog{f: f, path: path}, st, repaired, nil
}

// Path is the file the log writes.
func (l *ReviewLog) Path() string { return l.path }

// Append writes recs (stamping those without a time) in one write and syncs the file. Either all of them
// are durable when it returns nil, or an error says the write failed.
func (l *ReviewLog) Append(recs ...ReviewRecord) error {
	var buf bytes.Buffer
	now := time.Now().UTC().Format(time.RFC3339)
	for _, r := range recs {
		if r.Time == "" {
			r.Time = now
		}
		b, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("data: review: %w", err)
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return errors.New("data: review: log is closed")
	}
	if _, err := l.f.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("data: review: writing %s: %w", l.path, err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("data: review: syncing %s: %w", l.path, err)
	}
	return nil
}

// Close releases the file and its lock.
func (l *ReviewLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// reviewed is Filter's view of a review (nil without one): the decisions, the hashes of their lines in the
// input, and the counts for the report.
type reviewed struct {
	recs          map[int]ReviewRecord
	path          string
	dropUndecided bool
	hashes        map[int]string
	sum           *ReviewSummary
}

// ReviewSummary counts what a review did in Filter.
type ReviewSummary struct {
	File      string `json:"file"`
	Records   int    `json:"records"`
	Kept      int    `json:"kept"`
	Dropped   int    `json:"dropped"`
	Edited    int    `json:"edited"`
	Undecided int    `json:"undecided"`
	TornTail  bool   `json:"torn_tail,omitempty"` // the review file ended in a torn record, ignored
}

func newReviewed(o FilterOptions, rep *FilterReport) *reviewed {
	if o.Review == nil {
		return nil
	}
	rep.Review = &ReviewSummary{File: o.ReviewFile, Records: o.Review.Count, TornTail: o.Review.Torn}
	return &reviewed{recs: o.Review.Records, path: o.ReviewFile, dropUndecided: o.DropUndecided,
		hashes: map[int]string{}, sum: rep.Review}
}

// hash notes the example hash of scored line n when the review has a record for it.
func (rv *reviewed) hash(n int, line []byte) {
	if rv == nil {
		return
	}
	if _, ok := rv.recs[n]; ok {
		rv.hashes[n] = ExampleHash(line)
	}
}

// decides reports whether the review, not the rules, decides line n.
func (rv *reviewed) decides(n int) bool {
	if rv == nil {
		return false
	}
	rec, ok := rv.recs[n]
	return rv.dropUndecided || ok && rec.Decision != DecisionUndecided
}

// check verifies every record against the input: a record for a line that is not there, or whose example
// changed since the review, is an error naming the line.
func (rv *reviewed) check(in string) error {
	if rv == nil {
		return nil
	}
	lines := make([]int, 0, len(rv.recs))
	for line := range rv.recs {
		lines = append(lines, line)
	}
	sort.Ints(lines)
	var bad []int
	for _, line := range lines {
		if rv.hashes[line] != rv.recs[line].Hash {
			bad = append(bad, line)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	more := ""
	if len(bad) > 1 {
		more = fmt.Sprintf(" (and %d more lines)", len(bad)-1)
	}
	line := bad[0]
	h, ok := rv.hashes[line]
	if !ok {
		return fmt.Errorf("data: filter: review %s: line %d%s is not a line of %s (was the review made on another file?)", rv.path, line, more, in)
	}
	return fmt.Errorf("data: filter: review %s does not match %s at line %d%s: the example there changed since it was reviewed (hash %s, the review has %s); review it again with lorakit data review", rv.path, in, line, more, h, rv.recs[line].Hash)
}

// verdict is the review's word on line n: keep (with its edit or none), drop, or "" (the rules decide).
func (rv *reviewed) verdict(n int) (decision string, edit json.RawMessage) {
	if rv == nil {
		return "", nil
	}
	rec, ok := rv.recs[n]
	switch {
	case ok && rec.Decision == DecisionDrop:
		rv.sum.Dropped++
		return DecisionDrop, nil
	case ok && rec.Decision == DecisionKeep:
		rv.sum.Kept++
		if rec.Edit != nil {
			rv.sum.Edited++
		}
		return DecisionKeep, rec.Edit
	}
	rv.sum.Undecided++
	if rv.dropUndecided {
		return DecisionDrop, nil
	}
	return "", nil
}

func (rv *reviewed) dropReason(n int) string {
	if rec, ok := rv.recs[n]; ok && rec.Decision == DecisionDrop {
		return "review: dropped in " + rv.path
	}
	return "review: undecided (dropped by --drop-undecided)"
}

// kept is the line written for an example the review keeps: its edit when it was edited, with the score
// object of the scored line in front when keepScores.
func (rv *reviewed) kept(raw, edit json.RawMessage, line []byte, keepScores bool) []byte {
	if edit == nil {
		if keepScores {
			return bytes.TrimSpace(line)
		}
		return raw
	}
	if !keepScores {
		return edit
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(line, &obj) != nil || obj["score"] == nil {
		return edit
	}
	out := append([]byte(`{"score":`), obj["score"]...)
	return append(append(out, ','), edit[1:]...)
}
