package train

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/nn"
	"github.com/lorakit/lorakit/models/quant"
	"github.com/lorakit/lorakit/models/safetensors"
)

// BenchConfig configures Bench (`lorakit bench --train`).
type BenchConfig struct {
	Method    string // lora | qlora | full
	Shape     string // smollm2-135m | tiny
	DType     string // base weights for lora/full: f32 (default, like the PyTorch anchor) | bf16
	SeqLen    int    // default 256
	BatchSize int    // default 1
	// ExampleLen is the token length of each example (default and at most SeqLen). Without Packing a step is
	// BatchSize examples; with Packing it is BatchSize rows of SeqLen/ExampleLen examples each, as --packing
	// plans them.
	ExampleLen int
	Packing    bool
	// GradientCheckpointing recomputes each layer's activations in the backward pass (Net.Checkpointing).
	GradientCheckpointing bool
	DoRA                  bool // DoRA (use_dora) on top of lora or qlora
	Steps                 int  // timed steps (default 5)
	Warmup                int  // untimed steps first (default 2)
	Threads               int  // 0: all CPUs
	Rank                  int  // default 16 (alpha 2·rank)
	Seed                  int64
}

// BenchResult is what Bench measured.
type BenchResult struct {
	Method          string    `json:"method"`
	Shape           string    `json:"shape"`
	DType           string    `json:"dtype"`
	SeqLen          int       `json:"seq_len"`
	BatchSize       int       `json:"batch_size"`
	ExampleLen      int       `json:"example_len"`
	Packing         bool      `json:"packing"`
	Checkpointing   bool      `json:"gradient_checkpointing,omitempty"`
	DoRA            bool      `json:"use_dora,omitempty"`
	Examples        int       `json:"examples_per_step"`
	Threads         int       `json:"threads"`
	TrainableParams int       `json:"trainable_params"`
	StepSeconds     []float64 `json:"step_s"`
	StepCPUSeconds  []float64 `json:"step_cpu_s"`     // process CPU time per timed step (all threads)
	TokensPerSec    float64   `json:"tokens_per_sec"` // batch·seq·steps / Σ timed step seconds
	PeakRSSMiB      float64   `json:"peak_rss_mib"`   // VmHWM of the process
	FirstLoss       float64   `json:"first_loss"`
	LastLoss        float64   `json:"last_loss"`
	AnchorTokS      float64   `json:"pytorch_anchor_tok_s,omitempty"`
	AnchorRSSMiB    float64   `json:"pytorch_anchor_rss_mib,omitempty"`
}

type benchShapeDef struct {
	hidden, inter, layers, heads, kv, vocab int
	theta                                   float64
}

var benchShapeDefs = map[string]benchShapeDef{
	"smollm2-135m": {576, 1536, 30, 9, 3, 49152, 100000},
	"tiny":         {64, 256, 5, 4, 2, 512, 10000},
}

// PyTorch CPU anchors (shared/anchors/perf-anchors.md, 2 threads, seq 256): tok/s and peak RSS MiB.
var benchAnchors = map[string][2]float64{
	"smollm2-135m/lora/1": {127.5, 2214}, "smollm2-135m/lora/4": {110.3, 6525}, "smollm2-135m/full/1": {61.9, 3359},
	"tiny/lora/8": {8456, 680}, "tiny/full/8": {6407, 653},
}

// Bench times real optimizer steps (forward, backward, AdamW) on random
// weights of a real model's shape, next-token loss on every position of
// random token ids, as the PyTorch anchor script does.
//
// complexity: per-method setup (lora, qlora, full) and shape, then the timed loop.
func Bench(ctx context.Context, c BenchConfig) (*BenchResult, error) {
	if c.Method == "" {
		c.Method = "lora"
	}
	if c.Shape == "" {
		c.Shape = "smollm2-135m"
	}
	if c.DType == "" {
		c.DType = "f32"
	}
	if c.SeqLen <= 0 {
		c.SeqLen = 256
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 1
	}
	if c.ExampleLen <= 0 || c.ExampleLen > c.SeqLen {
		c.ExampleLen = c.SeqLen
	}
	if c.ExampleLen < 2 {
		return nil, fmt.Errorf("bench example length %d: must be at least 2 tokens", c.ExampleLen)
	}
	if c.Steps <= 0 {
		c.Steps = 5
	}
	if c.Warmup < 0 {
		c.Warmup = 0
	} else if c.Warmup == 0 {
		c.Warmup = 2
	}
	if c.Rank <= 0 {
		c.Rank = 16
	}
	sh, ok := benchShapeDefs[c.Shape]
	if !ok {
		return nil, fmt.Errorf("bench shape %q: want smollm2-135m or tiny", c.Shape)
	}
	method := Method(c.Method)
	if method != LoRA && method != QLoRA && method != Full {
		return nil, fmt.Errorf("bench method %q: want lora, qlora or full", c.Method)
	}
	if c.DoRA && method == Full {
		return nil, fmt.Errorf("bench: DoRA needs --method lora or qlora")
	}
	if c.DType != "f32" && c.DType != "bf16" {
		return nil, fmt.Errorf("bench dtype %q: want f32 or bf16", c.DType)
	}
	defer debug.SetGCPercent(debug.SetGCPercent(gcPercent))
	pool := kernels.NewPool(c.Threads)
	base, err := randomModel(sh, method == QLoRA, c.DType, c.Seed, pool)
	if err != nil {
		return nil, err
	}
	net, err := NewNet(base, method, LoRAOptions{Targets: []string{"all-linear"}, Rank: c.Rank, Alpha: float64(2 * c.Rank), DoRA: c.DoRA, Seed: c.Seed})
	if err != nil {
		return nil, err
	}
	net.Checkpointing = c.GradientCheckpointing
	if method == Full { // the f32 master copy is all the graph uses
		base.EmbedTokens, base.LMHead = nil, nil
		for _, L := range base.Layers {
			for _, p := range L.Linears() {
				*p = nil
			}
		}
		runtime.GC()
	}
	res := &BenchResult{Method: c.Method, Shape: c.Shape, DType: c.DType, SeqLen: c.SeqLen, BatchSize: c.BatchSize,
		ExampleLen: c.ExampleLen, Packing: c.Packing, Checkpointing: c.GradientCheckpointing, DoRA: c.DoRA, Threads: pool.Threads()}
	if method == QLoRA {
		res.DType = "nf4"
	}
	for _, p := range net.Params {
		res.TrainableParams += p.Size()
	}
	rng := rand.New(rand.NewPCG(uint64(c.Seed), 99))
	n := c.BatchSize
	if c.Packing {
		lens := make([]int, c.BatchSize*(c.SeqLen/c.ExampleLen))
		for i := range lens {
			lens[i] = c.ExampleLen
		}
		if rows := len(packRows(lens, c.SeqLen)); rows != c.BatchSize {
			return nil, fmt.Errorf("bench: %d examples of %d tokens packed into %d rows, want %d", len(lens), c.ExampleLen, rows, c.BatchSize)
		}
		n = len(lens)
	}
	res.Examples = n
	batch := make([]Sample, n)
	for i := range batch {
		ids := make([]int, c.ExampleLen)
		mask := make([]bool, c.ExampleLen)
		for j := range ids {
			ids[j] = rng.IntN(sh.vocab)
			mask[j] = j+1 < c.ExampleLen
		}
		batch[i] = Sample{IDs: ids, Mask: mask}
	}
	denom := float32(n * (c.ExampleLen - 1))
	opt := &AdamW{LR: 1e-4, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, ClipCoef: 1, NoDecay: net.NoDecay}
	var timed float64
	for s := 0; s < c.Warmup+c.Steps; s++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		t0, c0 := time.Now(), cpuSeconds()
		sum, _, err := net.Accumulate(batch, denom, uint64(s))
		if err != nil {
			return nil, err
		}
		opt.Step = s + 1
		if err := ApplyUpdate(net.Params, opt); err != nil {
			return nil, err
		}
		dt := time.Since(t0).Seconds()
		loss := sum / float64(denom)
		if s == 0 {
			res.FirstLoss = loss
		}
		res.LastLoss = loss
		if s >= c.Warmup {
			res.StepSeconds = append(res.StepSeconds, dt)
			res.StepCPUSeconds = append(res.StepCPUSeconds, cpuSeconds()-c0)
			timed += dt
		}
	}
	res.TokensPerSec = float64(n*c.ExampleLen*c.Steps) / timed
	res.PeakRSSMiB = peakRSSMiB()
	if a, ok := benchAnchors[fmt.Sprintf("%s/%s/%d", c.Shape, c.Method, c.BatchSize)]; ok && c.SeqLen == 256 && c.ExampleLen == c.SeqLen && !c.Packing && !c.GradientCheckpointing && !c.DoRA {
		res.AnchorTokS, res.AnchorRSSMiB = a[0], a[1]
	}
	return res, nil
}

// randomModel builds a Llama with N(0, 0.02) weights and unit norms (tied embeddings).
func randomModel(sh benchShapeDef, nf4 bool, dtype string, seed int64, pool *kernels.Pool) (*llama.Model, error) {
	cfg := &llama.Config{ModelType: "llama", HiddenSize: sh.hidden, IntermediateSize: sh.inter, NumHiddenLayers: sh.layers,
		NumAttentionHeads: sh.heads, NumKeyValueHeads: sh.kv, HeadDim: sh.hidden / sh.heads, VocabSize: sh.vocab,
		MaxPositionEmbeddings: 8192, RMSNormEps: 1e-5, RopeTheta: sh.theta, TieWordEmbeddings: true, BOSTokenID: 1,
		EOSTokenIDs: []int{2}, PadTokenID: -1, TorchDType: "float32"}
	rng := rand.New(rand.NewPCG(uint64(seed), 7))
	scratch := NewEnv(nil)
	randn := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64() * 0.02)
		}
		return v
	}
	ones := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = 1
		}
		return v
	}
	dense := func(rows, cols int) (nn.Linear, error) {
		w := randn(rows * cols)
		if nf4 {
			q, err := quant.Quantize4(quant.NF4, w, []int{rows, cols}, 64, true)
			if err != nil {
				return nil, err
			}
			return &nf4Linear{q: q, rows: rows, cols: cols, scratch: scratch}, nil
		}
		if dtype == "bf16" {
			u := make([]uint16, len(w))
			for i, x := range w {
				u[i] = safetensors.F32ToBF16(x)
			}
			return &nn.Dense{Rows: rows, Cols: cols, DType: safetensors.BF16, U16: u}, nil
		}
		return &nn.Dense{Rows: rows, Cols: cols, DType: safetensors.F32, F32: w}, nil
	}
	H, I, Q, KV := sh.hidden, sh.inter, cfg.QDim(), cfg.KVDim()
	m := &llama.Model{Config: cfg, Pool: pool, Norm: ones(H)}
	emb := &nn.Dense{Rows: sh.vocab, Cols: H, DType: safetensors.F32, F32: randn(sh.vocab * H)}
	if dtype == "bf16" && !nf4 {
		u := make([]uint16, len(emb.F32))
		for i, x := range emb.F32 {
			u[i] = safetensors.F32ToBF16(x)
		}
		emb = &nn.Dense{Rows: sh.vocab, Cols: H, DType: safetensors.BF16, U16: u}
	}
	m.EmbedTokens, m.LMHead = emb, emb
	shapes := [7][2]int{{Q, H}, {KV, H}, {KV, H}, {H, Q}, {I, H}, {I, H}, {H, I}}
	for l := 0; l < sh.layers; l++ {
		var lin [7]nn.Linear
		for i, s := range shapes {
			d, err := dense(s[0], s[1])
			if err != nil {
				return nil, err
			}
			lin[i] = d
		}
		m.Layers = append(m.Layers, &llama.Layer{InputLayernorm: ones(H), PostAttentionLayernorm: ones(H),
			QProj: lin[0], KProj: lin[1], VProj: lin[2], OProj: lin[3], GateProj: lin[4], UpProj: lin[5], DownProj: lin[6]})
	}
	return m, nil
}

// cpuSeconds is the user+system CPU time of the process so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}

// peakRSSMiB reads VmHWM from /proc/self/status (0 where unavailable).
func peakRSSMiB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, _ := strconv.ParseFloat(f[0], 64)
				return kb / 1024
			}
		}
	}
	return 0
}
