package train

import (
	"math"

	"github.com/nlpodyssey/spago/mat"

	"github.com/lorakit/lorakit/models/kernels"
)

// swigluFn is y = silu(gate) ⊙ up over x [m, 2·I] whose columns are [gate | up];
// y is [m, I].
type swigluFn struct {
	env  *Env
	x    mat.Tensor
	m, n int // n = I
}

// SwiGLU applies silu(gate)·up to x [m, 2n] = [gate | up].
func (e *Env) SwiGLU(x mat.Tensor, m, n int) mat.Tensor {
	return run(&swigluFn{env: e, x: x, m: m, n: n})
}

func (f *swigluFn) Operands() []mat.Tensor { return []mat.Tensor{f.x} }

func (f *swigluFn) Forward() (mat.Tensor, error) {
	x, n := vals(f.x), f.n
	y := make([]float32, f.m*n)
	f.env.Pool.For(f.m, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			row := x[r*2*n : (r+1)*2*n]
			kernels.SiLUMul(y[r*n:(r+1)*n], row[:n], row[n:])
		}
	})
	return newMat(f.m, n, y), nil
}

func (f *swigluFn) Backward(gy mat.Tensor) error {
	if !needsGrad(f.x) {
		return nil
	}
	x, g, n := vals(f.x), vals(gy), f.n
	dx := make([]float32, f.m*2*n)
	f.env.Pool.For(f.m, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			row, dr, gr := x[r*2*n:(r+1)*2*n], dx[r*2*n:(r+1)*2*n], g[r*n:(r+1)*n]
			for j := 0; j < n; j++ {
				a, u := row[j], row[n+j]
				sig := float32(1 / (1 + math.Exp(float64(-a))))
				silu := a * sig
				dr[j] = gr[j] * u * sig * (1 + a*(1-sig))
				dr[n+j] = gr[j] * silu
			}
		}
	})
	accGrad(f.x, f.m, 2*n, dx)
	return nil
}
