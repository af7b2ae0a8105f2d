package train

import (
	"github.com/nlpodyssey/spago/mat"

	"github.com/lorakit/lorakit/models/kernels"
)

// ropeFn applies rotate_half RoPE to the query and key heads of a packed qkv
// matrix [m, (H+2·KV)·hd] (columns: H query heads, KV key heads, KV value heads);
// values pass through. Row r is rotated by angle pos[r]·invFreq. The rotation
// is orthogonal, so the backward pass is the rotation by −pos.
type ropeFn struct {
	env     *Env
	x       mat.Tensor
	m, cols int
	rotCols int // (H+KV)·hd: the rotated prefix of each row
	hd      int
	pos     []int
	invFreq []float32
	out     *node
	buf     []float32
}

// RoPE rotates the first rotCols columns of each row of x [m, cols] (whole heads of hd).
func (e *Env) RoPE(x mat.Tensor, m, cols, rotCols, hd int, pos []int, invFreq []float32) mat.Tensor {
	return run(&ropeFn{env: e, x: x, m: m, cols: cols, rotCols: rotCols, hd: hd, pos: pos, invFreq: invFreq})
}

func (f *ropeFn) Operands() []mat.Tensor { return []mat.Tensor{f.x} }

func (f *ropeFn) rotate(y, src []float32, sign int) []float32 {
	copy(y, src)
	c := f.cols
	f.env.Pool.For(f.m, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			kernels.RoPE(y[r*c:r*c+f.rotCols], sign*f.pos[r], f.hd, f.invFreq)
		}
	})
	return y
}

func (f *ropeFn) Forward() (mat.Tensor, error) {
	out, y := f.env.newOut(f.m, f.cols)
	f.out, f.buf = out, y
	f.rotate(y, vals(f.x), 1)
	return out, nil
}

func (f *ropeFn) Backward(gy mat.Tensor) error {
	if needsGrad(f.x) {
		f.env.accGradPut(f.x, f.m, f.cols, f.rotate(f.env.get(f.m*f.cols), vals(gy), -1))
	}
	f.env.release(f.out, f.buf)
	return nil
}
