package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/models/testmodel"
)

// TestDoRACLI: --method dora trains a PEFT DoRA adapter (use_dora, lora_magnitude_vector), recorded as lora with
// use_dora; merge --verify accepts it; generate applies it unmerged; --use-dora with --method full is refused;
// the config keys of mlx-lm and axolotl for DoRA select it.
func TestDoRACLI(t *testing.T) {
	dir := fixture(t, testmodel.Default())
	cli(t, dir, append(trainQuick, "--out", "d", "--method", "dora", "--rank", "4", "--alpha", "8")...).want(t, 0)
	if cfg := readFile(t, filepath.Join(dir, "d", "adapter_config.json")); !strings.Contains(cfg, `"use_dora": true`) {
		t.Fatalf("adapter_config.json: %s", cfg)
	}
	if args := readFile(t, filepath.Join(dir, "d", "training_args.json")); !strings.Contains(args, `"method": "lora"`) || !strings.Contains(args, `"use_dora": true`) {
		t.Fatalf("training_args.json: %s", args)
	}
	if w := readFile(t, filepath.Join(dir, "d", "adapter_model.safetensors")); !strings.Contains(w, "model.layers.0.self_attn.q_proj.lora_magnitude_vector\"") {
		t.Fatal("adapter_model.safetensors has no lora_magnitude_vector tensor")
	}
	cli(t, dir, "merge", "base", "d", "m", "--verify").want(t, 0)
	cli(t, dir, "generate", "--model", "base", "--adapter", "d", "--prompt", "hi", "--max-tokens", "4").want(t, 0)
	cli(t, dir, append(trainQuick, "--out", "f", "--method", "full", "--use-dora")...).want(t, 1, "--use-dora does not apply to --method full")
	// mlx-lm's fine_tune_type: dora and axolotl's peft_use_dora in --config
	for i, y := range []string{"fine_tune_type: dora\n", "adapter: qlora\npeft_use_dora: true\n"} {
		writeFile(t, filepath.Join(dir, "dora.yaml"), "model: base\ndata: d.jsonl\nmax_steps: 1\nbatch_size: 4\nthreads: 1\n"+y)
		out := "y" + string(rune('0'+i))
		cli(t, dir, "train", "--config", "dora.yaml", "--out", out).want(t, 0)
		if args := readFile(t, filepath.Join(dir, out, "training_args.json")); !strings.Contains(args, `"use_dora": true`) {
			t.Errorf("%s: training_args.json: %s", y, args)
		}
	}
}
