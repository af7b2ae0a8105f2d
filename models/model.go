// Package models opens Hugging Face checkpoint folders as a whole (config, weights, tokenizer, chat template,
// generation defaults) and generates text with them.
package models

import (
	"errors"
	"fmt"
	"slices"

	"github.com/lorakit/lorakit/models/chat"
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/nn"
	"github.com/lorakit/lorakit/models/quant"
	"github.com/lorakit/lorakit/models/safetensors"
	"github.com/lorakit/lorakit/models/tokenizer"
)

// Model is a loaded checkpoint folder.
type Model struct {
	Dir    string
	Config *llama.Config
	Gen    GenerationConfig
	Net    *llama.Model
	Tok    *tokenizer.Tokenizer
	Chat   *chat.Template
	EOS    []int // generation stops at any of these: generation_config ∪ config.json ∪ the tokenizer's eos_token
	ckpt   *safetensors.Checkpoint
}

// LoadOptions tune Load.
type LoadOptions struct {
	Threads int    // kernel threads (0: all CPUs)
	Quant   string // "" keeps the stored dtype; "nf4" or "fp4" quantises every linear layer at load
	// Head "" keeps the LM head's stored dtype; "int8" computes the logits from a row-wise int8 copy (as
	// llama.cpp's Q8_0 output): half of bf16's bytes per decoded token, logits within ~1e-3 relative.
	Head string
}

// Load opens a model folder. The weights stay memory-mapped until Close.
func Load(dir string, opts LoadOptions) (*Model, error) {
	cfg, err := llama.LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	gen, err := LoadGenerationConfig(dir)
	if err != nil {
		return nil, err
	}
	tok, err := tokenizer.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("models: %s: %w", dir, err)
	}
	// A tokenizer larger than vocab_size is tolerated (Forward rejects ids outside the embedding, naming them).
	tc := tok.Config()
	tpl, err := chat.New(tc.ChatTemplate, tc.BOSToken, tc.EOSToken)
	if err != nil {
		return nil, fmt.Errorf("models: %s: chat_template: %w", dir, err)
	}
	lo := llama.LoadOptions{Threads: opts.Threads}
	switch opts.Quant {
	case "":
	case "nf4", "fp4":
		t := quant.Type(opts.Quant)
		lo.Quantize = func(module string, d *nn.Dense) (nn.Linear, error) { return nn.Quantize(d, t, false) }
	default:
		return nil, fmt.Errorf("models: quantisation %q is not supported (nf4, fp4)", opts.Quant)
	}
	head, err := nn.HeadQuantizer(opts.Head)
	if err != nil {
		return nil, fmt.Errorf("models: %w", err)
	}
	lo.QuantizeHead = head
	// Weights saved quantised by bitsandbytes (or lorakit quantize) load as they are.
	lo.LoadLinear = func(ck *safetensors.Checkpoint, module string, out, in int) (nn.Linear, bool, error) {
		q, ok, err := quant.FromCheckpoint(ck, module+".weight")
		if err != nil || !ok {
			return nil, false, err
		}
		return &nn.Quantized{Q: q}, true, nil
	}
	ck, err := safetensors.OpenCheckpoint(dir)
	if err != nil {
		return nil, fmt.Errorf("models: %w", err)
	}
	net, err := llama.Load(ck, cfg, lo)
	if err != nil {
		ck.Close()
		return nil, err
	}
	m := &Model{Dir: dir, Config: cfg, Gen: gen, Net: net, Tok: tok, Chat: tpl, ckpt: ck}
	eos := gen.EOSTokenIDs
	if !gen.Present || len(eos) == 0 {
		eos = append(eos, cfg.EOSTokenIDs...)
	}
	if id, ok := tok.EOS(); ok {
		eos = append(eos, id)
	}
	for _, id := range eos {
		if id >= 0 && id < cfg.VocabSize && !slices.Contains(m.EOS, id) {
			m.EOS = append(m.EOS, id)
		}
	}
	return m, nil
}

// Close unmaps the weights; the model must not be used afterwards.
func (m *Model) Close() error {
	if m.ckpt == nil {
		return nil
	}
	err := m.ckpt.Close()
	m.ckpt = nil
	return err
}

// EncodeChat renders messages through the chat template and encodes the result without adding special tokens
// (the template writes them), as transformers' apply_chat_template(tokenize=True) does.
func (m *Model) EncodeChat(msgs []chat.Message, addGenerationPrompt bool) ([]int, error) {
	text, err := m.Chat.Render(msgs, addGenerationPrompt)
	if err != nil {
		return nil, err
	}
	return m.Tok.Encode(text, false), nil
}

// EncodePrompt encodes plain text with the tokenizer's special tokens (BOS when add_bos_token).
func (m *Model) EncodePrompt(text string) []int { return m.Tok.Encode(text, true) }

var errEmptyPrompt = errors.New("models: generate: empty prompt")
