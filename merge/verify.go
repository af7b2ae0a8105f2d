package merge

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"

	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/nn"
	"github.com/lorakit/lorakit/models/safetensors"
)

// VerifyResult compares forward(base + adapters) with forward(merged) on a few token sequences.
type VerifyResult struct {
	Sequences     int     `json:"sequences"`
	Positions     int     `json:"positions"`
	DType         string  `json:"dtype"`          // dtype of the merged weights
	MaxAbsDiff    float64 `json:"max_abs_diff"`   // max |logit(base+adapters) − logit(merged)|
	Bound         float64 `json:"bound"`          // allowed MaxAbsDiff for that dtype
	AdapterEffect float64 `json:"adapter_effect"` // max |logit(base+adapters) − logit(base)|
	MaxAbsLogit   float64 `json:"max_abs_logit"`
	OK            bool    `json:"ok"`
	Reason        string  `json:"reason,omitempty"` // why it failed, or a caveat
}

// lora.Adapter and Weighted are what llama.Forward applies.
var (
	_ llama.Delta = (*lora.Adapter)(nil)
	_ llama.Delta = (*Weighted)(nil)
)

// Weighted is a llama.Delta that sums several adapters, each scaled by its merge weight.
type Weighted struct {
	Adapters []*lora.Adapter
	Weights  []float64
}

// ApplyRows adds Σ wᵢ·sᵢ·Bᵢ·(Aᵢ·x) for module to each of the rows rows of y.
func (d *Weighted) ApplyRows(p *kernels.Pool, module string, y, x []float32, rows, in, out int) {
	var tmp []float32
	for i, a := range d.Adapters {
		if a.Modules[module] == nil {
			continue
		}
		if d.Weights[i] == 1 {
			a.ApplyRows(p, module, y, x, rows, in, out)
			continue
		}
		if tmp == nil {
			tmp = make([]float32, rows*out)
		} else {
			clear(tmp)
		}
		a.ApplyRows(p, module, tmp, x, rows, in, out)
		kernels.Axpy(float32(d.Weights[i]), tmp, y[:rows*out])
	}
	if module == lora.HeadModule { // trained token rows replace logits whole, after every sum
		for _, a := range d.Adapters {
			a.HeadTokens(y, x, rows, out)
		}
	}
}

// EmbedRow is the first adapter's trained row of token id, if any (llama.TokenEmbedder; merge refuses two
// adapters that both replace rows of a table).
func (d *Weighted) EmbedRow(id int, dst []float32) bool {
	for _, a := range d.Adapters {
		if a.EmbedRow(id, dst) {
			return true
		}
	}
	return false
}

// BoundFor is the largest logit difference Verify accepts between base+adapter (f32 math on the stored base)
// and a merged model whose weights were rounded once to dt, relative to the logit scale: f32 only reorders
// sums (1e-4), bf16/f16 weights carry a relative rounding of up to 2⁻⁹/2⁻¹² that reaches the logits amplified
// by depth (measured on tiny random models: up to ≈0.022·scale for bf16). Verify also fails a merged model
// that is farther than a quarter of the adapter's own effect from base+adapter, which catches a wrong or
// missing share of the adapter long before these bounds do.
func BoundFor(dt safetensors.DType, maxAbsLogit float64) float64 {
	scale := math.Max(1, maxAbsLogit)
	switch dt {
	case safetensors.BF16:
		return 0.05 * scale
	case safetensors.F16:
		return 0.00625 * scale
	case "NF4":
		return 0.5 * scale
	}
	return 1e-4 * scale
}

// Verify loads the base with the adapters applied unmerged and the merged folder, runs both on three seeded
// random token sequences and compares every position's logits.
func Verify(baseDir, mergedDir string, srcs []Source, pool *kernels.Pool) (*VerifyResult, error) {
	if pool == nil {
		pool = kernels.NewPool(0)
	}
	// weights only: a merged folder's tokenizer is a copy of the base's and plays no part in the logits
	load := func(dir string) (*models.Model, error) {
		return models.Load(dir, models.LoadOptions{Pool: pool, NoTokenizer: true})
	}
	bm, err := load(baseDir)
	if err != nil {
		return nil, fmt.Errorf("load base: %w", err)
	}
	defer bm.Close()
	mm, err := load(mergedDir)
	if err != nil {
		return nil, fmt.Errorf("load merged model: %w", err)
	}
	defer mm.Close()
	base, merged, mck := bm.Net, mm.Net, mm.Checkpoint()

	d := &Weighted{}
	for _, s := range srcs {
		// DoRA's unmerged row scales come from the base weights (checkDoRA: such an adapter is merged alone)
		if err := s.Adapter.PrepareDoRA(pool, models.AdapterBase(base, baseDir)); err != nil {
			return nil, fmt.Errorf("verify: %w", err)
		}
		s.Adapter.TiedHead = base.Config.TieWordEmbeddings // trained embedding rows reach a tied head, as in PEFT
		d.Adapters = append(d.Adapters, s.Adapter)
		d.Weights = append(d.Weights, s.Weight)
	}
	dt := safetensors.F32
	first := firstModule(srcs)
	if mck != nil { // always, for the folders merge writes
		if info, _, ok := mck.Info(first + ".weight"); ok {
			dt = info.DType
		}
		if _, _, ok := mck.Info(first + ".weight.absmax"); ok {
			dt = "NF4"
		}
	}
	res := &VerifyResult{DType: string(dt)}
	rng := rand.New(rand.NewPCG(20240611, 1))
	vocab := base.Config.VocabSize
	for _, n := range []int{5, 11, 16} {
		n = min(n, base.Config.MaxPositionEmbeddings)
		toks := make([]int, n)
		for i := range toks {
			toks[i] = rng.IntN(vocab)
		}
		run := func(m *llama.Model, delta llama.Delta) ([][]float32, error) {
			out, err := m.Forward([]llama.Seq{{Tokens: toks, Adapter: delta, AllLogits: true}})
			if err != nil {
				return nil, err
			}
			return out[0], nil
		}
		plain, err := run(base, nil)
		if err != nil {
			return nil, err
		}
		undo, err := patchModel(base, srcs)
		if err != nil {
			return nil, err
		}
		adapted, err := run(base, d)
		undo()
		if err != nil {
			return nil, err
		}
		mergedOut, err := run(merged, nil)
		if err != nil {
			return nil, err
		}
		for pos := range adapted {
			for j, v := range adapted[pos] {
				res.MaxAbsLogit = math.Max(res.MaxAbsLogit, math.Abs(float64(v)))
				res.MaxAbsDiff = math.Max(res.MaxAbsDiff, math.Abs(float64(v-mergedOut[pos][j])))
				res.AdapterEffect = math.Max(res.AdapterEffect, math.Abs(float64(v-plain[pos][j])))
				if math.IsNaN(float64(mergedOut[pos][j])) {
					res.MaxAbsDiff = math.Inf(1)
				}
			}
		}
		res.Sequences++
		res.Positions += n
	}
	res.Bound = BoundFor(dt, res.MaxAbsLogit)
	res.OK = true
	switch {
	case !(res.MaxAbsDiff <= res.Bound):
		res.OK = false
		res.Reason = fmt.Sprintf("max abs logit difference %.4g exceeds the %s bound %.4g", res.MaxAbsDiff, dt, res.Bound)
	case res.MaxAbsDiff <= 0.25*res.AdapterEffect:
		// the merged model is far closer to base+adapter than the adapter's own effect: pass
	case dt == "NF4":
		res.Reason = fmt.Sprintf("the merged weights were re-quantised to NF4: their rounding moves the logits by %.3g (adapter effect %.3g), so this check is coarse", res.MaxAbsDiff, res.AdapterEffect)
	case res.AdapterEffect <= res.Bound/5:
		res.Reason = fmt.Sprintf("the adapter moves the logits by at most %.3g, within %s rounding noise (%.3g): the check cannot tell a merged model from the base", res.AdapterEffect, dt, res.Bound/5)
	default:
		// Rounding noise is far below the adapter's own effect; a merged model this far from base+adapter
		// carries a wrong share of the adapter (missing module, wrong scaling).
		res.OK = false
		res.Reason = fmt.Sprintf("max abs logit difference %.4g is more than a quarter of the adapter's effect %.4g", res.MaxAbsDiff, res.AdapterEffect)
	}
	return res, nil
}

// patchModel applies to m, in memory, the parts of the adapters that are not per-module deltas Weighted can
// apply: modules_to_save and base-layer tensors (replacing embeddings, lm_head, linear weights or biases) and
// LoRA on embeddings (E[v] += wᵢ·sᵢ·Σₖ A[k,v]·B[:,k], row by row, independently of the merge's GEMM). A tied
// lm_head keeps the original embedding, as in PEFT's unmerged forward. undo restores m.
func patchModel(m *llama.Model, srcs []Source) (undo func(), err error) {
	full := map[string]*safetensors.Tensor{}
	embeds := map[string][]delta{}
	for _, s := range srcs {
		if s.Adapter == nil {
			continue
		}
		for n, t := range s.Adapter.BaseLayers {
			full[n] = &t
		}
		for n, t := range s.Adapter.Saved {
			full[n] = &t
		}
		for mod, pr := range s.Adapter.Embed {
			embeds[mod+".weight"] = append(embeds[mod+".weight"], delta{pair: pr, weight: float32(s.Weight) * pr.Scale, embed: true})
		}
	}
	if len(full) == 0 && len(embeds) == 0 {
		return func() {}, nil
	}
	emb0, head0 := m.EmbedTokens, m.LMHead
	var layers []*llama.Layer
	var saved []llama.Layer
	undo = func() {
		m.EmbedTokens, m.LMHead = emb0, head0
		for i := len(layers) - 1; i >= 0; i-- {
			*layers[i] = saved[i]
		}
	}
	f32 := func(t *safetensors.Tensor) ([]float32, error) {
		v := make([]float32, len(t.Data)/t.DType.Size())
		return v, safetensors.Decode(t.DType, t.Data, v)
	}
	// The embedding table: replaced and/or with embedding LoRA added.
	if t, ds := full[embedName], embeds[embedName]; t != nil || len(ds) > 0 {
		if m.EmbedTokens == nil {
			return undo, fmt.Errorf("verify: the model has no embedding table")
		}
		e := &nn.Dense{Rows: m.EmbedTokens.Out(), Cols: m.EmbedTokens.In(), DType: safetensors.F32}
		if t != nil {
			if e.F32, err = f32(t); err != nil {
				return undo, err
			}
		} else {
			e.F32 = m.EmbedTokens.ToF32()
		}
		for _, d := range ds {
			pr := d.pair // A [R, vocab], B [dim, R]
			if pr.In != e.Rows || pr.Out != e.Cols {
				return undo, fmt.Errorf("verify: embedding LoRA [%d %d] does not fit the table [%d %d]", pr.In, pr.Out, e.Rows, e.Cols)
			}
			for v := 0; v < pr.In; v++ {
				row := e.F32[v*e.Cols : (v+1)*e.Cols]
				for k := 0; k < pr.R; k++ {
					a := d.weight * pr.A[k*pr.In+v]
					for j := range row {
						row[j] += a * pr.B[j*pr.R+k]
					}
				}
			}
		}
		m.EmbedTokens = e
		delete(full, embedName)
	}
	for name, t := range full {
		v, err := f32(t)
		if err != nil {
			return undo, err
		}
		if name == "lm_head.weight" {
			m.LMHead = &nn.Dense{Rows: t.Shape[0], Cols: t.Shape[1], DType: safetensors.F32, F32: v}
			continue
		}
		module := strings.TrimSuffix(strings.TrimSuffix(name, ".weight"), ".bias")
		isBias := strings.HasSuffix(name, ".bias")
		lin, ok := m.Linear(module)
		idx, sub, ok2 := llama.ParseModule(module)
		if !ok || !ok2 {
			return undo, fmt.Errorf("verify: cannot apply the saved tensor %q to the unmerged model (only embeddings, lm_head and linear weights/biases); merge without --verify", name)
		}
		var nd *nn.Dense
		switch l := lin.(type) {
		case *nn.Dense:
			nd = &nn.Dense{Rows: l.Rows, Cols: l.Cols, DType: safetensors.F32, F32: l.ToF32(), Bias: l.Bias}
		default:
			if !isBias {
				return undo, fmt.Errorf("verify: cannot replace the quantised weight %q in the unmerged model; merge without --verify", name)
			}
			q, ok := lin.(*nn.Quantized)
			if !ok {
				return undo, fmt.Errorf("verify: cannot apply the saved tensor %q to the unmerged model", name)
			}
			nq := *q
			nq.Bias = v
			setLinear(m.Layers[idx], sub, &nq, &layers, &saved)
			continue
		}
		if isBias {
			nd.Bias = v
		} else {
			nd.F32 = v
		}
		setLinear(m.Layers[idx], sub, nd, &layers, &saved)
	}
	return undo, nil
}

// setLinear replaces one linear of L (sub: a llama.LinearNames entry), remembering L's previous state for undo.
func setLinear(L *llama.Layer, sub string, lin nn.Linear, layers *[]*llama.Layer, saved *[]llama.Layer) {
	*layers = append(*layers, L)
	*saved = append(*saved, *L)
	*L.LinearSlot(sub) = lin
}

func firstModule(srcs []Source) string {
	for _, s := range srcs {
		if names := s.Adapter.Names(); len(names) > 0 {
			return names[0]
		}
	}
	for _, s := range srcs {
		for m := range s.Adapter.Embed {
			return m
		}
	}
	return "model.embed_tokens"
}
