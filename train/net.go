package train

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"strings"

	"github.com/nlpodyssey/spago/ag"
	"github.com/nlpodyssey/spago/mat"
	spnn "github.com/nlpodyssey/spago/nn"

	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/nn"
)

// Method is the fine-tuning method.
type Method string

// The fine-tuning methods.
const (
	LoRA  Method = "lora"  // frozen base in its checkpoint dtype, LoRA adapters trained
	QLoRA Method = "qlora" // frozen NF4 base, LoRA adapters trained
	Full  Method = "full"  // every weight trained (f32 master copy)
)

// LoRAOptions configure the adapters.
type LoRAOptions struct {
	Targets []string // module suffixes (q_proj, ..., or short forms q, k, v, o, gate, up, down; "all-linear")
	Rank    int
	Alpha   float64
	Dropout float64
	RSLoRA  bool
	DoRA    bool   // PEFT's use_dora: a trained magnitude per output row (ops_dora.go)
	Init    string // "kaiming" (PEFT default) or "gaussian"
	Seed    int64
}

// NormalizeTargets maps short names (q, gate, ...) and "all-linear" to the HF module suffixes.
func NormalizeTargets(ts []string) ([]string, error) {
	short := map[string]string{"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj",
		"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}
	var out []string
	seen := map[string]bool{}
	for _, t := range ts {
		t = strings.TrimSpace(t)
		if t == "" {
			continue
		}
		if t == "all-linear" || t == "all" {
			for _, s := range lora.DefaultTargets {
				if !seen[s] {
					seen[s] = true
					out = append(out, s)
				}
			}
			continue
		}
		if s, ok := short[t]; ok {
			t = s
		}
		ok := false
		for _, s := range lora.DefaultTargets {
			if t == s {
				ok = true
			}
		}
		if !ok {
			return nil, fmt.Errorf("target module %q: want one of q,k,v,o,gate,up,down (or *_proj, all-linear)", t)
		}
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no target modules")
	}
	return out, nil
}

// netLayer is one decoder block as graph inputs.
type netLayer struct {
	inNorm, postNorm   []float32   // frozen
	inNormP, postNormP *spnn.Param // full fine-tuning
	qNorm, kNorm       []float32
	qNormP, kNormP     *spnn.Param // full fine-tuning (qwen3)
	qkv, o, gu, down   []*Proj
}

// Net is a Llama-family model prepared for training: the frozen base from
// models/llama plus the trainable spago parameters.
type Net struct {
	Method  Method
	Config  *llama.Config
	Base    *llama.Model
	Env     *Env
	LoRA    LoRAOptions
	AdCfg   lora.Config      // PEFT config of the adapters
	Projs   map[string]*Proj // every projection by PEFT module name
	Params  []*spnn.Param    // trainable, in a fixed order
	Names   []string         // tensor name of each param (PEFT key form for LoRA, HF name for full)
	NoDecay map[*spnn.Param]bool
	// Checkpointing keeps only each decoder layer's input during a training forward pass and recomputes the
	// layer's activations in the backward pass (--gradient-checkpointing): activation memory of one layer
	// instead of all, for one more forward pass.
	Checkpointing bool

	layers  []*netLayer
	invFreq []float32
	embed   *spnn.Param  // full: [V, H]
	norm    *spnn.Param  // full: [H]
	head    *spnn.Param  // full: [V, H] (== embed when tied)
	tok     *tokenParams // --train-tokens: trained embedding (and head) rows
}

func seedFor(seed int64, name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return h.Sum64() ^ uint64(seed)
}

func (n *Net) addParam(name string, p *spnn.Param, decay bool) *spnn.Param {
	n.Params = append(n.Params, p)
	n.Names = append(n.Names, name)
	if !decay {
		n.NoDecay[p] = true
	}
	return p
}

// NewNet wraps base for training with method. For LoRA/QLoRA lo configures the
// adapters (A random, B zero so that step 0 is the base exactly).
func NewNet(base *llama.Model, method Method, lo LoRAOptions) (*Net, error) {
	c := base.Config
	n := &Net{Method: method, Config: c, Base: base, Env: NewEnv(base.Pool), LoRA: lo,
		Projs: map[string]*Proj{}, NoDecay: map[*spnn.Param]bool{}, invFreq: c.InvFreq()}
	switch method {
	case LoRA, QLoRA:
		if lo.Rank <= 0 {
			return nil, fmt.Errorf("lora rank %d: must be positive", lo.Rank)
		}
		if lo.Dropout < 0 || lo.Dropout >= 1 {
			return nil, fmt.Errorf("lora dropout %g: must be in [0, 1)", lo.Dropout)
		}
		if lo.Init != "" && lo.Init != "kaiming" && lo.Init != "gaussian" {
			return nil, fmt.Errorf("lora init %q: want kaiming or gaussian", lo.Init)
		}
		ts, err := NormalizeTargets(lo.Targets)
		if err != nil {
			return nil, err
		}
		n.LoRA.Targets = ts
		n.AdCfg = lora.NewConfig(lo.Rank, lo.Alpha, ts)
		n.AdCfg.Dropout = lo.Dropout
		n.AdCfg.UseRSLoRA = lo.RSLoRA
		n.AdCfg.UseDoRA = lo.DoRA
		if lo.Init == "gaussian" {
			n.AdCfg.InitLoraWeights = []byte(`"gaussian"`)
		}
	case Full:
	default:
		return nil, fmt.Errorf("method %q: want lora, qlora or full", method)
	}
	H, V := c.HiddenSize, c.VocabSize
	if method == Full {
		n.embed = n.addParam("model.embed_tokens.weight", spnn.NewParam(newMat(V, H, base.EmbedTokens.ToF32())), true)
	}
	for l, L := range base.Layers {
		pre := fmt.Sprintf("model.layers.%d.", l)
		nl := &netLayer{inNorm: L.InputLayernorm, postNorm: L.PostAttentionLayernorm, qNorm: L.QNorm, kNorm: L.KNorm}
		if method == Full {
			nl.inNormP = n.addParam(pre+"input_layernorm.weight", spnn.NewParam(newMat(H, 1, L.InputLayernorm)), false)
			nl.postNormP = n.addParam(pre+"post_attention_layernorm.weight", spnn.NewParam(newMat(H, 1, L.PostAttentionLayernorm)), false)
			if L.QNorm != nil {
				nl.qNormP = n.addParam(pre+"self_attn.q_norm.weight", spnn.NewParam(newMat(len(L.QNorm), 1, L.QNorm)), false)
				nl.kNormP = n.addParam(pre+"self_attn.k_norm.weight", spnn.NewParam(newMat(len(L.KNorm), 1, L.KNorm)), false)
			}
		}
		var ps []*Proj
		names := llama.LinearNames()
		for i, lin := range L.Linears() {
			name := pre + names[i]
			p, err := n.newProj(name, *lin)
			if err != nil {
				return nil, err
			}
			ps = append(ps, p)
			n.Projs[name] = p
		}
		nl.qkv, nl.o, nl.gu, nl.down = ps[0:3], ps[3:4], ps[4:6], ps[6:7]
		n.layers = append(n.layers, nl)
	}
	if method == Full {
		n.norm = n.addParam("model.norm.weight", spnn.NewParam(newMat(H, 1, base.Norm)), false)
		if c.TieWordEmbeddings {
			n.head = n.embed
		} else {
			w, release := n.Env.baseWeight(base.LMHead)
			n.head = n.addParam("lm_head.weight", spnn.NewParam(newMat(V, H, w)), true)
			release()
		}
	}
	return n, nil
}

// linearBias returns the bias of a base linear (dense or wrapped), or nil.
func linearBias(l nn.Linear) []float32 {
	switch d := l.(type) {
	case *nn.Dense:
		return d.Bias
	case *nn.Quantized:
		return d.Bias
	}
	return nil
}

func (n *Net) newProj(name string, lin nn.Linear) (*Proj, error) {
	if lin == nil {
		return nil, fmt.Errorf("%s: missing base weight", name)
	}
	p := &Proj{Name: name, In: lin.In(), Out: lin.Out(), Base: lin}
	if n.Method == Full {
		w, release := n.Env.baseWeight(lin)
		p.W = n.addParam(name+".weight", spnn.NewParam(newMat(p.Out, p.In, w)), true)
		release()
		if b := linearBiasAny(lin, p.Out, n.Env); b != nil {
			p.Bias = n.addParam(name+".bias", spnn.NewParam(newMat(p.Out, 1, b)), false)
		}
		p.Base = nil
		return p, nil
	}
	if !n.AdCfg.Targets(name) {
		return p, nil
	}
	r := n.AdCfg.RankFor(name)
	p.R, p.Scale, p.Dropout = r, n.AdCfg.ScaleFor(name), float32(n.LoRA.Dropout)
	rng := rand.New(rand.NewPCG(seedFor(n.LoRA.Seed, name), 0x10a))
	a := make([]float32, r*p.In)
	if n.LoRA.Init == "gaussian" {
		for i := range a {
			a[i] = float32(rng.NormFloat64() / float64(r))
		}
	} else { // kaiming_uniform(a=√5): U(−1/√in, 1/√in)
		bound := 1 / math.Sqrt(float64(p.In))
		for i := range a {
			a[i] = float32((rng.Float64()*2 - 1) * bound)
		}
	}
	p.A = n.addParam(lora.KeyPrefix+name+".lora_A.weight", spnn.NewParam(newMat(r, p.In, a)), true)
	p.B = n.addParam(lora.KeyPrefix+name+".lora_B.weight", spnn.NewParam(newMat(p.Out, r, make([]float32, p.Out*r))), true)
	if n.LoRA.DoRA {
		n.addDoRA(p, lin)
	}
	return p, nil
}

// linearBiasAny recovers a base layer's bias: Forward of a zero row.
func linearBiasAny(l nn.Linear, out int, e *Env) []float32 {
	if b := linearBias(l); b != nil {
		return append([]float32(nil), b...)
	}
	switch l.(type) {
	case *nn.Dense, *nn.Quantized, *nf4Linear:
		return nil
	}
	b := make([]float32, out)
	l.Forward(e.Pool, b, make([]float32, l.In()), 1)
	for _, v := range b {
		if v != 0 {
			return b
		}
	}
	return nil
}

// Sample is one encoded training sequence.
type Sample struct {
	IDs  []int
	Mask []bool // Mask[i]: loss on predicting IDs[i+1]
}

// Targets counts the loss positions of s.
func (s Sample) Targets() int {
	c := 0
	for i, m := range s.Mask {
		if m && i+1 < len(s.IDs) {
			c++
		}
	}
	return c
}

// forwardOut is what one forward pass leaves for the caller.
type forwardOut struct {
	loss   mat.Tensor
	lf     *lossFn
	ef     *embedFn
	hidden mat.Tensor // final normed hidden states [T, H]
	T      int
}

// forward builds the graph of a packed micro-batch. With train set, LoRA
// dropout is active (masks drawn from seed). denom divides the summed loss.
func (n *Net) forward(batch []Sample, denom float32, train bool, seed uint64, wantLoss bool) (*forwardOut, error) {
	c := n.Config
	H, V := c.HiddenSize, c.VocabSize
	eps := float32(c.RMSNormEps)
	T := 0
	var segs []Segment
	var ids, pos, rows, targets []int
	for _, s := range batch {
		if len(s.IDs) == 0 {
			continue
		}
		if c.SlidingWindow > 0 && len(s.IDs) > c.SlidingWindow {
			return nil, fmt.Errorf("sequence of %d tokens is longer than the sliding window %d", len(s.IDs), c.SlidingWindow)
		}
		segs = append(segs, Segment{Start: T, Len: len(s.IDs)})
		for i, id := range s.IDs {
			if id < 0 || id >= V {
				return nil, fmt.Errorf("token id %d outside the vocabulary [0, %d)", id, V)
			}
			ids = append(ids, id)
			pos = append(pos, i)
			if i+1 < len(s.IDs) && i < len(s.Mask) && s.Mask[i] {
				rows = append(rows, T+i)
				targets = append(targets, s.IDs[i+1])
			}
		}
		T += len(s.IDs)
	}
	if T == 0 {
		return nil, fmt.Errorf("empty batch")
	}
	if n.Checkpointing { // memory first: the fused linear ops keep no copy of f32 base weights
		n.Env.LowMemory = true
	}
	out := &forwardOut{T: T}
	var h mat.Tensor
	if n.embed != nil {
		h, out.ef = n.Env.Embed(n.embed, ids, V, H)
	} else {
		x := make([]float32, T*H)
		for i, id := range ids {
			n.Base.EmbedTokens.Row(id, x[i*H:(i+1)*H])
		}
		h = newMat(T, H, x)
		if n.tok != nil {
			h = n.Env.TokenEmbed(x, ids, n.tok, H)
		}
	}
	for l, L := range n.layers {
		ls := seed ^ uint64(l+1)*0x9e3779b97f4a7c15
		layer := func(h mat.Tensor) mat.Tensor { return n.layerForward(L, h, T, segs, pos, train, ls) }
		if n.Checkpointing && train {
			h = n.Env.Checkpoint(h, T, H, L.params(), layer)
		} else {
			h = layer(h)
		}
	}
	out.hidden = n.Env.RMSNorm(h, T, H, n.norm, n.Base.Norm, eps)
	if wantLoss {
		var head BaseLinear = n.Base.LMHead
		if n.head != nil {
			head = nil
		}
		out.loss, out.lf = n.Env.loss(out.hidden, T, H, V, head, n.head, n.tok, rows, targets, denom)
	}
	return out, nil
}

// layerForward is decoder layer L over the packed rows h [T, H]:
// h += o_proj(attention(rope(q,k), v)), h += down_proj(swiglu(gate_proj, up_proj)), each after its RMSNorm.
func (n *Net) layerForward(L *netLayer, h mat.Tensor, T int, segs []Segment, pos []int, train bool, ls uint64) mat.Tensor {
	c := n.Config
	H, I := c.HiddenSize, c.IntermediateSize
	nh, kv, hd := c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim
	eps := float32(c.RMSNormEps)
	x := n.Env.RMSNorm(h, T, H, L.inNormP, L.inNorm, eps)
	qkv := n.Env.Linear(x, T, L.qkv, train, ls)
	if L.qNorm != nil {
		qkv = n.Env.QKNorm(qkv, T, nh, kv, hd, L.qNorm, L.kNorm, L.qNormP, L.kNormP, eps)
	}
	qkv = n.Env.RoPE(qkv, T, (nh+2*kv)*hd, (nh+kv)*hd, hd, pos, n.invFreq)
	att := n.Env.Attention(qkv, T, nh, kv, hd, segs)
	h = n.Env.Add(h, n.Env.Linear(att, T, L.o, train, ls+1), T, H)
	x = n.Env.RMSNorm(h, T, H, L.postNormP, L.postNorm, eps)
	gu := n.Env.Linear(x, T, L.gu, train, ls+2)
	return n.Env.Add(h, n.Env.Linear(n.Env.SwiGLU(gu, T, I), T, L.down, train, ls+3), T, H)
}

// Logits runs the (adapted) model over one sequence and returns logits [len(ids), V].
func (n *Net) Logits(ids []int) ([]float32, error) {
	fo, err := n.forward([]Sample{{IDs: ids}}, 1, false, 0, false)
	if err != nil {
		return nil, err
	}
	V := n.Config.VocabSize
	z := make([]float32, fo.T*V)
	hv := vals(fo.hidden)
	if n.head != nil {
		kernels.MatMulF32T(n.Env.Pool, z, hv, vals(n.head), fo.T, V, n.Config.HiddenSize)
		return z, nil
	}
	n.Base.LMHead.Forward(n.Env.Pool, z, hv, fo.T)
	if n.tok != nil {
		n.tok.tokenLogits(hv, z, fo.T, n.Config.HiddenSize, V)
	}
	return z, nil
}

// Loss evaluates the summed token loss and the number of targets of batch (no gradients kept).
func (n *Net) Loss(batch []Sample) (sum float64, count int, err error) {
	for _, s := range batch {
		count += s.Targets()
	}
	if count == 0 {
		return 0, 0, nil
	}
	fo, err := n.forward(batch, 1, false, 0, true)
	if err != nil {
		return 0, 0, err
	}
	return fo.lf.Sum, count, nil
}

// Accumulate runs forward and backward over one micro-batch, adding the
// gradients of (Σ token losses)/denom into the parameters. It returns the summed
// token loss and the number of tokens processed.
func (n *Net) Accumulate(batch []Sample, denom float32, seed uint64) (sum float64, tokens int, err error) {
	fo, err := n.forward(batch, denom, true, seed, true)
	if err != nil {
		return 0, 0, err
	}
	if len(fo.lf.rows) > 0 {
		if err := ag.Backward(fo.loss); err != nil {
			return 0, 0, fmt.Errorf("backward: %w", err)
		}
		if fo.ef != nil && fo.ef.DW != nil {
			fo.ef.addGrad()
		}
	}
	return fo.lf.Sum, fo.T, nil
}

// Adapter returns the current LoRA weights as a PEFT adapter (copies).
func (n *Net) Adapter() *lora.Adapter {
	a := lora.New(n.AdCfg)
	for name, p := range n.Projs {
		if p.A == nil {
			continue
		}
		pr := n.AdCfg.NewPair(name, p.In, p.Out)
		copy(pr.A, vals(p.A))
		copy(pr.B, vals(p.B))
		if p.Mag != nil {
			pr.Magnitude = append([]float32(nil), vals(p.Mag)...)
		}
		a.Modules[name] = pr
	}
	n.tokenAdapter(a)
	return a
}

// SetAdapter loads LoRA weights from a (for example PEFT-written) adapter. The
// adapter must cover exactly the trained modules with the same ranks.
func (n *Net) SetAdapter(a *lora.Adapter) error {
	for name, p := range n.Projs {
		if p.A == nil {
			continue
		}
		pr, ok := a.Modules[name]
		if !ok {
			return fmt.Errorf("adapter has no weights for %s", name)
		}
		if pr.R != p.R || pr.In != p.In || pr.Out != p.Out {
			return fmt.Errorf("adapter %s: rank %d [%d→%d], training wants rank %d [%d→%d]", name, pr.R, pr.In, pr.Out, p.R, p.In, p.Out)
		}
		copy(vals(p.A), pr.A)
		copy(vals(p.B), pr.B)
		if err := n.setMagnitude(p, pr); err != nil {
			return err
		}
	}
	for name := range a.Modules {
		if p, ok := n.Projs[name]; !ok || p.A == nil {
			return fmt.Errorf("adapter module %s is not a training target", name)
		}
	}
	return n.setTokenAdapter(a)
}
