package data

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"

	"github.com/lorakit/lorakit/internal/npy"
	"github.com/lorakit/lorakit/internal/outdir"
	"github.com/lorakit/lorakit/models/chat"
)

// Score is what `lorakit data score` attaches to an example (as the "score" key, see ScoreFile).
//
//   - ModelScore: the token counts and perplexities --model measures (absent when the file was scored by
//     judges alone).
//   - Reward, Labels: what the judges of ScoreOptions (a reward model, a classifier) say of the conversation.
//   - Cluster: the line number of the first example of its near-duplicate cluster (MinHash over token
//     5-shingles of the message texts; equal to Line for the first member).
type Score struct {
	Line   int    `json:"line"`
	Format string `json:"format,omitempty"`
	Error  string `json:"error,omitempty"`
	// *ModelScore's fields are inlined in the JSON; nil (and its keys absent) without a ScoreOptions.Scorer.
	*ModelScore
	Cluster int `json:"cluster"`
	// Reward is the reward model's score of the conversation (--reward-model): its head's raw output.
	Reward *float64 `json:"reward,omitempty"`
	// Labels are the classifier's scores per label (--classifier), keyed by id2label: probabilities (softmax,
	// or sigmoid per label for a multi-label classifier), or the raw value of a single-output or regression head.
	Labels map[string]float64 `json:"labels,omitempty"`
}

// ModelScore is what the scored model (ScoreOptions.Scorer, --model) measures of an example:
//
//   - the token counts of the example as its tokenizer and chat template encode it for training;
//   - NLL: mean negative log-likelihood (nats/token) of the assistant tokens given the conversation,
//     exactly the tokens training puts the loss on (reasoning, content and end-of-turn marker); PPL = exp(NLL).
//     This is what `lorakit eval` reports for the example.
//   - NLLAlone: the same assistant text (the concatenated assistant spans) scored alone after BOS, with no
//     prompt and no template around it (without a BOS token its first token is not scored).
//   - IFD = NLL / NLLAlone (instruction-following difficulty, Li et al. 2023).
type ModelScore struct {
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
}

// ScoreOptions configures ScoreFile.
type ScoreOptions struct {
	// Tok is the scored model's tokenizer; without a Scorer, the tokenizer MinHash shingles (the first
	// judge's when nil).
	Tok    Tokenizer
	Tpl    *chat.Template // the scored model's chat template (with Scorer)
	BOS    int            // BOS id used before the response-alone sequence
	HasBOS bool           // whether the model has a BOS token
	// Scorer, if set, adds Score.ModelScore (token counts, perplexities, IFD); without it only the judges
	// (at least one of Reward, Classifier and Embed) and the near-duplicate clusters score the file.
	Scorer Scorer
	// MaxSeqLen cuts longer examples at the end (scored on what survives, Truncated set); 0: no limit.
	MaxSeqLen int
	// BatchTokens is how many tokens are sent to the Scorer at once (default 4096).
	BatchTokens int
	Workers     int  // tokenizing goroutines (0: all cores)
	Resume      bool // continue an interrupted run: lines already in the output are skipped
	Force       bool // without Resume, replace an existing output or partial output
	// Reward, if set, adds Score.Reward: a sequence classifier with one output (a reward model).
	Reward *Judge
	// Classifier, if set, adds Score.Labels: a sequence classifier's scores per label.
	Classifier *Judge
	// Embed, if set, writes an embedding per line to EmbeddingsPath(out) (written as out is: via a .partial,
	// continued by Resume).
	Embed *Embedder
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
// Without Resume, an existing partial or output is refused unless Force: it may be hours of work.
func ScoreFile(in, out string, o ScoreOptions) (*ScoreSummary, error) {
	return ScoreFileContext(context.Background(), in, out, o)
}

// ScoreFileContext is ScoreFile stopped by ctx between batches: the partial output then holds every line
// scored so far, whole, and Resume continues it (a run stopped before its first batch leaves no partial).
func ScoreFileContext(ctx context.Context, in, out string, o ScoreOptions) (*ScoreSummary, error) {
	if o.Scorer != nil && (o.Tok == nil || o.Tpl == nil) {
		return nil, errors.New("data: score: the scorer needs its tokenizer and chat template")
	}
	if o.Scorer == nil && o.Reward == nil && o.Classifier == nil && o.Embed == nil {
		return nil, errors.New("data: score: nothing to score with: give a scorer (--model) or a judge (--reward-model, --classifier, --embed-model)")
	}
	if o.BatchTokens <= 0 {
		o.BatchTokens = 4096
	}
	if err := checkJudges(o); err != nil {
		return nil, err
	}
	if o.Tok == nil {
		if o.Tok = o.judgeTokenizer(); o.Tok == nil {
			return nil, errors.New("data: score: no tokenizer to find near-duplicates with")
		}
	}
	if err := checkScoreOut(in, out, o); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("data: score interrupted before it began: %w", err)
	}
	r, err := openScoreRun(out, o)
	if err != nil {
		return nil, err
	}
	r.ctx = ctx
	defer r.f.Close()
	if err := orderedMap(in, o.Workers, r.prepare, r.add); err != nil {
		_ = r.w.Flush()
		if r.emb != nil {
			_ = r.emb.Close()
		}
		if st, serr := r.f.Stat(); serr == nil && st.Size() == 0 && !o.Resume {
			r.f.Close()
			os.Remove(r.partial) // nothing scored: no partial to resume
			if r.emb != nil {
				os.Remove(r.embPartial)
			}
		}
		return nil, err
	}
	if err := r.flush(); err != nil {
		return nil, err
	}
	return r.finish()
}

// checkScoreOut refuses an output that is the input, and without Resume or Force an existing output or partial.
func checkScoreOut(in, out string, o ScoreOptions) error {
	partial := out + ".partial"
	for _, p := range []string{out, partial} {
		if err := outdir.NotInput("data score: --out", p, in); err != nil {
			return err
		}
	}
	if o.Resume || o.Force {
		return nil
	}
	if _, err := os.Stat(partial); err == nil {
		return fmt.Errorf("data score: %s holds an interrupted run's scores: pass --resume to continue it, or --force to start over", partial)
	}
	if _, err := os.Stat(out); err == nil {
		return fmt.Errorf("data score: %s exists: pass --force to replace it (or --resume to keep its scores and score only what is missing)", out)
	}
	return nil
}

// scoreRun is one ScoreFile: the partial output, the MinHash index and the batch waiting for the scorer.
type scoreRun struct {
	ctx          context.Context // stops the run between batches
	o            ScoreOptions
	out, partial string
	done         int // lines already in the output (Resume)
	f            *os.File
	w            *bufio.Writer
	sum          *ScoreSummary
	mh           *minHash
	batch        []*prepared
	emb          *npy.Writer // the embeddings' partial file (Embed)
	embPartial   string
	batchItems   []lineItem
	batchTokens  int
}

// prepared is a line ready for the scorer: its token sequences, or the error that keeps it from being scored.
type prepared struct {
	score  Score
	cond   []int  // conversation ids (possibly truncated)
	mask   []bool // mask over cond (Mask semantics of Encoded)
	alone  []int  // BOS? + response ids
	reward []int  // what the reward model reads
	class  []int  // what the classifier reads
	embed  []int  // what the embedder reads
	vec    []float32
	sketch *sketch
	hasErr bool
}

// openScoreRun opens out's partial file: continued with Resume, else started afresh.
func openScoreRun(out string, o ScoreOptions) (*scoreRun, error) {
	r := &scoreRun{o: o, out: out, partial: out + ".partial", mh: newMinHash()}
	kept := 0 // output lines kept by Resume
	if o.Resume {
		var err error
		if r.done, kept, err = resumePoint(r.partial, out); err != nil {
			return nil, err
		}
	} else {
		_ = os.Remove(r.partial)
	}
	if o.Embed != nil {
		if err := r.openEmbeddings(out, kept); err != nil {
			return nil, err
		}
	}
	f, err := os.OpenFile(r.partial, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("data: score: %w", err)
	}
	r.f, r.w = f, bufio.NewWriterSize(f, 1<<20)
	r.sum = &ScoreSummary{Skipped: r.done}
	return r, nil
}

// prepare renders and tokenizes one line (on a worker goroutine: it only reads r).
func (r *scoreRun) prepare(it lineItem) *prepared {
	o := r.o
	p := &prepared{}
	if it.err != nil {
		p.score = Score{Line: it.err.Line, Error: it.err.Reason}
		p.hasErr = true
		return p
	}
	ex := it.ex
	p.score = Score{Line: ex.Line, Format: ex.Format}
	p.sketch = r.mh.sketch(o.Tok.Encode(exampleText(ex), false))
	if ex.Line <= r.done {
		return p // resumed: only the MinHash index is rebuilt
	}
	if o.Scorer != nil {
		if r.prepareModel(p, ex); p.hasErr {
			return p
		}
	}
	var err error
	if p.reward, err = readFor(o.Reward, ex); err != nil {
		p.score.Error, p.hasErr = "reward model: "+err.Error(), true
		return p
	}
	if p.class, err = readFor(o.Classifier, ex); err != nil {
		p.score.Error, p.hasErr = "classifier: "+err.Error(), true
		return p
	}
	if o.Embed != nil {
		if p.embed, err = o.Embed.Read(ex); err != nil {
			p.score.Error, p.hasErr = "embed model: "+err.Error(), true
			return p
		}
	}
	return p
}

// prepareModel encodes ex for the scorer: the conversation as training sees it, and the response alone.
func (r *scoreRun) prepareModel(p *prepared, ex *Example) {
	o := r.o
	text, spans, err := RenderExample(o.Tpl, ex)
	if err != nil {
		p.score.Error, p.hasErr = "template error: "+err.Error(), true
		return
	}
	enc, err := Encode(o.Tok, o.Tpl, ex, o.MaxSeqLen, false)
	if err != nil {
		p.score.Error, p.hasErr = err.Error(), true
		return
	}
	var resp strings.Builder
	for _, sp := range spans {
		resp.WriteString(text[sp[0]:sp[1]])
	}
	alone := o.Tok.Encode(resp.String(), false)
	if o.HasBOS { // otherwise the first response token has no prediction and is not scored
		alone = append([]int{o.BOS}, alone...)
	}
	if ex.Format == FormatText {
		alone = enc.IDs // a document has no instruction: conditioned and alone are the same (IFD 1)
	}
	if o.MaxSeqLen > 0 && len(alone) > o.MaxSeqLen {
		alone = alone[:o.MaxSeqLen]
	}
	p.cond, p.mask, p.alone = enc.IDs, enc.Mask, alone
	p.score.ModelScore = &ModelScore{PromptTokens: enc.PromptTokens, ResponseTokens: enc.ResponseTokens,
		TotalTokens: enc.FullLen, Truncated: enc.Truncated}
	if len(alone) < 2 {
		p.score.Error, p.hasErr = "response has fewer than 2 tokens alone", true
	}
}

// add takes the prepared lines in input order: it assigns the near-duplicate cluster and batches the line,
// scoring the batch once it holds BatchTokens tokens.
func (r *scoreRun) add(it lineItem, p *prepared) error {
	r.sum.Lines++
	p.score.Cluster = r.mh.assign(p.sketch, p.score.Line)
	if p.score.Line <= r.done {
		return nil
	}
	r.batch = append(r.batch, p)
	r.batchItems = append(r.batchItems, it)
	r.batchTokens += len(p.cond) + len(p.alone) + len(p.reward) + len(p.class) + len(p.embed)
	if r.batchTokens >= r.o.BatchTokens {
		return r.flush()
	}
	return nil
}

// flush scores the batch and writes its lines.
func (r *scoreRun) flush() error {
	if len(r.batch) == 0 {
		return nil
	}
	if err := r.ctx.Err(); err != nil {
		return fmt.Errorf("data: score interrupted after %d lines: %w", r.sum.Scored+r.sum.Bad+r.sum.Skipped, err)
	}
	if err := r.scoreBatch(); err != nil {
		return err
	}
	for i, p := range r.batch {
		if err := r.writeLine(r.batchItems[i], &p.score); err != nil {
			return err
		}
		if err := r.writeVec(p); err != nil {
			return err
		}
		if p.hasErr {
			r.sum.Bad++
		} else {
			r.sum.Scored++
		}
	}
	if err := r.w.Flush(); err != nil {
		return err
	}
	if r.emb != nil {
		if err := r.emb.Flush(); err != nil {
			return fmt.Errorf("data: score: %s: %w", r.embPartial, err)
		}
	}
	r.batch, r.batchItems, r.batchTokens = r.batch[:0], r.batchItems[:0], 0
	if r.o.OnProgress != nil {
		r.o.OnProgress(r.sum.Lines)
	}
	return nil
}

// scoreBatch sends each good line's conversation and response-alone sequences to the scorer and fills in their
// NLL, PPL and IFD.
func (r *scoreRun) scoreBatch() error {
	var seqs [][]int
	var idx []int // batch index of each cond seq; alone seq follows
	for i, p := range r.batch {
		if p.hasErr {
			continue
		}
		seqs = append(seqs, p.cond, p.alone)
		idx = append(idx, i)
	}
	if len(idx) == 0 {
		return nil
	}
	if r.o.Scorer == nil {
		return r.judgeBatch(idx)
	}
	nll, err := r.o.Scorer.TokenNLL(seqs)
	if err == nil {
		err = checkNLL(seqs, nll)
	}
	if err != nil {
		return fmt.Errorf("data: score: lines %d-%d: %w", r.batch[0].score.Line, r.batch[len(r.batch)-1].score.Line, err)
	}
	for k, bi := range idx {
		p := r.batch[bi]
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
		sc := p.score.ModelScore
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
		r.sum.Tokens += len(p.cond) + len(p.alone)
	}
	return r.judgeBatch(idx)
}

// judgeBatch runs the judges over the good lines of the batch (idx) and fills in Reward and Labels.
func (r *scoreRun) judgeBatch(idx []int) error {
	run := func(j *Judge, what string, seq func(p *prepared) []int, set func(sc *Score, v []float64)) error {
		if j == nil {
			return nil
		}
		seqs := make([][]int, len(idx))
		for k, bi := range idx {
			seqs[k] = seq(r.batch[bi])
		}
		out, err := j.Classify(seqs)
		if err != nil {
			return fmt.Errorf("data: score: %s: lines %d-%d: %w", what, r.batch[0].score.Line, r.batch[len(r.batch)-1].score.Line, err)
		}
		for k, bi := range idx {
			set(&r.batch[bi].score, out[k])
		}
		return nil
	}
	if e := r.o.Embed; e != nil {
		seqs := make([][]int, len(idx))
		for k, bi := range idx {
			seqs[k] = r.batch[bi].embed
		}
		vecs, err := e.Embed(seqs)
		if err != nil {
			return fmt.Errorf("data: score: embed model: lines %d-%d: %w", r.batch[0].score.Line, r.batch[len(r.batch)-1].score.Line, err)
		}
		for k, bi := range idx {
			r.batch[bi].vec = vecs[k]
		}
	}
	err := run(r.o.Reward, "reward model", func(p *prepared) []int { return p.reward }, func(sc *Score, v []float64) { sc.Reward = &v[0] })
	if err != nil {
		return err
	}
	labels := []string(nil)
	if r.o.Classifier != nil {
		labels = r.o.Classifier.Net.Config.Labels
	}
	return run(r.o.Classifier, "classifier", func(p *prepared) []int { return p.class }, func(sc *Score, v []float64) {
		sc.Labels = make(map[string]float64, len(v))
		for i, x := range v {
			sc.Labels[labels[i]] = x
		}
	})
}

// judgeTokenizer is the first judge's tokenizer (nil without judges).
func (o *ScoreOptions) judgeTokenizer() Tokenizer {
	for _, j := range []*Judge{o.Reward, o.Classifier} {
		if j != nil {
			return j.Tok
		}
	}
	if o.Embed != nil {
		return o.Embed.Tok
	}
	return nil
}

// readFor is what j reads of ex (nil without a judge).
func readFor(j *Judge, ex *Example) ([]int, error) {
	if j == nil {
		return nil, nil
	}
	return j.Read(ex)
}

// checkJudges refuses judges that cannot give what they are asked for.
func checkJudges(o ScoreOptions) error {
	for _, j := range []struct {
		j    *Judge
		what string
	}{{o.Reward, "reward model"}, {o.Classifier, "classifier"}} {
		if j.j == nil {
			continue
		}
		if j.j.Net == nil || j.j.Net.Score == nil || j.j.Tok == nil {
			return fmt.Errorf("data: score: the %s needs a sequence classifier and its tokenizer", j.what)
		}
	}
	if o.Reward != nil {
		if l := o.Reward.Net.Config.Labels; len(l) != 1 {
			return fmt.Errorf("data: score: a reward model has one output; this one has %d labels %v: pass it as a classifier", len(l), l)
		}
	}
	if o.Classifier != nil {
		seen := map[string]bool{}
		for _, l := range o.Classifier.Net.Config.Labels {
			if seen[l] {
				return fmt.Errorf("data: score: the classifier's id2label names %q twice", l)
			}
			seen[l] = true
		}
	}
	return nil
}

// writeLine writes a good line as {"score":{...},<original keys>}, a bad one as {"score":{line, error, cluster}}.
func (r *scoreRun) writeLine(it lineItem, sc *Score) error {
	w := r.w
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

// openEmbeddings starts the embeddings' partial file, or with Resume continues it after its first kept rows
// (a complete one is moved back to partial first).
func (r *scoreRun) openEmbeddings(out string, kept int) error {
	final := EmbeddingsPath(out)
	r.embPartial = final + ".partial"
	if err := outdir.NotInput("data score: embeddings", final, out); err != nil {
		return err
	}
	var err error
	if !r.o.Resume {
		r.emb, err = npy.Create(r.embPartial, r.o.Embed.Dim())
	} else {
		if _, serr := os.Stat(r.embPartial); errors.Is(serr, os.ErrNotExist) {
			if _, ferr := os.Stat(final); ferr == nil {
				if err := os.Rename(final, r.embPartial); err != nil {
					return fmt.Errorf("data: score: resume: %w", err)
				}
			} else if kept == 0 {
				r.emb, err = npy.Create(r.embPartial, r.o.Embed.Dim())
				return wrapEmb(err, r.embPartial)
			}
		}
		r.emb, err = npy.Append(r.embPartial, r.o.Embed.Dim(), kept)
		if err != nil {
			return fmt.Errorf("data: score: resume with --embed-model: %w (the embeddings of the lines already scored are missing: start over with --force)", err)
		}
	}
	return wrapEmb(err, r.embPartial)
}

func wrapEmb(err error, path string) error {
	if err != nil {
		return fmt.Errorf("data: score: %s: %w", path, err)
	}
	return nil
}

// writeVec appends p's embedding (NaN for a line that has none) to the embeddings file.
func (r *scoreRun) writeVec(p *prepared) error {
	if r.emb == nil {
		return nil
	}
	v := p.vec
	if v == nil {
		v = make([]float32, r.o.Embed.Dim())
		for i := range v {
			v[i] = float32(math.NaN())
		}
	}
	return wrapEmb(r.emb.Row(v), r.embPartial)
}

// finish syncs the partial output and renames it to out (the embeddings first, so that a complete output
// always has complete embeddings; without Embed, embeddings left beside out by an earlier run are removed: they
// would no longer match it).
func (r *scoreRun) finish() (*ScoreSummary, error) {
	if r.emb != nil {
		if err := r.emb.Close(); err != nil {
			return nil, wrapEmb(err, r.embPartial)
		}
		if err := os.Rename(r.embPartial, EmbeddingsPath(r.out)); err != nil {
			return nil, fmt.Errorf("data: score: %w", err)
		}
	} else {
		for _, p := range []string{EmbeddingsPath(r.out), EmbeddingsPath(r.out) + ".partial"} {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("data: score: stale embeddings: %w", err)
			}
		}
	}
	r.sum.MinHashFull = r.mh.Full
	if err := r.f.Sync(); err != nil {
		return nil, err
	}
	if err := r.f.Close(); err != nil {
		return nil, err
	}
	if err := os.Rename(r.partial, r.out); err != nil {
		return nil, fmt.Errorf("data: score: %w", err)
	}
	return r.sum, nil
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
	if ex.Format == FormatText {
		return ex.Text
	}
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

// resumePoint prepares partial for appending and returns the last input line already scored and the number
// of output lines kept. A complete output (out) is moved back to partial; a torn last line is cut off.
func resumePoint(partial, out string) (last, kept int, err error) {
	if _, err := os.Stat(partial); errors.Is(err, os.ErrNotExist) {
		if _, err := os.Stat(out); err == nil {
			if err := os.Rename(out, partial); err != nil {
				return 0, 0, fmt.Errorf("data: score: resume: %w", err)
			}
		} else {
			return 0, 0, nil
		}
	}
	f, err := os.OpenFile(partial, os.O_RDWR, 0)
	if err != nil {
		return 0, 0, fmt.Errorf("data: score: resume: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<20)
	var good int64
	for {
		b, tooLong, err := readLine(br)
		if err == io.EOF && b == nil {
			break
		}
		if err != nil && err != io.EOF {
			return 0, 0, fmt.Errorf("data: score: resume: %w", err)
		}
		if err == io.EOF || tooLong { // no newline: torn write
			break
		}
		line, ok := scoredLineNumber(b)
		if !ok {
			break
		}
		last = line
		kept++
		good += int64(len(b)) + 1 // our own output: "\n" line ends
	}
	if err := f.Truncate(good); err != nil {
		return 0, 0, fmt.Errorf("data: score: resume: %w", err)
	}
	return last, kept, nil
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
