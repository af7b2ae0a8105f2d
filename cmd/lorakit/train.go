package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/lorakit/lorakit/internal/progress"
	"github.com/lorakit/lorakit/train"
)

func init() { register(newTrainCmd) }

// trainReporter shows training progress in the one progress style, with the loss smoothed over recent
// steps (a single step's loss is noise) beside the last eval loss.
type trainReporter struct {
	w     io.Writer
	quiet bool // only the bar: no model and data lines (the demo prints its own)
	bar   *progress.Bar
	loss  progress.EMA
	eval  string
}

func (r *trainReporter) Start(total, done int) {
	r.bar = progress.New(r.w, "train", int64(total), "steps")
	r.bar.Resume(int64(done))
	r.bar.Set(int64(done), "")
}

func (r *trainReporter) Step(m train.Metrics, total int) {
	if m.EvalLoss != nil || m.GeneralPPL != nil {
		r.eval = ""
	}
	if m.EvalLoss != nil {
		r.eval = fmt.Sprintf("  eval %.4f", *m.EvalLoss)
	}
	if m.GeneralPPL != nil {
		r.eval += fmt.Sprintf("  general ppl %.4g", *m.GeneralPPL)
	}
	extra := fmt.Sprintf("loss %.4f  lr %.3g  %.0f tok/s%s", r.loss.Add(m.Loss), m.LR, m.TokensPerSec, r.eval)
	r.bar.Set(int64(m.Step), extra)
	if m.Step == total {
		r.bar.Finish()
	}
}

func (r *trainReporter) Logf(format string, args ...any) {
	if r.quiet {
		return
	}
	fmt.Fprintf(r.w, format+"\n", args...)
}

// close ends the bar: the final line when training completed, nothing more when it stopped.
func (r *trainReporter) close(err error) {
	if r.bar == nil {
		return
	}
	if err != nil {
		r.bar.Stop()
		return
	}
	r.bar.Finish()
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

--method lora|qlora writes a PEFT adapter folder (adapter_config.json, adapter_model.safetensors); --use-dora
(or --method dora) trains DoRA on top, as PEFT's use_dora (lora_magnitude_vector in the adapter);
--method full writes a complete HF folder in the base's dtype. Every output folder also gets
training_args.json, metrics.jsonl and loss.svg. Checkpoints (--save-every) are written atomically to
OUT/checkpoint-N; Ctrl-C saves one and exits; --resume OUT (or OUT/checkpoint-N) continues exactly.
--config FILE.yaml takes the flags as keys (max_steps or max-steps), nested YAML in the shapes TRL
(SFTConfig), axolotl and mlx-lm configs use for the settings lorakit has (learning_rate, lora_r,
micro_batch_size, sequence_len, datasets: [{path}], iters, lora_parameters: {rank, scale, dropout, keys},
...); keys lorakit does not support are named in a warning, and flags given on the command line win. The
flag names of those tools are accepted too (each is listed beside the flag it means).
--data DIR (mlx-lm's data folder) reads DIR/train.jsonl, and DIR/valid.jsonl as eval data when present.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fs := cmd.Flags()
			if cfgFile != "" {
				if err := applyTrainConfig(fs, cfgFile, cmd.ErrOrStderr()); err != nil {
					return err
				}
			}
			c.Data, c.EvalData = trainDataDir(c.Data, c.EvalData, c.EvalFraction)
			if c.Resume != "" {
				if err := resumeSettings(fs, &c); err != nil {
					return err
				}
			}
			if c.Method == "dora" { // PEFT has no DoRA method: it is LoRA with use_dora
				c.Method, c.UseDoRA = string(train.LoRA), true
			}
			if err := checkTrainFlags(fs, c); err != nil {
				return err
			}
			rep := &trainReporter{w: cmd.ErrOrStderr()}
			return interruptible(cmd, func(ctx context.Context) (string, error) {
				base, err := resolveRef(cmd, "--model", c.Model)
				if err != nil {
					return "", err
				}
				if base.Ref != nil {
					c.BaseModelID = base.Ref.Repo // what the adapter records as its base, not the cache path
					c.Model = base.Dir
				}
				if c.InitAdapter, err = resolveDir(cmd, "--init-adapter", c.InitAdapter); err != nil {
					return "", err
				}
				res, err := train.Run(ctx, c, rep)
				rep.close(err)
				if err != nil && !(errors.Is(err, train.ErrInterrupted) && res != nil) {
					return "", err
				}
				if res.Interrupted {
					if asJSON {
						printJSON(cmd.OutOrStdout(), res)
					}
					return fmt.Sprintf("kept checkpoint %s at step %d; resume with: lorakit train --resume %s", res.Checkpoint, res.Steps, res.Checkpoint), err
				}
				if asJSON {
					return "", printJSON(cmd.OutOrStdout(), res)
				}
				w := cmd.OutOrStdout()
				fmt.Fprintf(w, "trained %d steps (%s) in %.1fs, %.1f tok/s; final loss %.4f", res.Steps, res.Method, res.Seconds, res.TokensPerSec, res.Loss)
				if res.EvalLoss != nil {
					fmt.Fprintf(w, ", eval loss %.4f", *res.EvalLoss)
				}
				fmt.Fprintf(w, "\noutput: %s\n", res.Out)
				if res.GeneralPPL != nil && res.GeneralBasePPL != nil {
					fmt.Fprintf(w, "general text %s: perplexity %.4g before training, %.4g after (%+.1f%%)\n", c.GeneralEval,
						*res.GeneralBasePPL, *res.GeneralPPL, 100*(*res.GeneralPPL / *res.GeneralBasePPL - 1))
				}
				t := res.Train
				fmt.Fprintf(w, "data: %d examples kept, %d bad lines skipped, %d truncated, %d dropped (no response token left)\n", t.Kept, t.Bad, t.Truncated, t.Dropped)
				return "the training had completed: " + res.Out, nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgFile, "config", "", "YAML file: the flags as keys, or a TRL, axolotl or mlx-lm config")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	f.StringVar(&c.Model, "model", "", "base model folder (Hugging Face layout)")
	f.StringVar(&c.Data, "data", "", "training data (JSONL)")
	f.StringVar(&c.EvalData, "eval-data", "", "evaluation data (JSONL)")
	f.Float64Var(&c.EvalFraction, "eval-fraction", 0, "hold out this fraction of --data for evaluation")
	f.StringVar(&c.Out, "out", "", "output folder")
	f.StringVar(&c.Method, "method", c.Method, "lora | qlora | full | dora (lora with --use-dora)")
	f.StringSliceVar(&c.TargetModules, "target-modules", c.TargetModules, "LoRA target modules (q,k,v,o,gate,up,down or *_proj, all-linear)")
	f.IntVar(&c.Rank, "rank", c.Rank, "LoRA rank r")
	f.Float64Var(&c.Alpha, "alpha", c.Alpha, "LoRA alpha (scaling alpha/r)")
	f.Float64Var(&c.Dropout, "dropout", c.Dropout, "LoRA dropout on the adapter input")
	f.BoolVar(&c.UseRSLoRA, "use-rslora", false, "scale by alpha/sqrt(r)")
	f.BoolVar(&c.UseDoRA, "use-dora", false, "DoRA (PEFT's use_dora): train a magnitude per output row beside the LoRA factors (--method dora = lora with this)")
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
	f.StringVar(&c.Resume, "resume", "", "resume from OUT or OUT/checkpoint-N (its settings are restored from OUT/training_args.json)")
	f.BoolVar(&c.Force, "force", false, "replace the output of an earlier training run at --out (never a folder holding other files)")
	f.StringVar(&c.InitAdapter, "init-adapter", "", "start from this PEFT adapter")
	f.BoolVar(&c.TrainOnPrompt, "train-on-prompt", false, "also compute the loss on prompt tokens")
	f.IntVar(&c.MaxSeqLen, "max-seq-len", c.MaxSeqLen, "truncate examples to this many tokens")
	f.BoolVar(&c.Packing, "packing", false, "pack several examples into each row of --max-seq-len tokens (each attends only to itself); --batch-size then counts rows")
	f.StringVar(&c.TrainTokens, "train-tokens", "", "also train the embedding (and untied LM-head) rows of these special tokens, saved as PEFT's trainable_token_indices: auto (those found untrained) or a list such as '<|eot_id|>,</s>'")
	f.StringVar(&c.GeneralEval, "general-eval", "", "text unrelated to the task (plain lines or JSONL with \"text\"): the base's and the trained model's perplexity on it before training and at every eval (forgetting, measured)")
	f.BoolVar(&c.GradientCheckpointing, "gradient-checkpointing", false, "keep only each decoder layer's input and recompute its activations in the backward pass: less memory for long sequences and full fine-tuning, one more forward pass of time")
	f.BoolVar(&c.Strict, "strict", false, "fail on the first bad data line instead of skipping it")
	f.IntVar(&c.Threads, "threads", 0, "worker threads (0: all CPUs)")
	noteAliases(f)
	f.SetNormalizeFunc(normalizeTrainFlag)
	return cmd
}

// resumeMayChange are the settings a resumed run may change: how long it runs, how often it saves and
// evaluates, where it writes and how many threads it uses. Anything else changes the training itself.
var resumeMayChange = map[string]bool{"epochs": true, "max_steps": true, "save_every": true, "save_total_limit": true,
	"eval_every": true, "threads": true, "strict": true, "out": true, "force": true}

// resumeSettings makes --resume DIR alone enough: every setting comes from the run's training_args.json, a
// flag that may change on resume overrides it, and one that contradicts the checkpoint is refused naming
// both values.
func resumeSettings(fs *pflag.FlagSet, c *train.Config) error {
	ck, path, err := train.ResumeConfig(c.Resume)
	if err != nil {
		return err
	}
	given := configFields(*c)
	saved := configFields(ck)
	var bad []string
	fs.Visit(func(f *pflag.Flag) {
		key := strings.ReplaceAll(f.Name, "-", "_")
		if _, known := given[key]; !known || resumeMayChange[key] || key == "resume" {
			return
		}
		if g, s := given[key], saved[key]; !bytes.Equal(g, s) {
			was := string(s)
			if was == "" {
				was = "unset"
			}
			bad = append(bad, fmt.Sprintf("--%s %s (the checkpoint has %s)", f.Name, f.Value.String(), was))
		}
	})
	if len(bad) > 0 {
		return fmt.Errorf("train --resume %s: %s contradict(s) the run being resumed (%s); drop the flag to keep the checkpoint's value, or start a new run with --out elsewhere",
			c.Resume, strings.Join(bad, ", "), path)
	}
	resume := c.Resume
	out := filepath.Dir(path) // the folder of training_args.json is the run's output folder
	merged := ck
	fs.Visit(func(f *pflag.Flag) {
		if key := strings.ReplaceAll(f.Name, "-", "_"); resumeMayChange[key] {
			setField(&merged, key, given[key])
		}
	})
	if !fs.Changed("out") {
		merged.Out = out
	}
	merged.Resume, merged.Force = resume, c.Force
	*c = merged
	return nil
}

// configFields maps each training_args.json key to its JSON value, target modules normalised.
func configFields(c train.Config) map[string]json.RawMessage {
	if t, err := train.NormalizeTargets(c.TargetModules); err == nil {
		c.TargetModules = t
	}
	b, _ := json.Marshal(c)
	m := map[string]json.RawMessage{}
	json.Unmarshal(b, &m)
	// omitempty keys still name a setting
	for _, k := range []string{"eval_data", "target_modules", "rank", "alpha", "init", "init_adapter"} {
		if _, ok := m[k]; !ok {
			m[k] = nil
		}
	}
	return m
}

// setField sets one JSON-named field of c.
func setField(c *train.Config, key string, v json.RawMessage) {
	if v == nil {
		return
	}
	b, _ := json.Marshal(map[string]json.RawMessage{key: v})
	json.Unmarshal(b, c)
}

// loraOnlyFlags are the train flags that shape a LoRA adapter; they mean nothing to full fine-tuning.
var loraOnlyFlags = []string{"rank", "alpha", "dropout", "use-rslora", "use-dora", "init", "target-modules", "init-adapter"}

// checkTrainFlags refuses flags that would be silently ignored, naming why.
func checkTrainFlags(fs *pflag.FlagSet, c train.Config) error {
	if c.Method == "full" {
		for _, n := range loraOnlyFlags {
			if fs.Changed(n) {
				return fmt.Errorf("train: --%s does not apply to --method full (full fine-tuning trains every weight; --%s shapes a LoRA adapter, for --method lora or qlora)", n, n)
			}
		}
	}
	if fs.Changed("eval-every") && c.EvalData == "" && c.EvalFraction == 0 && c.GeneralEval == "" {
		return fmt.Errorf("train: --eval-every needs held-out data: give --eval-data FILE, --eval-fraction F or --general-eval FILE")
	}
	if fs.Changed("save-total-limit") && c.SaveEvery == 0 {
		return fmt.Errorf("train: --save-total-limit applies to periodic checkpoints: give --save-every N")
	}
	if fs.Changed("warmup-ratio") && c.WarmupSteps > 0 {
		return fmt.Errorf("train: --warmup-ratio does not apply when --warmup-steps is given; give one of them")
	}
	return nil
}
