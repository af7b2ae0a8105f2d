package train

import (
	"math"

	"github.com/nlpodyssey/spago/mat"
	spnn "github.com/nlpodyssey/spago/nn"

	"github.com/lorakit/lorakit/models/kernels"
)

// rmsNormFn is y = x / sqrt(mean(x²) + eps) ⊙ w over each row of x [m, dim].
// The weight is a trainable param (full fine-tuning) or a frozen slice.
type rmsNormFn struct {
	env    *Env
	x      mat.Tensor
	w      *spnn.Param // trainable weight, or nil
	wc     []float32   // frozen weight when w is nil
	m, dim int
	eps    float32
	inv    []float32 // per row 1/sqrt(mean(x²)+eps)
	out    *node
	buf    []float32
}

// RMSNorm normalises each row of x [m, dim]; pass a trainable w or a frozen wc.
func (e *Env) RMSNorm(x mat.Tensor, m, dim int, w *spnn.Param, wc []float32, eps float32) mat.Tensor {
	return run(&rmsNormFn{env: e, x: x, w: w, wc: wc, m: m, dim: dim, eps: eps})
}

func (f *rmsNormFn) Operands() []mat.Tensor {
	if f.w != nil {
		return []mat.Tensor{f.x, f.w}
	}
	return []mat.Tensor{f.x}
}

func (f *rmsNormFn) weight() []float32 {
	if f.w != nil {
		return vals(f.w)
	}
	return f.wc
}

func (f *rmsNormFn) Forward() (mat.Tensor, error) {
	x, w, d := vals(f.x), f.weight(), f.dim
	out, y := f.env.newOut(f.m, d)
	f.out, f.buf = out, y
	f.inv = make([]float32, f.m)
	f.env.Pool.For(f.m, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			xr := x[r*d : (r+1)*d]
			kernels.RMSNorm(y[r*d:(r+1)*d], xr, w, f.eps)
			var ss float64
			for _, v := range xr {
				ss += float64(v) * float64(v)
			}
			f.inv[r] = float32(1 / math.Sqrt(ss/float64(d)+float64(f.eps)))
		}
	})
	return out, nil
}

func (f *rmsNormFn) Backward(gy mat.Tensor) error {
	g, x, w, d := vals(gy), vals(f.x), f.weight(), f.dim
	var dx, dw []float32
	if needsGrad(f.x) {
		dx = f.env.get(f.m * d)
		f.env.Pool.For(f.m, func(lo, hi int) {
			for r := lo; r < hi; r++ {
				gr, xr, dr := g[r*d:(r+1)*d], x[r*d:(r+1)*d], dx[r*d:(r+1)*d]
				inv := f.inv[r]
				var dot float64 // Σ (g⊙w)·x̂
				for j := range xr {
					dot += float64(gr[j]*w[j]) * float64(xr[j]*inv)
				}
				c := float32(dot / float64(d))
				for j := range xr {
					dr[j] = inv * (gr[j]*w[j] - xr[j]*inv*c)
				}
			}
		})
	}
	if f.w != nil {
		dw = make([]float32, d)
		for r := 0; r < f.m; r++ {
			inv := f.inv[r]
			gr, xr := g[r*d:(r+1)*d], x[r*d:(r+1)*d]
			for j := range dw {
				dw[j] += gr[j] * xr[j] * inv
			}
		}
		accGrad(f.w, d, 1, dw)
	}
	if dx != nil {
		f.env.accGradPut(f.x, f.m, d, dx)
	}
	f.env.release(f.out, f.buf)
	return nil
}
