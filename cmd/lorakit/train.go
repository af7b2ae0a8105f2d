package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/lorakit/lorakit/internal/progress"
	"github.com/lorakit/lorakit/train"
)

func init() { register(newTrainCmd) }

// trainReporter shows a progress bar (log lines when stderr is not a terminal).
type trainReporter struct {
	cmd *cobra.Command
	bar *progress.Bar
}

func (r *trainReporter) Start(total, done int) {
	r.bar = progress.New(r.cmd.ErrOrStderr(), "train", int64(total), "steps")
	r.bar.Set(int64(done), "")
}

func (r *trainReporter) Step(m train.Metrics, total int) {
	extra := fmt.Sprintf("loss %.4f lr %.3g gnorm %.3g %.1f tok/s", m.Loss, m.LR, m.GradNorm, m.TokensPerSec)
	if m.EvalLoss != nil {
		extra += fmt.Sprintf(" eval %.4f", *m.EvalLoss)
	}
	r.bar.Set(int64(m.Step), extra)
	if m.Step == total {
		r.bar.Finish()
	}
}

func (r *trainReporter) Logf(format string, args ...any) {
	fmt.Fprintf(r.cmd.ErrOrStderr(), format+"\n", args...)
}

func newTrainCmd() *cobra.Command {
	c := train.DefaultConfig()
	var cfgFile string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "train --model DIR --data FILE.jsonl --out DIR",
		Short: "Fine-tune a model with LoRA, QLoRA (NF4 base) or full fine-tuning",
		Long: `Train fine-tunes a Hugging Face Llama-family folder on a JSONL SFT file ({"prompt","response"},
{"prompt","reasoning_content","response"}, {"messages":[...]}, or Alpaca {"instruction","input","output"}),
formatted with the model's chat template; the loss covers only what the assistant says (reasoning included)
and the end-of-turn token unless --train-on-prompt.

--method lora|qlora writes a PEFT adapter folder (adapter_config.json, adapter_model.safetensors);
--method full writes a complete HF folder in the base's dtype. Every output folder also gets
training_args.json, metrics.jsonl and loss.svg. Checkpoints (--save-every) are written atomically to
OUT/checkpoint-N; Ctrl-C saves one and exits; --resume OUT (or OUT/checkpoint-N) continues exactly.
--config FILE.yaml takes the same keys as the flags (flags given on the command line win).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfgFile != "" {
				if err := applyYAML(cmd.Flags(), cfgFile); err != nil {
					return err
				}
			}
			base, err := resolveRef(cmd, "--model", c.Model)
			if err != nil {
				return err
			}
			if base.Ref != nil {
				c.BaseModelID = base.Ref.Repo // what the adapter records as its base, not the cache path
				c.Model = base.Dir
			}
			if c.InitAdapter, err = resolveDir(cmd, "--init-adapter", c.InitAdapter); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			res, err := train.Run(ctx, c, &trainReporter{cmd: cmd})
			if err != nil && !(errors.Is(err, train.ErrInterrupted) && res != nil) {
				return err
			}
			if asJSON {
				if perr := printJSON(cmd.OutOrStdout(), res); perr != nil {
					return perr
				}
			} else {
				w := cmd.OutOrStdout()
				if res.Interrupted {
					fmt.Fprintf(w, "interrupted at step %d; checkpoint %s (resume with --resume %s)\n", res.Steps, res.Checkpoint, res.Checkpoint)
				} else {
					fmt.Fprintf(w, "trained %d steps (%s) in %.1fs, %.1f tok/s; final loss %.4f", res.Steps, res.Method, res.Seconds, res.TokensPerSec, res.Loss)
					if res.EvalLoss != nil {
						fmt.Fprintf(w, ", eval loss %.4f", *res.EvalLoss)
					}
					fmt.Fprintf(w, "\noutput: %s\n", res.Out)
				}
				t := res.Train
				fmt.Fprintf(w, "data: %d examples kept, %d bad lines skipped, %d truncated, %d dropped (no response token left)\n", t.Kept, t.Bad, t.Truncated, t.Dropped)
			}
			if err != nil {
				return withExitCode(130, err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgFile, "config", "", "YAML file with the same keys as the flags")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	f.StringVar(&c.Model, "model", "", "base model folder (Hugging Face layout)")
	f.StringVar(&c.Data, "data", "", "training data (JSONL)")
	f.StringVar(&c.EvalData, "eval-data", "", "evaluation data (JSONL)")
	f.Float64Var(&c.EvalFraction, "eval-fraction", 0, "hold out this fraction of --data for evaluation")
	f.StringVar(&c.Out, "out", "", "output folder")
	f.StringVar(&c.Method, "method", c.Method, "lora | qlora | full")
	f.StringSliceVar(&c.TargetModules, "target-modules", c.TargetModules, "LoRA target modules (q,k,v,o,gate,up,down or *_proj, all-linear)")
	f.IntVar(&c.Rank, "rank", c.Rank, "LoRA rank r")
	f.Float64Var(&c.Alpha, "alpha", c.Alpha, "LoRA alpha (scaling alpha/r)")
	f.Float64Var(&c.Dropout, "dropout", c.Dropout, "LoRA dropout on the adapter input")
	f.BoolVar(&c.UseRSLoRA, "use-rslora", false, "scale by alpha/sqrt(r)")
	f.StringVar(&c.Init, "init", c.Init, "LoRA A init: kaiming (PEFT default) | gaussian")
	f.Float64Var(&c.LR, "lr", c.LR, "peak learning rate")
	f.Float64Var(&c.WeightDecay, "weight-decay", c.WeightDecay, "AdamW decoupled weight decay")
	f.Float64Var(&c.Beta1, "beta1", c.Beta1, "AdamW beta1")
	f.Float64Var(&c.Beta2, "beta2", c.Beta2, "AdamW beta2")
	f.Float64Var(&c.Eps, "eps", c.Eps, "AdamW epsilon")
	f.StringVar(&c.Scheduler, "lr-scheduler", c.Scheduler, "cosine | linear | constant")
	f.IntVar(&c.WarmupSteps, "warmup-steps", 0, "linear warmup steps")
	f.Float64Var(&c.WarmupRatio, "warmup-ratio", 0, "warmup as a fraction of the steps (when --warmup-steps is 0)")
	f.IntVar(&c.BatchSize, "batch-size", c.BatchSize, "examples per micro-batch")
	f.IntVar(&c.GradAccum, "grad-accum", c.GradAccum, "micro-batches per optimizer step")
	f.Float64Var(&c.MaxGradNorm, "max-grad-norm", c.MaxGradNorm, "clip the global gradient norm (0: off)")
	f.IntVar(&c.Epochs, "epochs", c.Epochs, "passes over the data (unless --max-steps)")
	f.IntVar(&c.MaxSteps, "max-steps", 0, "optimizer steps (overrides --epochs)")
	f.Int64Var(&c.Seed, "seed", c.Seed, "seed for init, data order and dropout")
	f.IntVar(&c.EvalEvery, "eval-every", 0, "evaluate every N steps (and at the end)")
	f.IntVar(&c.SaveEvery, "save-every", 0, "checkpoint every N steps")
	f.IntVar(&c.SaveTotal, "save-total-limit", c.SaveTotal, "keep the newest N checkpoints (0: all)")
	f.StringVar(&c.Resume, "resume", "", "resume from OUT or OUT/checkpoint-N")
	f.StringVar(&c.InitAdapter, "init-adapter", "", "start from this PEFT adapter")
	f.BoolVar(&c.TrainOnPrompt, "train-on-prompt", false, "also compute the loss on prompt tokens")
	f.IntVar(&c.MaxSeqLen, "max-seq-len", c.MaxSeqLen, "truncate examples to this many tokens")
	f.BoolVar(&c.Strict, "strict", false, "fail on the first bad data line instead of skipping it")
	f.IntVar(&c.Threads, "threads", 0, "worker threads (0: all CPUs)")
	return cmd
}

// applyYAML sets every flag named in a flat YAML file unless it was given on the command line.
func applyYAML(fs *pflag.FlagSet, path string) error {
	vals, err := train.ReadYAML(path)
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(vals))
	for k := range vals {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var unknown []string
	for _, k := range keys {
		fl := fs.Lookup(k)
		if fl == nil || k == "config" || k == "json" {
			unknown = append(unknown, k)
			continue
		}
		if fl.Changed {
			continue
		}
		if err := fl.Value.Set(vals[k]); err != nil {
			return fmt.Errorf("%s: key %s: %w", path, k, err)
		}
	}
	if len(unknown) > 0 {
		return fmt.Errorf("%s: unknown key(s): %s", path, strings.Join(unknown, ", "))
	}
	return nil
}
