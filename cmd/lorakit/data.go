package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/lorakit/lorakit/internal/atomicfile"
	"github.com/lorakit/lorakit/internal/outdir"
	"github.com/lorakit/lorakit/internal/progress"
	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/train/data"
)

func init() { register(newDataCmd) }

func newDataCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "data",
		Short: "Validate, score (perplexity, IFD, near-duplicates) and filter SFT data with the model itself",
		Long: `data works on JSONL SFT files in the shapes training reads: {"prompt","response"},
{"prompt","reasoning_content","response"}, {"messages":[...]} and Alpaca {"instruction","input","output"}.

  lorakit data check FILE --model DIR          report bad lines and statistics (exit code 1 on bad lines)
  lorakit data score FILE --model DIR --out S  per-example perplexity, IFD, token counts, near-duplicate cluster
  lorakit data score FILE --reward-model DIR --out S   reward (also --classifier, --embed-model; with or without --model)
  lorakit data filter S --out CLEAN [rules]    keep what passes; report and histogram of the cut
  lorakit data diversity S                     clusters of the embeddings (score with --embed-model)
  lorakit data review S [--port 8090]          screen the examples in the browser: keep, drop, edit
  lorakit data filter S --review S.review.jsonl --out CLEAN   apply those decisions`,
	}
	cmd.AddCommand(newDataCheckCmd(), newDataScoreCmd(), newDataFilterCmd(), newDataReviewCmd(), newDataDiversityCmd())
	return cmd
}

func newDataCheckCmd() *cobra.Command {
	var (
		modelDir  string
		maxSeqLen int
		threads   int
		asJSON    bool
		quiet     bool
	)
	cmd := &cobra.Command{
		Use:   "check FILE --model DIR",
		Short: "Report bad lines (file:line: reason) and statistics of an SFT JSONL file; exit code 1 if any line is bad",
		Long: `check parses every line, reports each bad one as FILE:LINE: REASON (invalid JSON, missing field,
empty response, wrong role order, invalid UTF-8, a chat-template error, or more than --max-seq-len tokens
after templating) and prints statistics: counts per format, token-length percentiles of prompt, response
(assistant text incl. reasoning and end-of-turn) and total, exact duplicates (same conversation), and
examples with reasoning_content. Without --model only parsing is checked (no token statistics).
Exit code 1 if any line is bad.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o := data.CheckOptions{MaxSeqLen: maxSeqLen, Workers: threads}
			if modelDir != "" {
				dir, err := resolveDir(cmd, "--model", modelDir)
				if err != nil {
					return err
				}
				tok, tpl, err := models.LoadTokenizer(dir)
				if err != nil {
					return err
				}
				o.Tok, o.Tpl = tok, tpl
			}
			errw := cmd.ErrOrStderr()
			if !quiet {
				o.OnBad = func(le *data.LineError) { fmt.Fprintln(errw, le.Error()) }
			}
			var bar *progress.Bar
			if size := fileSize(args[0]); size > 8<<20 {
				bar = progress.New(errw, "check", 0, "lines")
				o.OnLine = func(n int) {
					if n%1000 == 0 {
						bar.Set(int64(n), "")
					}
				}
			}
			rep, err := data.Check(args[0], o)
			if err != nil {
				return err
			}
			if bar != nil {
				bar.Set(int64(rep.Lines), "")
				bar.Finish()
			}
			if asJSON {
				if err := printJSON(cmd.OutOrStdout(), rep); err != nil {
					return err
				}
			} else {
				printCheck(cmd.OutOrStdout(), rep)
			}
			if rep.Bad > 0 {
				return withExitCode(1, fmt.Errorf("data check: %s: %d of %d lines are bad", args[0], rep.Bad, rep.Lines))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&modelDir, "model", "", "model folder (tokenizer + chat template) for token statistics")
	f.IntVar(&maxSeqLen, "max-seq-len", 0, "report examples longer than this many tokens after templating (0: no limit)")
	f.IntVar(&threads, "threads", 0, "worker threads (0: all CPUs)")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.BoolVar(&quiet, "quiet", false, "do not list bad lines on stderr")
	return cmd
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

func printCheck(w io.Writer, r *data.CheckReport) {
	fmt.Fprintf(w, "%s: %d lines, %d good, %d bad\n", r.File, r.Lines, r.Good, r.Bad)
	if len(r.BadReasons) > 0 {
		fmt.Fprintf(w, "bad lines by reason:%s\n", fmtCounts(r.BadReasons))
	}
	fmt.Fprintf(w, "formats:%s\n", fmtCounts(r.Formats))
	fmt.Fprintf(w, "with reasoning_content: %d\n", r.WithReasoning)
	fmt.Fprintf(w, "with tool calls: %d (with a tools list: %d)\n", r.WithToolCalls, r.WithTools)
	fmt.Fprintf(w, "exact duplicates: %d\n", r.ExactDuplicates)
	fmt.Fprintf(w, "assistant turns: mean %.2f, max %d\n", r.Turns.Mean, r.Turns.Max)
	if r.TotalTokens != nil {
		fmt.Fprintf(w, "%-16s %8s %6s %6s %6s %6s %6s %6s\n", "tokens", "mean", "min", "p50", "p90", "p95", "p99", "max")
		for _, d := range []struct {
			name string
			d    *data.Dist
		}{{"prompt", r.PromptTokens}, {"response", r.ResponseTokens}, {"total", r.TotalTokens}} {
			fmt.Fprintf(w, "%-16s %8.1f %6d %6d %6d %6d %6d %6d\n", d.name, d.d.Mean, d.d.Min, d.d.P50, d.d.P90, d.d.P95, d.d.P99, d.d.Max)
		}
	}
}

func fmtCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%d", k, m[k])
	}
	return b.String()
}

func newDataScoreCmd() *cobra.Command {
	var (
		modelDir, adapterDir, out string
		maxSeqLen, threads, batch int
		resume, force, asJSON     bool
		judges                    judgeFlags
	)
	cmd := &cobra.Command{
		Use:   "score FILE [--model DIR [--adapter DIR]] [--reward-model DIR] [--classifier DIR] [--embed-model DIR] --out SCORED.jsonl",
		Short: "Score every example: response perplexity given the prompt and alone, IFD, token counts, reward, labels, near-duplicate cluster",
		Long: `score writes one line per input line: the original JSON object with a "score" object as its first key
(bad lines become {"score":{"line":N,"error":"..."}}). --model gives the token counts, perplexities and IFD;
the judges (--reward-model, --classifier, --embed-model) need no --model: without it only what they measure
is written (and the near-duplicate clusters, over the first judge's tokens). Fields of "score":
  nll, ppl            mean negative log-likelihood (nats/token) of the assistant tokens given the conversation
                      (the tokens training puts the loss on: reasoning, content, end-of-turn), and exp(nll);
                      equal to what lorakit eval reports for the example
  nll_alone, ppl_alone the same assistant text scored alone after BOS (no prompt, no template)
  ifd                 nll / nll_alone (instruction-following difficulty)
  prompt_tokens, response_tokens, total_tokens, scored_tokens, truncated   (these and the above: --model)
  cluster             line number of the first example of its near-duplicate cluster (MinHash over token
                      5-shingles of the message texts); equal to "line" for the first member
  reward              with --reward-model: the reward model's score of the conversation (its head's raw
                      output at the last non-pad token, as transformers reads a *ForSequenceClassification)
  labels              with --classifier: {"LABEL": score} per id2label: softmax probabilities (sigmoid per
                      label for problem_type multi_label_classification; raw for one output or regression)
With --embed-model, OUT.emb.npy (OUT without .jsonl) gets one embedding per line: a NumPy float32 array
[lines, hidden_size] (numpy.load reads it; NaN rows for bad lines), for lorakit data diversity and
data filter --select N --diverse.
The judges (--reward-model, --classifier, --embed-model) read the conversation with their own tokenizer
and chat template (plain text, the messages' contents, when they have none); --judge-reasoning lets them
read reasoning_content.
Examples are batched through the model on all cores; memory stays bounded. Output is written to
OUT.partial and renamed when complete; --resume continues an interrupted run, skipping lines already scored.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return errors.New("data score: --out is required")
			}
			if modelDir == "" && !judges.any() {
				return errors.New("data score: nothing to score with: give --model DIR (perplexity, IFD, token counts) and/or a judge: --reward-model DIR, --classifier DIR, --embed-model DIR")
			}
			if adapterDir != "" && modelDir == "" {
				return errors.New("data score: --adapter is scored with --model: give --model DIR")
			}
			if resume && force {
				return errors.New("data score: --resume continues the partial output and --force discards it: give one of them")
			}
			return interruptible(cmd, func(ctx context.Context) (string, error) {
				var o data.ScoreOptions
				closeModel, err := loadScoreModel(cmd, modelDir, adapterDir, threads, &o, &judges)
				defer closeModel()
				if err != nil {
					return "", err
				}
				closeJudges, err := judges.load(cmd, threads, maxSeqLen, &o)
				defer closeJudges()
				if err != nil {
					return "", err
				}
				bar := progress.New(cmd.ErrOrStderr(), "score", countLines(args[0]), "lines")
				done := 0
				o.MaxSeqLen, o.BatchTokens = maxSeqLen, batch
				o.Resume, o.Force, o.OnProgress = resume, force, func(n int) { done = n; bar.Set(int64(n), "") }
				sum, err := data.ScoreFileContext(ctx, args[0], out, o)
				if err != nil {
					bar.Stop()
					if _, serr := os.Stat(out + ".partial"); ctx.Err() != nil && serr == nil {
						model := ""
						if modelDir != "" {
							model = " --model " + modelDir
						}
						if adapterDir != "" {
							model += " --adapter " + adapterDir
						}
						return fmt.Sprintf("kept %s.partial (%d lines scored); resume with: lorakit data score %s%s%s --out %s --resume",
							out, done, args[0], model, judges.args(), out), err
					}
					return "", err
				}
				bar.Finish()
				if asJSON {
					return "", printJSON(cmd.OutOrStdout(), sum)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %d lines, %d scored, %d bad, %d skipped (resumed); wrote %s\n",
					args[0], sum.Lines, sum.Scored, sum.Bad, sum.Skipped, out)
				return "scoring had completed: " + out, nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&modelDir, "model", "", "model folder")
	f.StringVar(&adapterDir, "adapter", "", "PEFT LoRA adapter folder to score with")
	f.StringVar(&out, "out", "", "scored JSONL output")
	f.IntVar(&maxSeqLen, "max-seq-len", 4096, "cut longer examples at the end (as eval does)")
	f.IntVar(&threads, "threads", 0, "kernel threads (0: all CPUs)")
	f.IntVar(&batch, "batch-tokens", 4096, "tokens per model batch")
	f.BoolVar(&resume, "resume", false, "continue an interrupted run (skip lines already in the output)")
	f.BoolVar(&force, "force", false, "start over, replacing an existing output or partial output")
	f.BoolVar(&asJSON, "json", false, "print the summary as JSON")
	judges.flags(f)
	return cmd
}

func newDataFilterCmd() *cobra.Command {
	var (
		o                 data.FilterOptions
		out, report, hist string
		droppedPath       string
		reviewPath        string
		minIFD, maxIFD    float64
		asJSON            bool
		labels            []string
	)
	cmd := &cobra.Command{
		Use:   "filter SCORED.jsonl --out CLEAN.jsonl [--max-ppl X] [--min-ifd A] [--max-ifd B] [--keep-top F --by ifd|ppl] [--dedup] [--min-tokens N] [--max-tokens N]",
		Short: "Keep the scored examples that pass the rules, in their original form, with a report and histogram",
		Long: `filter reads the output of lorakit data score and writes the kept examples byte for byte as they were
in the original file (with their "score" object if --keep-scores). Every line is kept or dropped with a
reason (bad lines are dropped). Rules: --max-ppl (ppl above is dropped), --min-ifd/--max-ifd, --min-tokens/
--max-tokens (total tokens after templating), --dedup (keep only the first example of each near-duplicate
cluster), and --keep-top F: of what the other rules keep, keep the best fraction F by --by (ifd: highest
IFD, ppl: lowest perplexity, reward: highest reward, label:NAME: highest score of a classifier label).
With scores from --reward-model and --classifier: --min-reward X, and --label NAME>=V / NAME<=V (repeatable)
on the classifier's labels. --select N keeps N of what the rules leave: the best by --by, or with --diverse
(embeddings from data score --embed-model) a greedy facility-location selection that covers the embedding
space while preferring good --by scores (--quality-weight), deterministic for --seed. --review FILE applies
the decisions of lorakit data review: dropped examples are dropped, kept ones are kept whatever the rules say
(as edited, if they were), undecided ones go through the rules (or are dropped with --drop-undecided); a
review made on other examples (line or hash differs) is an error naming the line. --report FILE.json gets
the counts, reasons, thresholds, histogram and every
dropped line; --histogram FILE.svg (default: next to the report) draws the --by score with the cuts marked.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return errors.New("data filter: --out is required")
			}
			fl := cmd.Flags()
			o.HasMinIFD, o.HasMaxIFD = fl.Changed("min-ifd"), fl.Changed("max-ifd")
			o.MinIFD, o.MaxIFD = minIFD, maxIFD
			o.HasMinReward = fl.Changed("min-reward")
			for _, l := range labels {
				r, err := data.ParseLabelRule(l)
				if err != nil {
					return err
				}
				o.Labels = append(o.Labels, r)
			}
			if o.Diverse && o.Select <= 0 {
				return errors.New("data filter: --diverse chooses how --select picks: give --select N")
			}
			if fl.Changed("keep-top") && (o.KeepTop <= 0 || o.KeepTop > 1) {
				return fmt.Errorf("data filter: --keep-top %v not in (0, 1]", o.KeepTop)
			}
			if hist == "" && report != "" {
				hist = strings.TrimSuffix(report, ".json") + ".svg"
			}
			for _, o := range []struct{ flag, path string }{{"--out", out}, {"--report", report}, {"--histogram", hist}, {"--dropped", droppedPath}} {
				if o.path == "" {
					continue
				}
				if err := outdir.NotInput("data filter: "+o.flag, o.path, args[0]); err != nil {
					return err
				}
			}
			var dropped bytes.Buffer // written atomically once the filter has succeeded
			if droppedPath != "" {
				o.OnDrop = func(line int, reason string) {
					b, _ := json.Marshal(data.Dropped{Line: line, Reason: reason})
					dropped.Write(append(b, '\n'))
				}
			}
			if err := loadReview(&o, reviewPath, o.DropUndecided); err != nil {
				return err
			}
			if reviewPath != "" {
				if err := outdir.NotInput("data filter: --out", out, reviewPath); err != nil {
					return err
				}
			}
			rep, err := data.Filter(args[0], out, o)
			if err != nil {
				return err
			}
			if droppedPath != "" {
				if err := atomicfile.WriteBytes(droppedPath, dropped.Bytes()); err != nil {
					return err
				}
			}
			if hist != "" {
				title := fmt.Sprintf("%s of %d scored examples (%d kept)", rep.By, rep.Lines, rep.Kept)
				if err := data.WriteHistogramSVG(hist, rep.Histogram, title); err != nil {
					return err
				}
			}
			if report != "" {
				if err := atomicfile.Write(report, func(w *bufio.Writer) error { return printJSON(w, rep) }); err != nil {
					return err
				}
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), struct {
					Lines      int                 `json:"lines"`
					Kept       int                 `json:"kept"`
					Dropped    int                 `json:"dropped"`
					Reasons    map[string]int      `json:"reasons"`
					Thresholds map[string]float64  `json:"thresholds"`
					Output     string              `json:"output"`
					Review     *data.ReviewSummary `json:"review,omitempty"`
				}{rep.Lines, rep.Kept, rep.Dropped, rep.Reasons, rep.Thresholds, out, rep.Review})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %d lines, %d kept, %d dropped:%s; wrote %s\n",
				args[0], rep.Lines, rep.Kept, rep.Dropped, fmtCounts(rep.Reasons), out)
			if rv := rep.Review; rv != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "review %s: %d kept (%d edited), %d dropped, %d undecided\n",
					rv.File, rv.Kept, rv.Edited, rv.Dropped, rv.Undecided)
				if rv.TornTail {
					fmt.Fprintf(cmd.OutOrStdout(), "note: %s ends in a half-written record (a crash mid-save), ignored\n", rv.File)
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "output JSONL of kept examples")
	f.StringVar(&report, "report", "", "write a JSON report here")
	f.StringVar(&droppedPath, "dropped", "", "write every dropped line as {\"line\",\"reason\"} JSONL here")
	f.StringVar(&hist, "histogram", "", "write an SVG histogram here (default: the report's name with .svg)")
	f.Float64Var(&o.MaxPPL, "max-ppl", 0, "drop examples whose response perplexity is above this")
	f.Float64Var(&minIFD, "min-ifd", 0, "drop examples with IFD below this")
	f.Float64Var(&maxIFD, "max-ifd", 0, "drop examples with IFD above this (e.g. 1: the prompt does not help)")
	f.Float64Var(&o.KeepTop, "keep-top", 0, "keep this fraction (0,1] of the remaining examples, best first by --by")
	f.StringVar(&o.By, "by", "", "score for --keep-top, --select and the histogram: ifd (highest kept), ppl (lowest kept), reward or label:NAME (highest kept); default ifd, or for a file scored without --model its reward, else its first label")
	f.Float64Var(&o.MinReward, "min-reward", 0, "drop examples whose reward (score.reward) is below this")
	f.StringArrayVar(&labels, "label", nil, "classifier label threshold NAME>=V or NAME<=V on score.labels (repeatable)")
	f.IntVar(&o.Select, "select", 0, "keep this many of the remaining examples: the best by --by, or with --diverse a diverse selection")
	f.BoolVar(&o.Diverse, "diverse", false, "with --select: trade --by's quality against redundancy over the embeddings (greedy facility location)")
	f.StringVar(&o.Embeddings, "embeddings", "", "the scored file's embeddings (default: SCORED.emb.npy, written by data score --embed-model)")
	f.Float64Var(&o.QualityWeight, "quality-weight", 0.5, "--diverse: weight of the selection's mean quality rank (0..1) against its coverage, both in [0, 1] (0: coverage only)")
	f.Uint64Var(&o.Seed, "seed", 0, "--diverse: seed of the sample coverage is measured on (sets of more than 4096 examples)")
	f.BoolVar(&o.Dedup, "dedup", false, "keep only the first example of each near-duplicate cluster")
	f.IntVar(&o.MinTokens, "min-tokens", 0, "drop examples with fewer total tokens")
	f.IntVar(&o.MaxTokens, "max-tokens", 0, "drop examples with more total tokens")
	f.BoolVar(&o.KeepScores, "keep-scores", false, "keep the score object in the output lines")
	f.StringVar(&reviewPath, "review", "", "apply the decisions of lorakit data review saved in this file (SCORED.review.jsonl)")
	f.BoolVar(&o.DropUndecided, "drop-undecided", false, "with --review: drop the examples the review left undecided")
	f.BoolVar(&asJSON, "json", false, "print the summary as JSON")
	return cmd
}

// loadReview reads the --review file into o.
func loadReview(o *data.FilterOptions, path string, dropUndecided bool) error {
	if path == "" {
		if dropUndecided {
			return errors.New("data filter: --drop-undecided needs --review")
		}
		return nil
	}
	st, err := data.ReadReview(path)
	if err != nil {
		return err
	}
	if st.Count == 0 && !st.Torn {
		if _, serr := os.Stat(path); serr != nil {
			return fmt.Errorf("data filter: --review %s: %w", path, serr)
		}
	}
	o.Review, o.ReviewFile = st, path
	return nil
}

// countLines counts the lines of a file (the total a progress bar shows); 0 when it cannot be read.
func countLines(path string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	var n int64
	buf := make([]byte, 1<<20)
	last := byte('\n')
	for {
		k, err := f.Read(buf)
		if k > 0 {
			n += int64(bytes.Count(buf[:k], []byte{'\n'}))
			last = buf[k-1]
		}
		if err != nil {
			break
		}
	}
	if last != '\n' {
		n++
	}
	return n
}

// loadScoreModel loads --model (and --adapter) into o as the perplexity scorer, and shares its kernel pool
// with the judges; without --model it does nothing. The returned function closes the model.
func loadScoreModel(cmd *cobra.Command, modelDir, adapterDir string, threads int, o *data.ScoreOptions, j *judgeFlags) (func(), error) {
	nothing := func() {}
	if modelDir == "" {
		return nothing, nil
	}
	modelDir, err := resolveDir(cmd, "--model", modelDir)
	if err != nil {
		return nothing, err
	}
	if adapterDir, err = resolveDir(cmd, "--adapter", adapterDir); err != nil {
		return nothing, err
	}
	m, err := models.Load(modelDir, models.LoadOptions{Threads: threads})
	if err != nil {
		return nothing, err
	}
	closeModel := func() { m.Close() }
	var delta llama.Delta
	if adapterDir != "" {
		ad, err := m.LoadAdapter(adapterDir)
		if err != nil {
			return closeModel, fmt.Errorf("data score: %w", err)
		}
		delta = ad
	}
	j.kpool = m.Net.Pool
	bos, hasBOS := m.Tok.BOS()
	o.Tok, o.Tpl, o.BOS, o.HasBOS = m.Tok, m.Chat, bos, hasBOS
	o.Scorer = &data.ModelScorer{Net: m.Net, Adapter: delta}
	return closeModel, nil
}

// judgeFlags are data score's judges: the models that read each example besides --model.
type judgeFlags struct {
	reward, classifier string
	embed, pool        string
	reasoning          bool
	kpool              *kernels.Pool // --model's, shared
}

func (j *judgeFlags) flags(f *pflag.FlagSet) {
	f.StringVar(&j.reward, "reward-model", "", "reward model folder (a *ForSequenceClassification with one output): adds score.reward")
	f.StringVar(&j.classifier, "classifier", "", "classifier folder (a *ForSequenceClassification): adds score.labels, one score per id2label")
	f.StringVar(&j.embed, "embed-model", "", "model folder whose hidden states embed each example (any model of the family, or --model's own folder): writes OUT's .emb.npy beside it")
	f.StringVar(&j.pool, "pool", "mean", "embedding pooling of --embed-model's final hidden states: mean (over every token) or last (the last non-padding token)")
	f.BoolVar(&j.reasoning, "judge-reasoning", false, "let --reward-model, --classifier and --embed-model read reasoning_content (left out by default)")
}

// any reports whether a judge is asked for.
func (j *judgeFlags) any() bool { return j.reward != "" || j.classifier != "" || j.embed != "" }

// args repeats the judge flags for a resume hint (a resumed run must score with the same judges).
func (j *judgeFlags) args() string {
	var b strings.Builder
	for _, f := range []struct{ flag, v string }{{"--reward-model", j.reward}, {"--classifier", j.classifier}, {"--embed-model", j.embed}} {
		if f.v != "" {
			fmt.Fprintf(&b, " %s %s", f.flag, f.v)
		}
	}
	if j.embed != "" {
		fmt.Fprintf(&b, " --pool %s", j.pool)
	}
	if j.reasoning {
		b.WriteString(" --judge-reasoning")
	}
	return b.String()
}

// load loads the judges named by the flags into o; the returned function closes them (also after an error).
func (j *judgeFlags) load(cmd *cobra.Command, threads, maxSeqLen int, o *data.ScoreOptions) (func(), error) {
	var open []*models.Model
	closeAll := func() {
		for _, m := range open {
			m.Close()
		}
	}
	for _, jf := range []struct {
		flag, dir string
		dst       **data.Judge
	}{{"--reward-model", j.reward, &o.Reward}, {"--classifier", j.classifier, &o.Classifier}} {
		if jf.dir == "" {
			continue
		}
		dir, err := resolveDir(cmd, jf.flag, jf.dir)
		if err != nil {
			return closeAll, err
		}
		m, err := models.Load(dir, models.LoadOptions{Threads: threads, Pool: j.kpool, Kind: models.SequenceClassifier})
		if err != nil {
			return closeAll, fmt.Errorf("data score: %s: %w", jf.flag, err)
		}
		open = append(open, m)
		if j.kpool == nil { // without --model the first judge's pool serves them all
			j.kpool = m.Net.Pool
		}
		if jf.flag == "--reward-model" && len(m.Config.Labels) != 1 {
			return closeAll, fmt.Errorf("data score: --reward-model %s has %d labels %v: a reward model has one output; pass it as --classifier", dir, len(m.Config.Labels), m.Config.Labels)
		}
		*jf.dst = &data.Judge{Net: m.Net, Tok: m.Tok, Tpl: m.Chat, Reasoning: j.reasoning, MaxSeqLen: maxSeqLen}
	}
	if j.embed == "" {
		return closeAll, nil
	}
	if j.pool != "mean" && j.pool != "last" {
		return closeAll, fmt.Errorf("data score: --pool %q: want mean or last", j.pool)
	}
	dir, err := resolveDir(cmd, "--embed-model", j.embed)
	if err != nil {
		return closeAll, err
	}
	m, err := models.Load(dir, models.LoadOptions{Threads: threads, Pool: j.kpool, Kind: models.AnyKind})
	if err != nil {
		return closeAll, fmt.Errorf("data score: --embed-model: %w", err)
	}
	open = append(open, m)
	o.Embed = &data.Embedder{Judge: data.Judge{Net: m.Net, Tok: m.Tok, Tpl: m.Chat, Reasoning: j.reasoning, MaxSeqLen: maxSeqLen}, Pool: j.pool}
	return closeAll, nil
}

func newDataDiversityCmd() *cobra.Command {
	var (
		o      data.DiversityOptions
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "diversity SCORED.jsonl [--clusters K] [--seed S] [--embeddings F.npy] [--json]",
		Short: "Report how the examples spread over topics: clusters of their embeddings, sizes, representatives",
		Long: `diversity clusters the examples of a file scored with lorakit data score --embed-model by their
embeddings (unit-normalised, k-means++ seeded with --seed, then Lloyd iterations; k = --clusters, default
sqrt(n/2)) and prints each cluster's size and share, mean perplexity (and reward), and the examples nearest
its centre, then the effective number of clusters: exp of the entropy of the cluster sizes (k when the
clusters are even, near 1 when one topic holds nearly everything).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rep, err := data.Diversity(args[0], o)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), rep)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "%s: %d examples (%d without an embedding), k-means k=%d seed %d\n", rep.File, rep.Examples, rep.Skipped, rep.K, rep.Seed)
			for _, c := range rep.Clusters {
				means := ""
				if c.MeanPPL != nil {
					means += fmt.Sprintf(", mean ppl %.4g", *c.MeanPPL)
				}
				if c.MeanReward != nil {
					means += fmt.Sprintf(", mean reward %.4g", *c.MeanReward)
				}
				fmt.Fprintf(w, "cluster %d: %d examples (%.1f%%)%s\n", c.ID, c.Size, 100*c.Share, means)
				for _, r := range c.Representatives {
					fmt.Fprintf(w, "  line %d (cos %.3f): %s\n", r.Line, r.Similarity, r.Text)
				}
			}
			fmt.Fprintf(w, "effective number of clusters: %.2f of %d\n", rep.EffectiveClusters, rep.K)
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Clusters, "clusters", 0, "k of k-means (0: sqrt(n/2))")
	f.Uint64Var(&o.Seed, "seed", 0, "k-means++ seed (the same seed gives the same clusters)")
	f.StringVar(&o.Embeddings, "embeddings", "", "embeddings file (default: SCORED.emb.npy)")
	f.IntVar(&o.Representatives, "representatives", 3, "examples shown per cluster (nearest its centre)")
	f.IntVar(&o.Threads, "threads", 0, "threads (0: all CPUs)")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}
