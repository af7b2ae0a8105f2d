package train

import (
	"math/rand/v2"

	"github.com/nlpodyssey/spago/mat"
	spnn "github.com/nlpodyssey/spago/nn"

	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/lora"
)

// BaseLinear is a frozen base weight: Y[m, Out] = X[m, In]·Wᵀ (+ bias).
// models/nn.Linear (dense f32/bf16/f16 or NF4) satisfies it.
type BaseLinear interface {
	In() int
	Out() int
	Forward(p *kernels.Pool, y, x []float32, m int)
}

// Proj is one projection of a fused linear op: a frozen base with an optional
// LoRA adapter, or (full fine-tuning) a trainable weight.
//
//	y = x·Wᵀ + b + Scale·(dropout(x)·Aᵀ)·Bᵀ
type Proj struct {
	Name    string // PEFT module name, "model.layers.0.self_attn.q_proj"
	In, Out int
	Base    BaseLinear  // frozen base; nil when W is set
	W, Bias *spnn.Param // full fine-tuning: W [Out, In] f32, optional Bias [Out]
	A, B    *spnn.Param // LoRA: A [R, In], B [Out, R]; nil when not adapted
	R       int
	Scale   float32
	Dropout float32 // LoRA dropout probability (training only)
	// Mag is DoRA's magnitude m [Out] (PEFT's lora_magnitude_vector), nil for LoRA; see ops_dora.go.
	Mag      *spnn.Param
	baseBias []float32 // the frozen base's bias (DoRA does not scale it), nil if none
}

// linearFn computes several projections of one input and concatenates their
// outputs along the columns: Y[m, ΣOut]. Sharing the input in one op keeps the
// gradient of x a single deterministic sum (spago accumulates the gradients of
// a node with several consumers in scheduling order).
type linearFn struct {
	env   *Env
	x     mat.Tensor
	projs []*Proj
	m     int
	n     int    // ΣOut
	seed  uint64 // dropout stream; 0 with dropout disabled
	train bool

	mask [][]float32 // per proj: dropout keep-scale per input element (nil without dropout)
	xd   [][]float32 // per proj: dropout(x) (x itself without dropout)
	xa   [][]float32 // per proj: dropout(x)·Aᵀ [m, R]
	out  *node
	buf  []float32

	dora []*doraState // per proj: what a DoRA projection keeps for Backward (nil without DoRA)
	fw   *fusedW      // the fused weights the forward pass ran through (nil: one projection at a time)
}

// Linear applies projs (all with the same In) to x [m, In] and returns [m, ΣOut].
// seed drives the LoRA dropout masks (train must be true for dropout to apply).
func (e *Env) Linear(x mat.Tensor, m int, projs []*Proj, train bool, seed uint64) mat.Tensor {
	n := 0
	for _, p := range projs {
		n += p.Out
	}
	return run(&linearFn{env: e, x: x, projs: projs, m: m, n: n, seed: seed, train: train})
}

func (f *linearFn) Operands() []mat.Tensor {
	ops := []mat.Tensor{f.x}
	for _, p := range f.projs {
		for _, q := range []*spnn.Param{p.W, p.Bias, p.A, p.B, p.Mag} {
			if q != nil {
				ops = append(ops, q)
			}
		}
	}
	return ops
}

func (f *linearFn) Forward() (mat.Tensor, error) {
	x := vals(f.x)
	m, n := f.m, f.n
	pool := f.env.Pool
	out, y := f.env.newOut(m, n)
	f.out, f.buf = out, y
	f.mask = make([][]float32, len(f.projs))
	f.xd = make([][]float32, len(f.projs))
	f.xa = make([][]float32, len(f.projs))
	if fw := f.env.fusedPlan(f.projs); fw != nil {
		f.forwardFused(fw, y)
		return out, nil
	}
	var tmp []float32
	if len(f.projs) > 1 {
		maxOut := 0
		for _, p := range f.projs {
			maxOut = max(maxOut, p.Out)
		}
		tmp = f.env.get(m * maxOut)
		defer f.env.put(tmp)
	}
	off := 0
	for i, p := range f.projs {
		dst := y
		if tmp != nil {
			dst = tmp[:m*p.Out]
		}
		if p.W != nil {
			kernels.MatMulF32T(pool, dst, x, vals(p.W), m, p.Out, p.In)
			if p.Bias != nil {
				b := vals(p.Bias)
				for r := 0; r < m; r++ {
					row := dst[r*p.Out : (r+1)*p.Out]
					for j := range row {
						row[j] += b[j]
					}
				}
			}
		} else {
			p.Base.Forward(pool, dst, x, m)
		}
		if p.A != nil {
			xd, xa := f.shrink(i, p, x)
			if p.Mag != nil {
				f.doraForward(i, p, dst, xd, xa)
			} else {
				lora.Expand(pool, dst, xa, vals(p.B), p.Scale, m, p.Out, p.R) // dst += s·xa·Bᵀ
			}
		}
		if tmp != nil {
			for r := 0; r < m; r++ {
				copy(y[r*n+off:r*n+off+p.Out], dst[r*p.Out:(r+1)*p.Out])
			}
		}
		off += p.Out
	}
	return out, nil
}

func (f *linearFn) Backward(gy mat.Tensor) error {
	g := vals(gy)
	m, n := f.m, f.n
	pool := f.env.Pool
	x := vals(f.x)
	if f.fw != nil && needsGrad(f.x) {
		f.env.accGradPut(f.x, m, f.projs[0].In, f.backwardFused(g))
		f.env.release(f.out, f.buf)
		f.mask, f.xd, f.xa, f.fw = nil, nil, nil, nil
		return nil
	}
	var dx []float32
	if needsGrad(f.x) {
		dx = f.env.getZero(m * f.projs[0].In)
	}
	off := 0
	for i, p := range f.projs {
		in, out := p.In, p.Out
		gp, ld := g[off:], n // rows of this projection's columns
		if n != out {        // a contiguous copy: one pass, and every product sees a dense matrix
			gp, ld = f.env.get(m*out), out
			for r := 0; r < m; r++ {
				copy(gp[r*out:(r+1)*out], g[r*n+off:r*n+off+out])
			}
		}
		dora := f.dora != nil && f.dora[i] != nil
		if dora { // DoRA: the products below run on g⊙dy
			gp, ld = f.doraGrad(i, p, gp, ld, dx), out
		}
		if p.A != nil {
			r := p.R
			a, b := vals(p.A), vals(p.B)
			gB, gA := gradOf(p.B), gradOf(p.A)
			if gB != nil {
				kernels.Gemm(pool, true, false, out, r, m, p.Scale, gp, ld, f.xa[i], r, 1, gB, r)
			} else {
				dB := f.env.get(out * r)
				kernels.Gemm(pool, true, false, out, r, m, p.Scale, gp, ld, f.xa[i], r, 0, dB, r)
				f.env.accGradPut(p.B, out, r, dB)
			}
			dxa := f.env.get(m * r)
			kernels.Gemm(pool, false, false, m, r, out, p.Scale, gp, ld, b, r, 0, dxa, r)
			if gA != nil {
				kernels.Gemm(pool, true, false, r, in, m, 1, dxa, r, f.xd[i], in, 1, gA, in)
			} else {
				dA := f.env.get(r * in)
				kernels.Gemm(pool, true, false, r, in, m, 1, dxa, r, f.xd[i], in, 0, dA, in)
				f.env.accGradPut(p.A, r, in, dA)
			}
			if dx != nil {
				if mk := f.mask[i]; mk != nil {
					t := f.env.get(m * in)
					kernels.Gemm(pool, false, false, m, in, r, 1, dxa, r, a, in, 0, t, in)
					for j := range t {
						dx[j] += t[j] * mk[j]
					}
					f.env.put(t)
				} else {
					kernels.Gemm(pool, false, false, m, in, r, 1, dxa, r, a, in, 1, dx, in)
				}
			}
			f.env.put(dxa)
		}
		if p.W != nil {
			if gW := gradOf(p.W); gW != nil {
				kernels.Gemm(pool, true, false, out, in, m, 1, gp, ld, x, in, 1, gW, in)
			} else {
				dW := f.env.get(out * in)
				kernels.Gemm(pool, true, false, out, in, m, 1, gp, ld, x, in, 0, dW, in)
				f.env.accGradPut(p.W, out, in, dW)
			}
			if p.Bias != nil {
				db := make([]float32, out)
				for r := 0; r < m; r++ {
					row := g[r*n+off : r*n+off+out]
					for j, v := range row {
						db[j] += v
					}
				}
				accGrad(p.Bias, out, 1, db)
			}
			if dx != nil {
				kernels.Gemm(pool, false, false, m, in, out, 1, gp, ld, vals(p.W), in, 1, dx, in)
			}
		} else if dx != nil {
			w, release := f.env.baseWeight(p.Base)
			kernels.Gemm(pool, false, false, m, in, out, 1, gp, ld, w, in, 1, dx, in)
			release()
		}
		if ld != n || dora {
			f.env.put(gp)
		}
		off += out
	}
	if dx != nil {
		f.env.accGradPut(f.x, m, f.projs[0].In, dx)
	}
	f.env.release(f.out, f.buf)
	f.mask, f.xd, f.xa, f.dora, f.fw = nil, nil, nil, nil, nil
	return nil
}

// shrink computes projection i's xa = dropout(x)·Aᵀ and keeps dropout(x), its mask and xa for Backward.
func (f *linearFn) shrink(i int, p *Proj, x []float32) (xd, xa []float32) {
	xd = x
	if f.train && p.Dropout > 0 {
		rng := rand.New(rand.NewPCG(f.seed, uint64(i)+1))
		keep := float32(1 / (1 - float64(p.Dropout)))
		mk := make([]float32, len(x))
		xd = make([]float32, len(x))
		for j := range x {
			if rng.Float32() >= p.Dropout {
				mk[j] = keep
				xd[j] = x[j] * keep
			}
		}
		f.mask[i] = mk
	}
	xa = make([]float32, f.m*p.R)
	lora.Shrink(f.env.Pool, xa, xd, vals(p.A), f.m, p.R, p.In)
	f.xd[i], f.xa[i] = xd, xa
	return xd, xa
}
