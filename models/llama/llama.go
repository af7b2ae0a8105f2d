package llama

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/nn"
	"github.com/lorakit/lorakit/models/safetensors"
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
	EmbedTokens *nn.Dense // [V, H]
	Layers      []*Layer
	Norm        []float32 // [H]
	LMHead      nn.Linear // [V, H]; EmbedTokens itself when tie_word_embeddings
	Pool        *kernels.Pool

	invFreq []float32   // [D/2] rotary inverse frequencies (llama3 scaling applied)
	names   [][7]string // PEFT module names per layer, in linearNames order

	mu     sync.Mutex // guards s
	s      scratch
	attnFn func(lo, hi int) // m.attentionRange, bound once so that Forward does not allocate a closure per layer
	// m.deltaRange and m.attentionHeads, bound once likewise
	deltaFn, headsFn func(lo, hi int)
}

// LoadOptions tune Load.
type LoadOptions struct {
	Threads int           // worker threads for the kernels (0: all CPUs); ignored when Pool is set
	Pool    *kernels.Pool // share an existing pool
	// Quantize, if set, replaces each loaded dense linear layer (not the embedding or the LM head). The quant
	// package provides NF4/FP4 quantisers; models.Load wires them in.
	Quantize func(module string, d *nn.Dense) (nn.Linear, error)
	// LoadLinear, if set, is tried first for every linear weight; ok=false falls back to dense loading. Used for
	// checkpoints saved pre-quantised (bitsandbytes).
	LoadLinear func(ckpt *safetensors.Checkpoint, module string, out, in int) (lin nn.Linear, ok bool, err error)
	// QuantizeHead, if set, replaces a dense LM head for the output projection only; a tied embedding keeps
	// its table for lookups.
	QuantizeHead func(d *nn.Dense) (nn.Linear, error)
}

var linearNames = [7]string{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
	"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}

// Load builds the model from a checkpoint. Every missing or mis-shaped tensor is reported, together, with the file,
// the tensor name and both shapes.
func Load(ckpt *safetensors.Checkpoint, cfg *Config, opts LoadOptions) (*Model, error) {
	c := cfg
	H, Q, KV, I, V, D := c.HiddenSize, c.QDim(), c.KVDim(), c.IntermediateSize, c.VocabSize, c.HeadDim
	ld := &loader{ckpt: ckpt, opts: opts}
	m := newModel(cfg, opts)
	m.EmbedTokens = ld.dense("model.embed_tokens.weight", V, H)
	for l := range c.NumHiddenLayers {
		p := "model.layers." + strconv.Itoa(l) + "."
		names := m.names[l]
		L := &Layer{
			InputLayernorm:         ld.vector(p+"input_layernorm.weight", H),
			QProj:                  ld.linear(names[0], Q, H, c.AttentionBias),
			KProj:                  ld.linear(names[1], KV, H, c.AttentionBias),
			VProj:                  ld.linear(names[2], KV, H, c.AttentionBias),
			OProj:                  ld.linear(names[3], H, Q, c.OProjBias),
			PostAttentionLayernorm: ld.vector(p+"post_attention_layernorm.weight", H),
			GateProj:               ld.linear(names[4], I, H, false),
			UpProj:                 ld.linear(names[5], I, H, false),
			DownProj:               ld.linear(names[6], H, I, false),
		}
		if c.QKNorm {
			L.QNorm = ld.vector(p+"self_attn.q_norm.weight", D)
			L.KNorm = ld.vector(p+"self_attn.k_norm.weight", D)
		}
		m.Layers = append(m.Layers, L)
	}
	m.Norm = ld.vector("model.norm.weight", H)
	if c.TieWordEmbeddings {
		if m.EmbedTokens != nil {
			m.LMHead = m.EmbedTokens
		}
	} else {
		m.LMHead = ld.linear("lm_head", V, H, false)
	}
	if d, ok := m.LMHead.(*nn.Dense); ok && opts.QuantizeHead != nil {
		head, err := opts.QuantizeHead(d)
		if err != nil {
			ld.errs = append(ld.errs, fmt.Errorf("lm_head: %w", err))
		} else {
			m.LMHead = head
		}
	}
	if len(ld.errs) > 0 {
		return nil, fmt.Errorf("llama: load %s: %d problem(s):\n%w", ckpt.Dir, len(ld.errs), errors.Join(ld.errs...))
	}
	return m, nil
}

// newModel returns a model without weights: its pool, rotary frequencies and module names.
func newModel(cfg *Config, opts LoadOptions) *Model {
	m := &Model{Config: cfg, Pool: opts.Pool, invFreq: cfg.InvFreq()}
	m.attnFn, m.deltaFn, m.headsFn = m.attentionRange, m.deltaRange, m.attentionHeads
	if m.Pool == nil {
		m.Pool = kernels.NewPool(opts.Threads)
	}
	for l := range cfg.NumHiddenLayers {
		var names [7]string
		for i, n := range linearNames {
			names[i] = "model.layers." + strconv.Itoa(l) + "." + n
		}
		m.names = append(m.names, names)
	}
	return m
}

// loader collects every problem instead of stopping at the first.
type loader struct {
	ckpt *safetensors.Checkpoint
	opts LoadOptions
	errs []error
}

func (ld *loader) info(name string, shape ...int) (safetensors.TensorInfo, *safetensors.File, bool) {
	ti, f, ok := ld.ckpt.Info(name)
	if !ok {
		ld.errs = append(ld.errs, fmt.Errorf("tensor %s: missing (want shape %v)", name, shape))
		return ti, nil, false
	}
	if !equalShape(ti.Shape, shape) {
		ld.errs = append(ld.errs, fmt.Errorf("%s: tensor %s: shape %v, want %v", f.Path, name, ti.Shape, shape))
		return ti, f, false
	}
	if !ti.DType.IsFloat() {
		ld.errs = append(ld.errs, fmt.Errorf("%s: tensor %s: dtype %s is not a float type", f.Path, name, ti.DType))
		return ti, f, false
	}
	return ti, f, true
}

func equalShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// vector loads a 1-D tensor as an f32 copy.
func (ld *loader) vector(name string, n int) []float32 {
	_, f, ok := ld.info(name, n)
	if !ok {
		return nil
	}
	v, err := f.Float32s(name)
	if err != nil {
		ld.errs = append(ld.errs, fmt.Errorf("%s: tensor %s: %w", f.Path, name, err))
		return nil
	}
	return v
}

// dense maps a 2-D weight [rows, cols] in its stored dtype.
func (ld *loader) dense(name string, rows, cols int) *nn.Dense {
	ti, f, ok := ld.info(name, rows, cols)
	if !ok {
		return nil
	}
	raw, err := f.Bytes(name)
	if err == nil {
		var d *nn.Dense
		if d, err = nn.NewDense(ti.DType, raw, rows, cols); err == nil {
			return d
		}
	}
	ld.errs = append(ld.errs, fmt.Errorf("%s: tensor %s: %w", f.Path, name, err))
	return nil
}

// linear loads module.weight [out, in] (and module.bias [out] when bias).
func (ld *loader) linear(module string, out, in int, bias bool) nn.Linear {
	var b []float32
	if bias {
		b = ld.vector(module+".bias", out)
	}
	if ld.opts.LoadLinear != nil {
		lin, ok, err := ld.opts.LoadLinear(ld.ckpt, module, out, in)
		if err != nil {
			ld.errs = append(ld.errs, fmt.Errorf("%s: %w", module, err))
			return nil
		}
		if ok {
			if lin.In() != in || lin.Out() != out {
				ld.errs = append(ld.errs, fmt.Errorf("tensor %s.weight: shape [%d %d], want [%d %d]", module, lin.Out(), lin.In(), out, in))
				return nil
			}
			if bias {
				return biased{lin, b}
			}
			return lin
		}
	}
	d := ld.dense(module+".weight", out, in)
	if d == nil {
		return nil
	}
	d.Bias = b
	if ld.opts.Quantize != nil && module != "lm_head" { // like transformers, the output head stays unquantised
		lin, err := ld.opts.Quantize(module, d)
		if err != nil {
			ld.errs = append(ld.errs, fmt.Errorf("quantize %s: %w", module, err))
			return nil
		}
		return lin
	}
	return d
}

// biased adds a bias to a linear layer that has none of its own.
type biased struct {
	nn.Linear
	b []float32
}

func (l biased) Forward(p *kernels.Pool, y, x []float32, m int) {
	l.Linear.Forward(p, y, x, m)
	nn.AddBias(y, l.b, m)
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
	rest, ok := strings.CutPrefix(module, "model.layers.")
	if !ok {
		return nil, false
	}
	num, sub, ok := strings.Cut(rest, ".")
	if !ok {
		return nil, false
	}
	l, err := strconv.Atoi(num)
	if err != nil || l < 0 || l >= len(m.Layers) || strconv.Itoa(l) != num {
		return nil, false
	}
	L := m.Layers[l]
	for i, n := range linearNames {
		if n == sub {
			return [7]nn.Linear{L.QProj, L.KProj, L.VProj, L.OProj, L.GateProj, L.UpProj, L.DownProj}[i], true
		}
	}
	return nil, false
}

// Delta adds per-row LoRA contributions. Forward calls it after every base linear, for each row of a sequence
// that uses it: y[out] += s·B·(A·x[in]). module is like "model.layers.3.self_attn.q_proj" (or "lm_head").
type Delta interface {
	Apply(module string, y, x []float32, in, out int)
}

// RowsDelta is an optional extension of Delta: ApplyRows adds the contribution to rows rows at once (x [rows,in],
// y [rows,out]), using p for its products (p may be busy, then its For runs inline). Forward gathers the rows of
// every sequence that shares one Delta value and calls ApplyRows once per module, for different Delta values
// concurrently; without it, Forward calls Apply once per row, sequentially.
type RowsDelta interface {
	ApplyRows(p *kernels.Pool, module string, y, x []float32, rows, in, out int)
}

// Seq is one sequence of a Forward batch.
type Seq struct {
	Tokens    []int    // new tokens, appended after the Cache.Len() tokens already in the cache
	Cache     *KVCache // nil: a throwaway cache (no history)
	Adapter   Delta    // nil: the base model
	AllLogits bool     // logits at every new position, not just the last
}

// scratch holds the activations of one Forward call; it only grows, so steady-state decoding does not allocate
// except for the returned logits.
type scratch struct {
	x, xn, q, k, v, att, tmp, gate, up, hn []float32
	scores                                 [][]float32
	rowSeq, rowPos, outRows                []int
	batch                                  []Seq // the current call's batch, for attentionRange
	layer                                  int
	short                                  []int     // rows attended one by one (see blockedMin)
	blockS                                 []float32 // scores of a block of rows (attentionBlocked)
	ab                                     blockJob  // the block attentionHeads works on

	// Adapter deltas (see linear and groupDeltas): rows of the batch grouped by Delta value.
	groups  []deltaGroup
	perm    []int     // rows ordered by group; group g owns perm[g.off : g.off+g.n]
	gx, gy  []float32 // gathered inputs and outputs of non-contiguous groups
	dModule string    // the current linear, for deltaRange
	dy, dx  []float32
	dIn     int
	dOut    int
}

// deltaGroup is the rows of the sequences that share one RowsDelta (or of one sequence with a plain Delta).
type deltaGroup struct {
	d        Delta
	rd       RowsDelta // d as a RowsDelta, or nil
	off, n   int       // rows perm[off : off+n]
	first    int       // perm[off] when the rows are contiguous in the batch, else -1 (gathered into gx/gy)
	parallel bool      // runs beside other groups over the pool (small RowsDelta groups)
}

// grow returns b resized to n, reallocating (with doubling, so a growing context is amortised) when too small.
func grow(b []float32, n int) []float32 {
	if cap(b) < n {
		return make([]float32, n, max(n, 2*cap(b)))
	}
	return b[:n]
}

func growInt(b []int, n int) []int {
	if cap(b) < n {
		return make([]int, n)
	}
	return b[:n]
}

// Forward appends each sequence's tokens to its cache (positions continue from Cache.Len()) and returns, per
// sequence, logits [len(Tokens)][vocab] if AllLogits, else [1][vocab] for the last position. Every base linear
// runs once over the stacked rows of all sequences; each row then adds its own adapter's delta. On error no cache
// is modified.
func (m *Model) Forward(batch []Seq) ([][][]float32, error) {
	c := m.Config
	if len(batch) == 0 {
		return [][][]float32{}, nil
	}
	T, R := 0, 0
	for i := range batch {
		if batch[i].Cache == nil { // nil caches are replaced; do not touch the caller's slice
			batch = append([]Seq(nil), batch...)
			break
		}
	}
	for i := range batch {
		sq := &batch[i]
		if len(sq.Tokens) == 0 {
			return nil, fmt.Errorf("llama: forward: sequence %d has no tokens", i)
		}
		for j, t := range sq.Tokens {
			if t < 0 || t >= c.VocabSize {
				return nil, fmt.Errorf("llama: forward: sequence %d token %d: id %d is outside the vocabulary [0, %d)", i, j, t, c.VocabSize)
			}
		}
		if sq.Cache == nil {
			sq.Cache = m.NewCache(len(sq.Tokens))
		}
		kc := sq.Cache
		if len(kc.k) != len(m.Layers) || kc.kvDim != c.KVDim() {
			return nil, fmt.Errorf("llama: forward: sequence %d: cache belongs to a different model", i)
		}
		for j := range i {
			if batch[j].Cache == kc {
				return nil, fmt.Errorf("llama: forward: sequences %d and %d share a cache", j, i)
			}
		}
		if kc.n+len(sq.Tokens) > kc.max {
			return nil, fmt.Errorf("llama: forward: sequence %d: %d cached + %d new tokens exceed the cache size %d", i, kc.n, len(sq.Tokens), kc.max)
		}
		T += len(sq.Tokens)
		if sq.AllLogits {
			R += len(sq.Tokens)
		} else {
			R++
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range batch {
		batch[i].Cache.reserve(batch[i].Cache.n + len(batch[i].Tokens))
	}

	H, Q, KV, I, V := c.HiddenSize, c.QDim(), c.KVDim(), c.IntermediateSize, c.VocabSize
	s := &m.s
	s.x, s.xn, s.tmp = grow(s.x, T*H), grow(s.xn, T*H), grow(s.tmp, T*H)
	s.q, s.att = grow(s.q, T*Q), grow(s.att, T*Q)
	s.k, s.v = grow(s.k, T*KV), grow(s.v, T*KV)
	s.gate, s.up = grow(s.gate, T*I), grow(s.up, T*I)
	s.rowSeq, s.rowPos, s.outRows = growInt(s.rowSeq, T), growInt(s.rowPos, T), growInt(s.outRows, R)
	maxCtx := 0
	r, o := 0, 0
	for i, sq := range batch {
		for j, t := range sq.Tokens {
			s.rowSeq[r], s.rowPos[r] = i, sq.Cache.n+j
			m.EmbedTokens.Row(t, s.x[r*H:(r+1)*H])
			if sq.AllLogits || j == len(sq.Tokens)-1 {
				s.outRows[o] = r
				o++
			}
			r++
		}
		maxCtx = max(maxCtx, sq.Cache.n+len(sq.Tokens))
	}
	// Sequences with many new tokens (prefill) use blocked matrix-multiply attention; the other rows go one by one.
	s.short = s.short[:0]
	r = 0
	for _, sq := range batch {
		if len(sq.Tokens) < blockedMin {
			for j := range sq.Tokens {
				s.short = append(s.short, r+j)
			}
		}
		r += len(sq.Tokens)
	}
	m.groupDeltas(batch)
	if slices.ContainsFunc(s.groups, func(g deltaGroup) bool { return g.first < 0 }) { // some rows are gathered
		w := max(H, Q, KV, I)
		s.gx, s.gy = grow(s.gx, T*w), grow(s.gy, T*w)
	}
	nw := m.Pool.Threads()
	if len(s.scores) != nw {
		s.scores = make([][]float32, nw)
	}
	for w := range s.scores {
		s.scores[w] = grow(s.scores[w], maxCtx*c.NumAttentionHeads/c.NumKeyValueHeads)
	}

	eps := float32(c.RMSNormEps)
	for l, L := range m.Layers {
		names := &m.names[l]
		// Attention block: x += o_proj(attention(rope(q_proj(n)), rope(k_proj(n)), v_proj(n))), n = rmsnorm(x).
		rmsNormRows(s.xn, s.x, L.InputLayernorm, eps, T, H)
		m.linear(L.QProj, names[0], s.q, s.xn, T)
		m.linear(L.KProj, names[1], s.k, s.xn, T)
		m.linear(L.VProj, names[2], s.v, s.xn, T)
		if c.QKNorm { // qwen3: RMSNorm over each head of q and k, before RoPE
			rmsNormRows(s.q, s.q, L.QNorm, eps, T*c.NumAttentionHeads, c.HeadDim)
			rmsNormRows(s.k, s.k, L.KNorm, eps, T*c.NumKeyValueHeads, c.HeadDim)
		}
		for r := range T {
			kernels.RoPE(s.q[r*Q:(r+1)*Q], s.rowPos[r], c.HeadDim, m.invFreq)
			kernels.RoPE(s.k[r*KV:(r+1)*KV], s.rowPos[r], c.HeadDim, m.invFreq)
			kc, pos := batch[s.rowSeq[r]].Cache, s.rowPos[r]
			copy(kc.k[l][pos*KV:(pos+1)*KV], s.k[r*KV:(r+1)*KV])
			copy(kc.v[l][pos*KV:(pos+1)*KV], s.v[r*KV:(r+1)*KV])
		}
		s.batch, s.layer = batch, l
		if len(s.short)*c.NumAttentionHeads*maxCtx*c.HeadDim < 1<<15 {
			m.attnFn(0, len(s.scores)) // too little work to be worth waking the pool
		} else {
			m.Pool.For(len(s.scores), m.attnFn)
		}
		r := 0
		for _, sq := range batch {
			if len(sq.Tokens) >= blockedMin {
				m.attentionBlocked(sq, r, l)
			}
			r += len(sq.Tokens)
		}
		m.linear(L.OProj, names[3], s.tmp, s.att, T)
		kernels.Axpy(1, s.tmp, s.x)

		// MLP block: x += down_proj(silu(gate_proj(n)) · up_proj(n)), n = rmsnorm(x).
		rmsNormRows(s.xn, s.x, L.PostAttentionLayernorm, eps, T, H)
		m.linear(L.GateProj, names[4], s.gate, s.xn, T)
		m.linear(L.UpProj, names[5], s.up, s.xn, T)
		kernels.SiLUMul(s.gate, s.gate, s.up)
		m.linear(L.DownProj, names[6], s.tmp, s.gate, T)
		kernels.Axpy(1, s.tmp, s.x)
	}
	for i := range batch {
		batch[i].Cache.n += len(batch[i].Tokens)
	}
	s.batch = nil
	clear(s.groups) // do not keep adapters alive after the call
	s.groups = s.groups[:0]

	// Final norm and the LM head, only on the rows whose logits were asked for.
	s.hn = grow(s.hn, R*H)
	for o, r := range s.outRows {
		kernels.RMSNorm(s.hn[o*H:(o+1)*H], s.x[r*H:(r+1)*H], m.Norm, eps)
	}
	flat := make([]float32, R*V)
	m.LMHead.Forward(m.Pool, flat, s.hn, R) // straight into the returned logits
	out := make([][][]float32, len(batch))
	o = 0
	for i, sq := range batch {
		n := 1
		if sq.AllLogits {
			n = len(sq.Tokens)
		}
		out[i] = make([][]float32, n)
		for j := range n {
			out[i][j] = flat[(o+j)*V : (o+j+1)*V : (o+j+1)*V]
		}
		if rd, ok := sq.Adapter.(RowsDelta); ok {
			rd.ApplyRows(m.Pool, "lm_head", flat[o*V:(o+n)*V], s.hn[o*H:(o+n)*H], n, H, V)
		} else if sq.Adapter != nil {
			for j := range n {
				sq.Adapter.Apply("lm_head", out[i][j], s.hn[(o+j)*H:(o+j+1)*H], H, V)
			}
		}
		o += n
	}
	return out, nil
}

// linear runs a base linear over all T rows at once, then adds the adapters' deltas.
func (m *Model) linear(lin nn.Linear, module string, y, x []float32, T int) {
	lin.Forward(m.Pool, y, x, T)
	if len(m.s.groups) == 0 {
		return
	}
	s := &m.s
	s.dModule, s.dy, s.dx, s.dIn, s.dOut = module, y, x, lin.In(), lin.Out()
	parallel := 0
	for g := range s.groups {
		if s.groups[g].parallel {
			parallel++
		} else {
			m.applyGroup(g)
		}
	}
	if parallel > 0 {
		m.Pool.For(len(s.groups), m.deltaFn)
	}
	s.dy, s.dx = nil, nil
}

// bigGroup is the number of rows from which an adapter's delta gets the whole pool for its own products rather
// than running beside other adapters' deltas.
const bigGroup = 32

// groupDeltas groups the batch's rows by adapter: the sequences sharing one RowsDelta value form one group (its
// rows go through A and B together), a plain Delta gets a group per sequence.
func (m *Model) groupDeltas(batch []Seq) {
	s := &m.s
	s.groups, s.perm = s.groups[:0], s.perm[:0]
	r0 := 0
	for i, sq := range batch {
		r := r0
		r0 += len(sq.Tokens)
		if sq.Adapter == nil {
			continue
		}
		rd, _ := sq.Adapter.(RowsDelta)
		shared := rd != nil && reflect.TypeOf(sq.Adapter).Comparable()
		if shared && slices.ContainsFunc(batch[:i], func(p Seq) bool { return p.Adapter == sq.Adapter }) {
			continue // already in an earlier sequence's group
		}
		g := deltaGroup{d: sq.Adapter, rd: rd, off: len(s.perm), first: r}
		for j := i; j < len(batch); j++ {
			if j == i || shared && batch[j].Adapter == sq.Adapter {
				for k := range batch[j].Tokens {
					s.perm = append(s.perm, r+k)
				}
			}
			r += len(batch[j].Tokens)
		}
		g.n = len(s.perm) - g.off
		for k, row := range s.perm[g.off:] {
			if row != g.first+k {
				g.first = -1
				break
			}
		}
		s.groups = append(s.groups, g)
	}
	small := 0
	for _, g := range s.groups {
		if g.rd != nil && g.n < bigGroup {
			small++
		}
	}
	for i := range s.groups {
		g := &s.groups[i]
		g.parallel = small > 1 && g.rd != nil && g.n < bigGroup
	}
}

// deltaRange applies the parallel groups in [lo, hi).
func (m *Model) deltaRange(lo, hi int) {
	for g := lo; g < hi; g++ {
		if m.s.groups[g].parallel {
			m.applyGroup(g)
		}
	}
}

// applyGroup adds group g's delta for the current linear (s.dModule) to s.dy.
func (m *Model) applyGroup(g int) {
	s := &m.s
	G := &s.groups[g]
	module, y, x, in, out := s.dModule, s.dy, s.dx, s.dIn, s.dOut
	rows := s.perm[G.off : G.off+G.n]
	switch {
	case G.rd == nil: // a plain Delta: one row at a time
		for _, r := range rows {
			G.d.Apply(module, y[r*out:(r+1)*out], x[r*in:(r+1)*in], in, out)
		}
	case G.first >= 0:
		r := G.first
		G.rd.ApplyRows(m.Pool, module, y[r*out:(r+G.n)*out], x[r*in:(r+G.n)*in], G.n, in, out)
	default: // gather the rows, apply, scatter-add
		gx, gy := s.gx[G.off*in:(G.off+G.n)*in], s.gy[G.off*out:(G.off+G.n)*out]
		for k, r := range rows {
			copy(gx[k*in:(k+1)*in], x[r*in:(r+1)*in])
		}
		clear(gy)
		G.rd.ApplyRows(m.Pool, module, gy, gx, G.n, in, out)
		for k, r := range rows {
			kernels.Axpy(1, gy[k*out:(k+1)*out], y[r*out:(r+1)*out])
		}
	}
}

func rmsNormRows(y, x, w []float32, eps float32, rows, n int) {
	for r := range rows {
		kernels.RMSNorm(y[r*n:(r+1)*n], x[r*n:(r+1)*n], w, eps)
	}
}

// attentionRange computes, for the workers w in [lo, hi), s.att[r, h] = softmax(q[r,h]·K[kvh]ᵀ/√D over the
// cached positions ≤ pos(r)) · V[kvh], where kvh = h / (heads/kv_heads) (grouped-query attention). The work items
// are (row, kv head) pairs, interleaved over the workers, each with its own score buffer. The query heads of a
// group are the rows of two small GEMMs (scores = Q_g·Kᵀ, then att_g = softmax(scores)·V), so the cached keys
// and values are read once per group, at tile speed.
func (m *Model) attentionRange(lo, hi int) {
	c := m.Config
	s := &m.s
	batch, l := s.batch, s.layer
	D, Q, KV, nkv := c.HeadDim, c.QDim(), c.KVDim(), c.NumKeyValueHeads
	group := c.NumAttentionHeads / nkv
	scale := float32(1 / math.Sqrt(float64(D)))
	items := len(s.short) * nkv
	nw := len(s.scores)
	for w := lo; w < hi; w++ {
		for it := w; it < items; it += nw {
			r, kvh := s.short[it/nkv], it%nkv
			kc, pos := batch[s.rowSeq[r]].Cache, s.rowPos[r]
			start := 0
			if c.SlidingWindow > 0 && pos-c.SlidingWindow+1 > 0 {
				start = pos - c.SlidingWindow + 1
			}
			n, off := pos+1-start, start*KV+kvh*D
			q0 := r*Q + kvh*group*D // the group's query heads are adjacent rows of D
			S := s.scores[w][:group*n]
			kernels.Gemm(nil, false, true, group, n, D, 1, s.q[q0:], D, kc.k[l][off:], KV, 0, S, n)
			kernels.Scale(scale, S)
			for g := range group {
				kernels.Softmax(S[g*n : (g+1)*n])
			}
			kernels.Gemm(nil, false, false, group, D, n, 1, S, n, kc.v[l][off:], KV, 0, s.att[q0:], D)
		}
	}
}

// blockedMin is the number of new tokens from which a sequence's attention runs as matrix multiplications.
const blockedMin = 16

// attentionBlocked computes the attention of the n new tokens of sq (rows r0..r0+n-1) with two GEMMs per head
// and block of rows: S = Q_h·K_hᵀ over the visible positions, a causal (and sliding-window) masked softmax of
// each row of S/√D, then att_h = S·V_h. The heads of a block are spread over the pool, each with its own S.
func (m *Model) attentionBlocked(sq Seq, r0, l int) {
	c := m.Config
	s := &m.s
	kc, n := sq.Cache, len(sq.Tokens)
	p0 := kc.n                // position of the first new token (the cache length advances after the last layer)
	const blk = 128           // query rows per block
	const maxScores = 1 << 22 // floats of S for all heads of a block (16 MB): long contexts take fewer rows
	for b0, bn := 0, 0; b0 < n; b0 += bn {
		lo := 0
		if c.SlidingWindow > 0 {
			lo = max(0, p0+b0-c.SlidingWindow+1)
		}
		bn = min(blk, n-b0, max(16, maxScores/(c.NumAttentionHeads*(p0+b0+blk-lo))))
		hi := p0 + b0 + bn // keys [lo, hi) are visible to some row of the block
		w := hi - lo
		s.blockS = grow(s.blockS, c.NumAttentionHeads*bn*w)
		s.ab = blockJob{K: kc.k[l][lo*c.KVDim():], V: kc.v[l][lo*c.KVDim():], row0: r0 + b0, rows: bn, pos0: p0 + b0,
			lo: lo, w: w}
		m.Pool.For(c.NumAttentionHeads, m.headsFn)
	}
	s.ab = blockJob{}
}

// blockJob is one block of query rows for attentionHeads: rows row0..row0+rows-1 of s.q (positions pos0...)
// against the keys and values lo..lo+w-1 (K and V start at position lo).
type blockJob struct {
	K, V                    []float32
	row0, rows, pos0, lo, w int
}

// attentionHeads runs the block s.ab for heads [h0, h1).
func (m *Model) attentionHeads(h0, h1 int) {
	c, s, j := m.Config, &m.s, &m.s.ab
	D, Q, KV := c.HeadDim, c.QDim(), c.KVDim()
	group := c.NumAttentionHeads / c.NumKeyValueHeads
	scale := float32(1 / math.Sqrt(float64(D)))
	for h := h0; h < h1; h++ {
		off := (h / group) * D
		S := s.blockS[h*j.rows*j.w : (h+1)*j.rows*j.w]
		kernels.Gemm(nil, false, true, j.rows, j.w, D, 1, s.q[j.row0*Q+h*D:], Q, j.K[off:], KV, 0, S, j.w)
		for i := range j.rows {
			pos := j.pos0 + i
			row := S[i*j.w : (i+1)*j.w]
			first := 0
			if c.SlidingWindow > 0 {
				first = max(0, pos-c.SlidingWindow+1-j.lo)
			}
			last := pos - j.lo // inclusive
			kernels.Scale(scale, row[first:last+1])
			kernels.Softmax(row[first : last+1])
			clear(row[:first])
			clear(row[last+1:])
		}
		kernels.Gemm(nil, false, false, j.rows, D, j.w, 1, S, j.w, j.V[off:], KV, 0, s.att[j.row0*Q+h*D:], Q)
	}
}
