package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/lorakit/lorakit/models/testmodel"
)

// trainFlags parses args as `lorakit train` would, applies the config file text (when not empty) and
// returns each flag's resulting value and the warnings.
func trainFlags(t *testing.T, config string, args ...string) (map[string]string, string, error) {
	t.Helper()
	cmd := newTrainCmd()
	fs := cmd.Flags()
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	var warn bytes.Buffer
	if config != "" {
		p := filepath.Join(t.TempDir(), "run.yaml")
		if err := os.WriteFile(p, []byte(config), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := applyTrainConfig(fs, p, &warn); err != nil {
			return nil, warn.String(), err
		}
	}
	got := map[string]string{}
	fs.VisitAll(func(f *pflag.Flag) { got[f.Name] = f.Value.String() })
	return got, warn.String(), nil
}

func wantFlags(t *testing.T, got map[string]string, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("--%s = %q, want %q", k, got[k], v)
		}
	}
}

// An axolotl QLoRA config, as axolotl's examples write them.
const axolotlConfig = `base_model: ./base
model_type: LlamaForCausalLM
tokenizer_type: AutoTokenizer

load_in_8bit: false
load_in_4bit: true
strict: false

datasets:
  - path: d.jsonl
    type: chat_template
    field_messages: messages
dataset_prepared_path:
val_set_size: 0.05
output_dir: ./outputs/qlora-out

adapter: qlora
lora_model_dir:

sequence_len: 4096
sample_packing: true
pad_to_sequence_len: true

lora_r: 32
lora_alpha: 16
lora_dropout: 0.05
lora_target_modules:
  - q_proj
  - v_proj
lora_target_linear: true
lora_fan_in_fan_out:

wandb_project:
wandb_log_model:

gradient_accumulation_steps: 4
micro_batch_size: 2
num_epochs: 4
optimizer: paged_adamw_32bit
lr_scheduler: cosine
learning_rate: 0.0002

train_on_inputs: false
group_by_length: false
bf16: auto
tf32: false

gradient_checkpointing: true
logging_steps: 1
flash_attention: true

warmup_steps: 10
evals_per_epoch: 4
saves_per_epoch: 1
weight_decay: 0.0
special_tokens:
  pad_token: "<|end_of_text|>"
`

// mlx-lm's example lora_config.yaml, trimmed of its comments.
const mlxConfig = `model: "./base"
train: true
fine_tune_type: lora
training_mode: normal
optimizer: adamw
data: "data"
seed: 0
num_layers: 16
batch_size: 4
iters: 1000
val_batches: 25
learning_rate: 1e-5
steps_per_report: 10
steps_per_eval: 200
resume_adapter_file: null
adapter_path: "adapters"
save_every: 100
test: false
test_batches: 100
max_seq_length: 2048
grad_checkpoint: false
lora_parameters:
  keys: ["self_attn.q_proj", "self_attn.v_proj"]
  rank: 8
  scale: 20.0
  dropout: 0.0
`

// A TRL SFT recipe (SFTConfig and ModelConfig fields), as the TRL and alignment-handbook recipes write them.
const trlConfig = `# Model arguments
model_name_or_path: ./base
torch_dtype: bfloat16
attn_implementation: sdpa
use_peft: true
lora_r: 16
lora_alpha: 32
lora_dropout: 0.05
lora_target_modules: all-linear

# Data training arguments
dataset_name: HuggingFaceH4/ultrachat_200k
dataset_num_proc: 12

# SFT trainer config
bf16: true
do_eval: true
eval_strategy: steps
eval_steps: 100
gradient_accumulation_steps: 4
gradient_checkpointing: true
learning_rate: 2.0e-04
log_level: info
logging_steps: 5
lr_scheduler_type: cosine
max_length: 1024
max_steps: -1
num_train_epochs: 3.0
output_dir: out/sft
overwrite_output_dir: true
per_device_eval_batch_size: 8
per_device_train_batch_size: 4
push_to_hub: false
report_to:
- tensorboard
save_strategy: "no"
seed: 42
warmup_ratio: 0.1
packing: false
completion_only_loss: true
`

func TestTrainConfigAxolotl(t *testing.T) {
	got, warn, err := trainFlags(t, axolotlConfig)
	if err != nil {
		t.Fatal(err)
	}
	wantFlags(t, got, map[string]string{"model": "./base", "data": "d.jsonl", "eval-fraction": "0.05", "out": "./outputs/qlora-out",
		"method": "qlora", "max-seq-len": "4096", "packing": "true", "rank": "32", "alpha": "16", "dropout": "0.05",
		"target-modules": "[all-linear]", "grad-accum": "4", "batch-size": "2", "epochs": "4", "lr-scheduler": "cosine",
		"lr": "0.0002", "train-on-prompt": "false", "warmup-steps": "10", "weight-decay": "0", "strict": "false"})
	for _, k := range []string{"model_type (line 2)", "optimizer (line 39)", "bf16 (line 45)", "special_tokens (line 56)", "datasets[0].field_messages (line 12)"} {
		if !strings.Contains(warn, k) {
			t.Errorf("warning lacks %s:\n%s", k, warn)
		}
	}
	if strings.Contains(warn, "lora_model_dir") || strings.Contains(warn, "base_model") {
		t.Errorf("warning names a supported or empty key:\n%s", warn)
	}
}

func TestTrainConfigMLX(t *testing.T) {
	got, warn, err := trainFlags(t, mlxConfig)
	if err != nil {
		t.Fatal(err)
	}
	// mlx-lm scales B·A by scale itself: alpha/r = 20 → alpha 160 at rank 8
	wantFlags(t, got, map[string]string{"model": "./base", "method": "lora", "data": "data", "seed": "0", "batch-size": "4",
		"max-steps": "1000", "lr": "1e-05", "eval-every": "200", "out": "adapters", "save-every": "100", "max-seq-len": "2048",
		"rank": "8", "alpha": "160", "dropout": "0", "target-modules": "[q_proj,v_proj]"})
	for _, k := range []string{"train (line 2)", "num_layers (line 8)", "grad_checkpoint (line 21)"} {
		if !strings.Contains(warn, k) {
			t.Errorf("warning lacks %s:\n%s", k, warn)
		}
	}
	// the command line wins over the config, also through an alias; a scale follows the rank in force
	got, _, err = trainFlags(t, mlxConfig, "--iters", "3", "--lora-r", "4")
	if err != nil {
		t.Fatal(err)
	}
	wantFlags(t, got, map[string]string{"max-steps": "3", "rank": "4", "alpha": "80"})
}

func TestTrainConfigTRL(t *testing.T) {
	got, warn, err := trainFlags(t, trlConfig)
	if err != nil {
		t.Fatal(err)
	}
	wantFlags(t, got, map[string]string{"model": "./base", "method": "lora", "rank": "16", "alpha": "32", "dropout": "0.05",
		"target-modules": "[all-linear]", "eval-every": "100", "grad-accum": "4", "lr": "0.0002", "lr-scheduler": "cosine",
		"max-seq-len": "1024", "max-steps": "0", "epochs": "3", "out": "out/sft", "batch-size": "4", "seed": "42",
		"warmup-ratio": "0.1", "packing": "false", "train-on-prompt": "false"})
	for _, k := range []string{"dataset_name (line 12)", "report_to (line 34)", "save_strategy (line 36)"} {
		if !strings.Contains(warn, k) {
			t.Errorf("warning lacks %s:\n%s", k, warn)
		}
	}
}

func TestTrainConfigErrors(t *testing.T) {
	cases := map[string]string{
		"seed: 1\nlearning_rate: fast\n":                     "run.yaml:2: key learning_rate: invalid argument \"fast\"",
		"rank: 8\nlora_r: 16\n":                              "run.yaml:2: key lora_r sets --rank, already set by rank on line 1",
		"max_step: 2\n":                                      "run.yaml:1: unknown key max_step (did you mean max_steps, the flag --max-steps?)",
		"num_epochs: 1.5\n":                                  "run.yaml:1: key num_epochs",
		"batch_size: [1, 2]\n":                               "run.yaml:1: key batch_size: want one value, got a list",
		"datasets:\n  - path: a.jsonl\n  - path: b.jsonl\n":  "2 datasets; lorakit trains on one JSONL file",
		"adapter: ia3\n":                                     "run.yaml:1: key adapter: \"ia3\" is not lora or qlora",
		"lr: [\n":                                            "run.yaml",
		"- a\n- b\n":                                         "want a mapping of keys to values",
		"lora_parameters:\n  rank: 8\n  scale: big\n":        "key lora_parameters.scale: \"big\" is not a number",
		"use_peft: false\nload_in_4bit: true\n":              "load_in_4bit needs a LoRA adapter",
		"lora_parameters:\n  rank: 4\n  keys: self_attn.q\n": "key lora_parameters.keys: want a list of module paths",
	}
	for cfg, want := range cases {
		_, _, err := trainFlags(t, cfg)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", cfg, err, want)
		}
	}
}

// TestTrainAliases runs the binary with TRL/mlx-lm flag names and an mlx-lm data folder (train.jsonl,
// valid.jsonl), and checks that the run used them; the help text names each alias once.
func TestTrainAliases(t *testing.T) {
	dir := fixture(t, testmodel.Default())
	os.MkdirAll(filepath.Join(dir, "data"), 0o755)
	d := readFile(t, filepath.Join(dir, "d.jsonl"))
	writeFile(t, filepath.Join(dir, "data", "train.jsonl"), d)
	writeFile(t, filepath.Join(dir, "data", "valid.jsonl"), d)
	writeFile(t, filepath.Join(dir, "run.yaml"), "model_name_or_path: base\nlearning_rate: 1e-2\nmax_steps: 5\nfoo_bar: 1\n")
	r := cli(t, dir, "train", "--config", "run.yaml", "--data", "data", "--learning_rate", "3e-3", "--lora-r", "4", "--lora-alpha", "8",
		"--output-dir", "a", "--iters", "2", "--steps-per-eval", "2", "--per-device-train-batch-size", "2", "--json")
	r.want(t, 0, `"steps": 2`)
	if !strings.Contains(r.stderr, "ignoring keys lorakit train does not support: foo_bar (line 4)") {
		t.Errorf("no warning naming foo_bar:\n%s", r.stderr)
	}
	args := readFile(t, filepath.Join(dir, "a", "training_args.json"))
	for _, s := range []string{`"lr": 0.003`, `"rank": 4`, `"alpha": 8`, `"max_steps": 2`, `"eval_every": 2`, `"batch_size": 2`,
		`"data": "data/train.jsonl"`, `"eval_data": "data/valid.jsonl"`} {
		if !strings.Contains(args, s) {
			t.Errorf("training_args.json lacks %s:\n%s", s, args)
		}
	}
	help := cli(t, dir, "train", "--help").stdout
	if n := strings.Count(help, "--learning-rate"); n != 1 || !strings.Contains(help, "peak learning rate (also --learning-rate)") {
		t.Errorf("help names --learning-rate %d times:\n%s", n, help)
	}
}
