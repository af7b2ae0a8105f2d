package train

import (
	"sync"

	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/nn"
	"github.com/lorakit/lorakit/models/quant"
)

// fusedW is the one-product form of a linear op whose projections all have f32 dense frozen bases and plain LoRA
// adapters (no DoRA): the weights of every projection side by side with their scaled B factors,
//
//	W' [ΣOut, K'] = rows of projection p: [ W_p | 0 … s_p·B_p … 0 ],  K' = In + Σ R_p
//
// so that with X' = [x | xa_1 … xa_P] (xa_p = dropout(x)·A_pᵀ) the forward pass is one product Y = X'·W'ᵀ (base
// and LoRA expand, every projection at once, straight into the output), and the backward pass's
// G·W' = [G·W | s_p·G_p·B_p …] gives the base's input gradient and every dxa_p in one product too. The LoRA
// expand and the dxa products have a rank-sized inner dimension: alone they are bound by the memory traffic of
// their [m, Out] operand (15–55 GFLOP/s on smollm2's shapes, measured), where inside the base product they cost
// 16 more columns of its inner dimension. W' is a copy of the frozen weights (the B columns are rewritten each
// forward pass: B changes every step).
//
// A 4-bit base (QLoRA) or a bf16/f16 one is not copied: each pass dequantises or widens it into a pooled W' (as
// the unfused backward pass did into a pooled [Out, In] buffer), so the fused form costs no memory there.
type fusedW struct {
	in, k, n int
	w        []float32       // f32 bases: the fused weights, kept (the B columns rewritten each pass)
	dyn      bool            // W' is refilled from the bases into a pooled buffer each pass (w nil)
	quant    []*quant.Weight // per projection: a 4-bit base's weight (dequantised), or nil (an f32 base, copied)
	f32      [][]float32     // per projection: an f32 base's weight, when dyn
	dense    []*nn.Dense     // per projection: a bf16/f16 base (widened row by row), when dyn
	rows     []int           // per projection: first row in W'
	cols     []int           // per projection: first column of its B block in W' (-1 without an adapter)
	bias     []float32       // [n]: the bases' biases side by side (nil if none has one)
	mu       sync.Mutex
}

// fusedPlans caches the fused weights of each linear op (keyed by its first projection).
type fusedPlans struct {
	mu sync.Mutex
	m  map[*Proj]*fusedW
}

// fusedPlan returns the fused weights of projs, or nil when the op does not have that form.
func (e *Env) fusedPlan(projs []*Proj) *fusedW {
	in, k, n, adapted := projs[0].In, projs[0].In, 0, false
	dyn := e.LowMemory
	for _, p := range projs {
		if p.W != nil || p.Mag != nil || p.In != in {
			return nil
		}
		if _, ok := denseF32(p.Base); !ok {
			if quantOf(p.Base) == nil && !isDense(p.Base) {
				return nil
			}
			dyn = true
		}
		if p.A != nil {
			k += p.R
			adapted = true
		}
		n += p.Out
	}
	if !adapted {
		return nil
	}
	e.fused.mu.Lock()
	defer e.fused.mu.Unlock()
	if fw := e.fused.m[projs[0]]; fw != nil {
		return fw
	}
	fw := &fusedW{in: in, k: k, n: n, dyn: dyn}
	if !dyn {
		fw.w = make([]float32, n*k)
	}
	row, col := 0, in
	for _, p := range projs {
		w, _ := denseF32(p.Base)
		if dyn {
			fw.quant = append(fw.quant, quantOf(p.Base))
			fw.f32 = append(fw.f32, w)
			var d *nn.Dense
			if w == nil && fw.quant[len(fw.quant)-1] == nil {
				d = p.Base.(*nn.Dense)
			}
			fw.dense = append(fw.dense, d)
		} else {
			for o := 0; o < p.Out; o++ {
				copy(fw.w[(row+o)*k:(row+o)*k+in], w[o*in:(o+1)*in])
			}
		}
		if b := baseBiasOf(p.Base); b != nil {
			if fw.bias == nil {
				fw.bias = make([]float32, n)
			}
			copy(fw.bias[row:row+p.Out], b)
		}
		fw.rows = append(fw.rows, row)
		if p.A != nil {
			fw.cols = append(fw.cols, col)
			col += p.R
		} else {
			fw.cols = append(fw.cols, -1)
		}
		row += p.Out
	}
	if e.fused.m == nil {
		e.fused.m = map[*Proj]*fusedW{}
	}
	e.fused.m[projs[0]] = fw
	return fw
}

// quantOf returns the quantised weight of a 4-bit base, or nil.
func quantOf(l BaseLinear) *quant.Weight {
	switch d := l.(type) {
	case *nf4Linear:
		return d.q
	case *nn.Quantized:
		return d.Q
	}
	return nil
}

// isDense reports whether l is a dense base (of any dtype).
func isDense(l BaseLinear) bool {
	_, ok := l.(*nn.Dense)
	return ok
}

// baseBiasOf returns the bias of a dense or quantised base, or nil.
func baseBiasOf(l BaseLinear) []float32 {
	if d, ok := l.(*nf4Linear); ok {
		return d.bias
	}
	return linearBias(l)
}

// weights returns W' with the current B factors: the kept one (locked: release unlocks), or (4-bit, bf16 and
// f16 bases, or Env.LowMemory) a pooled buffer the bases are dequantised, widened or copied into, row by row over
// the pool's threads (release recycles it).
func (fw *fusedW) weights(e *Env, projs []*Proj) (w []float32, release func()) {
	if !fw.dyn {
		fw.mu.Lock() // ops of one fused weight do not overlap in a pass, but a checkpointed layer's recompute may
		fw.setB(fw.w, projs)
		return fw.w, fw.mu.Unlock
	}
	w = e.get(fw.n * fw.k)
	in, k := fw.in, fw.k
	for i, p := range projs {
		q, wf, d, r0 := fw.quant[i], fw.f32[i], fw.dense[i], fw.rows[i]
		e.Pool.For(p.Out, func(lo, hi int) {
			for o := lo; o < hi; o++ {
				row := w[(r0+o)*k : (r0+o+1)*k]
				switch {
				case q != nil:
					q.DequantizeRange(row[:in], o*in)
				case d != nil:
					d.Row(o, row[:in])
				default:
					copy(row[:in], wf[o*in:(o+1)*in])
				}
				clear(row[in:])
			}
		})
	}
	fw.setB(w, projs)
	return w, func() { e.put(w) }
}

// setB writes s_p·B_p of every adapted projection into w (W').
func (fw *fusedW) setB(w []float32, projs []*Proj) {
	for i, p := range projs {
		c := fw.cols[i]
		if c < 0 {
			continue
		}
		b := vals(p.B)
		for o := 0; o < p.Out; o++ {
			dst := w[(fw.rows[i]+o)*fw.k+c : (fw.rows[i]+o)*fw.k+c+p.R]
			for j, v := range b[o*p.R : (o+1)*p.R] {
				dst[j] = p.Scale * v
			}
		}
	}
}

// forwardFused is Forward through the fused weights: xa_p as in Forward, then Y = X'·W'ᵀ (+ biases).
func (f *linearFn) forwardFused(fw *fusedW, y []float32) {
	x := vals(f.x)
	m, pool := f.m, f.env.Pool
	in, k := fw.in, fw.k
	for i, p := range f.projs {
		if p.A == nil {
			continue
		}
		f.shrink(i, p, x)
	}
	xp := f.env.get(m * k)
	for r := 0; r < m; r++ {
		copy(xp[r*k:r*k+in], x[r*in:(r+1)*in])
		for i, p := range f.projs {
			if c := fw.cols[i]; c >= 0 {
				copy(xp[r*k+c:r*k+c+p.R], f.xa[i][r*p.R:(r+1)*p.R])
			}
		}
	}
	w, release := fw.weights(f.env, f.projs)
	kernels.MatMulF32T(pool, y, xp, w, m, fw.n, k)
	release()
	f.env.put(xp)
	nn.AddBias(y, fw.bias, m)
	f.fw = fw
}

// backwardFused is Backward through the fused weights, for an op whose input needs its gradient:
// D = G·W' = [dx_base | dxa_1 … dxa_P], then the factor gradients from G, xa_p and dxa_p, and
// dx = dx_base + Σ_p (dxa_p·A_p) ⊙ mask_p (one product over the stacked A_p without dropout).
func (f *linearFn) backwardFused(g []float32) []float32 {
	fw := f.fw
	m, n, pool := f.m, f.n, f.env.Pool
	in, k := fw.in, fw.k
	// The broadcast tiles take rows in sixes and the rest one axpy at a time (4 of smollm2's 256 rows cost 15% of
	// the product); G is copied into rows padded to a multiple of six, the zero rows' results are not read.
	m6 := (m + 5) / 6 * 6
	gp := g
	if m6 != m {
		gp = f.env.get(m6 * n)
		copy(gp, g)
		clear(gp[m*n:])
	}
	d := f.env.get(m6 * k)
	w, release := fw.weights(f.env, f.projs)
	kernels.Gemm(pool, false, false, m6, k, n, 1, gp, n, w, k, 0, d, k)
	release()
	if m6 != m {
		f.env.put(gp)
	}
	dx := f.env.get(m * in)
	for r := 0; r < m; r++ {
		copy(dx[r*in:(r+1)*in], d[r*k:r*k+in])
	}
	masked, ra := false, 0
	for i, p := range f.projs {
		c := fw.cols[i]
		if c < 0 {
			continue
		}
		r, out, off := p.R, p.Out, fw.rows[i]
		if gB := gradOf(p.B); gB != nil {
			kernels.Gemm(pool, true, false, out, r, m, p.Scale, g[off:], n, f.xa[i], r, 1, gB, r)
		} else {
			dB := f.env.get(out * r)
			kernels.Gemm(pool, true, false, out, r, m, p.Scale, g[off:], n, f.xa[i], r, 0, dB, r)
			f.env.accGradPut(p.B, out, r, dB)
		}
		// dA = dxaᵀ·xd as its transpose xdᵀ·dxa [In, R]: In rows fill the broadcast tiles' sixes, R = 16 rows
		// would leave 4 to the axpy edge (1.8× the speed, measured on smollm2's shapes)
		dAt := f.env.get(in * r)
		kernels.Gemm(pool, true, false, in, r, m, 1, f.xd[i], in, d[c:], k, 0, dAt, r)
		gA := gradOf(p.A)
		if gA == nil {
			gA = f.env.getZero(r * in)
			addTransposed(gA, dAt, in, r)
			f.env.accGradPut(p.A, r, in, gA)
		} else {
			addTransposed(gA, dAt, in, r)
		}
		f.env.put(dAt)
		masked = masked || f.mask[i] != nil
		ra += r
	}
	if !masked { // the adapter columns of D are contiguous: dx += D[:, in:]·[A_1; …; A_P]
		as := f.env.get(ra * in)
		o := 0
		for i, p := range f.projs {
			if fw.cols[i] >= 0 {
				copy(as[o*in:], vals(p.A))
				o += p.R
			}
		}
		kernels.Gemm(pool, false, false, m, in, ra, 1, d[in:], k, as, in, 1, dx, in)
		f.env.put(as)
	} else {
		t := f.env.get(m * in)
		for i, p := range f.projs {
			c := fw.cols[i]
			if c < 0 {
				continue
			}
			mk := f.mask[i]
			if mk == nil {
				kernels.Gemm(pool, false, false, m, in, p.R, 1, d[c:], k, vals(p.A), in, 1, dx, in)
				continue
			}
			kernels.Gemm(pool, false, false, m, in, p.R, 1, d[c:], k, vals(p.A), in, 0, t, in)
			for j := range t {
				dx[j] += t[j] * mk[j]
			}
		}
		f.env.put(t)
	}
	f.env.put(d)
	return dx
}

// addTransposed adds tᵀ to dst [c, r] for t [r, c].
func addTransposed(dst, t []float32, r, c int) {
	for i := 0; i < r; i++ {
		for j, v := range t[i*c : (i+1)*c] {
			dst[j*r+i] += v
		}
	}
}
