// Package backend is the model behind the serving engine: it adapts a loaded lorakit model folder
// (models.Model) to what the HTTP server and the batching engine need — forward passes over batched rows,
// tokenizer and chat template, samplers — and loads adapters into their serving layout. The HTTP package
// (serve) reaches models only through it.
package backend

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/chat"
	"github.com/lorakit/lorakit/models/grammar"
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/nn"
	"github.com/lorakit/lorakit/models/safetensors"
	"github.com/lorakit/lorakit/models/sample"
	"github.com/lorakit/lorakit/models/stop"
	"github.com/lorakit/lorakit/serve/engine"
	"github.com/lorakit/lorakit/serve/openai"
)

// FromModel adapts a loaded lorakit model folder to the server (it implements serve.Model). The server never
// mutates its weights. Adapters and the KV cache are kept in f32 for an f32 base and in bf16 otherwise (see
// FromModelOptions).
func FromModel(m *models.Model) *Backend { b, _ := FromModelOptions(m, Options{}); return b }

// FromModelDType is FromModel with the storage type of adapter weights (Options.AdapterDType).
func FromModelDType(m *models.Model, adapterDType string) (*Backend, error) {
	return FromModelOptions(m, Options{AdapterDType: adapterDType})
}

// Options are the storage types FromModelOptions serves with; "" is "auto".
type Options struct {
	// AdapterDType is the storage type of adapter weights: "f32", "bf16", or "auto" (f32 when the base's linear
	// layers are f32, else bf16 — vLLM's lora_dtype "auto"). Decoding is memory-bound, so bf16 adapters halve the
	// bytes each decode row reads for its LoRA; the products are still computed in f32.
	AdapterDType string
	// KVCacheDType is the element type of every sequence's KV cache: "f32", "bf16", or "auto" (f32 when the
	// base's linear layers are f32, else bf16: the compute dtype of a bf16, f16 or quantised model, as vLLM's
	// kv_cache_dtype "auto" follows the model's). bf16 halves the cache's memory and the bytes attention reads.
	KVCacheDType string
}

// FromModelOptions is FromModel with the storage types of o.
func FromModelOptions(m *models.Model, o Options) (*Backend, error) {
	b := &Backend{m: m}
	f32Base := false
	if l, ok := m.Net.Linear("model.layers.0.self_attn.q_proj"); ok {
		if d, ok := l.(*nn.Dense); ok && (d.DType == safetensors.DType("F32") || d.DType == "") {
			f32Base = true
		}
	}
	switch strings.ToLower(o.AdapterDType) {
	case "", "auto":
		b.bf16 = !f32Base
	case "f32", "float32":
	case "bf16", "bfloat16":
		b.bf16 = true
	default:
		return nil, fmt.Errorf("adapter dtype %q is not one of auto, f32, bf16", o.AdapterDType)
	}
	switch strings.ToLower(o.KVCacheDType) {
	case "", "auto":
		if !f32Base {
			b.kv = llama.KVBF16
		}
	default:
		var err error
		if b.kv, err = llama.ParseKVDType(o.KVCacheDType); err != nil {
			return nil, fmt.Errorf("%w (or auto)", err)
		}
	}
	return b, nil
}

// Backend is a loaded model served by the engine (serve.Model).
type Backend struct {
	m         *models.Model
	bf16      bool          // adapters stored as bf16
	kv        llama.KVDType // the KV caches' element type
	vocabOnce sync.Once
	vocab     *grammar.Vocab // token bytes for constrained generation
	logits    llama.Logits   // Forward's results, reused step to step (engine.Backend allows it)
}

// KVCacheDType is the element type of the sequences' KV caches.
func (b *Backend) KVCacheDType() llama.KVDType { return b.kv }

func (b *Backend) NewState(maxLen int) engine.State { return b.m.Net.NewCacheDType(maxLen, b.kv) }

// KVPool is the pool of KV blocks an engine's sequences take their caches from (engine.PagedBackend): at most
// blocks blocks (0: no bound) of the cache's element type, shared by reference between sequences with a common
// prefix.
func (b *Backend) KVPool(blocks int) (engine.BlockPool, error) {
	if llama.KVBlockSize != engine.KVBlockSize {
		return nil, fmt.Errorf("backend: the model's KV blocks hold %d positions, the engine's %d", llama.KVBlockSize, engine.KVBlockSize)
	}
	return kvPool{b.m.Net.NewKVPool(b.kv, blocks)}, nil
}

// kvPool is a llama.KVPool as the engine sees it.
type kvPool struct{ *llama.KVPool }

func (p kvPool) NewState(maxLen int) engine.State { return p.NewCache(maxLen) }

// ExportKV shares positions [from, to) (whole blocks) of a sequence's KV cache (engine.KVBlocks, for prefix
// caching): no copy, the blocks are held until the share is released.
func (b *Backend) ExportKV(s engine.State, from, to int) (engine.KV, error) {
	c, ok := s.(*llama.KVCache)
	if !ok {
		return nil, fmt.Errorf("backend: foreign state %T", s)
	}
	return c.Share(from, to)
}

// ImportKV attaches blocks ExportKV shared to a sequence's KV cache, in order.
func (b *Backend) ImportKV(s engine.State, kvs []engine.KV) error {
	c, ok := s.(*llama.KVCache)
	if !ok {
		return fmt.Errorf("backend: foreign state %T", s)
	}
	shares := make([]*llama.KVBlocks, len(kvs))
	for i, kv := range kvs {
		if shares[i], ok = kv.(*llama.KVBlocks); !ok {
			return fmt.Errorf("backend: foreign KV blocks %T", kv)
		}
	}
	return c.Attach(shares...)
}

func (b *Backend) VocabSize() int { return b.m.Config.VocabSize }

// KVBytesPerToken is the KV cache memory one token position takes: keys and values of every layer, in the
// cache's element type.
func (b *Backend) KVBytesPerToken() int64 {
	c := b.m.Config
	return int64(2*c.NumHiddenLayers*c.KVDim()) * int64(b.kv.Size())
}

func (b *Backend) Forward(rows []engine.Row) ([][]float32, error) {
	seqs := make([]llama.Seq, len(rows))
	for i, r := range rows {
		c, ok := r.State.(*llama.KVCache)
		if !ok {
			return nil, fmt.Errorf("backend: row %d has a foreign state %T", i, r.State)
		}
		seqs[i] = llama.Seq{Tokens: r.Tokens, Cache: c, AllLogits: r.AllLogits}
		if r.Adapter != nil {
			if seqs[i].Adapter, ok = r.Adapter.(llama.Delta); !ok {
				return nil, fmt.Errorf("backend: row %d has a foreign adapter %T", i, r.Adapter)
			}
		}
	}
	out, err := b.m.Net.ForwardInto(&b.logits, seqs)
	if err != nil {
		return nil, err
	}
	logits := make([][]float32, len(out))
	for i, o := range out {
		if len(o) == 0 {
			return nil, fmt.Errorf("backend: no logits for row %d", i)
		}
		if rows[i].AllLogits {
			logits[i] = slices.Concat(o...)
			continue
		}
		logits[i] = o[len(o)-1]
	}
	return logits, nil
}

func (b *Backend) Encode(text string, addSpecial bool) []int {
	if addSpecial {
		return b.m.EncodePrompt(text)
	}
	return b.m.Tok.Encode(text, false)
}

// EncodeLimit is Encode giving up past limit ids (ok false): the server refuses an over-long prompt without
// tokenizing all of it.
func (b *Backend) EncodeLimit(text string, addSpecial bool, limit int) (ids []int, ok bool) {
	return b.m.Tok.EncodeLimit(text, addSpecial, limit)
}

func (b *Backend) Decode(ids []int) string { return b.m.Tok.Decode(ids, true) }

// NewDecoder starts a streaming detokeniser primed with the prompt, so the first generated token decodes in
// context (a SentencePiece "▁word" keeps its leading space, as in decode(prompt+output) − decode(prompt)).
func (b *Backend) NewDecoder(prompt []int) engine.Decoder {
	d := b.m.Tok.NewStreamDecoder(true)
	d.Prime(prompt)
	return d
}

func (b *Backend) TokenText(id int) string { return b.m.Tok.DecodeRaw([]int{id}, false) }

// TokenBytes is what token id adds to decoded text after other text (tokenizer.TokenBytes).
func (b *Backend) TokenBytes(id int) []byte {
	all := b.m.Tok.TokenBytes()
	if id < 0 || id >= len(all) {
		return nil
	}
	return all[id]
}

// Pieces is the bytes each id contributes to the decoded text (tokenizer.Pieces).
func (b *Backend) Pieces(ids []int) [][]byte { return b.m.Tok.Pieces(ids) }

func (b *Backend) RenderChat(msgs []openai.Message, tools, kwargs json.RawMessage) (string, error) {
	if tools == nil && !usesTools(msgs) {
		cm := make([]chat.Message, len(msgs))
		for i, m := range msgs {
			cm[i] = chat.Message{Role: m.Role, Content: m.Content, ReasoningContent: m.ReasoningContent}
		}
		if len(kwargs) == 0 {
			return b.m.Chat.Render(cm, true)
		}
		raw, err := json.Marshal(cm)
		if err != nil {
			return "", fmt.Errorf("encoding messages: %w", err)
		}
		return b.m.Chat.RenderJSON(raw, true, kwargs)
	}
	return b.m.Chat.RenderConversation(wireMessages(msgs), tools, true, kwargs)
}

// usesTools reports whether a conversation has tool calls or tool results.
func usesTools(msgs []openai.Message) bool {
	for _, m := range msgs {
		if m.Role == "tool" || len(m.ToolCalls) > 0 {
			return true
		}
	}
	return false
}

// wireMessages is the OpenAI-shaped conversation handed to the template (tool-call arguments as objects).
func wireMessages(msgs []openai.Message) []chat.WireMessage {
	out := make([]chat.WireMessage, len(msgs))
	for i, m := range msgs {
		w := chat.WireMessage{Role: m.Role, ReasoningContent: m.ReasoningContent, ToolCallID: m.ToolCallID, Name: m.Name}
		if !m.NullContent {
			c := m.Content
			w.Content = &c
		}
		for _, c := range m.ToolCalls {
			w.ToolCalls = append(w.ToolCalls, chat.WireCall{ID: c.ID, Type: "function",
				Function: chat.WireFunction{Name: c.Name, Arguments: json.RawMessage(c.Arguments)}})
		}
		out[i] = w
	}
	return out
}

// ToolParser picks the tool-call parser from the chat template source.
func (b *Backend) ToolParser() string {
	switch b.m.Chat.ToolCallFormat() {
	case chat.ToolFormatHermes:
		return openai.ToolParserHermes
	case chat.ToolFormatLlama3JSON:
		return openai.ToolParserLlama3JSON
	}
	return ""
}

// SupportsReasoning: the template renders reasoning_content or its generation prompt opens a think block.
func (b *Backend) SupportsReasoning() bool {
	return b.m.Chat.SupportsReasoning() || strings.Contains(b.m.Chat.GenerationPrompt(), openai.ThinkOpen)
}

func (b *Backend) EOS() []int { return b.m.EOS }

// TurnEnd is the chat template's end of turn, where a chat completion stops.
func (b *Backend) TurnEnd() stop.Turn { return b.m.TurnEnd() }

// Logprobs is the model distribution's log-probabilities (Logprobs).
func (b *Backend) Logprobs(logits []float32, id, top int) engine.TokenLogprob {
	return Logprobs(logits, id, top)
}

// Logprobs is sample.Logprobs in the engine's types.
func Logprobs(logits []float32, id, top int) engine.TokenLogprob {
	lp, tops := sample.Logprobs(logits, id, top)
	t := engine.TokenLogprob{ID: id, Logprob: lp}
	for _, x := range tops {
		t.Top = append(t.Top, engine.TopLogprob{ID: x.ID, Logprob: x.Logprob})
	}
	return t
}

// Constrain starts a constrained generation over the tokenizer's vocabulary (each token's exact bytes, built
// once).
func (b *Backend) Constrain(g *grammar.Grammar) engine.Constraint {
	b.vocabOnce.Do(func() { b.vocab = grammar.NewVocab(b.m.Tok.TokenBytes(), b.m.EOS) })
	return g.NewMatcher(b.vocab)
}

func (b *Backend) NewSampler(p engine.SamplingParams) engine.Sampler {
	return sample.New(sample.Options{Temperature: p.Temperature, TopP: p.TopP, MinP: p.MinP, TopK: p.TopK,
		RepetitionPenalty: p.RepetitionPenalty, PresencePenalty: p.PresencePenalty, FrequencyPenalty: p.FrequencyPenalty,
		Seed: p.Seed})
}

func (b *Backend) ContextLen() int { return b.m.Config.MaxPositionEmbeddings }

// LoadAdapter reads a PEFT folder as every command does (lora.Load), refuses what only a merge can apply
// (models.Model.LoadAdapter), checks every module against the base's linear shapes and packs it in the serving
// layout: f32 A with Bᵀ, or bf16 (lora.Pack). The f32 lora.Adapter is not retained.
func (b *Backend) LoadAdapter(path string) (engine.Delta, error) {
	a, err := b.m.LoadAdapter(path)
	if err != nil {
		return nil, err
	}
	l := lora.F32BT
	if b.bf16 {
		l = lora.BF16
	}
	return lora.Pack(a, l), nil
}
