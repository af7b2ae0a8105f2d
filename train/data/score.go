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
	"strings"

	"github.com/lorakit/lorakit/models/chat"
)

// Score is what `lorakit data score` attaches to an example (as the "score" key, see ScoreFile).
//
//   - NLL: mean negative log-likelihood (nats/token) of the assistant tokens given the conversation,
//     exactly the tokens training puts the loss on (reasoning, content and end-of-turn marker); PPL = exp(NLL).
//     This is what `lorakit eval` reports for the example.
//   - NLLAlone: the same assistant text (the concatenated assistant spans) scored alone after BOS, with no
//     prompt and no template around it (without a BOS token its first token is not scored).
//   - IFD = NLL / NLLAlone (instruction-following difficulty, Li et al. 2023).
//   - Cluster: the line number of the first example of its near-duplicate cluster (MinHash over token
//     5-shingles of the message texts; equal to Line for the first member).
type Score struct {
	Line           int     `json:"line"`
	Format         string  `json:"format,omitempty"`
	Error          string  `json:"error,omitempty"`
	PromptTokens   int     `json:"prompt_tokens"`
	ResponseTokens int     `json:"response_tokens"`
	TotalTokens    int     `json:"total_tokens"`
	ScoredTokens   int     `json:"scored_tokens"`
	Truncated      bool    `json:"truncated,omitempty"`
	NLL            float64 `json:"nll"`
	PPL            float64 `json:"ppl"`
	NLLAlone       float64 `json:"nll_alone"`
	PPLAlone       float64 `json:"ppl_alone"`
	IFD            float64 `json:"ifd"`
	Cluster        int     `json:"cluster"`
}

// ScoreOptions configures ScoreFile.
type ScoreOptions struct {
	Tok    Tokenizer
	Tpl    *chat.Template
	BOS    int  // BOS id used before the response-alone sequence
	HasBOS bool // whether the model has a BOS token
	Scorer Scorer
	// MaxSeqLen cuts longer examples at the end (scored on what survives, Truncated set); 0: no limit.
	MaxSeqLen int
	// BatchTokens is how many tokens are sent to the Scorer at once (default 4096).
	BatchTokens int
	Workers     int  // tokenizing goroutines (0: all cores)
	Resume      bool // continue an interrupted run: lines already in the output are skipped
	// OnProgress is called after each batch with the number of input lines done (may be nil).
	OnProgress func(lines int)
}

// ScoreSummary counts what ScoreFile did.
type ScoreSummary struct {
	Lines   int `json:"lines"`
	Scored  int `json:"scored"`
	Bad     int `json:"bad"`
	Skipped int `json:"skipped_resumed"`
	Tokens  int `json:"tokens"`
	// MinHashFull: the near-duplicate index reached its cap; later examples joined existing clusters only.
	MinHashFull bool `json:"minhash_index_full,omitempty"`
}

// ScoreFile scores every line of in and writes out: one line per input line, in order. A good line is
// the original JSON object with a "score" object inserted as its first key: {"score":{...},<original
// keys>}; a bad line becomes {"score":{"line":N,"error":"..."}}. Output goes to out+".partial" and is
// renamed to out when complete; with Resume an existing partial (or complete) output is continued.
func ScoreFile(in, out string, o ScoreOptions) (*ScoreSummary, error) {
	if o.Tok == nil || o.Tpl == nil || o.Scorer == nil {
		return nil, errors.New("data: score: tokenizer, template and scorer are required")
	}
	if o.BatchTokens <= 0 {
		o.BatchTokens = 4096
	}
	partial := out + ".partial"
	done := 0
	if o.Resume {
		var err error
		if done, err = resumePoint(partial, out); err != nil {
			return nil, err
		}
	} else {
		_ = os.Remove(partial)
	}
	f, err := os.OpenFile(partial, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("data: score: %w", err)
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	sum := &ScoreSummary{Skipped: done}
	mh := newMinHash()

	type prepared struct {
		score  Score
		cond   []int  // conversation ids (possibly truncated)
		mask   []bool // mask over cond (Mask semantics of Encoded)
		alone  []int  // BOS? + response ids
		sketch *sketch
		hasErr bool
	}
	var batch []*prepared
	var batchItems []lineItem
	batchTokens := 0
	writeLine := func(it lineItem, sc *Score) error {
		sb, err := json.Marshal(sc)
		if err != nil {
			return err
		}
		if it.err != nil || sc.Error != "" {
			eb, err := json.Marshal(struct {
				Line    int    `json:"line"`
				Error   string `json:"error"`
				Cluster int    `json:"cluster"`
			}{sc.Line, sc.Error, sc.Cluster})
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(w, "{\"score\":%s}\n", eb)
			return err
		}
		raw := bytes.TrimSpace(it.ex.Raw)
		body := bytes.TrimSpace(raw[1:]) // after "{"; non-empty: the object has keys
		if _, err = fmt.Fprintf(w, "{\"score\":%s,", sb); err != nil {
			return err
		}
		_, err = w.Write(append(body, '\n'))
		return err
	}
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		var seqs [][]int
		var idx []int // batch index of each cond seq; alone seq follows
		for i, p := range batch {
			if p.hasErr {
				continue
			}
			seqs = append(seqs, p.cond, p.alone)
			idx = append(idx, i)
		}
		if len(seqs) > 0 {
			nll, err := o.Scorer.TokenNLL(seqs)
			if err == nil {
				err = checkNLL(seqs, nll)
			}
			if err != nil {
				return fmt.Errorf("data: score: lines %d-%d: %w", batch[0].score.Line, batch[len(batch)-1].score.Line, err)
			}
			for k, bi := range idx {
				p := batch[bi]
				c, a := nll[2*k], nll[2*k+1]
				s, n := 0.0, 0
				for t, m := range p.mask[:len(c)] {
					if m {
						s += c[t]
						n++
					}
				}
				sa, na := 0.0, 0
				for t := range a {
					sa += a[t]
					na++
				}
				sc := &p.score
				sc.ScoredTokens = n
				if n > 0 {
					sc.NLL = s / float64(n)
					sc.PPL = math.Exp(sc.NLL)
				}
				if na > 0 {
					sc.NLLAlone = sa / float64(na)
					sc.PPLAlone = math.Exp(sc.NLLAlone)
				}
				if sc.NLLAlone > 0 {
					sc.IFD = sc.NLL / sc.NLLAlone
				}
				sum.Tokens += len(p.cond) + len(p.alone)
			}
		}
		for i, p := range batch {
			if err := writeLine(batchItems[i], &p.score); err != nil {
				return err
			}
			if p.hasErr {
				sum.Bad++
			} else {
				sum.Scored++
			}
		}
		if err := w.Flush(); err != nil {
			return err
		}
		batch, batchItems, batchTokens = batch[:0], batchItems[:0], 0
		if o.OnProgress != nil {
			o.OnProgress(sum.Lines)
		}
		return nil
	}
	work := func(it lineItem) *prepared {
		p := &prepared{}
		if it.err != nil {
			p.score = Score{Line: it.err.Line, Error: it.err.Reason}
			p.hasErr = true
			return p
		}
		ex := it.ex
		p.score = Score{Line: ex.Line, Format: ex.Format}
		p.sketch = mh.sketch(o.Tok.Encode(exampleText(ex), false))
		if ex.Line <= done {
			return p // resumed: only the MinHash index is rebuilt
		}
		text, spans, err := RenderExample(o.Tpl, ex)
		if err != nil {
			p.score.Error, p.hasErr = "template error: "+err.Error(), true
			return p
		}
		enc, err := Encode(o.Tok, o.Tpl, ex, o.MaxSeqLen, false)
		if err != nil {
			p.score.Error, p.hasErr = err.Error(), true
			return p
		}
		var resp strings.Builder
		for _, sp := range spans {
			resp.WriteString(text[sp[0]:sp[1]])
		}
		alone := o.Tok.Encode(resp.String(), false)
		if o.HasBOS { // otherwise the first response token has no prediction and is not scored
			alone = append([]int{o.BOS}, alone...)
		}
		if o.MaxSeqLen > 0 && len(alone) > o.MaxSeqLen {
			alone = alone[:o.MaxSeqLen]
		}
		p.cond, p.mask, p.alone = enc.IDs, enc.Mask, alone
		p.score.PromptTokens, p.score.ResponseTokens, p.score.TotalTokens = enc.PromptTokens, enc.ResponseTokens, enc.FullLen
		p.score.Truncated = enc.Truncated
		if len(alone) < 2 {
			p.score.Error, p.hasErr = "response has fewer than 2 tokens alone", true
		}
		return p
	}
	emit := func(it lineItem, p *prepared) error {
		sum.Lines++
		p.score.Cluster = mh.assign(p.sketch, p.score.Line)
		if p.score.Line <= done {
			return nil
		}
		batch = append(batch, p)
		batchItems = append(batchItems, it)
		batchTokens += len(p.cond) + len(p.alone)
		if batchTokens >= o.BatchTokens {
			return flush()
		}
		return nil
	}
	if err := orderedMap(in, o.Workers, work, emit); err != nil {
		_ = w.Flush()
		return nil, err
	}
	if err := flush(); err != nil {
		return nil, err
	}
	sum.MinHashFull = mh.Full
	if err := f.Sync(); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	if err := os.Rename(partial, out); err != nil {
		return nil, fmt.Errorf("data: score: %w", err)
	}
	return sum, nil
}

// contentText is the text MinHash looks at: every message's content and reasoning, one per line.
func contentText(msgs []chat.Message) string {
	var b strings.Builder
	for _, m := range msgs {
		if m.ReasoningContent != "" {
			b.WriteString(m.ReasoningContent)
			b.WriteByte('\n')
		}
		b.WriteString(m.Content)
		b.WriteByte('\n')
	}
	return b.String()
}

// exampleText is contentText plus every tool call's name and arguments.
func exampleText(ex *Example) string {
	s := contentText(ex.Messages)
	if !ex.HasToolCalls() {
		return s
	}
	var b strings.Builder
	b.WriteString(s)
	for _, e := range ex.Extra {
		for _, c := range e.ToolCalls {
			b.WriteString(c.Name)
			b.WriteByte(' ')
			b.Write(c.Arguments)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// resumePoint prepares partial for appending and returns the last input line already scored. A
// complete output (out) is moved back to partial; a torn last line is cut off.
func resumePoint(partial, out string) (int, error) {
	if _, err := os.Stat(partial); errors.Is(err, os.ErrNotExist) {
		if _, err := os.Stat(out); err == nil {
			if err := os.Rename(out, partial); err != nil {
				return 0, fmt.Errorf("data: score: resume: %w", err)
			}
		} else {
			return 0, nil
		}
	}
	f, err := os.OpenFile(partial, os.O_RDWR, 0)
	if err != nil {
		return 0, fmt.Errorf("data: score: resume: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<20)
	var good int64
	last := 0
	for {
		b, tooLong, err := readLine(br)
		if err == io.EOF && b == nil {
			break
		}
		if err != nil && err != io.EOF {
			return 0, fmt.Errorf("data: score: resume: %w", err)
		}
		if err == io.EOF || tooLong { // no newline: torn write
			break
		}
		line, ok := scoredLineNumber(b)
		if !ok {
			break
		}
		last = line
		good += int64(len(b)) + 1 // our own output: "\n" line ends
	}
	if err := f.Truncate(good); err != nil {
		return 0, fmt.Errorf("data: score: resume: %w", err)
	}
	return last, nil
}

// scoredLineNumber reads score.line from a scored line.
func scoredLineNumber(b []byte) (int, bool) {
	var v struct {
		Score *struct {
			Line int `json:"line"`
		} `json:"score"`
	}
	if err := json.Unmarshal(b, &v); err != nil || v.Score == nil || v.Score.Line <= 0 {
		return 0, false
	}
	return v.Score.Line, true
}
