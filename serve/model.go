package serve

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/chat"
	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/nn"
	"github.com/lorakit/lorakit/models/safetensors"
	"github.com/lorakit/lorakit/models/sample"
	"github.com/lorakit/lorakit/serve/engine"
	"github.com/lorakit/lorakit/serve/openai"
)

// FromModel adapts a loaded lorakit model folder to the server. The server never mutates its weights.
// Adapters are kept in f32 for an f32 base and in bf16 otherwise (see FromModelDType).
func FromModel(m *models.Model) Model { b, _ := FromModelDType(m, "auto"); return b }

// FromModelDType is FromModel with the storage type of adapter weights: "f32", "bf16", or "auto" (f32 when the
// base's linear layers are f32, else bf16 — vLLM's lora_dtype "auto"). Decoding is memory-bound, so bf16 adapters
// halve the bytes each decode row reads for its LoRA; the products are still computed in f32.
func FromModelDType(m *models.Model, adapterDType string) (Model, error) {
	b := &modelBackend{m: m}
	switch strings.ToLower(adapterDType) {
	case "", "auto":
		b.bf16 = true
		if l, ok := m.Net.Linear("model.layers.0.self_attn.q_proj"); ok {
			if d, ok := l.(*nn.Dense); ok && (d.DType == safetensors.DType("F32") || d.DType == "") {
				b.bf16 = false
			}
		}
	case "f32", "float32":
	case "bf16", "bfloat16":
		b.bf16 = true
	default:
		return nil, fmt.Errorf("adapter dtype %q is not one of auto, f32, bf16", adapterDType)
	}
	return b, nil
}

type modelBackend struct {
	m    *models.Model
	bf16 bool // adapters stored as bf16
}

func (b *modelBackend) NewState(maxLen int) engine.State { return b.m.Net.NewCache(maxLen) }

func (b *modelBackend) VocabSize() int { return b.m.Config.VocabSize }

func (b *modelBackend) Forward(rows []engine.Row) ([][]float32, error) {
	seqs := make([]llama.Seq, len(rows))
	for i, r := range rows {
		c, ok := r.State.(*llama.KVCache)
		if !ok {
			return nil, fmt.Errorf("serve: row %d has a foreign state %T", i, r.State)
		}
		seqs[i] = llama.Seq{Tokens: r.Tokens, Cache: c}
		if r.Adapter != nil {
			seqs[i].Adapter = r.Adapter
		}
	}
	out, err := b.m.Net.Forward(seqs)
	if err != nil {
		return nil, err
	}
	logits := make([][]float32, len(out))
	for i, o := range out {
		if len(o) == 0 {
			return nil, fmt.Errorf("serve: no logits for row %d", i)
		}
		logits[i] = o[len(o)-1]
	}
	return logits, nil
}

func (b *modelBackend) Encode(text string, addSpecial bool) []int {
	if addSpecial {
		return b.m.EncodePrompt(text)
	}
	return b.m.Tok.Encode(text, false)
}

func (b *modelBackend) Decode(ids []int) string { return b.m.Tok.Decode(ids, true) }

// NewDecoder starts a streaming detokeniser primed with the prompt, so the first generated token decodes in
// context (a SentencePiece "▁word" keeps its leading space, as in decode(prompt+output) − decode(prompt)).
func (b *modelBackend) NewDecoder(prompt []int) engine.Decoder {
	d := b.m.Tok.NewStreamDecoder(true)
	d.Prime(prompt)
	return d
}

func (b *modelBackend) TokenText(id int) string { return b.m.Tok.DecodeRaw([]int{id}, false) }

func (b *modelBackend) RenderChat(msgs []openai.Message, tools, kwargs json.RawMessage) (string, error) {
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
func (b *modelBackend) ToolParser() string {
	switch b.m.Chat.ToolCallFormat() {
	case chat.ToolFormatHermes:
		return openai.ToolParserHermes
	case chat.ToolFormatLlama3JSON:
		return openai.ToolParserLlama3JSON
	}
	return ""
}

// SupportsReasoning: the template renders reasoning_content or its generation prompt opens a think block.
func (b *modelBackend) SupportsReasoning() bool {
	return b.m.Chat.SupportsReasoning() || strings.Contains(b.m.Chat.GenerationPrompt(), openai.ThinkOpen)
}

func (b *modelBackend) EOS() []int { return b.m.EOS }

func (b *modelBackend) NewSampler(p engine.SamplingParams) engine.Sampler {
	return sample.New(sample.Options{Temperature: p.Temperature, TopP: p.TopP, MinP: p.MinP, TopK: p.TopK,
		RepetitionPenalty: p.RepetitionPenalty, PresencePenalty: p.PresencePenalty, FrequencyPenalty: p.FrequencyPenalty,
		Seed: p.Seed})
}

func (b *modelBackend) ContextLen() int { return b.m.Config.MaxPositionEmbeddings }

// LoadAdapter reads a PEFT folder as every command does (lora.Load), refuses what only a merge can apply
// (models.Model.LoadAdapter) and checks every module against the base's linear shapes.
func (b *modelBackend) LoadAdapter(path string) (engine.Delta, error) {
	a, err := b.m.LoadAdapter(path)
	if err != nil {
		return nil, err
	}
	return newServedAdapter(a, b.bf16), nil
}

// servedAdapter is a LoRA adapter in a serving layout, built once at load (a served adapter is never trained, so
// the copies cannot go stale), and implements llama.RowsDelta: Forward hands it all the rows of a batch that use
// it at once, so prefill chunks and same-adapter decode rows go through A and B as one matrix product per module,
// with no allocation. f32 storage keeps A [r, in] and B transposed, Bt [r, out], so the expand Y += s·T·Bᵀ streams
// contiguous rows of Bt (one Axpy per rank and row; a GEMM from gemmRows rows) instead of rank-16 dot products.
// bf16 storage keeps A and B [out, r] as bf16 (half the bytes, which is what a many-adapter decode step is short
// of) and runs both products through the bf16 tile kernel. The f32 lora.Adapter is not retained.
type servedAdapter struct {
	pairs map[string]*servedPair
}

// servedPair is one module's pair in the serving layout.
type servedPair struct {
	A32   []float32 // A [r, in] (f32 storage), or nil
	A16   []uint16  // A [r, in] as bf16 bit patterns (bf16 storage), or nil
	Bt    []float32 // Bᵀ [r, out] (f32 storage), or nil
	B16   []uint16  // B [out, r] as bf16 bit patterns (bf16 storage), or nil
	R     int
	In    int
	Out   int
	Scale float32
}

func newServedAdapter(a *lora.Adapter, bf16 bool) *servedAdapter {
	sa := &servedAdapter{pairs: make(map[string]*servedPair, len(a.Modules))}
	for name, q := range a.Modules {
		sp := &servedPair{R: q.R, In: q.In, Out: q.Out, Scale: q.Scale}
		if bf16 {
			sp.A16, sp.B16 = toBF16(q.A), toBF16(q.B)
		} else {
			sp.A32, sp.Bt = q.A, make([]float32, q.R*q.Out)
			for o := 0; o < q.Out; o++ {
				for k := 0; k < q.R; k++ {
					sp.Bt[k*q.Out+o] = q.B[o*q.R+k]
				}
			}
		}
		sa.pairs[name] = sp
	}
	return sa
}

func toBF16(v []float32) []uint16 {
	out := make([]uint16, len(v))
	for i, f := range v {
		out[i] = safetensors.F32ToBF16(f)
	}
	return out
}

var (
	_ llama.RowsDelta = (*servedAdapter)(nil)
	// scratch holds the [rows, r] intermediate T; a sync.Pool keeps ApplyRows allocation-free and safe when the
	// model pool runs different adapters (or modules) at once.
	scratch  = sync.Pool{New: func() any { return new([]float32) }}
	inlineAt = 1 << 16 // below this many multiply-adds a pool hand-off costs more than it saves
	gemmRows = 32      // from this many rows the expand runs as one GEMM (same speed as per-row Axpys, and pooled)
)

// Apply adds s·B·(A·x) for one row (llama.Delta).
func (a *servedAdapter) Apply(module string, y, x []float32, in, out int) {
	a.ApplyRows(nil, module, y, x, len(x)/max(in, 1), in, out)
}

// ApplyRows adds s·B·(A·x) to every row of y ([rows,out]) from x ([rows,in]).
func (a *servedAdapter) ApplyRows(p *kernels.Pool, module string, y, x []float32, rows, in, out int) {
	if rows <= 0 {
		return
	}
	q := a.pairs[module]
	if q == nil {
		return
	}
	r := q.R
	if in != q.In || out != q.Out || len(x) < rows*in || len(y) < rows*out {
		panic(fmt.Sprintf("serve: adapter %s: rows %d in %d out %d do not fit a rank-%d pair [%d×%d]", module, rows, in, out, r, q.Out, q.In))
	}
	x, y = x[:rows*in], y[:rows*out]
	if rows*r*(in+out) < inlineAt {
		p = nil
	}
	need := rows * r
	if q.B16 != nil {
		need += rows * out
	}
	bp := scratch.Get().(*[]float32)
	if cap(*bp) < need {
		*bp = make([]float32, need)
	}
	t := (*bp)[:rows*r]
	if q.A16 != nil { // T[rows, r] = X·Aᵀ
		kernels.MatMulBF16T(p, t, x, q.A16, rows, r, in)
	} else {
		kernels.MatMulF32T(p, t, x, q.A32, rows, r, in)
	}
	kernels.Scale(q.Scale, t)
	switch {
	case q.B16 != nil: // D[rows, out] = T·Bᵀ through the bf16 tile kernel (half the bytes of an f32 Bt), Y += D
		d := (*bp)[rows*r : rows*(r+out)]
		kernels.MatMulBF16T(p, d, t, q.B16, rows, out, r)
		kernels.Axpy(1, d, y)
	case rows >= gemmRows: // Y[rows, out] += T·Bt
		kernels.Gemm(p, false, false, rows, out, r, 1, t, r, q.Bt, out, 1, y, out)
	default:
		for k := 0; k < r; k++ { // row k of Bt stays in L1 while it goes into every row of Y
			bk := q.Bt[k*out : (k+1)*out]
			for j := 0; j < rows; j++ {
				kernels.Axpy(t[j*r+k], bk, y[j*out:(j+1)*out])
			}
		}
	}
	scratch.Put(bp)
}
