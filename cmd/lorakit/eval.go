package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/lorakit/lorakit/train"
)

func init() { register(newEvalCmd) }

func newEvalCmd() *cobra.Command {
	var c train.EvalConfig
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "eval --model DIR [--adapter DIR] --data FILE.jsonl [--general TEXT]",
		Short: "Score a model (and adapter) on SFT data: loss, perplexity and exact match",
		Long: `Eval reads a JSONL SFT file in any of the training formats. Loss and perplexity are the mean
cross-entropy over the response tokens (what training optimises). Exact match greedily generates the answer
to each example's prompt and compares it with the reference response after trimming whitespace
(a leading <think>…</think> block in the generation is ignored when the reference has none).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if c.Model == "" || (c.Data == "" && c.General == "") {
				return fmt.Errorf("--model and --data (or --general) are required")
			}
			if c.NoGenerate && cmd.Flags().Changed("max-new-tokens") {
				return fmt.Errorf("eval: --max-new-tokens does not apply with --no-generate (it is the budget of the exact-match generation)")
			}
			var res *train.EvalResult
			err := interruptible(cmd, func(ctx context.Context) (string, error) {
				var err error
				if c.Model, err = resolveDir(cmd, "--model", c.Model); err != nil {
					return "", err
				}
				if c.Adapter, err = resolveDir(cmd, "--adapter", c.Adapter); err != nil {
					return "", err
				}
				res, err = train.Evaluate(ctx, c)
				return "eval writes nothing", err
			})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			if c.Data != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "loss %.4f  ppl %.3f  exact_match %.4f  n %d  (response tokens %d, bad lines %d)\n",
					res.Loss, res.PPL, res.ExactMatch, res.N, res.Tokens, res.Bad)
			}
			if res.GeneralPPL != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "general text %s: perplexity %.4g without the adapter, %.4g with it (%+.1f%%)\n",
					c.General, *res.GeneralBasePPL, *res.GeneralPPL, 100*(*res.GeneralPPL / *res.GeneralBasePPL - 1))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.Model, "model", "", "model folder")
	f.StringVar(&c.Adapter, "adapter", "", "PEFT LoRA adapter folder")
	f.StringVar(&c.Data, "data", "", "JSONL data")
	f.StringVar(&c.General, "general", "", "text unrelated to the task (plain lines or JSONL with \"text\"): perplexity with and without the adapter (forgetting)")
	f.IntVar(&c.MaxSeqLen, "max-seq-len", 4096, "truncate examples to this many tokens")
	f.IntVar(&c.MaxNewTokens, "max-new-tokens", 0, "generation budget for exact match (0: reference length + 32)")
	f.StringVar(&c.Quant, "quant", "auto", "base weights: nf4 (as QLoRA training holds them), none, or auto (nf4 when the adapter's training_args.json says qlora)")
	f.BoolVar(&c.NoGenerate, "no-generate", false, "skip exact match (loss only)")
	f.BoolVar(&c.Strict, "strict", false, "fail on bad lines")
	f.IntVar(&c.Threads, "threads", 0, "worker threads (0: all CPUs)")
	f.BoolVar(&asJSON, "json", false, "print {\"loss\",\"ppl\",\"exact_match\",\"n\"} as JSON")
	return cmd
}
