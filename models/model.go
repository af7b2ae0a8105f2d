// Package models loads a model as a whole (config, weights, tokenizer, chat template, generation defaults) from
// a Source, today a Hugging Face checkpoint folder, and generates text with it. Load is the one loader every
// command uses.
package models

import (
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"slices"

	"github.com/lorakit/lorakit/models/chat"
	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/nn"
	"github.com/lorakit/lorakit/models/quant"
	"github.com/lorakit/lorakit/models/safetensors"
	"github.com/lorakit/lorakit/models/tokenizer"
)

// Model is a loaded checkpoint: config, weights, tokenizer, chat template and generation defaults.
type Model struct {
	Dir    string // the source's path
	Config *llama.Config
	Gen    GenerationConfig
	Net    *llama.Model
	Tok    *tokenizer.Tokenizer // nil with LoadOptions.NoTokenizer
	Chat   *chat.Template       // nil with LoadOptions.NoTokenizer
	// EOS ids end generation (see eosIDs); the chat template's end-of-turn marker ends a chat turn (TurnEnd).
	EOS     []int
	weights io.Closer
	arena   func() error // unmaps the weights residentWeights moved; nil when none were
}

// LoadOptions tune Load.
type LoadOptions struct {
	Threads int           // kernel threads (0: all CPUs); ignored when Pool is set
	Pool    *kernels.Pool // share an existing pool
	// Quant "" keeps the stored dtype; "nf4" or "fp4" quantises every decoder linear layer as it loads (block
	// 64), so the f32/bf16 weights are never all resident at once: a frozen 4-bit base (QLoRA, --quant).
	Quant string
	// DoubleQuant quantises the 4-bit blocks' absmax values again (8-bit, block 256), as QLoRA does.
	DoubleQuant bool
	// Frozen, if set, turns each layer that Quant produced into the layer the caller computes with (training
	// multiplies dequantised f32 blocks so that its products see the exact stored weights).
	Frozen func(*nn.Quantized) nn.Linear
	// Head "" or "stored" keeps the LM head's stored dtype; "int8" computes the logits from a row-wise int8 copy
	// (as llama.cpp's Q8_0 output): half of bf16's bytes per decoded token, logits within 1% of the largest
	// |logit| (TestGoldenInt8Head); "auto" is int8 when the decoder's linear layers are 4-bit or 8-bit
	// (NF4/FP4/Q4_0/Q8_0, stored or quantised at load), as llama.cpp keeps the output in 8 bits beside them, and
	// the stored dtype otherwise. The commands
	// that serve or generate pass "auto"; eval and training keep the stored head.
	Head string
	// Compact keeps each quantised linear layer (NF4/FP4/Q4_0/int8/Q8_0) in the layout of the kernels that multiply
	// it only, where the AVX-512 VNNI dot kernels run it (quant.Weight.Compact): half a byte per 4-bit weight and a
	// byte per 8-bit one less resident; and it moves the dense f32/bf16/f16 matrices out of the file mapping into
	// anonymous transparent huge pages (residentWeights), dropping the mapped pages, with the quantised layers'
	// dot layout beside them, so decode streams every weight through 2 MiB pages. For inference (generate, serve, bench): reading the weights back as floats (DoRA's norms,
	// merging) then decodes that layout, slower; training leaves it false.
	Compact bool
	// NoTokenizer loads only config and weights (Tok and Chat stay nil): for weight-only checkpoints such as
	// bench's random ones and merge verification.
	NoTokenizer bool
	// Kind is the kind of checkpoint wanted; another kind is refused with what the folder is (CausalLM, the
	// zero value, refuses a sequence classifier, which has no LM head).
	Kind Kind
}

// Kind is a kind of checkpoint, by its head.
type Kind int

const (
	// CausalLM is a *ForCausalLM: an LM head, for generation, training and perplexity.
	CausalLM Kind = iota
	// SequenceClassifier is a *ForSequenceClassification: a score head read at the last token (reward
	// models, quality and topic classifiers).
	SequenceClassifier
	// AnyKind is either: only the decoder's hidden states are used (embeddings).
	AnyKind
)

// checkKind refuses a checkpoint of another kind than wanted, saying what it is.
func checkKind(path string, cfg *llama.Config, want Kind) error {
	switch {
	case want == SequenceClassifier && !cfg.Classifier():
		return fmt.Errorf("%s is a causal language model (architectures %v), not a sequence classifier: want a *ForSequenceClassification checkpoint (a reward model or classifier, with a score head)", path, cfg.Architectures)
	case want == CausalLM && cfg.Classifier():
		return fmt.Errorf("%s is a sequence classifier (architectures %v, %d label(s)): it has no LM head to generate, train or compute perplexity with; use it as lorakit data score --reward-model or --classifier", path, cfg.Architectures, len(cfg.Labels))
	}
	return nil
}

// Load opens the model at path (a Hugging Face folder; see Open). The weights stay memory-mapped until Close.
func Load(path string, opts LoadOptions) (*Model, error) {
	src, err := Open(path)
	if err != nil {
		return nil, err
	}
	return LoadSource(src, opts)
}

// LoadSource loads a model from src: the one loading sequence every command uses.
func LoadSource(src Source, opts LoadOptions) (*Model, error) {
	lo, err := opts.network()
	if err != nil {
		return nil, err
	}
	cfg, err := src.Config()
	if err != nil {
		return nil, err
	}
	if err := checkKind(src.Path(), cfg, opts.Kind); err != nil {
		return nil, err
	}
	gen, err := src.GenerationConfig()
	if err != nil {
		return nil, err
	}
	m := &Model{Dir: src.Path(), Config: cfg, Gen: gen}
	if !opts.NoTokenizer {
		// A tokenizer larger than vocab_size is tolerated (Forward rejects ids outside the embedding, naming them).
		if m.Tok, m.Chat, err = textOf(src); err != nil {
			return nil, err
		}
	}
	if m.Net, m.weights, err = src.Network(cfg, lo); err != nil {
		return nil, err
	}
	if opts.Head == "auto" && lowBit(m.Net) {
		if err := int8Head(m.Net); err != nil {
			m.Close()
			return nil, fmt.Errorf("models: %s: %w", m.Dir, err)
		}
	}
	if opts.Compact {
		// Each layer was compacted as it loaded (llama.LoadOptions.Compact); the row-major codes it dropped (a
		// stored 4-bit or 8-bit base is read whole) go back to the OS now rather than when the collector runs.
		debug.FreeOSMemory()
		if m.arena, err = residentWeights(m.Net, m.weights); err != nil {
			m.Close()
			return nil, err
		}
	}
	m.EOS = eosIDs(cfg, gen, m.Tok)
	return m, nil
}

// LoadTokenizer reads only the tokenizer and chat template of the folder dir (no config or weights needed), as
// Load reads them: for commands that only tokenize (data check).
func LoadTokenizer(dir string) (*tokenizer.Tokenizer, *chat.Template, error) {
	return textOf(Folder(dir))
}

// textOf is a source's tokenizer and the chat template its tokenizer config carries.
func textOf(src Source) (*tokenizer.Tokenizer, *chat.Template, error) {
	tok, err := src.Tokenizer()
	if err != nil {
		return nil, nil, err
	}
	tc := tok.Config()
	tpl, err := chat.New(tc.ChatTemplate, tc.BOSToken, tc.EOSToken)
	if err != nil {
		return nil, nil, fmt.Errorf("models: %s: chat_template: %w", src.Path(), err)
	}
	return tok, tpl, nil
}

// network turns the options into llama's: the thread pool and the quantisers of the linear layers and the head.
func (o LoadOptions) network() (llama.LoadOptions, error) {
	lo := llama.LoadOptions{Threads: o.Threads, Pool: o.Pool, Compact: o.Compact}
	switch o.Quant {
	case "":
	case "nf4", "fp4":
		t, double, frozen := quant.Type(o.Quant), o.DoubleQuant, o.Frozen
		lo.Quantize = func(module string, d *nn.Dense) (nn.Linear, error) {
			q, err := nn.Quantize(d, t, double)
			if err != nil || frozen == nil {
				return q, err
			}
			return frozen(q), nil
		}
	default:
		return lo, fmt.Errorf("models: quantisation %q is not supported (nf4, fp4)", o.Quant)
	}
	head, err := nn.HeadQuantizer(o.Head)
	if err != nil {
		return lo, fmt.Errorf("models: %w", err)
	}
	lo.QuantizeHead = head
	return lo, nil
}

// lowBit reports whether the decoder's linear layers are stored in 4 or 8 bits by block (the first layer's
// q_proj speaks for all: the loaders quantise every decoder layer alike).
func lowBit(net *llama.Model) bool {
	if len(net.Layers) == 0 {
		return false
	}
	q, ok := net.Layers[0].QProj.(*nn.Quantized)
	return ok && (q.Q.Type == quant.NF4 || q.Q.Type == quant.FP4 || q.Q.Type == quant.Q4_0 || q.Q.Type == quant.Q8_0)
}

// int8Head replaces a dense LM head by its row-wise int8 copy (a tied embedding keeps its table for lookups).
func int8Head(net *llama.Model) error {
	d, ok := net.LMHead.(*nn.Dense)
	if !ok {
		return nil
	}
	q, err := nn.QuantizeInt8(d)
	if err != nil {
		return fmt.Errorf("lm_head: %w", err)
	}
	net.LMHead = q
	return nil
}

// eosIDs is the one end-of-sequence rule: generation_config.json's eos_token_id (one id or a list) when it
// gives one, else config.json's, as transformers' generate reads them; plus the tokenizer's eos_token; ids
// outside the vocabulary dropped, each id once. A chat turn also ends at the template's end-of-turn marker,
// which generation adds for chat prompts (TurnEnd): for a plain prompt it may be an ordinary token (stories260K
// closes a turn with <s>).
func eosIDs(cfg *llama.Config, gen GenerationConfig, tok *tokenizer.Tokenizer) []int {
	eos := slices.Clone(gen.EOSTokenIDs)
	if !gen.Present || len(eos) == 0 {
		eos = append(eos, cfg.EOSTokenIDs...)
	}
	if tok != nil {
		if id, ok := tok.EOS(); ok {
			eos = append(eos, id)
		}
	}
	var out []int
	for _, id := range eos {
		if id >= 0 && id < cfg.VocabSize && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

// Close unmaps the weights; the model must not be used afterwards.
func (m *Model) Close() error {
	var err error
	if m.weights != nil {
		err = m.weights.Close()
		m.weights = nil
	}
	if m.arena != nil {
		err = errors.Join(err, m.arena())
		m.arena = nil
	}
	return err
}

// Checkpoint is the safetensors checkpoint the weights are mapped from (to read a tensor's stored dtype), or
// nil when the source is not one.
func (m *Model) Checkpoint() *safetensors.Checkpoint {
	ck, _ := m.weights.(*safetensors.Checkpoint)
	return ck
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
