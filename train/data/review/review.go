// Package review lets a person screen a scored SFT file (the output of `lorakit data score`) in the browser:
// a table of the examples with their scores, the histogram of each score, every example shown as the chat
// the model is trained on, and a keep, drop or edit decision per example, saved as it is made to the review
// file (data.ReviewLog) that `lorakit data filter --review` applies.
//
// A Reviewer holds the index of the scored file and the decisions; its HTTP handler (http.go) only
// translates requests into its methods and serves the page (page/, embedded: no network needed).
package review

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/lorakit/lorakit/models/chat"
	"github.com/lorakit/lorakit/train/data"
)

// Options configures Open.
type Options struct {
	Scored     string // the scored JSONL file
	ReviewFile string // the review file (default data.ReviewPath(Scored))
	// Token, when set, must come with every API request (Authorization: Bearer, X-Lorakit-Token or ?token=).
	Token string
	// AnyHost answers requests whatever host their Host header names (a server listening beyond loopback,
	// reached by the machine's LAN name or address); it needs a Token, which then guards the API against DNS
	// rebinding as the loopback-only Host check does otherwise.
	AnyHost bool
	// Template, when set, renders each example as the model's chat template does for training, with the
	// tokens that carry the loss marked.
	Template *chat.Template
}

// Reviewer is one review session of one scored file.
type Reviewer struct {
	opts   Options
	ix     *index
	scored *os.File
	log    *data.ReviewLog

	mu    sync.Mutex
	state map[int]data.ReviewRecord // the current decision of every line decided (hash matching the index)
	stale map[int]data.ReviewRecord // records of the review file whose example changed or is gone: not applied
	// repaired: the review file ended in a torn record (a crash mid-save), which Open cut off.
	repaired bool
}

// Open indexes the scored file and opens (or creates) the review file, locking it.
func Open(o Options) (*Reviewer, error) {
	if o.AnyHost && o.Token == "" {
		return nil, errors.New("review: answering any Host (a server reachable from other machines) needs a token")
	}
	if o.ReviewFile == "" {
		o.ReviewFile = data.ReviewPath(o.Scored)
	}
	ix, err := buildIndex(o.Scored)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(o.Scored)
	if err != nil {
		return nil, fmt.Errorf("review: %w", err)
	}
	log, st, repaired, err := data.OpenReviewLog(o.ReviewFile)
	if err != nil {
		f.Close()
		return nil, err
	}
	r := &Reviewer{opts: o, ix: ix, scored: f, log: log, repaired: repaired,
		state: map[int]data.ReviewRecord{}, stale: map[int]data.ReviewRecord{}}
	for line, rec := range st.Records {
		if i, ok := ix.byLine[line]; ok && ix.items[i].hash == rec.Hash {
			r.state[line] = rec
		} else {
			r.stale[line] = rec
		}
	}
	return r, nil
}

// Close releases the scored file and the review file.
func (r *Reviewer) Close() error {
	err := r.log.Close()
	if cerr := r.scored.Close(); err == nil {
		err = cerr
	}
	return err
}

// Info describes the session.
type Info struct {
	Scored     string   `json:"scored"`
	ReviewFile string   `json:"review_file"`
	Examples   int      `json:"examples"`
	Fields     []string `json:"fields"`
	Kept       int      `json:"kept"`
	Dropped    int      `json:"dropped"`
	Edited     int      `json:"edited"`
	// StaleLines are lines whose decision in the review file was made on another example (the scored file
	// changed): those decisions are not applied, and data filter --review refuses the file until they are
	// decided again.
	StaleLines []int `json:"stale_lines"`
	Repaired   bool  `json:"repaired"`
	Template   bool  `json:"template"`
}

// Info returns the counts and names of the session.
func (r *Reviewer) Info() Info {
	r.mu.Lock()
	defer r.mu.Unlock()
	in := Info{Scored: r.opts.Scored, ReviewFile: r.opts.ReviewFile, Examples: len(r.ix.items), Fields: r.ix.fields,
		Repaired: r.repaired, Template: r.opts.Template != nil, StaleLines: []int{}}
	for _, rec := range r.state {
		switch rec.Decision {
		case data.DecisionKeep:
			in.Kept++
		case data.DecisionDrop:
			in.Dropped++
		}
		if rec.Edit != nil {
			in.Edited++
		}
	}
	for line := range r.stale {
		in.StaleLines = append(in.StaleLines, line)
	}
	sort.Ints(in.StaleLines)
	return in
}

// Row is one example in the table.
type Row struct {
	Line     int       `json:"line"`
	Hash     string    `json:"hash"`
	Format   string    `json:"format,omitempty"`
	Error    string    `json:"error,omitempty"`
	Prompt   string    `json:"prompt"`
	Answer   string    `json:"answer"`
	Flags    []string  `json:"flags,omitempty"`
	Scores   []*number `json:"scores"` // parallel to Info.Fields; null where missing
	Decision string    `json:"decision"`
	Edited   bool      `json:"edited,omitempty"`
	Stale    bool      `json:"stale,omitempty"`
}

// number is a float64 that is written as null when it is not finite (JSON has no NaN).
type number float64

func (n number) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(n)) || math.IsInf(float64(n), 0) {
		return []byte("null"), nil
	}
	return json.Marshal(float64(n))
}

// Rows returns every example's row, in file order.
func (r *Reviewer) Rows() []Row {
	r.mu.Lock()
	defer r.mu.Unlock()
	rows := make([]Row, len(r.ix.items))
	for i := range r.ix.items {
		rows[i] = r.row(&r.ix.items[i])
	}
	return rows
}

// row is an item's row with its decision; r.mu is held.
func (r *Reviewer) row(it *item) Row {
	row := Row{Line: it.line, Hash: it.hash, Format: it.format, Error: it.err, Prompt: it.prompt, Answer: it.answer,
		Flags: it.flags, Scores: make([]*number, len(it.scores))}
	for j, v := range it.scores {
		if !math.IsNaN(v) {
			n := number(v)
			row.Scores[j] = &n
		}
	}
	r.fillState(&row)
	return row
}

// fillState sets a row's decision fields, and its previews from the edit when there is one; r.mu is held.
func (r *Reviewer) fillState(row *Row) {
	row.Decision = data.DecisionUndecided
	if rec, ok := r.state[row.Line]; ok {
		row.Decision, row.Edited = rec.Decision, rec.Edit != nil
		if rec.Edit != nil {
			if ex, lerr := data.ParseLine(rec.Edit, r.opts.Scored, row.Line); lerr == nil {
				row.Prompt, row.Answer = previews(ex)
			}
		}
	}
	_, row.Stale = r.stale[row.Line]
}

// Change is one decision asked for. Decision "" leaves the decision as it is (an edit alone); Edit replaces
// the example's edit; RevertEdit goes back to the original example.
type Change struct {
	Line       int             `json:"line"`
	Hash       string          `json:"hash"`
	Decision   string          `json:"decision,omitempty"`
	Edit       json.RawMessage `json:"edit,omitempty"`
	RevertEdit bool            `json:"revert_edit,omitempty"`
}

// ErrBadChange is wrapped by Decide's errors about a change (as opposed to failing to save it).
var ErrBadChange = errors.New("bad change")

// Decide applies changes and saves them to the review file (one write, synced) before it returns; nothing
// is applied when one change is bad or the save fails. It returns the new state of the changed rows.
func (r *Reviewer) Decide(changes []Change) ([]Row, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var recs []data.ReviewRecord
	pending := map[int]data.ReviewRecord{} // this batch's records so far: a later change of a line builds on them
	for i, c := range changes {
		cur, ok := pending[c.Line]
		if !ok {
			cur, ok = r.state[c.Line]
		}
		if !ok {
			cur = data.ReviewRecord{Decision: data.DecisionUndecided}
		}
		rec, err := r.apply(c, cur)
		if err != nil {
			return nil, fmt.Errorf("%w: change %d (line %d): %v", ErrBadChange, i, c.Line, err)
		}
		if _, stale := r.stale[c.Line]; !stale && cur.Decision == rec.Decision && bytes.Equal(cur.Edit, rec.Edit) {
			continue // nothing new to save
		}
		pending[c.Line] = rec
		recs = append(recs, rec)
	}
	if len(recs) > 0 {
		if err := r.log.Append(recs...); err != nil {
			return nil, err
		}
	}
	for _, rec := range recs {
		if rec.Decision == data.DecisionUndecided && rec.Edit == nil {
			delete(r.state, rec.Line)
		} else {
			r.state[rec.Line] = rec
		}
		delete(r.stale, rec.Line) // decided again on the example as it is now
	}
	rows := make([]Row, 0, len(changes))
	for _, c := range changes {
		rows = append(rows, r.row(&r.ix.items[r.ix.byLine[c.Line]]))
	}
	return rows, nil
}

// apply computes the record a change leads to from the line's current record cur (r.mu held).
func (r *Reviewer) apply(c Change, cur data.ReviewRecord) (data.ReviewRecord, error) {
	i, ok := r.ix.byLine[c.Line]
	if !ok {
		return data.ReviewRecord{}, errors.New("no example on that line")
	}
	it := &r.ix.items[i]
	if c.Hash != it.hash {
		return data.ReviewRecord{}, fmt.Errorf("hash %q is not the example's (%s): reload the page", c.Hash, it.hash)
	}
	rec := data.ReviewRecord{Line: c.Line, Hash: it.hash, Decision: cur.Decision, Edit: cur.Edit}
	switch c.Decision {
	case "":
	case data.DecisionKeep, data.DecisionDrop, data.DecisionUndecided:
		rec.Decision = c.Decision
	default:
		return rec, fmt.Errorf("decision %q (want keep, drop or undecided)", c.Decision)
	}
	if c.RevertEdit && c.Edit != nil {
		return rec, errors.New("an edit and revert_edit together")
	}
	if c.RevertEdit {
		rec.Edit = nil
	}
	if c.Edit != nil && string(c.Edit) != "null" {
		edit, err := data.CheckEdit(c.Edit)
		if err != nil {
			return rec, fmt.Errorf("the edited example is not valid: %v", err)
		}
		rec.Edit = edit
	}
	return rec, nil
}

// Turn is one message of an example as the page draws it (role "text" for a plain-text document).
type Turn struct {
	Role       string     `json:"role"`
	Content    string     `json:"content"`
	Reasoning  string     `json:"reasoning,omitempty"`
	ToolCalls  []ToolCall `json:"tool_calls,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
	Name       string     `json:"name,omitempty"`
	NoLoss     bool       `json:"no_loss,omitempty"` // an assistant turn with weight 0: context, not trained on
}

// ToolCall is a tool call of an assistant turn.
type ToolCall struct {
	ID        string `json:"id,omitempty"`
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// Segment is a piece of the rendered training text; Loss marks what the model is trained to produce.
type Segment struct {
	Text string `json:"text"`
	Loss bool   `json:"loss,omitempty"`
}

// Detail is one example in full.
type Detail struct {
	Row
	Original json.RawMessage `json:"original,omitempty"` // the example as in the input file (no score)
	Edit     json.RawMessage `json:"edit,omitempty"`     // the person's edit, when there is one
	Score    json.RawMessage `json:"score,omitempty"`
	Chat     []Turn          `json:"chat"` // of the edit when there is one
	Tools    json.RawMessage `json:"tools,omitempty"`
	Rendered []Segment       `json:"rendered,omitempty"`
	// RenderError says why the template could not render the example (when a template is set).
	RenderError string `json:"render_error,omitempty"`
}

// ErrNoLine is returned for a line that holds no example of the scored file.
var ErrNoLine = errors.New("no such line")

// Example returns line's example in full.
func (r *Reviewer) Example(line int) (*Detail, error) {
	i, ok := r.ix.byLine[line]
	if !ok {
		return nil, fmt.Errorf("%w: %d", ErrNoLine, line)
	}
	it := &r.ix.items[i]
	b, err := r.ix.readLine(r.scored, it)
	if err != nil {
		return nil, err
	}
	d := &Detail{}
	r.mu.Lock()
	d.Row = r.row(it)
	if rec, ok := r.state[line]; ok {
		d.Edit = rec.Edit
	}
	r.mu.Unlock()
	d.Score = scoreObject(b)
	raw, _, err := data.SplitScored(b)
	if err == nil && raw != nil {
		d.Original = raw
	}
	show := d.Original
	if d.Edit != nil {
		show = d.Edit
	}
	if show != nil {
		r.fillChat(d, show)
	}
	return d, nil
}

// fillChat parses the example to show and renders it with the template.
func (r *Reviewer) fillChat(d *Detail, example []byte) {
	ex, lerr := data.ParseLine(example, r.opts.Scored, d.Line)
	if lerr != nil {
		d.RenderError = lerr.Reason
		return
	}
	d.Tools = ex.Tools
	if ex.Format == data.FormatText { // a document trained on whole: no roles
		d.Chat = []Turn{{Role: "text", Content: ex.Text}}
	}
	for k, m := range ex.Messages {
		t := Turn{Role: m.Role, Content: m.Content, Reasoning: m.ReasoningContent}
		if k < len(ex.Extra) {
			e := ex.Extra[k]
			t.ToolCallID, t.Name, t.NoLoss = e.ToolCallID, e.Name, e.NoLoss
			for _, c := range e.ToolCalls {
				t.ToolCalls = append(t.ToolCalls, ToolCall{ID: c.ID, Name: c.Name, Arguments: string(c.Arguments)})
			}
		}
		d.Chat = append(d.Chat, t)
	}
	if r.opts.Template == nil {
		return
	}
	text, spans, err := data.RenderExample(r.opts.Template, ex)
	if err != nil {
		d.RenderError = err.Error()
		return
	}
	d.Rendered = segments(text, spans)
}

// segments cuts text at the loss spans (byte offsets, ascending).
func segments(text string, spans [][2]int) []Segment {
	var out []Segment
	at := 0
	for _, sp := range spans {
		if sp[0] > at {
			out = append(out, Segment{Text: text[at:sp[0]]})
		}
		if sp[1] > sp[0] {
			out = append(out, Segment{Text: text[sp[0]:sp[1]], Loss: true})
		}
		at = max(at, sp[1])
	}
	if at < len(text) {
		out = append(out, Segment{Text: text[at:]})
	}
	return out
}

// Search returns the lines whose example (or its edit) contains q, ignoring case.
func (r *Reviewer) Search(q string) ([]int, error) {
	q = strings.ToLower(strings.TrimSpace(q))
	if q == "" {
		return nil, errors.New("empty query")
	}
	needles := [][]byte{[]byte(q)}
	if esc, err := json.Marshal(q); err == nil && string(esc[1:len(esc)-1]) != q {
		needles = append(needles, esc[1:len(esc)-1]) // as it is written inside a JSON string
	}
	r.mu.Lock()
	edits := map[int][]byte{}
	for line, rec := range r.state {
		if rec.Edit != nil {
			edits[line] = bytes.ToLower(rec.Edit)
		}
	}
	r.mu.Unlock()
	lines := []int{}
	for i := range r.ix.items {
		it := &r.ix.items[i]
		hay, ok := edits[it.line]
		if !ok {
			b, err := r.ix.readLine(r.scored, it)
			if err != nil {
				return nil, err
			}
			raw, _, err := data.SplitScored(b)
			if err != nil || raw == nil {
				raw = b
			}
			hay = bytes.ToLower(raw)
		}
		for _, n := range needles {
			if bytes.Contains(hay, n) {
				lines = append(lines, it.line)
				break
			}
		}
	}
	return lines, nil
}
