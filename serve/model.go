package serve

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/chat"
	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/sample"
	"github.com/lorakit/lorakit/serve/engine"
	"github.com/lorakit/lorakit/serve/openai"
)

// FromModel adapts a loaded lorakit model folder to the server. The server never mutates its weights.
func FromModel(m *models.Model) Model { return &modelBackend{m: m} }

type modelBackend struct{ m *models.Model }

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

func (b *modelBackend) NewDecoder() engine.Decoder { return b.m.Tok.NewStreamDecoder(true) }

func (b *modelBackend) TokenText(id int) string { return b.m.Tok.DecodeRaw([]int{id}, false) }

func (b *modelBackend) RenderChat(msgs []openai.Message, kwargs json.RawMessage) (string, error) {
	cm := make([]chat.Message, len(msgs))
	for i, m := range msgs {
		cm[i] = chat.Message{Role: m.Role, Content: m.Content, ReasoningContent: m.ReasoningContent}
	}
	if len(kwargs) == 0 {
		return b.m.Chat.Render(cm, true)
	}
	raw, err := json.Marshal(cm)
	if err != nil {
		return "", err
	}
	return b.m.Chat.RenderJSON(raw, true, kwargs)
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

// LoadAdapter reads a PEFT folder and checks every module against the base's linear shapes.
func (b *modelBackend) LoadAdapter(path string) (engine.Delta, error) {
	a, err := lora.Load(path)
	if err != nil {
		return nil, err
	}
	if len(a.Saved) > 0 {
		names := make([]string, 0, len(a.Saved))
		for n := range a.Saved {
			names = append(names, n)
		}
		return nil, fmt.Errorf("adapter %s saves full tensors (modules_to_save / bias: %s); serving supports LoRA pairs only — merge it with `lorakit merge` instead", path, strings.Join(names, ", "))
	}
	err = a.Check(func(module string) (int, int, bool) {
		l, ok := b.m.Net.Linear(module)
		if !ok {
			return 0, 0, false
		}
		return l.In(), l.Out(), true
	})
	if err != nil {
		return nil, fmt.Errorf("adapter %s does not fit the base model: %w", path, err)
	}
	return &servedAdapter{a}, nil
}

// servedAdapter adds llama.RowsDelta to a LoRA adapter: Forward hands it all the rows of a batch that use it at
// once, so prefill chunks and same-adapter decode rows go through A and B as one matrix product on the pool.
type servedAdapter struct{ *lora.Adapter }

var _ llama.RowsDelta = (*servedAdapter)(nil)

// ApplyRows adds s·B·(A·x) to every row of y ([rows,out]) from x ([rows,in]).
func (a *servedAdapter) ApplyRows(p *kernels.Pool, module string, y, x []float32, rows, in, out int) {
	if q := a.Modules[module]; q != nil && rows > 0 {
		q.Apply(p, y, x, in, out)
	}
}
