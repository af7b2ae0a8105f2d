package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/lorakit/lorakit/internal/atomicfile"
	"github.com/lorakit/lorakit/internal/mmap"
	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/nn"
	"github.com/lorakit/lorakit/models/quant"
	"github.com/lorakit/lorakit/models/safetensors"
	"github.com/lorakit/lorakit/models/sample"
	"github.com/lorakit/lorakit/train"
)

func init() { register(newBenchCmd) }

// benchShape is a real model's architecture, built with random weights.
type benchShape struct {
	ModelType                                    string
	Hidden, Inter, Layers, Heads, KVHeads, Vocab int
	Tied, QKVBias                                bool
	RopeTheta, Eps                               float64
	anchors                                      map[string][2]float64 // dtype → llama.cpp {pp512, tg128} tok/s, 2 threads
}

// benchShapes holds the shapes of issue 3, with llama.cpp b4748 figures measured on the project machine
// (shared/anchors/perf-anchors.md; bf16 compares to llama.cpp F16, nf4 to Q4_0).
var benchShapes = map[string]benchShape{
	"smollm2-135m": {ModelType: "llama", Hidden: 576, Inter: 1536, Layers: 30, Heads: 9, KVHeads: 3, Vocab: 49152,
		Tied: true, RopeTheta: 100000, Eps: 1e-5,
		anchors: map[string][2]float64{"f32": {357.7, 38.06}, "f16": {369.2, 57.52}, "bf16": {369.2, 57.52}, "nf4": {320.5, 98.13}}},
	"qwen2.5-0.5b": {ModelType: "qwen2", Hidden: 896, Inter: 4864, Layers: 24, Heads: 14, KVHeads: 2, Vocab: 151936,
		Tied: true, QKVBias: true, RopeTheta: 1e6, Eps: 1e-6,
		anchors: map[string][2]float64{"f32": {114.0, 11.21}, "f16": {158.6, 18.04}, "bf16": {158.6, 18.04}, "nf4": {146.8, 40.79}}},
}

// benchResult is what `lorakit bench --json` prints.
type benchResult struct {
	Model         string    `json:"model"`
	DType         string    `json:"dtype"`
	Head          string    `json:"head,omitempty"` // "int8" when the LM head ran from an int8 copy (--head auto on a 4-bit base, or int8)
	DoubleQuant   bool      `json:"double_quant,omitempty"`
	Threads       int       `json:"threads"`
	Prompt        int       `json:"prompt"`
	Gen           int       `json:"gen"`
	PPTokS        float64   `json:"pp_tok_s"`
	PPRuns        []float64 `json:"pp_runs_tok_s"`
	PPGFlopS      float64   `json:"pp_gflop_s"`
	TGTokS        float64   `json:"tg_tok_s"`
	TGRuns        []float64 `json:"tg_runs_tok_s"`
	BytesPerToken int64     `json:"bytes_per_token"`
	GBs           float64   `json:"gb_s"`
	Batch         int       `json:"batch,omitempty"`
	BatchStepMS   float64   `json:"batch_step_ms,omitempty"`
	Batch1StepMS  float64   `json:"batch1_step_ms,omitempty"`   // one sequence through the same steps
	BatchRatio    float64   `json:"batch_step_ratio,omitempty"` // batch step time / batch-1 step time, same steps
	MemGBs        float64   `json:"mem_read_gb_s,omitempty"`    // median read bandwidth, measured before each tg run
	MemRuns       []float64 `json:"mem_read_runs_gb_s,omitempty"`
	BWRatio       float64   `json:"tg_bandwidth_fraction,omitempty"` // median over runs of run GB/s ÷ bandwidth just before
	RSSMB         float64   `json:"rss_mb"`
	AnchorPP      float64   `json:"llamacpp_pp_tok_s,omitempty"`
	AnchorTG      float64   `json:"llamacpp_tg_tok_s,omitempty"`
}

// complexity: one command's flag checks and output formats, each a line; the timing itself is in train.Bench and the models.
func newBenchCmd() *cobra.Command {
	var (
		modelDir, shape, dtype, head, cpuprofile, ppProfile string
		threads, prompt, gen, reps, batch                   int
		asJSON, noMem, trainMode, double                    bool
		tc                                                  train.BenchConfig
		sb                                                  *serveBench
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure prefill (pp) and decode (tg) speed of a model or of a real model's shape with random weights",
		Long: `bench times a prompt of --prompt tokens processed as one batch (pp, logits for the last position only)
and --gen tokens decoded one at a time from an empty cache (tg), like llama-bench pp512/tg128. --shape builds
random weights of a real architecture (smollm2-135m, qwen2.5-0.5b) in a temporary checkpoint, memory-mapped
like a real one. It prints tokens/s, the weight bytes read per decoded token, the achieved GB/s, the read
bandwidth of the machine measured in the same run, peak RSS, and ratios to llama.cpp on the project machine.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if sb.writeAdapters > 0 {
				return writeBenchAdapters(cmd, modelDir, sb.out, sb.writeAdapters, sb.rank)
			}
			if sb.url != "" {
				if !cmd.Flags().Changed("prompt") {
					prompt = 16
				}
				if !cmd.Flags().Changed("gen") {
					gen = 64
				}
				return runServeBench(cmd.Context(), cmd.OutOrStdout(), sb, prompt, gen, asJSON)
			}
			if trainMode {
				if modelDir != "" {
					return fmt.Errorf("bench --train: use --shape (smollm2-135m or tiny), not --model")
				}
				tc.Shape, tc.DType, tc.Threads = shape, dtype, threads
				if tc.Shape == "" {
					tc.Shape = "smollm2-135m"
				}
				stop, err := startProfile(cpuprofile)
				if err != nil {
					return fmt.Errorf("bench: %w", err)
				}
				r, err := train.Bench(cmd.Context(), tc)
				stop()
				if err != nil {
					return fmt.Errorf("bench --train: %w", err)
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), r)
				}
				method := r.Method
				if r.DoRA {
					method += "+dora"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "train %s %s %s %s, %d threads: %.1f tok/s (steps %v s), loss %.3f → %.3f, peak RSS %.0f MiB\n",
					method, r.Shape, r.DType, trainBenchBatch(r), r.Threads, r.TokensPerSec, r.StepSeconds, r.FirstLoss, r.LastLoss, r.PeakRSSMiB)
				if r.AnchorTokS > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "%.2f× PyTorch eager fp32 (%.1f tok/s, %.0f MiB)\n", r.TokensPerSec/r.AnchorTokS, r.AnchorTokS, r.AnchorRSSMiB)
				}
				return nil
			}
			if (modelDir == "") == (shape == "") {
				return fmt.Errorf("bench: give exactly one of --model DIR or --shape NAME (%s)", shapeNames())
			}
			switch dtype {
			case "f32", "bf16", "f16", "nf4":
			default:
				return fmt.Errorf("bench: --dtype %q: want f32, bf16, f16 or nf4", dtype)
			}
			if prompt < 1 || gen < 1 || reps < 1 || batch < 1 {
				return fmt.Errorf("bench: --prompt, --gen, --reps and --batch must be at least 1")
			}
			if threads <= 0 {
				threads = runtime.NumCPU()
			}
			errw := cmd.ErrOrStderr()
			res := benchResult{DType: dtype, DoubleQuant: double && dtype == "nf4", Threads: threads, Prompt: prompt, Gen: gen}
			dir, err := resolveDir(cmd, "--model", modelDir)
			if err != nil {
				return err
			}
			// Ctrl-C stops at the next rep, step or tensor written, removes --shape's checkpoint, exits 130
			return interruptible(cmd, func(ctx context.Context) (string, error) {
				if shape != "" {
					sh, ok := benchShapes[shape]
					if !ok {
						return "", fmt.Errorf("bench: --shape %q: unknown (known: %s)", shape, shapeNames())
					}
					tmp, err := os.MkdirTemp("", "lorakit-bench-")
					if err != nil {
						return "", fmt.Errorf("bench: %w", err)
					}
					defer os.RemoveAll(tmp)
					fileDType := dtype
					if dtype == "nf4" {
						// bf16 as published checkpoints are; the linear layers are quantised at load and the tied
						// embedding/LM head stays bf16, as `lorakit quantize` leaves it
						fileDType = "bf16"
					}
					fmt.Fprintf(errw, "writing random %s weights of %s to %s ...\n", fileDType, shape, tmp)
					if err := writeBenchCheckpoint(ctx, tmp, sh, fileDType); err != nil {
						return "", err
					}
					dir = tmp
					res.Model = shape
					if a, ok := sh.anchors[dtype]; ok && threads == 2 {
						res.AnchorPP, res.AnchorTG = a[0], a[1]
					}
				} else {
					res.Model = modelDir
				}
				// the weights alone, loaded as every command loads them; nf4 quantises the linear layers at load
				lo := models.LoadOptions{Threads: threads, Head: head, NoTokenizer: true, Compact: true}
				if dtype == "nf4" {
					lo.Quant, lo.DoubleQuant = "nf4", double
				}
				if err := ctx.Err(); err != nil {
					return "", err
				}
				mod, err := models.Load(dir, lo)
				if err != nil {
					return "", fmt.Errorf("bench: %w", err)
				}
				defer mod.Close()
				m := mod.Net
				res.Head = headKind(m)
				res.BytesPerToken = weightBytes(m)
				if modelDir != "" && dtype != "nf4" {
					res.DType = storedDType(m)
				}
				if err := runBench(ctx, m, &res, reps, batch, !noMem, cpuprofile, ppProfile, errw); err != nil {
					return "", err
				}
				if asJSON {
					return "", printJSON(cmd.OutOrStdout(), res)
				}
				printBench(cmd.OutOrStdout(), &res)
				return "", nil
			})
		},
	}
	f := cmd.Flags()
	sb = addServeBenchFlags(f)
	f.StringVar(&modelDir, "model", "", "Hugging Face checkpoint folder")
	f.StringVar(&shape, "shape", "", "random weights of a model's shape: "+shapeNames())
	f.StringVar(&dtype, "dtype", "f32", "weight type: f32, bf16, f16 or nf4 (with --model: f32/bf16/f16 keep the stored type)")
	f.StringVar(&head, "head", "auto", headUsage)
	f.BoolVar(&double, "double-quant", false, "with --dtype nf4: double quantisation of the absmax values (4.127 bits per weight)")
	f.IntVar(&threads, "threads", 0, "worker threads (0: all CPUs)")
	f.IntVar(&prompt, "prompt", 512, "prompt tokens for pp")
	f.IntVar(&gen, "gen", 128, "decoded tokens for tg")
	f.IntVar(&reps, "reps", 3, "timed repetitions (after one warm-up)")
	f.IntVar(&batch, "batch", 1, "also time decode steps of this many sequences at once (serving)")
	f.StringVar(&cpuprofile, "cpuprofile", "", "write a CPU profile of the decode runs to this file")
	f.StringVar(&ppProfile, "pp-cpuprofile", "", "write a CPU profile of the prefill runs to this file")
	f.BoolVar(&noMem, "no-mem", false, "skip the memory bandwidth measurement")
	f.BoolVar(&asJSON, "json", false, "print one JSON object")
	f.BoolVar(&trainMode, "train", false, "time training steps instead (train.Bench): --shape smollm2-135m|tiny, --dtype f32|bf16")
	f.StringVar(&tc.Method, "method", "lora", "with --train: lora, qlora or full")
	f.IntVar(&tc.SeqLen, "seq-len", 256, "with --train: tokens per sequence")
	f.IntVar(&tc.BatchSize, "batch-size", 1, "with --train: sequences per step")
	f.IntVar(&tc.Steps, "steps", 5, "with --train: timed steps (after 2 warm-up steps)")
	f.IntVar(&tc.Rank, "rank", 16, "with --train: LoRA rank (alpha = 2·rank)")
	f.IntVar(&tc.ExampleLen, "example-len", 0, "with --train: tokens per example (default --seq-len)")
	f.BoolVar(&tc.GradientCheckpointing, "gradient-checkpointing", false, "with --train: recompute each layer's activations in the backward pass")
	f.BoolVar(&tc.Packing, "packing", false, "with --train: pack --seq-len/--example-len examples into each of the --batch-size rows")
	f.BoolVar(&tc.DoRA, "use-dora", false, "with --train: DoRA (use_dora) on top of --method lora or qlora")
	return cmd
}

// trainBenchBatch says what one step of a training benchmark processed.
func trainBenchBatch(r *train.BenchResult) string {
	switch {
	case r.Packing:
		return fmt.Sprintf("packed: %d rows of %d examples of %d tokens", r.BatchSize, r.Examples/r.BatchSize, r.ExampleLen)
	case r.ExampleLen != r.SeqLen:
		return fmt.Sprintf("batch %d examples of %d tokens", r.BatchSize, r.ExampleLen)
	}
	return fmt.Sprintf("seq %d batch %d", r.SeqLen, r.BatchSize)
}

func shapeNames() string {
	var s []string
	for k := range benchShapes {
		s = append(s, k)
	}
	sort.Strings(s)
	return strings.Join(s, ", ")
}

// writeBenchCheckpoint writes config.json and model.safetensors with weights ~ U(-0.035, 0.035) (std 0.02) and
// unit norms.
func writeBenchCheckpoint(ctx context.Context, dir string, sh benchShape, dtype string) error {
	D := sh.Hidden / sh.Heads
	cfg := map[string]any{
		"model_type": sh.ModelType, "architectures": []string{"LlamaForCausalLM"},
		"hidden_size": sh.Hidden, "intermediate_size": sh.Inter, "num_hidden_layers": sh.Layers,
		"num_attention_heads": sh.Heads, "num_key_value_heads": sh.KVHeads, "vocab_size": sh.Vocab,
		"max_position_embeddings": 8192, "rms_norm_eps": sh.Eps, "rope_theta": sh.RopeTheta,
		"tie_word_embeddings": sh.Tied, "torch_dtype": "float32", "bos_token_id": 0, "eos_token_id": 1,
	}
	if sh.ModelType == "qwen2" {
		cfg["architectures"] = []string{"Qwen2ForCausalLM"}
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	dt := map[string]safetensors.DType{"f32": safetensors.F32, "bf16": safetensors.BF16, "f16": safetensors.F16}[dtype]
	H, I, Q, KV := sh.Hidden, sh.Inter, sh.Heads*D, sh.KVHeads*D
	var hs []safetensors.Header
	add := func(name string, shape ...int) {
		hs = append(hs, safetensors.Header{Name: name, DType: dt, Shape: shape})
	}
	add("model.embed_tokens.weight", sh.Vocab, H)
	for l := 0; l < sh.Layers; l++ {
		p := "model.layers." + strconv.Itoa(l) + "."
		add(p+"input_layernorm.weight", H)
		add(p+"post_attention_layernorm.weight", H)
		add(p+"self_attn.q_proj.weight", Q, H)
		add(p+"self_attn.k_proj.weight", KV, H)
		add(p+"self_attn.v_proj.weight", KV, H)
		if sh.QKVBias {
			add(p+"self_attn.q_proj.bias", Q)
			add(p+"self_attn.k_proj.bias", KV)
			add(p+"self_attn.v_proj.bias", KV)
		}
		add(p+"self_attn.o_proj.weight", H, Q)
		add(p+"mlp.gate_proj.weight", I, H)
		add(p+"mlp.up_proj.weight", I, H)
		add(p+"mlp.down_proj.weight", H, I)
	}
	add("model.norm.weight", H)
	if !sh.Tied {
		add("lm_head.weight", sh.Vocab, H)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]float32, 1<<16)
	return safetensors.WriteStream(filepath.Join(dir, "model.safetensors"), hs, nil, func(i int, w io.Writer) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		h := hs[i]
		n := 1
		for _, d := range h.Shape {
			n *= d
		}
		norm := strings.HasSuffix(h.Name, "layernorm.weight") || h.Name == "model.norm.weight"
		for done := 0; done < n; done += len(buf) {
			chunk := buf[:min(len(buf), n-done)]
			for j := range chunk {
				if norm {
					chunk[j] = 1
				} else {
					chunk[j] = (float32(rng.Uint32()>>8)*(1.0/(1<<24)) - 0.5) * 0.0693
				}
			}
			raw, err := safetensors.Encode(h.DType, chunk)
			if err != nil {
				return err
			}
			if _, err := w.Write(raw); err != nil {
				return err
			}
		}
		return nil
	})
}

// weightBytes is the bytes of weights one decode step reads: every linear layer and the LM head (the embedding
// row lookup and the norms are negligible).
func weightBytes(m *llama.Model) int64 {
	var total int64
	lin := func(l nn.Linear) {
		switch d := l.(type) {
		case *nn.Dense:
			es := int64(4)
			if d.DType == safetensors.BF16 || d.DType == safetensors.F16 {
				es = 2
			}
			total += int64(d.Rows) * int64(d.Cols) * es
		case *nn.Quantized:
			total += int64(d.Q.Bytes())
		case interface{ Bytes() int }:
			total += int64(d.Bytes())
		default:
			total += int64(l.In()) * int64(l.Out()) * 4
		}
	}
	for _, L := range m.Layers {
		for _, l := range L.Linears() {
			lin(*l)
		}
	}
	lin(m.LMHead)
	return total
}

// storedDType names the dtype of the first dense linear layer (f32, bf16, f16).
func storedDType(m *llama.Model) string {
	if len(m.Layers) > 0 {
		switch d := m.Layers[0].QProj.(type) {
		case *nn.Dense:
			return strings.ToLower(string(d.DType))
		case *nn.Quantized:
			return string(d.Q.Type)
		}
	}
	return "f32"
}

// runBench times pp (one warm-up, then reps runs) and tg (reps runs of gen steps from an empty cache).
// Peak RSS is read after prefill (the largest activations), before the bandwidth probe's buffer exists. With
// probe, the read bandwidth is measured right before each tg run, and each run's GB/s is compared with it.
// runBench times prefill, decode and batched decode, stopping with ctx's error at the next rep or step.
func runBench(ctx context.Context, m *llama.Model, res *benchResult, reps, batch int, probe bool, cpuprofile, ppProfile string, errw io.Writer) error {
	c := m.Config
	rng := rand.New(rand.NewPCG(3, 4))
	toks := make([]int, res.Prompt)
	for i := range toks {
		toks[i] = rng.IntN(c.VocabSize)
	}
	cache := m.NewCache(max(res.Prompt, res.Gen) + 1)
	ppOnce := func() (float64, error) {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		cache.Reset()
		t0 := time.Now()
		if _, err := m.Forward([]llama.Seq{{Tokens: toks, Cache: cache}}); err != nil {
			return 0, fmt.Errorf("bench: prefill: %w", err)
		}
		return float64(res.Prompt) / time.Since(t0).Seconds(), nil
	}
	fmt.Fprintf(errw, "warm-up ...\n")
	if _, err := ppOnce(); err != nil {
		return err
	}
	stop, err := startProfile(ppProfile)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	for r := 0; r < reps; r++ {
		v, err := ppOnce()
		if err != nil {
			return err
		}
		res.PPRuns = append(res.PPRuns, round1(v))
	}
	stop()
	res.PPTokS = round1(median(res.PPRuns))
	// FLOPs of the prompt: 2·params per token for the layers, causal attention 2·2·P²/2·D·heads per layer, and
	// the LM head for the last position.
	H, Q, KV, I, P := c.HiddenSize, c.QDim(), c.KVDim(), c.IntermediateSize, float64(res.Prompt)
	layerParams := float64(H*Q + 2*H*KV + Q*H + 3*H*I)
	flops := float64(c.NumHiddenLayers)*(2*layerParams*P+2*P*P*float64(Q)) + 2*float64(H*c.VocabSize)
	res.PPGFlopS = round1(flops / (float64(res.Prompt) / res.PPTokS) / 1e9)
	res.RSSMB = peakRSSMB()
	var bw *bwProbe
	var bws, ratios []float64
	if probe {
		if bw, err = newBWProbe(m.Pool); err != nil {
			return err
		}
		defer bw.release()
	}

	if stop, err = startProfile(cpuprofile); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	defer stop()
	seq := []llama.Seq{{Tokens: []int{0}, Cache: cache}}
	var logits llama.Logits // reused step to step, as generate does
	// The decode loop runs under the profiler label caller=decode, so that
	// `pprof -tagfocus caller=decode` shows the calling goroutine's wall time
	// (the pool's workers are unlabelled).
	tgOnce := func() (float64, error) {
		cache.Reset()
		tok := 1
		var err error
		t0 := time.Now()
		pprof.Do(context.Background(), pprof.Labels("caller", "decode"), func(context.Context) {
			for i := 0; i < res.Gen && err == nil; i++ {
				if err = ctx.Err(); err != nil {
					break
				}
				seq[0].Tokens[0] = tok
				var out [][][]float32
				if out, err = m.ForwardInto(&logits, seq); err == nil {
					tok = sample.Argmax(out[0][0])
				}
			}
		})
		if err != nil {
			return 0, fmt.Errorf("bench: decode: %w", err)
		}
		return float64(res.Gen) / time.Since(t0).Seconds(), nil
	}
	for r := 0; r < reps; r++ {
		var b float64
		if bw != nil {
			b = bw.measure()
		}
		v, err := tgOnce()
		if err != nil {
			return err
		}
		res.TGRuns = append(res.TGRuns, round1(v))
		if bw != nil {
			bws = append(bws, b)
			ratios = append(ratios, float64(res.BytesPerToken)*v/1e9/b)
		}
	}
	res.TGTokS = round1(median(res.TGRuns))
	res.GBs = round1(float64(res.BytesPerToken) * res.TGTokS / 1e9)
	if bw != nil {
		res.MemGBs = round1(median(bws))
		res.BWRatio = math.Round(median(ratios)*100) / 100
		res.MemRuns = bws
		for i := range res.MemRuns {
			res.MemRuns[i] = round1(res.MemRuns[i])
		}
	}

	if batch > 1 {
		var err error
		res.Batch = batch
		res.BatchStepMS, res.Batch1StepMS, err = batchSteps(ctx, m, batch, min(res.Gen, 32), reps)
		if err != nil {
			return err
		}
		res.BatchRatio = math.Round(res.BatchStepMS/res.Batch1StepMS*100) / 100
		res.BatchStepMS, res.Batch1StepMS = roundMicro(res.BatchStepMS), roundMicro(res.Batch1StepMS)
	}
	return nil
}

// roundMicro rounds milliseconds to the microsecond (small models step in tens of them).
func roundMicro(ms float64) float64 { return math.Round(ms*1e3) / 1e3 }

// batchSteps times decode steps of batch sequences and of one sequence over the same positions (steps steps
// from an empty cache each, as the batch's sequences have), reps rounds alternated, and returns the best ms per
// step of each: the ratio compares like with like (same contexts, same statistic, same minutes).
func batchSteps(ctx context.Context, m *llama.Model, batch, steps, reps int) (ms, ms1 float64, err error) {
	// labelled caller=batch, as the decode loop is caller=decode (`pprof -tagfocus caller=batch`)
	pprof.SetGoroutineLabels(pprof.WithLabels(ctx, pprof.Labels("caller", "batch")))
	defer pprof.SetGoroutineLabels(ctx)
	seqs := make([]llama.Seq, batch)
	for i := range seqs {
		seqs[i] = llama.Seq{Tokens: []int{i + 1}, Cache: m.NewCache(steps + 1)}
	}
	var logits llama.Logits // reused step to step, as serving does
	run := func(seqs []llama.Seq) (float64, error) {
		for i := range seqs {
			seqs[i].Cache.Reset()
		}
		t0 := time.Now()
		for s := 0; s < steps; s++ {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
			out, err := m.ForwardInto(&logits, seqs)
			if err != nil {
				return 0, fmt.Errorf("bench: batched decode: %w", err)
			}
			for i := range seqs {
				seqs[i].Tokens[0] = sample.Argmax(out[i][0])
			}
		}
		return time.Since(t0).Seconds() * 1e3 / float64(steps), nil
	}
	ms, ms1 = math.Inf(1), math.Inf(1)
	for r := 0; r < reps; r++ {
		for _, n := range []int{batch, 1} {
			t, err := run(seqs[:n])
			if err != nil {
				return 0, 0, err
			}
			if n == 1 {
				ms1 = min(ms1, t)
			} else {
				ms = min(ms, t)
			}
		}
	}
	return ms, ms1, nil
}

// startProfile starts a CPU profile for path ("" = none) and returns its stop function, which writes the profile
// to path atomically; a file already at path must be an earlier profile (checkProfilePath).
func startProfile(path string) (func(), error) {
	if path == "" {
		return func() {}, nil
	}
	if err := checkProfilePath(path); err != nil {
		return nil, err
	}
	var buf bytes.Buffer // pprof writes the profile when it stops: saved whole, atomically, then
	if err := pprof.StartCPUProfile(&buf); err != nil {
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		if err := atomicfile.WriteBytes(path, buf.Bytes()); err != nil {
			fmt.Fprintf(os.Stderr, "lorakit: writing the CPU profile: %v\n", err)
		}
	}, nil
}

// checkProfilePath refuses a --cpuprofile path that holds something other than an earlier profile (gzip data,
// as pprof writes), so that a mistyped path cannot replace a user's file.
func checkProfilePath(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("--cpuprofile %s: %w", path, err)
	}
	defer f.Close()
	var magic [2]byte
	if _, err := io.ReadFull(f, magic[:]); err != nil || magic != [2]byte{0x1f, 0x8b} {
		return fmt.Errorf("--cpuprofile %s: the file exists and is not a CPU profile; give another path or remove it", path)
	}
	return nil
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func round1(v float64) float64 { return math.Round(v*10) / 10 }

// peakRSSMB reads VmHWM (peak resident set) from /proc/self/status; 0 when unavailable.
func peakRSSMB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err == nil {
				return round1(kb / 1024)
			}
		}
	}
	return 0
}

// bwProbe measures the machine's read bandwidth with the decode access pattern: every thread streams a
// contiguous range of a 256 MiB buffer (8× the L3 of the project machine), once through the dot kernel (no
// software prefetch) and once through the f32 matrix-vector kernel decode runs (with it), and the faster of the
// two is the ceiling: which reads faster depends on the CPU (on a Zen 1 the prefetching kernel reads ~5–20%
// faster; the dot kernel alone made f32 decode read "107%" of the probe). The buffer is the same kind of memory
// the weights are in (mmap.Anon: anonymous, transparent huge pages, as models.LoadOptions.Compact places dense
// weights), so the ceiling is not lowered by 4 KiB pages' TLB misses that the decode does not pay.
type bwProbe struct {
	p       *kernels.Pool
	buf     []float32
	sums    []float32
	x, y    []float32 // the matrix-vector pass: buf as probeRows × probeCols
	release func() error
}

// probeCols is the row length of the probe's matrix-vector pass (the width of qwen2.5-0.5b's MLP input).
const probeCols = 896

func newBWProbe(p *kernels.Pool) (*bwProbe, error) {
	raw, release, err := mmap.Anon(256 << 20)
	if err != nil {
		return nil, fmt.Errorf("bench: bandwidth probe buffer: %w", err)
	}
	b := &bwProbe{p: p, buf: nn.Float32View(raw), sums: make([]float32, 64), release: release}
	for i := range b.buf {
		b.buf[i] = 1
	}
	b.x = make([]float32, probeCols)
	b.y = make([]float32, len(b.buf)/probeCols)
	for i := range b.x {
		b.x[i] = 1
	}
	return b, nil
}

// measure returns the best of three passes of each read pattern in GB/s.
func (b *bwProbe) measure() float64 {
	best := 0.0
	per := len(b.buf) / len(b.sums)
	rows := len(b.y)
	pass := func(floats int, read func()) {
		t0 := time.Now()
		read()
		best = max(best, float64(floats*4)/time.Since(t0).Seconds()/1e9)
	}
	for r := 0; r < 3; r++ {
		pass(len(b.buf), func() {
			b.p.For(len(b.sums), func(lo, hi int) {
				for i := lo; i < hi; i++ {
					v := b.buf[i*per : (i+1)*per]
					b.sums[i] = kernels.Dot(v, v)
				}
			})
		})
		pass(rows*probeCols, func() { kernels.MatVecF32(b.p, b.y, b.buf[:rows*probeCols], b.x, rows, probeCols) })
	}
	return best
}

func printBench(w io.Writer, r *benchResult) {
	head := ""
	if r.Head != "" {
		head = ", LM head " + r.Head
	}
	fmt.Fprintf(w, "%s %s%s, %d threads\n", r.Model, r.DType, head, r.Threads)
	fmt.Fprintf(w, "pp%d: %.1f tok/s (runs %v), %.1f GFLOP/s", r.Prompt, r.PPTokS, r.PPRuns, r.PPGFlopS)
	if r.AnchorPP > 0 {
		fmt.Fprintf(w, ", %.2f× llama.cpp (%.1f)", r.PPTokS/r.AnchorPP, r.AnchorPP)
	}
	fmt.Fprintf(w, "\ntg%d: %.1f tok/s (runs %v), %.1f MB/token, %.1f GB/s", r.Gen, r.TGTokS, r.TGRuns,
		float64(r.BytesPerToken)/1e6, r.GBs)
	if r.MemGBs > 0 {
		fmt.Fprintf(w, " (%.0f%% of the read bandwidth measured before each run, median %.1f GB/s, runs %v)", 100*r.BWRatio, r.MemGBs, r.MemRuns)
	}
	if r.AnchorTG > 0 {
		fmt.Fprintf(w, ", %.2f× llama.cpp (%.1f)", r.TGTokS/r.AnchorTG, r.AnchorTG)
	}
	fmt.Fprintln(w)
	if r.Batch > 1 {
		fmt.Fprintf(w, "decode batch %d: %.2f ms/step = %.2f× a batch-1 step over the same positions (%.2f ms)\n", r.Batch, r.BatchStepMS, r.BatchRatio, r.Batch1StepMS)
	}
	fmt.Fprintf(w, "peak RSS %.0f MB\n", r.RSSMB)
	if r.DType == "nf4" && r.Head == "" {
		fmt.Fprintln(w, "(the LM head stays in its stored dtype, as bitsandbytes leaves it; llama.cpp's Q4_0 files hold it in Q8_0:"+
			" compare with --head auto or int8 for the same bytes per token)")
	}
}

// headUsage documents the --head flag of generate, serve and bench.
const headUsage = `LM head at run time: "auto" (a row-wise int8 copy when the base is 4-bit, as llama.cpp keeps its output ` +
	`in 8 bits; half the bytes per token of bf16, logits within 1% of the largest), "stored" (the checkpoint's dtype) or "int8" (always)`

// headKind names the LM head's run-time type for the report: "int8" for a row-wise int8 copy, "" for the stored dtype.
func headKind(m *llama.Model) string {
	if q, ok := m.LMHead.(*nn.Quantized); ok && q.Q.Type == quant.Int8 {
		return "int8"
	}
	return ""
}
