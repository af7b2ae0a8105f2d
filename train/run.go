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
	Step         int      `json:"step"`
	Epoch        float64  `json:"epoch"`
	Loss         float64  `json:"loss"`
	EvalLoss     *float64 `json:"eval_loss,omitempty"`
	LR           float64  `json:"lr"`
	GradNorm     float64  `json:"grad_norm"`
	Tokens       int      `json:"tokens"`
	TokensPerSec float64  `json:"tokens_per_sec"`
	Elapsed      float64  `json:"elapsed_s"`
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
}

// gcPercent is the GC target used while training (restored afterwards). The
// heap is mostly large pointer-free float slices, so marking is cheap, while
// the default 100 would let peak RSS reach twice the live weights, optimizer
// state and activations.
const gcPercent = 25

// ErrInterrupted is returned (wrapped) when the context is cancelled; a checkpoint has been saved.
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

// Run trains per cfg and writes the output folder.
func Run(ctx context.Context, cfg Config, rep Reporter) (*Result, error) {
	if rep == nil {
		rep = nopReporter{}
	}
	if err := cfg.Validate(); err != nil {
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

	onBad := func(err error) { rep.Logf("skip: %v", err) }
	trainData, err := LoadData(cfg.Data, m, cfg.MaxSeqLen, cfg.TrainOnPrompt, cfg.Strict, onBad)
	if err != nil {
		return nil, err
	}
	samples := trainData.Samples
	var evalSamples []Sample
	res := &Result{Out: cfg.Out, Method: cfg.Method, Train: trainData.Stats}
	switch {
	case cfg.EvalData != "":
		ed, err := LoadData(cfg.EvalData, m, cfg.MaxSeqLen, cfg.TrainOnPrompt, cfg.Strict, onBad)
		if err != nil {
			return nil, err
		}
		evalSamples = ed.Samples
		res.Eval = &ed.Stats
	case cfg.EvalFraction > 0:
		tr, ev, err := data.EvalSplit(len(samples), cfg.EvalFraction, cfg.Seed)
		if err != nil {
			return nil, err
		}
		all := samples
		samples = nil
		for _, i := range tr {
			samples = append(samples, all[i])
		}
		for _, i := range ev {
			evalSamples = append(evalSamples, all[i])
		}
		res.Eval = &DataStats{Kept: len(evalSamples)}
	}
	if len(samples) == 0 {
		return nil, fmt.Errorf("%s: no usable training examples (%d bad lines, %d without response tokens)", cfg.Data, trainData.Stats.Bad, trainData.Stats.Dropped)
	}
	st := trainData.Stats
	rep.Logf("data %s: %d examples (%d bad lines skipped, %d truncated, %d dropped: no response left), %d train / %d eval",
		cfg.Data, st.Lines, st.Bad, st.Truncated, st.Dropped, len(samples), len(evalSamples))

	net, err := NewNet(m.Net, method, LoRAOptions{Targets: cfg.TargetModules, Rank: cfg.Rank, Alpha: cfg.Alpha,
		Dropout: cfg.Dropout, RSLoRA: cfg.UseRSLoRA, Init: cfg.Init, Seed: cfg.Seed})
	if err != nil {
		return nil, err
	}
	net.AdCfg.BaseModel = cfg.Model
	if cfg.BaseModelID != "" {
		net.AdCfg.BaseModel = cfg.BaseModelID
	}
	if cfg.InitAdapter != "" {
		ad, err := lora.Load(cfg.InitAdapter)
		if err != nil {
			return nil, err
		}
		if err := ad.CheckUnmerged(models.AdapterBase(m.Net, m.Dir)); err != nil {
			return nil, fmt.Errorf("init-adapter: %w", err)
		}
		if err := net.SetAdapter(ad); err != nil {
			return nil, fmt.Errorf("init-adapter %s: %w", cfg.InitAdapter, err)
		}
	}

	perStep := cfg.BatchSize * cfg.GradAccum
	pl := plan{n: len(samples), perStep: perStep, stepsPerEpoch: (len(samples) + perStep - 1) / perStep, seed: cfg.Seed}
	pl.total = pl.stepsPerEpoch * max(cfg.Epochs, 1)
	if cfg.MaxSteps > 0 {
		pl.total = cfg.MaxSteps
	}
	warm := cfg.WarmupSteps
	if warm == 0 && cfg.WarmupRatio > 0 {
		warm = int(math.Ceil(cfg.WarmupRatio * float64(pl.total)))
	}

	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, fmt.Errorf("create output folder: %w", err)
	}
	opt := &AdamW{Beta1: cfg.Beta1, Beta2: cfg.Beta2, Eps: cfg.Eps, WeightDecay: cfg.WeightDecay, NoDecay: net.NoDecay}
	start := 0
	var history []Metrics
	if cfg.Resume != "" {
		ck, err := findCheckpoint(cfg.Resume)
		if err != nil {
			return nil, err
		}
		ts, err := loadCheckpoint(ck, net)
		if err != nil {
			return nil, err
		}
		if ts.Examples != len(samples) || ts.PerStep != perStep || ts.Seed != cfg.Seed {
			rep.Logf("warning: resuming with different data/batch/seed (checkpoint: %d examples, %d per step, seed %d)", ts.Examples, ts.PerStep, ts.Seed)
		}
		start = ts.Step
		history = ts.History
		rep.Logf("resumed from %s at step %d", ck, start)
		if start >= pl.total {
			rep.Logf("the checkpoint is already at step %d of %d: writing the outputs only", start, pl.total)
		}
	}
	if err := writeJSON(filepath.Join(cfg.Out, "training_args.json"), cfg); err != nil {
		return nil, err
	}

	evaluate := func() (float64, error) {
		var sum float64
		var cnt int
		for i := 0; i < len(evalSamples); i += cfg.BatchSize {
			s, c, err := net.Loss(evalSamples[i:min(i+cfg.BatchSize, len(evalSamples))])
			if err != nil {
				return 0, err
			}
			sum += s
			cnt += c
		}
		return sum / float64(max(cnt, 1)), nil
	}
	save := func(step int) (string, error) {
		dir := filepath.Join(cfg.Out, fmt.Sprintf("checkpoint-%d", step))
		err := saveCheckpoint(dir, net, trainerState{Step: step, Examples: len(samples), PerStep: perStep, Seed: cfg.Seed,
			Method: cfg.Method, History: history})
		if err == nil {
			pruneCheckpoints(cfg.Out, cfg.SaveTotal)
		}
		return dir, err
	}

	mlog, err := openMetrics(cfg.Out, history)
	if err != nil {
		return nil, err
	}
	defer mlog.close()
	rep.Start(pl.total, start)
	tStart := time.Now()
	var tokTotal int
	for step := start; step < pl.total; step++ {
		if ctx.Err() != nil {
			return interrupted(res, save, step, t0)
		}
		ts := time.Now()
		epoch, idx := pl.step(step)
		denom := 0
		for _, i := range idx {
			denom += samples[i].Targets()
		}
		var lossSum float64
		tokens := 0
		cancelled := false
		for mb := 0; mb < len(idx); mb += cfg.BatchSize {
			if ctx.Err() != nil {
				cancelled = true
				break
			}
			batch := make([]Sample, 0, cfg.BatchSize)
			for _, i := range idx[mb:min(mb+cfg.BatchSize, len(idx))] {
				batch = append(batch, samples[i])
			}
			seed := uint64(cfg.Seed)*0x100000001b3 ^ uint64(step)<<20 ^ uint64(mb)
			s, n, err := net.Accumulate(batch, float32(denom), seed)
			if err != nil {
				return nil, fmt.Errorf("step %d: %w", step+1, err)
			}
			lossSum += s
			tokens += n
		}
		if cancelled {
			ZeroGrads(net.Params)
			return interrupted(res, save, step, t0)
		}
		gn := GradNorm(net.Params)
		clip := 1.0
		if cfg.MaxGradNorm > 0 && gn > cfg.MaxGradNorm {
			clip = cfg.MaxGradNorm / (gn + 1e-6)
		}
		opt.LR = LRAt(cfg.Scheduler, cfg.LR, step, pl.total, warm)
		opt.Step = step + 1
		opt.ClipCoef = clip
		if math.IsNaN(gn) || math.IsInf(gn, 0) {
			return nil, fmt.Errorf("step %d: gradient norm is %v (diverged; lower --lr?)", step+1, gn)
		}
		if err := ApplyUpdate(net.Params, opt); err != nil {
			return nil, fmt.Errorf("step %d: optimizer: %w", step+1, err)
		}
		el := time.Since(ts).Seconds()
		tokTotal += tokens
		met := Metrics{Step: step + 1, Epoch: float64(epoch) + float64(step%pl.stepsPerEpoch+1)/float64(pl.stepsPerEpoch),
			Loss: lossSum / float64(max(denom, 1)), LR: opt.LR, GradNorm: gn, Tokens: tokens,
			TokensPerSec: float64(tokens) / el, Elapsed: time.Since(t0).Seconds()}
		last := step+1 == pl.total
		if len(evalSamples) > 0 && ((cfg.EvalEvery > 0 && (step+1)%cfg.EvalEvery == 0) || last) {
			el, err := evaluate()
			if err != nil {
				return nil, fmt.Errorf("eval at step %d: %w", step+1, err)
			}
			met.EvalLoss = &el
		}
		history = append(history, met)
		if err := mlog.add(met); err != nil {
			return nil, err
		}
		rep.Step(met, pl.total)
		if cfg.SaveEvery > 0 && (step+1)%cfg.SaveEvery == 0 && !last {
			if _, err := save(step + 1); err != nil {
				return nil, err
			}
		}
	}
	if err := writeOutputs(cfg, m, net, history); err != nil {
		return nil, err
	}
	res.Steps = max(pl.total, start)
	if n := len(history); n > 0 {
		res.Loss = history[n-1].Loss
		res.EvalLoss = history[n-1].EvalLoss
	}
	res.Seconds = time.Since(t0).Seconds()
	if d := time.Since(tStart).Seconds(); d > 0 {
		res.TokensPerSec = float64(tokTotal) / d
	}
	return res, nil
}

func interrupted(res *Result, save func(int) (string, error), step int, t0 time.Time) (*Result, error) {
	dir, err := save(step)
	if err != nil {
		return nil, fmt.Errorf("%w; saving the checkpoint failed: %v", ErrInterrupted, err)
	}
	res.Interrupted, res.Checkpoint, res.Steps = true, dir, step
	res.Seconds = time.Since(t0).Seconds()
	return res, fmt.Errorf("%w at step %d; resume with --resume %s", ErrInterrupted, step, dir)
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(b, '\n'))
}
