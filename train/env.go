package train

import (
	"sync"

	"github.com/nlpodyssey/spago/mat"
	spnn "github.com/nlpodyssey/spago/nn"

	"github.com/lorakit/lorakit/models/kernels"
)

// Env is what the ops share: the kernel thread pool and reusable scratch buffers.
type Env struct {
	Pool  *kernels.Pool
	bufs  sync.Map   // size → *sync.Pool of []float32
	fused fusedPlans // the fused weights of linear ops (ops_linear_fused.go)
	// LowMemory keeps no f32 copy of frozen f32 weights for the fused linear ops (each pass copies them into a
	// pooled buffer instead: one more pass over the weights, 425 MB less for smollm2 in f32). Set it before the
	// first forward pass; Net sets it with gradient checkpointing.
	LowMemory bool
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

// node is an op's output value: a spago matrix over a buffer of the Env's pool whose gradient also lives in
// a pool buffer. spago's own Dense clones the first gradient it is given (a fresh allocation, zeroed by the
// runtime, per activation per step: a seventh of a LoRA step's CPU time went into it); a node copies it into a
// recycled buffer instead, or adopts the buffer outright when the producer hands it over (accGradPut).
type node struct {
	*mat.Dense[float32]
	env  *Env
	n    int
	mu   sync.Mutex
	g    []float32           // gradient, nil before the first AccGrad
	gm   *mat.Dense[float32] // g as a matrix (what Grad returns)
	rows int
	cols int
}

// owned marks a gradient buffer from the Env's pool that the receiving node may keep (accGradPut).
type owned struct{ *mat.Dense[float32] }

// Value is the node itself (the embedded Dense would return the bare matrix, whose gradient is spago's).
func (o *node) Value() mat.Tensor { return o }

// Grad returns the accumulated gradient (nil before any).
func (o *node) Grad() mat.Tensor {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.gm == nil {
		return nil
	}
	return o.gm
}

// HasGrad reports whether a gradient has been accumulated.
func (o *node) HasGrad() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.gm != nil
}

// AccGrad adds g to the gradient: the first one is adopted (an owned buffer) or copied into a pool buffer.
func (o *node) AccGrad(g mat.Tensor) {
	var src []float32
	var own []float32
	if w, ok := g.(*owned); ok {
		src = mat.Data[float32](w.Dense)
		own = src
	} else {
		src = mat.Data[float32](g)
	}
	if len(src) != o.n {
		panic("train: gradient size does not match its node")
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.g == nil {
		if own != nil {
			o.g = own
		} else {
			o.g = o.env.get(o.n)
			copy(o.g, src)
		}
		o.gm = newMat(o.rows, o.cols, o.g)
		return
	}
	kernels.Axpy(1, src, o.g)
	if own != nil {
		o.env.put(own)
	}
}

// ZeroGrad drops the gradient, returning its buffer to the pool.
func (o *node) ZeroGrad() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.g != nil {
		o.env.put(o.g)
	}
	o.g, o.gm = nil, nil
}

// newOut allocates an op's output [rows, cols] from the scratch pool (contents undefined).
func (e *Env) newOut(rows, cols int) (*node, []float32) {
	buf := e.get(rows * cols)
	return &node{Dense: newMat(rows, cols, buf), env: e, n: rows * cols, rows: rows, cols: cols}, buf
}

// release is called at the end of an op's Backward: every consumer of the
// op's output has finished its own backward pass (they produced its
// gradient), so the output values and the gradient are dead. Both buffers go
// back to the pool for the next step.
func (e *Env) release(out *node, buf []float32) {
	if out != nil {
		out.ZeroGrad()
	}
	if buf != nil {
		e.put(buf)
	}
}

// accGradPut adds g (a buffer from get) to t's gradient and gives the buffer up: an op's output node keeps it
// as its gradient when it has none yet, anything else (parameters, spago nodes) copies it and it is recycled.
func (e *Env) accGradPut(t mat.Tensor, rows, cols int, g []float32) {
	if _, ok := t.Value().(*node); ok {
		t.AccGrad(&owned{newMat(rows, cols, g)})
		return
	}
	t.AccGrad(newMat(rows, cols, g))
	e.put(g)
}

// gradOf returns p's gradient buffer when p already has one (it persists between steps: AdamW zeroes it in
// place), so that a backward product accumulates into it directly (Gemm with beta 1) instead of writing a
// scratch buffer that spago then adds; nil before p's first gradient. Each parameter has one op that produces its
// gradient during a backward pass (tied embeddings add the lookup's share after the pass), so nothing else
// writes the buffer meanwhile.
func gradOf(p *spnn.Param) []float32 {
	if p == nil || !p.HasGrad() {
		return nil
	}
	return mat.Data[float32](p.Grad())
}

// getZero returns a zeroed scratch slice.
func (e *Env) getZero(n int) []float32 {
	b := e.get(n)
	clear(b)
	return b
}
