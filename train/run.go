package train

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/train/data"
)

// Metrics is one line of metrics.jsonl.
type Metrics struct {
	Step     int      `json:"step"`
	Epoch    float64  `json:"epoch"`
	Loss     float64  `json:"loss"`
	EvalLoss *float64 `json:"eval_loss,omitempty"`
	// GeneralPPL is the trained model's perplexity on --general-eval text at this eval, GeneralBasePPL the
	// base's on the same text (measured before training).
	GeneralPPL     *float64 `json:"general_ppl,omitempty"`
	GeneralBasePPL *float64 `json:"general_base_ppl,omitempty"`
	LR             float64  `json:"lr"`
	GradNorm       float64  `json:"grad_norm"`
	Tokens         int      `json:"tokens"`
	TokensPerSec   float64  `json:"tokens_per_sec"`
	Elapsed        float64  `json:"elapsed_s"`
}

// Reporter receives progress; the command renders it (bar on a TTY, lines otherwise).
type Reporter interface {
	Start(total, done int)
	Step(m Metrics, total int)
	Logf(format string, args ...any)
}

type nopReporter struct{}

func (nopReporter) Start(int, int)      {}
func (nopReporter) Step(Metrics, int)   {}
func (nopReporter) Logf(string, ...any) {}

// Result summarises a run.
type Result struct {
	Out          string     `json:"out"`
	Method       string     `json:"method"`
	Steps        int        `json:"steps"`
	Loss         float64    `json:"loss"`
	EvalLoss     *float64   `json:"eval_loss,omitempty"`
	Interrupted  bool       `json:"interrupted"`
	Checkpoint   string     `json:"checkpoint,omitempty"`
	Train        DataStats  `json:"train"`
	Eval         *DataStats `json:"eval,omitempty"`
	Seconds      float64    `json:"seconds"`
	TokensPerSec float64    `json:"tokens_per_sec"`
	// UntrainedTokens are the special tokens found untrained before training; TrainedTokens the ids whose rows
	// were trained (--train-tokens).
	UntrainedTokens []UntrainedToken `json:"untrained_tokens,omitempty"`
	TrainedTokens   []int            `json:"trained_tokens,omitempty"`
	// GeneralBasePPL and GeneralPPL are the base's and the trained model's perplexity on --general-eval text.
	GeneralBasePPL *float64 `json:"general_base_ppl,omitempty"`
	GeneralPPL     *float64 `json:"general_ppl,omitempty"`
}

// gcPercent is the GC target used while training (restored afterwards). The
// heap is mostly large pointer-free float slices, so marking is cheap, while
// the default 100 would let peak RSS reach twice the live weights, optimizer
// state and activations.
const gcPercent = 25

// maxSkipLines is how many bad data lines are named one by one before the rest are counted.
const maxSkipLines = 5

// ErrInterrupted is returned (wrapped) when the context is cancelled: with a Result when a checkpoint has been
// saved, without one when the run stopped before its first step (nothing written).
var ErrInterrupted = errors.New("training interrupted")

// LRAt is the learning rate of 0-based step s of total with warmup w:
// linear warmup (s+1)/w·lr, then cosine or linear decay to 0, or constant.
func LRAt(sched string, lr float64, s, total, w int) float64 {
	if s < w {
		return lr * float64(s+1) / float64(w)
	}
	span := total - w
	if span <= 0 {
		return lr
	}
	p := float64(s-w) / float64(span)
	switch sched {
	case "cosine":
		return lr * 0.5 * (1 + math.Cos(math.Pi*p))
	case "linear":
		return lr * (1 - p)
	}
	return lr
}

// plan is the deterministic data order: step s of an epoch takes a slice of
// that epoch's permutation (seeded by seed and epoch).
type plan struct {
	n, perStep, stepsPerEpoch, total int
	seed                             int64
}

func (p plan) step(s int) (epoch int, idx []int) {
	epoch = s / p.stepsPerEpoch
	k := s % p.stepsPerEpoch
	perm := rand.New(rand.NewPCG(uint64(p.seed), uint64(epoch)+0x5eed)).Perm(p.n)
	lo, hi := k*p.perStep, min((k+1)*p.perStep, p.n)
	return epoch, perm[lo:hi]
}

// Run trains per cfg and writes the output folder: load the base, read the data, build the trainable network,
// plan the steps, resume from a checkpoint if asked, then step to the end and write the outputs.
func Run(ctx context.Context, cfg Config, rep Reporter) (*Result, error) {
	if rep == nil {
		rep = nopReporter{}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := prepareOut(cfg); err != nil {
		return nil, err
	}
	t0 := time.Now()
	defer debug.SetGCPercent(debug.SetGCPercent(gcPercent))
	method := Method(cfg.Method)
	m, err := models.Load(cfg.Model, BaseOptions(cfg.Threads, method == QLoRA))
	if err != nil {
		return nil, err
	}
	defer m.Close()
	if method == Full && m.Checkpoint() == nil {
		return nil, fmt.Errorf("train: --method full writes a Hugging Face folder and needs one as --model; %s is not (a GGUF file trains with --method lora or qlora, and lorakit export gguf writes the result back)", cfg.Model)
	}
	rep.Logf("model %s: %d layers, hidden %d, vocab %d (%s)", cfg.Model, m.Net.Config.NumHiddenLayers, m.Net.Config.HiddenSize, m.Net.Config.VocabSize, method)
	r := &trainRun{cfg: cfg, rep: rep, m: m, t0: t0, res: &Result{Out: cfg.Out, Method: cfg.Method}}
	if err := r.loadData(); err != nil {
		return nil, err
	}
	if err := r.buildNet(method); err != nil {
		return nil, err
	}
	if err := r.loadGeneral(ctx); err != nil {
		return nil, err
	}
	r.plan()
	if ctx.Err() != nil { // stopped while loading: nothing written yet
		return nil, fmt.Errorf("%w before the first step", ErrInterrupted)
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, fmt.Errorf("create output folder: %w", err)
	}
	if err := r.resume(); err != nil {
		return nil, err
	}
	if err := writeJSON(filepath.Join(cfg.Out, "training_args.json"), cfg); err != nil {
		return nil, err
	}
	return r.loop(ctx)
}

// trainRun is the state of one Run, shared by its steps.
type trainRun struct {
	cfg                  Config
	rep                  Reporter
	m                    *models.Model
	net                  *Net
	samples, evalSamples []Sample
	units                [][]int      // what the plan orders: one example each, or with --packing a row of examples
	general              *GeneralText // --general-eval text (nil: none)
	pl                   plan
	warm                 int // warmup steps
	opt                  *AdamW
	start                int // the step to begin at (a resumed checkpoint's)
	history              []Metrics
	res                  *Result
	t0                   time.Time
}

// loadData encodes the training data and the eval set: --eval-data, or a --eval-fraction split of the training
// examples.
func (r *trainRun) loadData() error {
	cfg := r.cfg
	skipped := 0
	onBad := func(err error) {
		if skipped++; skipped <= maxSkipLines {
			r.rep.Logf("skip: %v", err)
		}
	}
	summariseSkips := func(file string) {
		if skipped > maxSkipLines {
			r.rep.Logf("skip: … and %d more bad lines of %s (lorakit data check %s lists them all; --strict stops at the first)", skipped-maxSkipLines, file, file)
		}
		skipped = 0
	}
	trainData, err := LoadData(cfg.Data, r.m, cfg.MaxSeqLen, cfg.TrainOnPrompt, cfg.Strict, onBad)
	if err != nil {
		return err
	}
	summariseSkips(cfg.Data)
	r.samples = trainData.Samples
	r.res.Train = trainData.Stats
	switch {
	case cfg.EvalData != "":
		ed, err := LoadData(cfg.EvalData, r.m, cfg.MaxSeqLen, cfg.TrainOnPrompt, cfg.Strict, onBad)
		if err != nil {
			return err
		}
		summariseSkips(cfg.EvalData)
		r.evalSamples = ed.Samples
		r.res.Eval = &ed.Stats
	case cfg.EvalFraction > 0:
		tr, ev, err := data.EvalSplit(len(r.samples), cfg.EvalFraction, cfg.Seed)
		if err != nil {
			return err
		}
		all := r.samples
		r.samples = nil
		for _, i := range tr {
			r.samples = append(r.samples, all[i])
		}
		for _, i := range ev {
			r.evalSamples = append(r.evalSamples, all[i])
		}
		r.res.Eval = &DataStats{Kept: len(r.evalSamples)}
	}
	st := trainData.Stats
	if len(r.samples) == 0 {
		return fmt.Errorf("%s: no usable training examples (%d bad lines, %d without response tokens)", cfg.Data, st.Bad, st.Dropped)
	}
	r.rep.Logf("data %s: %d examples (%d bad lines skipped, %d truncated, %d dropped: no response left), %d train / %d eval",
		cfg.Data, st.Lines, st.Bad, st.Truncated, st.Dropped, len(r.samples), len(r.evalSamples))
	return nil
}

// buildNet wraps the base in the trainable network (LoRA factors or every weight), starting from --init-adapter
// when given.
func (r *trainRun) buildNet(method Method) error {
	cfg := r.cfg
	net, err := NewNet(r.m.Net, method, LoRAOptions{Targets: cfg.TargetModules, Rank: cfg.Rank, Alpha: cfg.Alpha,
		Dropout: cfg.Dropout, RSLoRA: cfg.UseRSLoRA, DoRA: cfg.UseDoRA, Init: cfg.Init, Seed: cfg.Seed})
	if err != nil {
		return err
	}
	net.AdCfg.BaseModel = cfg.Model
	if cfg.BaseModelID != "" {
		net.AdCfg.BaseModel = cfg.BaseModelID
	}
	net.Checkpointing = cfg.GradientCheckpointing
	r.net = net
	if err := r.trainTokens(); err != nil {
		return err
	}
	if cfg.InitAdapter == "" {
		return nil
	}
	ad, err := lora.Load(cfg.InitAdapter)
	if err != nil {
		return err
	}
	if err := ad.CheckUnmerged(models.AdapterBase(r.m.Net, r.m.Dir)); err != nil {
		return fmt.Errorf("init-adapter: %w", err)
	}
	if err := net.SetAdapter(ad); err != nil {
		return fmt.Errorf("init-adapter %s: %w", cfg.InitAdapter, err)
	}
	return nil
}

// plan fixes the data order, the number of steps, the warmup and the optimizer. The plan orders units: single
// examples, or with --packing rows of examples filling at most --max-seq-len tokens (packed once, shuffled per
// epoch), so that --batch-size counts rows.
func (r *trainRun) plan() {
	cfg := r.cfg
	r.units = make([][]int, len(r.samples))
	for i := range r.units {
		r.units[i] = []int{i}
	}
	if cfg.Packing {
		lens := make([]int, len(r.samples))
		tok := 0
		for i, s := range r.samples {
			lens[i] = len(s.IDs)
			tok += lens[i]
		}
		r.units = packRows(lens, cfg.MaxSeqLen)
		r.rep.Logf("packing: %d examples into %d rows of at most %d tokens (%.1f%% filled)",
			len(r.samples), len(r.units), cfg.MaxSeqLen, 100*float64(tok)/float64(len(r.units)*cfg.MaxSeqLen))
	}
	perStep := cfg.BatchSize * cfg.GradAccum
	n := len(r.units)
	r.pl = plan{n: n, perStep: perStep, stepsPerEpoch: (n + perStep - 1) / perStep, seed: cfg.Seed}
	r.pl.total = r.pl.stepsPerEpoch * max(cfg.Epochs, 1)
	if cfg.MaxSteps > 0 {
		r.pl.total = cfg.MaxSteps
	}
	r.warm = cfg.WarmupSteps
	if r.warm == 0 && cfg.WarmupRatio > 0 {
		r.warm = int(math.Ceil(cfg.WarmupRatio * float64(r.pl.total)))
	}
	r.opt = &AdamW{Beta1: cfg.Beta1, Beta2: cfg.Beta2, Eps: cfg.Eps, WeightDecay: cfg.WeightDecay, NoDecay: r.net.NoDecay}
}

// resume loads --resume's checkpoint (weights, optimizer state, step, metrics so far).
func (r *trainRun) resume() error {
	if r.cfg.Resume == "" {
		return nil
	}
	ck, err := findCheckpoint(r.cfg.Resume)
	if err != nil {
		return err
	}
	ts, err := loadCheckpoint(ck, r.net)
	if err != nil {
		return err
	}
	if ts.Examples != len(r.samples) || ts.PerStep != r.pl.perStep || ts.Seed != r.cfg.Seed {
		r.rep.Logf("warning: resuming with different data/batch/seed (checkpoint: %d examples, %d per step, seed %d)", ts.Examples, ts.PerStep, ts.Seed)
	}
	r.start, r.history = ts.Step, ts.History
	r.rep.Logf("resumed from %s at step %d", ck, r.start)
	if r.start >= r.pl.total {
		r.rep.Logf("the checkpoint is already at step %d of %d: writing the outputs only", r.start, r.pl.total)
	}
	return nil
}

// loop runs the steps from r.start, logging metrics, evaluating and saving checkpoints as configured, then writes
// the outputs. A cancelled ctx saves a checkpoint and returns ErrInterrupted.
func (r *trainRun) loop(ctx context.Context) (*Result, error) {
	mlog, err := openMetrics(r.cfg.Out, r.history)
	if err != nil {
		return nil, err
	}
	defer mlog.close()
	r.rep.Start(r.pl.total, r.start)
	tStart := time.Now()
	var tokTotal int
	for step := r.start; step < r.pl.total; step++ {
		if ctx.Err() != nil {
			return r.interrupted(step)
		}
		met, ok, err := r.step(ctx, step)
		if err != nil {
			return nil, err
		}
		if !ok {
			return r.interrupted(step)
		}
		tokTotal += met.Tokens
		last := step+1 == r.pl.total
		if (r.cfg.EvalEvery > 0 && (step+1)%r.cfg.EvalEvery == 0) || last {
			if len(r.evalSamples) > 0 {
				el, err := r.evaluate()
				if err != nil {
					return nil, fmt.Errorf("eval at step %d: %w", step+1, err)
				}
				met.EvalLoss = &el
			}
			if err := r.evalGeneral(&met); err != nil {
				return nil, fmt.Errorf("eval at step %d: %w", step+1, err)
			}
		}
		r.history = append(r.history, met)
		if err := mlog.add(met); err != nil {
			return nil, err
		}
		r.rep.Step(met, r.pl.total)
		if r.cfg.SaveEvery > 0 && (step+1)%r.cfg.SaveEvery == 0 && !last {
			if _, err := r.save(step + 1); err != nil {
				return nil, err
			}
		}
	}
	return r.finish(tStart, tokTotal)
}

// step runs one optimizer step (0-based): gradients accumulated over its micro-batches, clipped, applied.
// ok is false when ctx ended between micro-batches (the partial gradients are dropped).
func (r *trainRun) step(ctx context.Context, step int) (met Metrics, ok bool, err error) {
	cfg, net := r.cfg, r.net
	ts := time.Now()
	epoch, idx := r.pl.step(step)
	denom := 0
	for _, u := range idx {
		for _, i := range r.units[u] {
			denom += r.samples[i].Targets()
		}
	}
	var lossSum float64
	tokens := 0
	for mb := 0; mb < len(idx); mb += cfg.BatchSize {
		if ctx.Err() != nil {
			ZeroGrads(net.Params)
			return met, false, nil
		}
		var batch []Sample
		for _, u := range idx[mb:min(mb+cfg.BatchSize, len(idx))] {
			for _, i := range r.units[u] {
				batch = append(batch, r.samples[i])
			}
		}
		seed := uint64(cfg.Seed)*0x100000001b3 ^ uint64(step)<<20 ^ uint64(mb)
		s, n, err := net.Accumulate(batch, float32(denom), seed)
		if err != nil {
			return met, false, fmt.Errorf("step %d: %w", step+1, err)
		}
		lossSum += s
		tokens += n
	}
	gn := GradNorm(net.Params)
	clip := 1.0
	if cfg.MaxGradNorm > 0 && gn > cfg.MaxGradNorm {
		clip = cfg.MaxGradNorm / (gn + 1e-6)
	}
	opt := r.opt
	opt.LR = LRAt(cfg.Scheduler, cfg.LR, step, r.pl.total, r.warm)
	opt.Step = step + 1
	opt.ClipCoef = clip
	if math.IsNaN(gn) || math.IsInf(gn, 0) {
		return met, false, fmt.Errorf("step %d: gradient norm is %v (diverged; lower --lr?)", step+1, gn)
	}
	if err := ApplyUpdate(net.Params, opt); err != nil {
		return met, false, fmt.Errorf("step %d: optimizer: %w", step+1, err)
	}
	el := time.Since(ts).Seconds()
	spe := r.pl.stepsPerEpoch
	return Metrics{Step: step + 1, Epoch: float64(epoch) + float64(step%spe+1)/float64(spe),
		Loss: lossSum / float64(max(denom, 1)), LR: opt.LR, GradNorm: gn, Tokens: tokens,
		TokensPerSec: float64(tokens) / el, Elapsed: time.Since(r.t0).Seconds()}, true, nil
}

// evaluate is the mean token loss over the eval set.
func (r *trainRun) evaluate() (float64, error) {
	var sum float64
	var cnt int
	bs := r.cfg.BatchSize
	for i := 0; i < len(r.evalSamples); i += bs {
		s, c, err := r.net.Loss(r.evalSamples[i:min(i+bs, len(r.evalSamples))])
		if err != nil {
			return 0, err
		}
		sum += s
		cnt += c
	}
	return sum / float64(max(cnt, 1)), nil
}

// save writes checkpoint-<step> and prunes the oldest beyond --save-total-limit.
func (r *trainRun) save(step int) (string, error) {
	dir := filepath.Join(r.cfg.Out, fmt.Sprintf("checkpoint-%d", step))
	err := saveCheckpoint(dir, r.net, trainerState{Step: step, Examples: len(r.samples), PerStep: r.pl.perStep,
		Seed: r.cfg.Seed, Method: r.cfg.Method, History: r.history})
	if err == nil {
		pruneCheckpoints(r.cfg.Out, r.cfg.SaveTotal)
	}
	return dir, err
}

// finish writes the outputs and the result after the last step; the throughput counts from tStart.
func (r *trainRun) finish(tStart time.Time, tokens int) (*Result, error) {
	if err := writeOutputs(r.cfg, r.m, r.net, r.history); err != nil {
		return nil, err
	}
	res := r.res
	res.Steps = max(r.pl.total, r.start)
	if n := len(r.history); n > 0 {
		res.Loss = r.history[n-1].Loss
		res.EvalLoss = r.history[n-1].EvalLoss
		res.GeneralPPL = r.history[n-1].GeneralPPL
	}
	res.Seconds = time.Since(r.t0).Seconds()
	if d := time.Since(tStart).Seconds(); d > 0 {
		res.TokensPerSec = float64(tokens) / d
	}
	return res, nil
}

// interrupted saves a checkpoint at step and reports how to resume.
func (r *trainRun) interrupted(step int) (*Result, error) {
	dir, err := r.save(step)
	if err != nil {
		return nil, fmt.Errorf("%w; saving the checkpoint failed: %v", ErrInterrupted, err)
	}
	res := r.res
	res.Interrupted, res.Checkpoint, res.Steps = true, dir, step
	res.Seconds = time.Since(r.t0).Seconds()
	return res, fmt.Errorf("%w at step %d; resume with --resume %s", ErrInterrupted, step, dir)
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(b, '\n'))
}
