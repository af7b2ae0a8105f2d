package train

import (
	"math"

	"github.com/nlpodyssey/spago/mat"
	spnn "github.com/nlpodyssey/spago/nn"

	"github.com/lorakit/lorakit/models/kernels"
)

// qkNormFn is Qwen3's per-head RMSNorm of the query heads (weight qw [hd]) and
// key heads (weight kw [hd]) of a packed qkv matrix [m, (H+2·KV)·hd], applied
// before RoPE; value heads pass through. The weights are frozen slices, or
// trainable params (full fine-tuning) qp, kp.
type qkNormFn struct {
	env       *Env
	x         mat.Tensor
	m         int
	h, kv, hd int
	qw, kw    []float32
	qp, kp    *spnn.Param
	eps       float32
	inv       []float32 // [m, H+KV]
	out       *node
	buf       []float32
}

// QKNorm normalises every query and key head of qkv, with frozen weights qw, kw
// or (when non-nil) trainable qp, kp.
func (e *Env) QKNorm(x mat.Tensor, m, h, kv, hd int, qw, kw []float32, qp, kp *spnn.Param, eps float32) mat.Tensor {
	f := &qkNormFn{env: e, x: x, m: m, h: h, kv: kv, hd: hd, qw: qw, kw: kw, qp: qp, kp: kp, eps: eps}
	if qp != nil {
		f.qw, f.kw = vals(qp), vals(kp)
	}
	return run(f)
}

func (f *qkNormFn) Operands() []mat.Tensor {
	if f.qp != nil {
		return []mat.Tensor{f.x, f.qp, f.kp}
	}
	return []mat.Tensor{f.x}
}

func (f *qkNormFn) Forward() (mat.Tensor, error) {
	x := vals(f.x)
	w, hd, nh := (f.h+2*f.kv)*f.hd, f.hd, f.h+f.kv
	out, y := f.env.newOut(f.m, w)
	f.out, f.buf = out, y
	copy(y, x)
	f.inv = make([]float32, f.m*nh)
	f.env.Pool.For(f.m, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			for j := 0; j < nh; j++ {
				wt := f.qw
				if j >= f.h {
					wt = f.kw
				}
				seg := x[r*w+j*hd : r*w+(j+1)*hd]
				kernels.RMSNorm(y[r*w+j*hd:r*w+(j+1)*hd], seg, wt, f.eps)
				var ss float64
				for _, v := range seg {
					ss += float64(v) * float64(v)
				}
				f.inv[r*nh+j] = float32(1 / math.Sqrt(ss/float64(hd)+float64(f.eps)))
			}
		}
	})
	return out, nil
}

func (f *qkNormFn) Backward(gy mat.Tensor) error {
	g, x := vals(gy), vals(f.x)
	w, hd, nh := (f.h+2*f.kv)*f.hd, f.hd, f.h+f.kv
	if f.qp != nil { // Σ over rows and heads of g ⊙ x̂, in a fixed order
		dq, dk := make([]float32, hd), make([]float32, hd)
		for r := 0; r < f.m; r++ {
			for j := 0; j < nh; j++ {
				d := dq
				if j >= f.h {
					d = dk
				}
				o, inv := r*w+j*hd, f.inv[r*nh+j]
				for i := 0; i < hd; i++ {
					d[i] += g[o+i] * x[o+i] * inv
				}
			}
		}
		accGrad(f.qp, hd, 1, dq)
		accGrad(f.kp, hd, 1, dk)
	}
	if !needsGrad(f.x) {
		f.env.release(f.out, f.buf)
		return nil
	}
	dx := f.env.get(len(x))
	copy(dx, g) // value heads pass through
	f.env.Pool.For(f.m, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			for j := 0; j < nh; j++ {
				wt := f.qw
				if j >= f.h {
					wt = f.kw
				}
				o := r*w + j*hd
				gr, xr, dr := g[o:o+hd], x[o:o+hd], dx[o:o+hd]
				inv := f.inv[r*nh+j]
				var dot float64
				for i := range xr {
					dot += float64(gr[i]*wt[i]) * float64(xr[i]*inv)
				}
				c := float32(dot / float64(hd))
				for i := range xr {
					dr[i] = inv * (gr[i]*wt[i] - xr[i]*inv*c)
				}
			}
		}
	})
	f.env.accGradPut(f.x, f.m, w, dx)
	f.env.release(f.out, f.buf)
	return nil
}
