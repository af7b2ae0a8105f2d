package llama

import (
	"strconv"
	"strings"
	"sync"

	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/nn"
)

// Layer is one decoder block. Shapes use H = hidden_size, Q = heads·head_dim, KV = kv_heads·head_dim,
// I = intermediate_size, D = head_dim.
type Layer struct {
	InputLayernorm         []float32 // [H]
	QProj                  nn.Linear // [Q, H] (+ bias [Q] for qwen2 / attention_bias)
	KProj                  nn.Linear // [KV, H] (+ bias [KV])
	VProj                  nn.Linear // [KV, H] (+ bias [KV])
	OProj                  nn.Linear // [H, Q] (+ bias [H] for llama/qwen3 attention_bias)
	QNorm, KNorm           []float32 // [D] each, qwen3 only
	PostAttentionLayernorm []float32 // [H]
	GateProj               nn.Linear // [I, H]
	UpProj                 nn.Linear // [I, H]
	DownProj               nn.Linear // [H, I]
}

// Model is a loaded Llama-family network. Forward may be called from several goroutines; calls are serialised.
type Model struct {
	Config      *Config
	EmbedTokens nn.Table // [V, H]
	Layers      []*Layer
	Norm        []float32 // [H]
	LMHead      nn.Linear // [V, H]; EmbedTokens itself when tie_word_embeddings; nil for a sequence classifier
	Score       *nn.Dense // [num_labels, H], no bias: a *ForSequenceClassification's head (nil for a causal LM)
	Pool        *kernels.Pool

	invFreq []float32   // [D/2] rotary inverse frequencies (llama3 scaling applied)
	names   [][7]string // PEFT module names per layer, in linearNames order

	mu     sync.Mutex // guards s
	s      scratch
	attnFn func(lo, hi int) // m.attentionRange, bound once so that Forward does not allocate a closure per layer
	// m.attentionHeads, bound once likewise
	headsFn func(lo, hi int)
	ropeFn  func(lo, hi int) // m.ropeRows, likewise
}

var linearNames = [7]string{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
	"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}

// LinearNames returns the PEFT names of a layer's seven linears below "model.layers.N." ("self_attn.q_proj",
// ..., "mlp.down_proj"), in the order of Layer.Linears.
func LinearNames() [7]string { return linearNames }

// Linears returns the places of the layer's seven linears (q, k, v, o, gate, up, down: LinearNames' order), to
// read or replace them.
func (L *Layer) Linears() [7]*nn.Linear {
	return [7]*nn.Linear{&L.QProj, &L.KProj, &L.VProj, &L.OProj, &L.GateProj, &L.UpProj, &L.DownProj}
}

// ParseModule splits a layer module name such as "model.layers.3.self_attn.q_proj" into its layer number (3,
// written without leading zeros) and the rest ("self_attn.q_proj"); ok is false for any other name.
func ParseModule(module string) (layer int, sub string, ok bool) {
	rest, ok := strings.CutPrefix(module, "model.layers.")
	if !ok {
		return 0, "", false
	}
	num, sub, ok := strings.Cut(rest, ".")
	if !ok {
		return 0, "", false
	}
	l, err := strconv.Atoi(num)
	if err != nil || l < 0 || strconv.Itoa(l) != num {
		return 0, "", false
	}
	return l, sub, true
}

// LinearSlot is the place of the linear named sub ("self_attn.q_proj", a LinearNames entry) in L, or nil.
func (L *Layer) LinearSlot(sub string) *nn.Linear {
	for i, n := range linearNames {
		if n == sub {
			return L.Linears()[i]
		}
	}
	return nil
}

// Modules lists the PEFT names of every linear layer, layer by layer
// ("model.layers.0.self_attn.q_proj", ..., "model.layers.0.mlp.down_proj", ...), then "lm_head".
func (m *Model) Modules() []string {
	var out []string
	for _, n := range m.names {
		out = append(out, n[:]...)
	}
	return append(out, "lm_head")
}

// Linear returns the linear layer of a PEFT module name such as "model.layers.3.self_attn.q_proj" or "lm_head".
// A leading "base_model.model." is accepted.
func (m *Model) Linear(module string) (nn.Linear, bool) {
	module = strings.TrimPrefix(module, "base_model.model.")
	if module == "lm_head" {
		return m.LMHead, m.LMHead != nil
	}
	l, sub, ok := ParseModule(module)
	if !ok || l >= len(m.Layers) {
		return nil, false
	}
	if p := m.Layers[l].LinearSlot(sub); p != nil {
		return *p, true
	}
	return nil, false
}
