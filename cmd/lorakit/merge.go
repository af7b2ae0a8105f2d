package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lorakit/lorakit/merge"
)

func init() { register(newMergeCmd) }

func newMergeCmd() *cobra.Command {
	var (
		adapters   []string
		dtype      string
		maxShard   string
		requantize string
		verify     bool
		force      bool
		asJSON     bool
		threads    int
	)
	cmd := &cobra.Command{
		Use:   "merge BASE ADAPTER[:WEIGHT] OUT",
		Short: "Fold LoRA adapters into a base model: W' = W + Σ wᵢ·(α/r)ᵢ·Bᵢ·Aᵢ, written as a new HF folder",
		Long: `Merge writes a complete Hugging Face folder at OUT whose weights are W + Σ wᵢ·sᵢ·Bᵢ·Aᵢ, computed in
float32 and rounded once to the output dtype (default: each tensor keeps the base's dtype). Tensors that no
adapter touches are copied bit for bit; config, generation config and tokenizer files are copied. The merge
streams tensor by tensor, and OUT appears only when complete. An existing OUT is replaced only when it is
empty or a previous lorakit merge output (it has lorakit_merge.json); anything else needs --force.

Adapters are read as PEFT saves them (adapter_config.json + adapter_model.safetensors; a pickled
adapter_model.bin must be converted first): list, regex and "all-linear" target_modules, rank_pattern and
alpha_pattern, use_rslora, modules_to_save, bias "all"/"lora_only", LoRA on embed_tokens (lora_embedding_A/B)
and on lm_head. When an adapter changes the embedding or lm_head of a base that ties them, the merged model
gets its own lm_head.weight and tie_word_embeddings false, so that it computes what base+adapter computes.
DoRA adapters (use_dora, lora_magnitude_vector) merge as PEFT merges them: W' = m·(W + s·B·A)/‖W + s·B·A‖ per
output row (alone and with weight 1). lora_bias, fan_in_fan_out and adapters shaped for another model are refused,
naming the tensor.

More adapters are added with --adapter DIR[:WEIGHT]; ADAPTER may carry a weight too (default 1).
A 4-bit (bitsandbytes NF4) base is dequantised and written in bf16 (or --dtype f32); --requantize nf4 writes
the merged weights in NF4 again.

BASE may be a llama.cpp model file (BASE.gguf: llama, qwen2, qwen3; F32, F16, BF16, Q8_0, Q4_0): it is read
through a Hugging Face folder rebuilt from it (config and tokenizer from the metadata, Q8_0/Q4_0 dequantised to
f32), written beside OUT and removed afterwards, so OUT is a complete HF folder. A file whose tokenizer would
not survive being written as tokenizer.json, or whose llama3 rope scaling is only in rope_freqs.weight, is
refused.`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			opt := merge.Options{DType: dtype, Requantize: requantize, Verify: verify, Force: force, Threads: threads}
			for _, a := range append([]string{args[1]}, adapters...) {
				s, err := parseAdapterFlag(a)
				if err != nil {
					return err
				}
				if s.Dir, err = resolveDir(cmd, "ADAPTER", s.Dir); err != nil {
					return err
				}
				opt.Adapters = append(opt.Adapters, s)
			}
			if maxShard != "" {
				n, err := parseSize(maxShard)
				if err != nil {
					return fmt.Errorf("--max-shard-size: %w", err)
				}
				opt.MaxShardSize = n
			}
			var log io.Writer = cmd.ErrOrStderr()
			opt.Log = log
			var res *merge.Result
			err := interruptible(cmd, func(ctx context.Context) (string, error) {
				base, err := resolveDir(cmd, "BASE", args[0])
				if err != nil {
					return "", err
				}
				res, err = merge.Run(ctx, base, args[2], opt)
				if err != nil {
					return "nothing written at " + args[2], err
				}
				return "the merge had completed: " + args[2], nil
			})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "merged %d adapter(s) into %s\n", len(res.Adapters), res.Out)
			fmt.Fprintf(w, "  tensors: %d (%d merged, %d replaced by modules_to_save, %d copied bit for bit, %d converted, %d dequantised, %d re-quantised)\n",
				res.Tensors, res.Merged, res.Replaced, res.Copied, res.Converted, res.Dequantized, res.Requantized)
			fmt.Fprintf(w, "  dtype %s, %d shard(s), %.1f MB, largest tensor %.1f MB, peak RSS %.0f MB\n", res.DType, res.Shards,
				float64(res.Bytes)/1e6, float64(res.LargestTensor)/1e6, float64(res.PeakRSS)/1e6)
			if v := res.Verify; v != nil {
				fmt.Fprintf(w, "  verify: max |Δlogit| merged vs base+adapter = %.3g (bound %.3g for %s, %d positions); adapter effect %.3g\n",
					v.MaxAbsDiff, v.Bound, v.DType, v.Positions, v.AdapterEffect)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&adapters, "adapter", nil, "another adapter to merge, DIR or DIR:WEIGHT (repeatable)")
	f.StringVar(&dtype, "dtype", "auto", "output dtype of float tensors: auto|f32|bf16|f16")
	f.StringVar(&maxShard, "max-shard-size", "", "largest safetensors shard, e.g. 2GB or 500MB (default 5GB)")
	f.StringVar(&requantize, "requantize", "", "with a 4-bit base: write merged weights as nf4 again")
	f.BoolVar(&verify, "verify", false, "compare logits of base+adapter and the merged model before publishing OUT")
	f.BoolVar(&force, "force", false, "replace OUT even if it exists and is not a previous lorakit merge output")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	f.IntVar(&threads, "threads", 0, "threads for the delta products and --verify (0: all CPUs)")
	return cmd
}

// parseAdapterFlag splits DIR[:WEIGHT]; a suffix that is not a number belongs to the path.
func parseAdapterFlag(s string) (merge.Source, error) {
	if i := strings.LastIndexByte(s, ':'); i > 0 {
		if w, err := strconv.ParseFloat(s[i+1:], 64); err == nil {
			return merge.Source{Dir: s[:i], Weight: w}, nil
		}
	}
	if s == "" {
		return merge.Source{}, fmt.Errorf("--adapter: empty value")
	}
	return merge.Source{Dir: s, Weight: 1}, nil
}

// parseSize reads sizes like transformers' max_shard_size: "5GB", "500MB", "2GiB", or plain bytes.
func parseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	units := []struct {
		suf string
		n   float64
	}{{"GIB", 1 << 30}, {"MIB", 1 << 20}, {"KIB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	mult := 1.0
	for _, u := range units {
		if strings.HasSuffix(t, u.suf) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suf)), u.n
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("bad size %q (want e.g. 5GB, 500MB)", s)
	}
	return int64(v * mult), nil
}
