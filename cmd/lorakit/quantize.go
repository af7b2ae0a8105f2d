package main

import (
	"context"
	"fmt"
	"runtime"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lorakit/lorakit/internal/progress"
	bnb "github.com/lorakit/lorakit/models/quant"
	"github.com/lorakit/lorakit/quant"
)

func init() { register(newQuantizeCmd) }

func newQuantizeCmd() *cobra.Command {
	var (
		typ       string
		blockSize int
		double    bool
		skip      []string
		threads   int
		asJSON    bool
		all       bool
		force     bool
		maxShard  string
	)
	cmd := &cobra.Command{
		Use:   "quantize IN OUT",
		Short: "Store a model's linear weights in 4-bit NF4/FP4 or int8, as bitsandbytes/transformers save them",
		Long: `Quantize writes at OUT a copy of the Hugging Face folder IN whose attention and MLP linear weights
are quantised exactly as bitsandbytes does and saved as transformers saves bitsandbytes weights, with
quantization_config in config.json, so that transformers+bitsandbytes and lorakit both load it. IN may be a
llama.cpp model file (IN.gguf), read as merge reads a GGUF base (see lorakit merge --help).

  nf4, fp4  blockwise 4-bit (--block-size values per float32 absmax, default 64), two codes per byte;
            --double-quant also quantises the absmax values (8-bit dynamic map, blocks of 256): ≈4.127
            bits per parameter instead of 4.5.
  int8      LLM.int8 row-wise: int8 codes with one float32 absmax per output row (keys weight, SCB,
            weight_format); --block-size does not apply.

Embeddings, norms, biases and lm_head keep their dtype bit for bit; --skip adds module-name substrings to
leave unquantised (e.g. --skip down_proj). Tokenizer, generation config and other files are copied. OUT
appears only when complete; an existing OUT is replaced only when it is empty or a quantised model folder
(config.json with quantization_config), anything else needs --force. Tensors are read, quantised and
written one at a time (about --threads tensors in memory); the output is sharded with
model.safetensors.index.json when the input is sharded or the weights exceed --max-shard-size. An input that is already quantised
(quantization_config, or bitsandbytes tensors) is refused.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			t := bnb.Type(strings.ToLower(typ))
			if t == bnb.Int8 && cmd.Flags().Changed("block-size") {
				return fmt.Errorf("--block-size does not apply to int8 (LLM.int8 keeps one absmax per row)")
			}
			if t == bnb.Int8 && double {
				return fmt.Errorf("--double-quant does not apply to int8 (it quantises the 4-bit types' block absmax values)")
			}
			var skipList []string
			for _, s := range skip {
				for _, p := range strings.Split(s, ",") {
					if p = strings.TrimSpace(p); p != "" {
						skipList = append(skipList, p)
					}
				}
			}
			opt := quant.FolderOptions{Type: t, BlockSize: blockSize, Double: double, Skip: skipList, Threads: threads, Force: force}
			if maxShard != "" {
				n, err := parseSize(maxShard)
				if err != nil {
					return fmt.Errorf("--max-shard-size: %w", err)
				}
				opt.MaxShardSize = n
			}
			var bar *progress.Bar
			if !asJSON {
				opt.Progress = func(done, total int) {
					if bar == nil {
						bar = progress.New(cmd.ErrOrStderr(), "quantise", int64(total), "tensors")
					}
					bar.Set(int64(done), "")
				}
			}
			var res *quant.FolderResult
			err := interruptible(cmd, func(ctx context.Context) (string, error) {
				in, err := resolveDir(cmd, "INPUT", args[0])
				if err != nil {
					return "", err
				}
				res, err = quant.QuantizeFolderContext(ctx, in, args[1], opt)
				if bar != nil {
					if err != nil {
						bar.Stop()
					} else {
						bar.Finish()
					}
				}
				if err != nil {
					return "nothing written at " + args[1], err
				}
				return "quantisation had completed: " + args[1], nil
			})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			w := cmd.OutOrStdout()
			desc := string(res.Type)
			if res.Type != bnb.Int8 {
				desc += fmt.Sprintf(", block %d", res.BlockSize)
				if res.Double {
					desc += ", double quant"
				}
			}
			fmt.Fprintf(w, "quantised %s → %s (%s)\n", args[0], args[1], desc)
			fmt.Fprintf(w, "  linear weights: %d tensors, %.2f M params, %.2f MB, %.4f bits/param\n",
				len(res.Quantized), float64(res.QuantParams)/1e6, float64(res.QuantBytes)/1e6, res.BitsPerParam)
			fmt.Fprintf(w, "  kept: %d tensors (embeddings, norms, biases, lm_head) in their dtype\n", len(res.Kept))
			fmt.Fprintf(w, "  weights %.2f MB → %.2f MB (%.2f bits/param over all %.2f M params); %d weight file(s), %.2f MB\n",
				float64(res.InBytes)/1e6, float64(res.OutBytes)/1e6, float64(8*res.OutBytes)/float64(res.TotalParams),
				float64(res.TotalParams)/1e6, res.Shards, float64(res.FileBytes)/1e6)
			if all || len(res.Quantized) <= 16 {
				fmt.Fprintf(w, "  %-52s %14s %10s %10s %8s\n", "tensor", "shape", "rms err", "max err", "rel rms")
				for _, r := range res.Quantized {
					fmt.Fprintf(w, "  %-52s %14s %10.3g %10.3g %8.4f\n", r.Name, quantShapeString(r.Shape), r.RMSError, r.MaxError, r.RelRMS)
				}
			} else {
				worst := res.Quantized[0]
				var sumRel float64
				for _, r := range res.Quantized {
					sumRel += r.RelRMS
					if r.RelRMS > worst.RelRMS {
						worst = r
					}
				}
				fmt.Fprintf(w, "  error: mean relative RMS %.4f; worst %s rel RMS %.4f (rms %.3g, max %.3g); --all lists every tensor\n",
					sumRel/float64(len(res.Quantized)), worst.Name, worst.RelRMS, worst.RMSError, worst.MaxError)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&typ, "type", "nf4", "nf4 | fp4 | int8")
	f.IntVar(&blockSize, "block-size", bnb.DefaultBlockSize, "4-bit block size (32, 64, ..., 4096)")
	f.BoolVar(&double, "double-quant", false, "double-quantise the 4-bit absmax values (QLoRA's DQ)")
	f.StringSliceVar(&skip, "skip", nil, "module-name substrings to keep unquantised (comma-separated or repeated)")
	f.IntVar(&threads, "threads", runtime.NumCPU(), "tensors quantised in parallel")
	f.BoolVar(&all, "all", false, "print the error of every tensor")
	f.StringVar(&maxShard, "max-shard-size", "", "largest safetensors shard, e.g. 2GB or 500MB (default 5GB); a sharded input gives a sharded output")
	f.BoolVar(&force, "force", false, "replace OUT even if it exists and is not a quantised model folder")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func quantShapeString(s []int) string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = fmt.Sprint(d)
	}
	return "[" + strings.Join(parts, ",") + "]"
}
