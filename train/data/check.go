package data

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"

	"github.com/lorakit/lorakit/models/chat"
)

// CheckOptions configures Check. Tok and Tpl may be nil: then no token statistics are computed and
// --max-seq-len is not checked.
type CheckOptions struct {
	Tok       Tokenizer
	Tpl       *chat.Template
	MaxSeqLen int // 0: no limit
	Workers   int // 0: all cores
	// OnBad is called, in line order, for every bad line (may be nil).
	OnBad func(*LineError)
	// OnLine is called after every line (for progress; may be nil).
	OnLine func(line int)
}

// Dist summarises a distribution of token counts.
type Dist struct {
	N    int     `json:"n"`
	Mean float64 `json:"mean"`
	Min  int     `json:"min"`
	P50  int     `json:"p50"`
	P90  int     `json:"p90"`
	P95  int     `json:"p95"`
	P99  int     `json:"p99"`
	Max  int     `json:"max"`
}

// CheckReport is the result of Check.
type CheckReport struct {
	File            string         `json:"file"`
	Lines           int            `json:"lines"`
	Good            int            `json:"good"`
	Bad             int            `json:"bad"`
	BadReasons      map[string]int `json:"bad_reasons"` // reason kind → count
	Formats         map[string]int `json:"formats"`
	WithReasoning   int            `json:"with_reasoning"`
	WithToolCalls   int            `json:"with_tool_calls"`  // good examples where the assistant calls tools
	WithTools       int            `json:"with_tools"`       // good examples with a top-level tools list
	ExactDuplicates int            `json:"exact_duplicates"` // good lines whose messages equal an earlier line's
	DuplicateOf     map[int]int    `json:"-"`                // line → first line with the same messages (capped)
	Turns           Dist           `json:"assistant_turns"`
	PromptTokens    *Dist          `json:"prompt_tokens,omitempty"`
	ResponseTokens  *Dist          `json:"response_tokens,omitempty"`
	TotalTokens     *Dist          `json:"total_tokens,omitempty"`
	Errors          []*LineError   `json:"-"`
}

// maxKeptErrors bounds how many LineErrors a CheckReport keeps in memory (all are passed to OnBad).
const maxKeptErrors = 10000

// hist is an exact histogram of non-negative ints; memory grows with distinct values, not with count.
type hist struct {
	counts map[int]int
	n      int
	sum    float64
}

func (h *hist) add(v int) {
	if h.counts == nil {
		h.counts = map[int]int{}
	}
	h.counts[v]++
	h.n++
	h.sum += float64(v)
}

func (h *hist) dist() Dist {
	d := Dist{N: h.n}
	if h.n == 0 {
		return d
	}
	keys := make([]int, 0, len(h.counts))
	for k := range h.counts {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	d.Mean = math.Round(h.sum/float64(h.n)*100) / 100
	d.Min, d.Max = keys[0], keys[len(keys)-1]
	// nearest-rank percentiles
	q := func(p float64) int {
		rank := int(math.Ceil(p / 100 * float64(h.n)))
		if rank < 1 {
			rank = 1
		}
		c := 0
		for _, k := range keys {
			c += h.counts[k]
			if c >= rank {
				return k
			}
		}
		return keys[len(keys)-1]
	}
	d.P50, d.P90, d.P95, d.P99 = q(50), q(90), q(95), q(99)
	return d
}

// ReasonKind maps a LineError reason to a short category for counting.
func ReasonKind(reason string) string {
	for _, k := range []struct{ prefix, kind string }{
		{"invalid JSON", "invalid_json"},
		{"invalid UTF-8", "invalid_utf8"},
		{"missing field", "missing_field"},
		{"empty response", "empty_response"},
		{"wrong role order", "wrong_role_order"},
		{"empty line", "empty_line"},
		{"line longer", "line_too_long"},
		{"too long", "too_long"},
		{"template", "template_error"},
		{"unknown format", "unknown_format"},
		{"unsupported format", "unknown_format"},
	} {
		if len(reason) >= len(k.prefix) && reason[:len(k.prefix)] == k.prefix {
			return k.kind
		}
	}
	return "invalid_field"
}

type checkResult struct {
	hash                uint64
	prompt, resp, total int
	turns               int
	tokenized           bool
	err                 *LineError
}

// Check validates every line of path and gathers statistics. Bad lines (parse errors, template errors
// and, with MaxSeqLen, examples longer than that after templating) are counted, kept (up to a cap) and
// passed to OnBad in line order.
func Check(path string, o CheckOptions) (*CheckReport, error) {
	rep := &CheckReport{File: path, BadReasons: map[string]int{}, Formats: map[string]int{}, DuplicateOf: map[int]int{}}
	var hp, hr, ht, hturns hist
	seen := map[uint64]int32{} // ~32 bytes per distinct conversation
	work := func(it lineItem) checkResult {
		var r checkResult
		if it.err != nil {
			return r
		}
		r.hash = exampleHash(it.ex)
		for _, m := range it.ex.Messages {
			if m.Role == "assistant" {
				r.turns++
			}
		}
		if o.Tok == nil || o.Tpl == nil {
			return r
		}
		ids, asst, err := TokenizeExample(o.Tok, o.Tpl, it.ex)
		if err != nil {
			r.err = &LineError{File: path, Line: it.ex.Line, Reason: "template error: " + err.Error()}
			return r
		}
		r.tokenized = true
		r.total = len(ids)
		for _, a := range asst {
			if a {
				r.resp++
			}
		}
		r.prompt = r.total - r.resp
		if r.resp == 0 {
			r.err = &LineError{File: path, Line: it.ex.Line, Reason: "template error: the chat template produced no assistant tokens"}
		} else if o.MaxSeqLen > 0 && r.total > o.MaxSeqLen {
			r.err = &LineError{File: path, Line: it.ex.Line,
				Reason: fmt.Sprintf("too long: %d tokens after templating, over --max-seq-len %d", r.total, o.MaxSeqLen)}
		}
		return r
	}
	bad := func(le *LineError) {
		rep.Bad++
		rep.BadReasons[ReasonKind(le.Reason)]++
		if len(rep.Errors) < maxKeptErrors {
			rep.Errors = append(rep.Errors, le)
		}
		if o.OnBad != nil {
			o.OnBad(le)
		}
	}
	emit := func(it lineItem, r checkResult) error {
		rep.Lines++
		defer func() {
			if o.OnLine != nil {
				o.OnLine(rep.Lines)
			}
		}()
		if it.err != nil {
			bad(it.err)
			return nil
		}
		if r.tokenized { // token statistics also cover over-long examples
			hp.add(r.prompt)
			hr.add(r.resp)
			ht.add(r.total)
		}
		if r.err != nil {
			bad(r.err)
			return nil
		}
		rep.Good++
		rep.Formats[it.ex.Format]++
		hturns.add(r.turns)
		if it.ex.HasReasoning() {
			rep.WithReasoning++
		}
		if it.ex.HasToolCalls() {
			rep.WithToolCalls++
		}
		if it.ex.Tools != nil {
			rep.WithTools++
		}
		if first, ok := seen[r.hash]; ok {
			rep.ExactDuplicates++
			if len(rep.DuplicateOf) < maxKeptErrors {
				rep.DuplicateOf[it.ex.Line] = int(first)
			}
		} else {
			seen[r.hash] = int32(it.ex.Line)
		}
		return nil
	}
	if err := orderedMap(path, o.Workers, work, emit); err != nil {
		return nil, err
	}
	rep.Turns = hturns.dist()
	if o.Tok != nil && o.Tpl != nil {
		p, r, t := hp.dist(), hr.dist(), ht.dist()
		rep.PromptTokens, rep.ResponseTokens, rep.TotalTokens = &p, &r, &t
	}
	return rep, nil
}

// exampleHash identifies an example by its conversation (format and key order do not matter), tools,
// tool calls, tool_call_id, name and weight included; 64 bits of SHA-256, so a false duplicate is
// practically impossible below billions of lines.
func exampleHash(ex *Example) uint64 {
	h := sha256.New()
	var n [8]byte
	put := func(s string) {
		binary.LittleEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	if ex.Format == FormatText {
		put("\x00text")
		put(ex.Text)
	}
	for i, m := range ex.Messages {
		put(m.Role)
		put(m.Content)
		put(m.ReasoningContent)
		if e := ex.extraAt(i); ex.Extra != nil {
			put(fmt.Sprintf("\x00extra:%d:%t:%t:%q:%q", len(e.ToolCalls), e.NullContent, e.NoLoss, e.ToolCallID, e.Name))
			for _, c := range e.ToolCalls {
				put(c.ID)
				put(c.Name)
				put(string(c.Arguments))
			}
		}
	}
	if ex.Tools != nil {
		put("\x00tools")
		put(string(ex.Tools))
	}
	return binary.LittleEndian.Uint64(h.Sum(nil))
}

// MarshalJSON adds the kept errors and duplicates in a stable form.
func (r *CheckReport) MarshalJSON() ([]byte, error) {
	type plain CheckReport
	type lineErr struct {
		Line   int    `json:"line"`
		Reason string `json:"reason"`
	}
	type dup struct {
		Line        int `json:"line"`
		DuplicateOf int `json:"duplicate_of"`
	}
	errs := make([]lineErr, 0, len(r.Errors))
	for _, e := range r.Errors {
		errs = append(errs, lineErr{e.Line, e.Reason})
	}
	dups := make([]dup, 0, len(r.DuplicateOf))
	for l, f := range r.DuplicateOf {
		dups = append(dups, dup{l, f})
	}
	sort.Slice(dups, func(i, j int) bool { return dups[i].Line < dups[j].Line })
	return json.Marshal(struct {
		*plain
		Errors     []lineErr `json:"errors"`
		Duplicates []dup     `json:"duplicates"`
	}{(*plain)(r), errs, dups})
}

// ErrBadLines is returned by callers that turn a report with bad lines into a failure.
var ErrBadLines = errors.New("bad lines")
