package merge

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/nn"
	"github.com/lorakit/lorakit/models/safetensors"
	"github.com/lorakit/lorakit/quant"
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
	_ llama.Delta = Weighted{}
)

// Weighted is a llama.Delta that sums several adapters, each scaled by its merge weight.
type Weighted struct {
	Adapters []*lora.Adapter
	Weights  []float64
}

// Apply adds Σ wᵢ·sᵢ·Bᵢ·(Aᵢ·x) for module.
func (d Weighted) Apply(module string, y, x []float32, in, out int) {
	var tmp []float32
	for i, a := range d.Adapters {
		if a.Modules[module] == nil {
			continue
		}
		if d.Weights[i] == 1 {
			a.Apply(module, y, x, in, out)
			continue
		}
		if tmp == nil {
			tmp = make([]float32, len(y))
		} else {
			clear(tmp)
		}
		a.Apply(module, tmp, x, in, out)
		kernels.Axpy(float32(d.Weights[i]), tmp, y)
	}
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
	load := func(dir string) (*llama.Model, *safetensors.Checkpoint, error) {
		cfg, err := llama.LoadConfig(dir)
		if err != nil {
			return nil, nil, err
		}
		ck, err := safetensors.OpenCheckpoint(dir)
		if err != nil {
			return nil, nil, err
		}
		qs, err := findQuantized(ck)
		if err != nil {
			ck.Close()
			return nil, nil, err
		}
		opts := llama.LoadOptions{Pool: pool}
		if len(qs) > 0 {
			opts.LoadLinear = func(c *safetensors.Checkpoint, module string, out, in int) (nn.Linear, bool, error) {
				if qs[module+".weight"] == nil {
					return nil, false, nil
				}
				b, ok, err := quant.FromCheckpoint(c, module+".weight")
				if err != nil || !ok {
					return nil, false, err
				}
				return &nn.Quantized{Q: b}, true, nil
			}
		}
		m, err := llama.Load(ck, cfg, opts)
		if err != nil {
			ck.Close()
			return nil, nil, err
		}
		return m, ck, nil
	}
	base, bck, err := load(baseDir)
	if err != nil {
		return nil, fmt.Errorf("load base: %w", err)
	}
	defer bck.Close()
	merged, mck, err := load(mergedDir)
	if err != nil {
		return nil, fmt.Errorf("load merged model: %w", err)
	}
	defer mck.Close()

	d := Weighted{}
	for _, s := range srcs {
		d.Adapters = append(d.Adapters, s.Adapter)
		d.Weights = append(d.Weights, s.Weight)
	}
	dt := safetensors.F32
	first := firstModule(srcs)
	if info, _, ok := mck.Info(first + ".weight"); ok {
		dt = info.DType
	}
	if _, _, ok := mck.Info(first + ".weight.absmax"); ok {
		dt = "NF4"
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
		adapted, err := run(base, d)
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

func firstModule(srcs []Source) string {
	for _, s := range srcs {
		if names := s.Adapter.Names(); len(names) > 0 {
			return names[0]
		}
	}
	return ""
}
