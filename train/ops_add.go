package train

import (
	"github.com/nlpodyssey/spago/mat"

	"github.com/lorakit/lorakit/models/kernels"
)

// addFn is the residual sum y = a + b of two [m, n] matrices. spago's ag.Add allocates its output and hands
// each operand a fresh clone of the gradient; this one takes its output from the Env's pool, and an operand that
// is an op's output copies the gradient into a pool buffer (node.AccGrad): the residual stream allocates nothing
// per step.
type addFn struct {
	env  *Env
	a, b mat.Tensor
	m, n int
	out  *node
	buf  []float32
}

// Add returns a + b for a, b [m, n].
func (e *Env) Add(a, b mat.Tensor, m, n int) mat.Tensor {
	return run(&addFn{env: e, a: a, b: b, m: m, n: n})
}

func (f *addFn) Operands() []mat.Tensor { return []mat.Tensor{f.a, f.b} }

func (f *addFn) Forward() (mat.Tensor, error) {
	out, y := f.env.newOut(f.m, f.n)
	f.out, f.buf = out, y
	copy(y, vals(f.a))
	kernels.Axpy(1, vals(f.b), y)
	return out, nil
}

func (f *addFn) Backward(gy mat.Tensor) error {
	g := vals(gy)
	if needsGrad(f.a) {
		f.a.AccGrad(newMat(f.m, f.n, g))
	}
	if needsGrad(f.b) {
		f.b.AccGrad(newMat(f.m, f.n, g))
	}
	f.env.release(f.out, f.buf)
	return nil
}
