package train

import (
	"fmt"

	spnn "github.com/nlpodyssey/spago/nn"

	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/nn"
)

// DoRA in the linear op (a Proj with Mag set), as PEFT's DoRA layer computes it. With x̃ = dropout(x),
// V = W + s·B·A, its row norms n = ‖V‖ (detached: a constant of the step, section 4.3 of the DoRA paper) and
// g = m/n:
//
//	y = W·x + b + (g − 1)⊙(W·x̃) + g⊙(s·B·A·x̃)
//
// which without dropout is g⊙(W·x + s·B·A·x) + b. The op keeps u = W·x̃ + s·B·A·x̃ for the gradient of m:
// ∂y/∂m = u/n. Upstream of u the gradient is g⊙dy, so the LoRA backward runs on g⊙dy, and the base's dx gets
// Wᵀ·dy + mask⊙(Wᵀ·((g − 1)⊙dy)).

// doraState is what a DoRA projection's forward leaves for its backward.
type doraState struct {
	norm, g []float32 // n = ‖W + s·B·A‖ and g = m/n [Out]
	u       []float32 // W·x̃ + s·B·A·x̃ [m, Out]
}

// doraForward finishes projection i (a DoRA Proj) of f: dst [m, Out] holds base(x) = W·x + b, xd = dropout(x)
// (x itself without dropout, f.mask[i] nil) and xa = xd·Aᵀ [m, R].
func (f *linearFn) doraForward(i int, p *Proj, dst, xd, xa []float32) {
	pool := f.env.Pool
	m, in, out, r := f.m, p.In, p.Out, p.R
	w, release := f.env.baseWeight(p.Base)
	defer release()
	st := &doraState{norm: make([]float32, out), g: make([]float32, out), u: f.env.get(m * out)}
	lora.WeightNorm(pool, st.norm, lora.F32Rows(w, in), vals(p.A), vals(p.B), p.Scale, r, in, out)
	lora.DoRAScale(st.g, vals(p.Mag), st.norm)
	u := st.u
	if f.mask[i] == nil { // no dropout: W·x̃ = base(x) − b
		copy(u, dst)
		for j := 0; j < m; j++ {
			if p.baseBias != nil {
				kernels.Axpy(-1, p.baseBias, u[j*out:(j+1)*out])
			}
		}
	} else {
		kernels.MatMulF32T(pool, u, xd, w, m, out, in)
	}
	kernels.Axpy(-1, u, dst)                                // dst = b (no dropout) or W·x + b − W·x̃
	lora.Expand(pool, u, xa, vals(p.B), p.Scale, m, out, r) // u = W·x̃ + s·B·A·x̃
	for j := 0; j < m; j++ {
		d, uj := dst[j*out:(j+1)*out], u[j*out:(j+1)*out]
		for o, g := range st.g {
			d[o] += g * uj[o]
		}
	}
	if f.dora == nil {
		f.dora = make([]*doraState, len(f.projs))
	}
	f.dora[i] = st
}

// doraGrad starts projection i's backward: it adds the magnitude's gradient Σ_rows dy⊙u/n, and returns g⊙dy
// [m, Out] (contiguous, from the Env's pool; the caller puts it back) for the LoRA and base products that follow.
// gp [m, Out] with leading dimension ld is dy (a private copy when ld ≠ f.n: it is recycled here). With dropout it also adds to dx the
// part of the base's gradient that g⊙dy misses: (1 − mask)⊙(Wᵀ·((1 − g)⊙dy)).
func (f *linearFn) doraGrad(i int, p *Proj, gp []float32, ld int, dx []float32) []float32 {
	st := f.dora[i]
	m, in, out := f.m, p.In, p.Out
	dm := make([]float32, out)
	gs := f.env.get(m * out)
	for j := 0; j < m; j++ {
		dy, uj, sj := gp[j*ld:j*ld+out], st.u[j*out:(j+1)*out], gs[j*out:(j+1)*out]
		for o, d := range dy {
			dm[o] += d * uj[o]
			sj[o] = st.g[o] * d
		}
	}
	for o, n := range st.norm {
		if n == 0 {
			dm[o] = 0
		} else {
			dm[o] /= n
		}
	}
	accGrad(p.Mag, out, 1, dm)
	if mk := f.mask[i]; mk != nil && dx != nil {
		diff := f.env.get(m * out) // (1 − g)⊙dy = dy − g⊙dy
		for j := 0; j < m; j++ {
			for o := 0; o < out; o++ {
				diff[j*out+o] = gp[j*ld+o] - gs[j*out+o]
			}
		}
		w, release := f.env.baseWeight(p.Base)
		t := f.env.get(m * in)
		kernels.Gemm(f.env.Pool, false, false, m, in, out, 1, diff, out, w, in, 0, t, in)
		release()
		for k, v := range t {
			dx[k] += v * (1 - mk[k])
		}
		f.env.put(t)
		f.env.put(diff)
	}
	if ld != f.n { // a private copy of this projection's columns
		f.env.put(gp)
	}
	f.env.put(st.u)
	st.u = nil
	return gs
}

// addDoRA gives a LoRA projection its DoRA magnitude, initialised as PEFT does to ‖W + s·B·A‖ per row (‖W‖, B
// being zero), and keeps the base's bias, which DoRA leaves unscaled. PEFT's name for the parameter is the key
// it saves (…lora_magnitude_vector); the trainer decays it like every adapter weight (no "bias" in its name).
func (n *Net) addDoRA(p *Proj, lin nn.Linear) {
	m := make([]float32, p.Out)
	n.doraNorm(p, m)
	p.Mag = n.addParam(lora.KeyPrefix+p.Name+".lora_magnitude_vector", spnn.NewParam(newMat(p.Out, 1, m)), true)
	if l, ok := lin.(*nf4Linear); ok {
		p.baseBias = l.bias
	} else {
		p.baseBias = linearBiasAny(lin, p.Out, n.Env)
	}
}

// doraNorm writes ‖W + s·B·A‖ of p's current factors into dst [Out].
func (n *Net) doraNorm(p *Proj, dst []float32) {
	w, release := n.Env.baseWeight(p.Base)
	defer release()
	lora.WeightNorm(n.Env.Pool, dst, lora.F32Rows(w, p.In), vals(p.A), vals(p.B), p.Scale, p.R, p.In, p.Out)
}

// setMagnitude loads a DoRA magnitude from pr (--init-adapter). A LoRA adapter starting a DoRA run gets PEFT's
// initial magnitude over its factors, ‖W + s·B·A‖; a DoRA adapter cannot start a LoRA run (its magnitudes would
// be dropped).
func (n *Net) setMagnitude(p *Proj, pr *lora.Pair) error {
	switch {
	case p.Mag == nil && pr.Magnitude != nil:
		return fmt.Errorf("adapter %s is DoRA (lora_magnitude_vector): train with --use-dora to continue it", p.Name)
	case p.Mag == nil:
		return nil
	case pr.Magnitude == nil:
		n.doraNorm(p, vals(p.Mag))
		return nil
	case len(pr.Magnitude) != p.Out:
		return fmt.Errorf("adapter %s: DoRA magnitude has %d values, want %d", p.Name, len(pr.Magnitude), p.Out)
	}
	copy(vals(p.Mag), pr.Magnitude)
	return nil
}

// LinearRows reads the frozen NF4 weight as dequantised f32 rows (models.RowsLinear): a DoRA adapter evaluated
// over a QLoRA base takes its row norms from the weights the base computes with.
func (l *nf4Linear) LinearRows() (lora.RowReader, []float32) {
	return func(o0 int, dst []float32) { l.q.DequantizeRange(dst, o0*l.cols) }, l.bias
}
