package train

import (
	"sync"

	"github.com/nlpodyssey/spago/mat"

	"github.com/lorakit/lorakit/models/kernels"
)

// Env is what the ops share: the kernel thread pool and reusable scratch buffers.
type Env struct {
	Pool *kernels.Pool
	bufs sync.Map // size → *sync.Pool of []float32
}

// NewEnv returns an Env running kernels on pool (nil runs them inline).
func NewEnv(pool *kernels.Pool) *Env { return &Env{Pool: pool} }

// get returns a scratch slice of length n (contents undefined).
func (e *Env) get(n int) []float32 {
	p, _ := e.bufs.LoadOrStore(n, &sync.Pool{})
	if b, ok := p.(*sync.Pool).Get().(*[]float32); ok {
		return *b
	}
	return make([]float32, n)
}

// put returns a slice obtained from get.
func (e *Env) put(b []float32) {
	if p, ok := e.bufs.Load(len(b)); ok {
		p.(*sync.Pool).Put(&b)
	}
}

// baseWeight returns the frozen base weight as f32 [Out, In] for the backward
// products (dx = dy·W). Dense f32 weights are returned as they are; bf16, f16
// and NF4 weights are expanded into a scratch buffer (O(out·in) work against
// the O(m·out·in) product it feeds). release returns the buffer.
func (e *Env) baseWeight(l BaseLinear) (w []float32, release func()) {
	if w, ok := denseF32(l); ok {
		return w, func() {}
	}
	buf := e.get(l.Out() * l.In())
	if !expandWeight(e.Pool, l, buf) {
		// Unknown layer type: Wᵀ row i is Forward(e_i) − Forward(0).
		in, out := l.In(), l.Out()
		eye := make([]float32, in*in)
		for i := 0; i < in; i++ {
			eye[i*in+i] = 1
		}
		wt := make([]float32, in*out)
		l.Forward(e.Pool, wt, eye, in)
		zero := make([]float32, in)
		b0 := make([]float32, out)
		l.Forward(e.Pool, b0, zero, 1)
		for i := 0; i < in; i++ {
			for o := 0; o < out; o++ {
				buf[o*in+i] = wt[i*out+o] - b0[o]
			}
		}
	}
	return buf, func() { e.put(buf) }
}

// newOut allocates an op's output [rows, cols] from the scratch pool (contents undefined).
func (e *Env) newOut(rows, cols int) (*mat.Dense[float32], []float32) {
	buf := e.get(rows * cols)
	return newMat(rows, cols, buf), buf
}

// release is called at the end of an op's Backward: every consumer of the
// op's output has finished its own backward pass (they produced its
// gradient), so the output values and the gradient are dead. The buffer goes
// back to the pool for the next step and the gradient is dropped.
func (e *Env) release(out *mat.Dense[float32], buf []float32) {
	if out != nil {
		out.ZeroGrad()
	}
	if buf != nil {
		e.put(buf)
	}
}

// accGradPut adds g to t's gradient (spago copies it) and recycles g.
func (e *Env) accGradPut(t mat.Tensor, rows, cols int, g []float32) {
	t.AccGrad(newMat(rows, cols, g))
	e.put(g)
}

// getZero returns a zeroed scratch slice.
func (e *Env) getZero(n int) []float32 {
	b := e.get(n)
	clear(b)
	return b
}
