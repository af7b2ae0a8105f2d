package llama

import (
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/nn"
	"github.com/lorakit/lorakit/models/safetensors"
)

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
	// Compact keeps each quantised weight (from LoadLinear or Quantize, the embedding table included) in its
	// kernels' layout only (quant.Weight.Compact), tensor by tensor as it loads, so that the two layouts are never
	// all resident at once. For inference: a path that needs the row-major codes rebuilds them.
	Compact bool
}

// Tensors is where Load reads weights from, by Hugging Face name and in Hugging Face layout ([out, in],
// rotate_half q/k rows): a safetensors checkpoint, or another format translated on the fly.
type Tensors interface {
	// Info returns a tensor's header entry and the path of the file holding it (for messages).
	Info(name string) (ti safetensors.TensorInfo, file string, ok bool)
	// Bytes returns the tensor's data in Info's dtype.
	Bytes(name string) ([]byte, error)
	// Float32s returns a converted copy.
	Float32s(name string) ([]float32, error)
}

// checkpointTensors reads a safetensors checkpoint.
type checkpointTensors struct{ *safetensors.Checkpoint }

func (c checkpointTensors) Info(name string) (safetensors.TensorInfo, string, bool) {
	ti, f, ok := c.Checkpoint.Info(name)
	if !ok {
		return ti, "", false
	}
	return ti, f.Path, true
}

// Load builds the model from a checkpoint. Every missing or mis-shaped tensor is reported, together, with the file,
// the tensor name and both shapes.
func Load(ckpt *safetensors.Checkpoint, cfg *Config, opts LoadOptions) (*Model, error) {
	return loadFrom(checkpointTensors{ckpt}, ckpt, ckpt.Dir, cfg, opts)
}

// LoadTensors builds the model from weights that are not a safetensors checkpoint; name names them in
// messages. opts.LoadLinear is called with a nil checkpoint.
func LoadTensors(ts Tensors, name string, cfg *Config, opts LoadOptions) (*Model, error) {
	return loadFrom(ts, nil, name, cfg, opts)
}

func loadFrom(ts Tensors, ckpt *safetensors.Checkpoint, where string, cfg *Config, opts LoadOptions) (*Model, error) {
	c := cfg
	H, Q, KV, I, V, D := c.HiddenSize, c.QDim(), c.KVDim(), c.IntermediateSize, c.VocabSize, c.HeadDim
	ld := &loader{ts: ts, ckpt: ckpt, opts: opts}
	m := newModel(cfg, opts)
	m.EmbedTokens = ld.table("model.embed_tokens", V, H)
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
	if c.Classifier() {
		ld.scoreHead(m)
	} else {
		ld.lmHead(m)
	}
	if len(ld.errs) > 0 {
		return nil, fmt.Errorf("llama: load %s: %d problem(s):\n%w", where, len(ld.errs), errors.Join(ld.errs...))
	}
	return m, nil
}

// scoreHead loads a sequence classifier's head, score.weight [num_labels, H]; transformers' score layer has
// no bias, so a score.bias is refused rather than ignored.
func (ld *loader) scoreHead(m *Model) {
	m.Score = ld.dense("score.weight", len(m.Config.Labels), m.Config.HiddenSize)
	if _, path, ok := ld.ts.Info("score.bias"); ok {
		ld.errs = append(ld.errs, fmt.Errorf("%s: tensor score.bias: %s's score head has no bias", path, m.Config.Architectures[0]))
	}
}

// lmHead loads a causal LM's head (the embedding itself when tied). A score.weight beside it means the folder
// is a classifier whose config.json says otherwise: refused, never silently dropped.
func (ld *loader) lmHead(m *Model) {
	c, opts := m.Config, ld.opts
	if _, path, ok := ld.ts.Info("score.weight"); ok {
		ld.errs = append(ld.errs, fmt.Errorf("%s: tensor score.weight is a sequence-classification head, but config.json architectures %v "+
			"names a causal LM: set architectures to %s (with id2label) to load it as a classifier", path, c.Architectures, classifierArch[c.ModelType]))
	}
	if c.TieWordEmbeddings {
		if m.EmbedTokens != nil {
			m.LMHead = m.EmbedTokens
		}
	} else {
		m.LMHead = ld.linear("lm_head", c.VocabSize, c.HiddenSize, false)
	}
	if d, ok := m.LMHead.(*nn.Dense); ok && opts.QuantizeHead != nil {
		head, err := opts.QuantizeHead(d)
		if err != nil {
			ld.errs = append(ld.errs, fmt.Errorf("lm_head: %w", err))
		} else {
			m.LMHead = head
		}
	}
}

// newModel returns a model without weights: its pool, rotary frequencies and module names.
func newModel(cfg *Config, opts LoadOptions) *Model {
	m := &Model{Config: cfg, Pool: opts.Pool, invFreq: cfg.InvFreq()}
	m.attnFn, m.headsFn, m.ropeFn = m.attentionRange, m.attentionHeads, m.ropeRows
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
	ts   Tensors
	ckpt *safetensors.Checkpoint // nil unless ts is a checkpoint (for LoadLinear)
	opts LoadOptions
	errs []error
}

func (ld *loader) info(name string, shape ...int) (safetensors.TensorInfo, string, bool) {
	ti, path, ok := ld.ts.Info(name)
	if !ok {
		ld.errs = append(ld.errs, fmt.Errorf("tensor %s: missing (want shape %v)", name, shape))
		return ti, "", false
	}
	if !slices.Equal(ti.Shape, shape) {
		ld.errs = append(ld.errs, fmt.Errorf("%s: tensor %s: shape %v, want %v", path, name, ti.Shape, shape))
		return ti, path, false
	}
	if !ti.DType.IsFloat() {
		ld.errs = append(ld.errs, fmt.Errorf("%s: tensor %s: dtype %s is not a float type", path, name, ti.DType))
		return ti, path, false
	}
	return ti, path, true
}

// vector loads a 1-D tensor as an f32 copy.
func (ld *loader) vector(name string, n int) []float32 {
	_, path, ok := ld.info(name, n)
	if !ok {
		return nil
	}
	v, err := ld.ts.Float32s(name)
	if err != nil {
		ld.errs = append(ld.errs, fmt.Errorf("%s: tensor %s: %w", path, name, err))
		return nil
	}
	return v
}

// dense maps a 2-D weight [rows, cols] in its stored dtype.
func (ld *loader) dense(name string, rows, cols int) *nn.Dense {
	ti, path, ok := ld.info(name, rows, cols)
	if !ok {
		return nil
	}
	raw, err := ld.ts.Bytes(name)
	if err == nil {
		var d *nn.Dense
		if d, err = nn.NewDense(ti.DType, raw, rows, cols); err == nil {
			return d
		}
	}
	ld.errs = append(ld.errs, fmt.Errorf("%s: tensor %s: %w", path, name, err))
	return nil
}

// table loads the embedding table [rows, cols]: as LoadLinear serves it when that is a table (a GGUF Q8_0
// embedding stays in its blocks), else in its stored dtype.
func (ld *loader) table(module string, rows, cols int) nn.Table {
	if ld.opts.LoadLinear != nil {
		lin, ok, err := ld.opts.LoadLinear(ld.ckpt, module, rows, cols)
		if err != nil {
			ld.errs = append(ld.errs, fmt.Errorf("%s: %w", module, err))
			return nil
		}
		if t, isTable := lin.(nn.Table); ok && isTable && lin.In() == cols && lin.Out() == rows {
			ld.compact(lin)
			return t
		}
	}
	if d := ld.dense(module+".weight", rows, cols); d != nil {
		return d
	}
	return nil // not a typed nil: callers test the interface against nil
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
			ld.compact(lin)
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
		ld.compact(lin)
		return lin
	}
	return d
}

// compact applies opts.Compact to a layer just loaded.
func (ld *loader) compact(lin nn.Linear) {
	if q, ok := lin.(*nn.Quantized); ok && ld.opts.Compact {
		q.Q.Compact()
	}
}

// biased adds a bias to a linear layer that has none of its own.
type biased struct {
	nn.Linear
	b []float32
}

// Unwrap is the layer without the bias (models moves its weights into resident memory).
func (l biased) Unwrap() nn.Linear { return l.Linear }

func (l biased) Forward(p *kernels.Pool, y, x []float32, m int) {
	l.Linear.Forward(p, y, x, m)
	nn.AddBias(y, l.b, m)
}
