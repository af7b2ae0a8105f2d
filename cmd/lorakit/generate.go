package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"

	"github.com/spf13/cobra"

	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/chat"
)

func init() { register(newGenerateCmd) }

func newGenerateCmd() *cobra.Command {
	var (
		modelDir, adapterDir, prompt, quantType, headType string
		useChat, asJSON, ignoreEOS                        bool
		maxTokens, topK, threads                          int
		temperature, topP, minP, repPenalty               float32
		seed                                              int64
		stops                                             []string
	)
	cmd := &cobra.Command{
		Use:   "generate --model DIR --prompt TEXT [--chat] [--max-tokens N] [--temperature T] [--json]",
		Short: "Generate a continuation of a prompt with a model folder (optionally with a LoRA adapter)",
		Long: `Generate encodes --prompt (with the tokenizer's special tokens, e.g. BOS) or, with --chat, renders it as one
user message through the model's chat template with the generation prompt, then generates up to --max-tokens
new tokens. Generation stops at an EOS id (generation_config.json, config.json and the tokenizer's eos_token)
or a --stop string; with --chat also at the chat template's end-of-turn marker (e.g. <|im_end|>, <|eot_id|>,
stories260K's <s>), even with --ignore-eos. Sampling defaults come from generation_config.json (greedy when it does not set
do_sample); any sampling flag overrides them, and --temperature 0 is greedy.

The new text is streamed to stdout. With --json one object is printed instead:
  {"prompt_ids":[...],"ids":[...new token ids...],"text":"...new text...","finish_reason":"stop|length"}`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if modelDir == "" {
				return errors.New("generate: --model DIR is required")
			}
			if !cmd.Flags().Changed("prompt") {
				return errors.New("generate: --prompt TEXT is required")
			}
			if maxTokens < 0 {
				return fmt.Errorf("generate: --max-tokens %d must be positive", maxTokens)
			}
			var err error
			if modelDir, err = resolveDir(cmd, "--model", modelDir); err != nil {
				return err
			}
			if adapterDir, err = resolveDir(cmd, "--adapter", adapterDir); err != nil {
				return err
			}
			m, err := models.Load(modelDir, models.LoadOptions{Threads: threads, Quant: quantType, Head: headType, Compact: true})
			if err != nil {
				return err
			}
			defer m.Close()
			o := models.GenerateOptions{MaxTokens: maxTokens, Sampling: m.Gen.Sampling(), Stop: stops, IgnoreEOS: ignoreEOS,
				Chat: useChat}
			f := cmd.Flags()
			if f.Changed("temperature") {
				o.Sampling.Temperature = temperature
				if temperature > 0 && !m.Gen.DoSample { // sampling asked for on a greedy-default model
					o.Sampling.TopK, o.Sampling.TopP, o.Sampling.MinP = 0, 1, 0
				}
			}
			if f.Changed("top-p") {
				o.Sampling.TopP = topP
			}
			if f.Changed("top-k") {
				o.Sampling.TopK = topK
			}
			if f.Changed("min-p") {
				o.Sampling.MinP = minP
			}
			if f.Changed("repetition-penalty") {
				o.Sampling.RepetitionPenalty = repPenalty
			}
			o.Sampling.Seed = seed
			if o.Sampling.Temperature < 0 || o.Sampling.TopP < 0 || o.Sampling.TopP > 1 || o.Sampling.TopK < 0 ||
				o.Sampling.MinP < 0 || o.Sampling.MinP > 1 || o.Sampling.RepetitionPenalty < 0 {
				return errors.New("generate: sampling flag out of range (temperature ≥ 0, 0 ≤ top-p ≤ 1, top-k ≥ 0, 0 ≤ min-p ≤ 1, repetition-penalty ≥ 0)")
			}
			if adapterDir != "" {
				a, err := m.LoadAdapter(adapterDir)
				if err != nil {
					return fmt.Errorf("generate: %w", err)
				}
				o.Adapter = a
			}
			var ids []int
			if useChat {
				if ids, err = m.EncodeChat([]chat.Message{{Role: "user", Content: prompt}}, true); err != nil {
					return fmt.Errorf("generate: chat template: %w", err)
				}
			} else {
				ids = m.EncodePrompt(prompt)
			}
			out := bufio.NewWriter(cmd.OutOrStdout())
			defer out.Flush()
			if !asJSON {
				o.OnText = func(s string) error {
					if _, err := out.WriteString(s); err != nil {
						return err
					}
					return out.Flush()
				}
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
			defer stop()
			res, err := m.Generate(ctx, ids, o)
			if err != nil {
				return fmt.Errorf("generate: %w", err)
			}
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetEscapeHTML(false)
				return enc.Encode(res)
			}
			_, err = out.WriteString("\n")
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&modelDir, "model", "", "model folder (config.json, safetensors, tokenizer.json)")
	f.StringVar(&adapterDir, "adapter", "", "PEFT LoRA adapter folder to apply")
	f.StringVar(&prompt, "prompt", "", "prompt text")
	f.BoolVar(&useChat, "chat", false, "wrap the prompt as one user message through the chat template")
	f.IntVar(&maxTokens, "max-tokens", 128, "maximum number of new tokens")
	f.Float32Var(&temperature, "temperature", 0, "sampling temperature (0: greedy; default from generation_config.json)")
	f.Float32Var(&topP, "top-p", 1, "nucleus sampling: keep the most likely tokens up to this total probability")
	f.IntVar(&topK, "top-k", 0, "keep only the K most likely tokens (0: off)")
	f.Float32Var(&minP, "min-p", 0, "drop tokens less likely than min-p × the most likely one (0: off)")
	f.Float32Var(&repPenalty, "repetition-penalty", 1, "penalise tokens already in the context (1: off)")
	f.Int64Var(&seed, "seed", 0, "random seed (same seed, same output)")
	f.StringArrayVar(&stops, "stop", nil, "stop when the text contains this string (repeatable)")
	f.BoolVar(&ignoreEOS, "ignore-eos", false, "do not stop at EOS tokens")
	f.IntVar(&threads, "threads", 0, "kernel threads (0: all CPUs)")
	f.StringVar(&quantType, "quant", "", `quantise the linear layers at load: "nf4" or "fp4"`)
	f.StringVar(&headType, "head", "auto", headUsage)
	f.BoolVar(&asJSON, "json", false, `print one JSON object {"prompt_ids","ids","text","finish_reason"}`)
	return cmd
}
