package train

import (
	"github.com/nlpodyssey/spago/mat"

	"github.com/lorakit/lorakit/models/kernels"
)

// swigluFn is y = silu(gate) ⊙ up over x [m, 2·I] whose columns are [gate | up];
// y is [m, I].
type swigluFn struct {
	env  *Env
	x    mat.Tensor
	m, n int // n = I
	out  *node
	buf  []float32
}

// SwiGLU applies silu(gate)·up to x [m, 2n] = [gate | up].
func (e *Env) SwiGLU(x mat.Tensor, m, n int) mat.Tensor {
	return run(&swigluFn{env: e, x: x, m: m, n: n})
}

func (f *swigluFn) Operands() []mat.Tensor { return []mat.Tensor{f.x} }

func (f *swigluFn) Forward() (mat.Tensor, error) {
	x, n := vals(f.x), f.n
	out, y := f.env.newOut(f.m, n)
	f.out, f.buf = out, y
	f.env.Pool.For(f.m, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			row := x[r*2*n : (r+1)*2*n]
			kernels.SiLUMul(y[r*n:(r+1)*n], row[:n], row[n:])
		}
	})
	return out, nil
}

func (f *swigluFn) Backward(gy mat.Tensor) error {
	if !needsGrad(f.x) {
		f.env.release(f.out, f.buf)
		return nil
	}
	x, g, n := vals(f.x), vals(gy), f.n
	dx := f.env.get(f.m * 2 * n)
	f.env.Pool.For(f.m, func(lo, hi int) {
		one := make([]float32, n)
		for j := range one {
			one[j] = 1
		}
		silu := make([]float32, n)
		for r := lo; r < hi; r++ {
			row, dr, gr := x[r*2*n:(r+1)*2*n], dx[r*2*n:(r+1)*2*n], g[r*n:(r+1)*n]
			ga, up := row[:n], row[n:2*n]
			dg, du := dr[:n], dr[n:2*n]
			kernels.SiLUMul(silu, ga, one) // vectorised silu(a) = a·σ(a)
			kernels.SiLUMul(du, ga, gr)    // d up = g·silu(a)
			for j, a := range ga {
				s := silu[j]
				sig := s / a
				if a > -1e-3 && a < 1e-3 { // silu(a)/a loses precision near 0: σ(a) = ½ + a/4 − a³/48 + …
					sig = 0.5 + 0.25*a
				}
				dg[j] = gr[j] * up[j] * (sig + s*(1-sig)) // d silu/da = σ + a·σ·(1−σ)
			}
		}
	})
	f.env.accGradPut(f.x, f.m, 2*n, dx)
	f.env.release(f.out, f.buf)
	return nil
}
