package train

import (
	"fmt"
	"strings"
)

// Config is the resolved training configuration (saved as training_args.json).
// The JSON names are the flag names of `lorakit train` with '-' → '_'.
type Config struct {
	Model string `json:"model"`
	// BaseModelID is the hub id Model was resolved from ("" for a local folder): adapters record it as
	// base_model_name_or_path and in their model card instead of the cache path.
	BaseModelID   string   `json:"base_model_id,omitempty"`
	Data          string   `json:"data"`
	EvalData      string   `json:"eval_data,omitempty"`
	EvalFraction  float64  `json:"eval_fraction"`
	Out           string   `json:"out"`
	Method        string   `json:"method"` // lora | qlora | full
	TargetModules []string `json:"target_modules,omitempty"`
	Rank          int      `json:"rank,omitempty"`
	Alpha         float64  `json:"alpha,omitempty"`
	Dropout       float64  `json:"dropout"`
	UseRSLoRA     bool     `json:"use_rslora"`
	UseDoRA       bool     `json:"use_dora"`       // DoRA (PEFT's use_dora) on top of lora or qlora
	Init          string   `json:"init,omitempty"` // kaiming | gaussian
	LR            float64  `json:"lr"`
	WeightDecay   float64  `json:"weight_decay"`
	Beta1         float64  `json:"beta1"`
	Beta2         float64  `json:"beta2"`
	Eps           float64  `json:"eps"`
	Scheduler     string   `json:"lr_scheduler"` // cosine | linear | constant
	WarmupSteps   int      `json:"warmup_steps"`
	WarmupRatio   float64  `json:"warmup_ratio"`
	BatchSize     int      `json:"batch_size"`
	GradAccum     int      `json:"grad_accum"`
	MaxGradNorm   float64  `json:"max_grad_norm"`
	Epochs        int      `json:"epochs"`
	MaxSteps      int      `json:"max_steps"`
	Seed          int64    `json:"seed"`
	EvalEvery     int      `json:"eval_every"`
	SaveEvery     int      `json:"save_every"`
	SaveTotal     int      `json:"save_total_limit"`
	Resume        string   `json:"resume,omitempty"`
	InitAdapter   string   `json:"init_adapter,omitempty"`
	TrainOnPrompt bool     `json:"train_on_prompt"`
	MaxSeqLen     int      `json:"max_seq_len"`
	Packing       bool     `json:"packing"` // rows of several examples up to MaxSeqLen tokens; BatchSize counts rows
	// TrainTokens trains embedding (and untied LM-head) rows beside LoRA (PEFT's trainable_token_indices): "auto"
	// for the special tokens found untrained, or a comma-separated list of tokens or ids; "" trains none and
	// warns about untrained ones.
	TrainTokens string `json:"train_tokens,omitempty"`
	// GeneralEval is text unrelated to the task (plain lines or JSONL with "text"): the base's and the trained
	// model's perplexity on it are reported before training and at every eval (forgetting, measured).
	GeneralEval string `json:"general_eval,omitempty"`
	// GradientCheckpointing recomputes each decoder layer's activations in the backward pass instead of keeping
	// them (less memory, one more forward pass of time).
	GradientCheckpointing bool `json:"gradient_checkpointing,omitempty"`
	Strict                bool `json:"strict"`
	Threads               int  `json:"threads"`
	// Force replaces the output of an earlier run at Out (never a folder holding files train did not write).
	Force bool `json:"-"`
}

// DefaultConfig returns the defaults of `lorakit train`.
func DefaultConfig() Config {
	return Config{
		Method: "lora", TargetModules: []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
		Rank: 16, Alpha: 32, Init: "kaiming",
		LR: 2e-4, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, Scheduler: "cosine",
		BatchSize: 4, GradAccum: 1, MaxGradNorm: 1, Epochs: 3, Seed: 42,
		SaveTotal: 2, MaxSeqLen: 1024,
	}
}

// Validate checks the values that do not need the model or the data.
//
// complexity: one range check per training option, each naming its flag.
func (c *Config) Validate() error {
	var errs []string
	bad := func(f string, a ...any) { errs = append(errs, fmt.Sprintf(f, a...)) }
	if c.Model == "" {
		bad("model: required")
	}
	if c.Data == "" {
		bad("data: required")
	}
	if c.Out == "" {
		bad("out: required")
	}
	switch Method(c.Method) {
	case LoRA, QLoRA:
		if c.Rank <= 0 {
			bad("rank %d: must be positive", c.Rank)
		}
		if c.Alpha <= 0 {
			bad("alpha %g: must be positive", c.Alpha)
		}
		if c.Dropout < 0 || c.Dropout >= 1 {
			bad("dropout %g: must be in [0, 1)", c.Dropout)
		}
		if c.Init != "kaiming" && c.Init != "gaussian" {
			bad("init %q: want kaiming or gaussian", c.Init)
		}
		if _, err := NormalizeTargets(c.TargetModules); err != nil {
			bad("target-modules: %v", err)
		}
	case Full:
		if c.InitAdapter != "" {
			bad("init-adapter: only with --method lora or qlora")
		}
		if c.TrainTokens != "" {
			bad("train-tokens: only with --method lora or qlora (full fine-tuning trains every embedding row)")
		}
		if c.UseDoRA {
			bad("use-dora: only with --method lora or qlora (DoRA trains a magnitude beside LoRA factors)")
		}
	default:
		bad("method %q: want lora, qlora or full", c.Method)
	}
	if !(c.LR > 0) {
		bad("lr %g: must be positive", c.LR)
	}
	if c.WeightDecay < 0 {
		bad("weight-decay %g: must be >= 0", c.WeightDecay)
	}
	if c.Beta1 < 0 || c.Beta1 >= 1 || c.Beta2 < 0 || c.Beta2 >= 1 {
		bad("betas (%g, %g): must be in [0, 1)", c.Beta1, c.Beta2)
	}
	if !(c.Eps > 0) {
		bad("eps %g: must be positive", c.Eps)
	}
	switch c.Scheduler {
	case "cosine", "linear", "constant":
	default:
		bad("lr-scheduler %q: want cosine, linear or constant", c.Scheduler)
	}
	if c.WarmupSteps < 0 || c.WarmupRatio < 0 || c.WarmupRatio >= 1 {
		bad("warmup: steps %d / ratio %g out of range", c.WarmupSteps, c.WarmupRatio)
	}
	if c.BatchSize <= 0 || c.GradAccum <= 0 {
		bad("batch-size %d / grad-accum %d: must be positive", c.BatchSize, c.GradAccum)
	}
	if c.MaxGradNorm < 0 {
		bad("max-grad-norm %g: must be >= 0 (0 disables clipping)", c.MaxGradNorm)
	}
	if c.Epochs <= 0 && c.MaxSteps <= 0 {
		bad("epochs %d / max-steps %d: one must be positive", c.Epochs, c.MaxSteps)
	}
	if c.EvalEvery < 0 || c.SaveEvery < 0 || c.SaveTotal < 0 {
		bad("eval-every / save-every / save-total-limit must be >= 0")
	}
	if c.MaxSeqLen < 2 {
		bad("max-seq-len %d: must be at least 2", c.MaxSeqLen)
	}
	if c.EvalFraction < 0 || c.EvalFraction >= 1 {
		bad("eval-fraction %g: must be in [0, 1)", c.EvalFraction)
	}
	if c.EvalData != "" && c.EvalFraction > 0 {
		bad("eval-data and eval-fraction: give one of them")
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid training config: %s", strings.Join(errs, "; "))
	}
	return nil
}
