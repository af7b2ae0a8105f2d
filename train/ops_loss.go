package train

import (
	"math"

	"github.com/nlpodyssey/spago/mat"
	spnn "github.com/nlpodyssey/spago/nn"

	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/nn"
)

// lossFn is the LM head fused with masked cross-entropy:
//
//	loss = Σ_{i ∈ rows} (logsumexp(z_i) − z_i[target_i]) / denom,  z_i = h_i·Wᵀ
//
// Only the rows that carry a target are projected onto the vocabulary (prompt
// tokens never reach the LM head). denom is the number of targets of the whole
// optimizer batch, so the gradients of the micro-batches of one step add up to
// the gradient of the batch mean.
type lossFn struct {
	env     *Env
	h       mat.Tensor
	head    BaseLinear  // frozen LM head, or nil
	w       *spnn.Param // trainable LM head [V, D], or nil
	m, d, v int
	rows    []int
	targets []int
	denom   float32
	tok     *tokenParams // trained token rows of a frozen head (nil: none)

	dlogits []float32 // [len(rows), V]: (softmax − onehot)/denom
	Sum     float64   // Σ token losses (not divided)
}

// Loss returns the masked cross-entropy of the next-token targets at rows
// (positions of h [m, d]) divided by denom, and the op (for its Sum).
func (e *Env) Loss(h mat.Tensor, m, d, vocab int, head BaseLinear, w *spnn.Param, rows, targets []int, denom float32) (mat.Tensor, *lossFn) {
	return e.loss(h, m, d, vocab, head, w, nil, rows, targets, denom)
}

// loss is Loss with trained token rows replacing rows of the frozen head (tok may be nil).
func (e *Env) loss(h mat.Tensor, m, d, vocab int, head BaseLinear, w *spnn.Param, tok *tokenParams, rows, targets []int, denom float32) (mat.Tensor, *lossFn) {
	f := &lossFn{env: e, h: h, head: head, w: w, m: m, d: d, v: vocab, rows: rows, targets: targets, denom: denom, tok: tok}
	return run(f), f
}

func (f *lossFn) Operands() []mat.Tensor {
	if f.w != nil {
		return []mat.Tensor{f.h, f.w}
	}
	if f.tok != nil {
		return []mat.Tensor{f.h, f.tok.head}
	}
	return []mat.Tensor{f.h}
}

func (f *lossFn) Forward() (mat.Tensor, error) {
	h, d, v := vals(f.h), f.d, f.v
	n := len(f.rows)
	if n == 0 {
		return mat.Scalar[float32](0), nil
	}
	hs := f.env.get(n * d)
	defer f.env.put(hs)
	for i, r := range f.rows {
		copy(hs[i*d:(i+1)*d], h[r*d:(r+1)*d])
	}
	z := f.env.get(n * v)
	if f.w != nil {
		kernels.MatMulF32T(f.env.Pool, z, hs, vals(f.w), n, v, d)
	} else {
		f.head.Forward(f.env.Pool, z, hs, n)
		if f.tok != nil {
			f.tok.tokenLogits(hs, z, n, d, v)
		}
	}
	losses := make([]float64, n)
	f.env.Pool.For(n, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			row := z[i*v : (i+1)*v]
			t := f.targets[i]
			jm := 0
			for j, x := range row {
				if x > row[jm] {
					jm = j
				}
			}
			mx, zt := row[jm], row[t]
			kernels.Softmax(row) // vectorised, max-subtracted: row[jm] = 1/Σexp(z−mx)
			// loss = logsumexp(z) − z_t = (mx − z_t) + log Σexp(z−mx) = (mx − z_t) − log p_max
			losses[i] = float64(mx-zt) - math.Log(float64(row[jm]))
			inv := float32(1 / float64(f.denom))
			kernels.Scale(inv, row)
			row[t] -= inv
		}
	})
	for _, l := range losses {
		f.Sum += l
	}
	f.dlogits = z
	return mat.Scalar[float32](float32(f.Sum / float64(f.denom))), nil
}

func (f *lossFn) Backward(gy mat.Tensor) error {
	n := len(f.rows)
	gs := vals(gy)[0]
	d, v := f.d, f.v
	if n == 0 {
		if needsGrad(f.h) {
			accGrad(f.h, f.m, d, make([]float32, f.m*d))
		}
		return nil
	}
	var w []float32
	if f.w != nil {
		w = vals(f.w)
		hsum := f.env.get(n * d)
		hv := vals(f.h)
		for i, r := range f.rows {
			copy(hsum[i*d:(i+1)*d], hv[r*d:(r+1)*d])
		}
		// dW = gs·dlogitsᵀ·hs in slices of vocabulary rows (as headGrad: 1.1× the one product)
		gW, beta := gradOf(f.w), float32(1)
		if gW == nil {
			gW, beta = f.env.get(v*d), 0
		}
		for v0 := 0; v0 < v; v0 += headGradChunk {
			c := min(headGradChunk, v-v0)
			kernels.Gemm(f.env.Pool, true, false, c, d, n, gs, f.dlogits[v0:], v, hsum, d, beta, gW[v0*d:], d)
		}
		if beta == 0 {
			f.env.accGradPut(f.w, v, d, gW)
		}
		f.env.put(hsum)
	} else if needsGrad(f.h) {
		if dw, ok := denseF32(f.head); ok {
			w = dw
		}
	}
	if needsGrad(f.h) {
		dhs := f.env.get(n * d)
		if w != nil {
			headGrad(f.env.Pool, dhs, f.dlogits, w, n, d, v, gs)
		} else {
			f.headGradChunked(dhs, gs)
		}
		f.tokenGrads(gs, dhs)
		dh := f.env.getZero(f.m * d)
		for i, r := range f.rows {
			row := dh[r*d : (r+1)*d]
			for j, x := range dhs[i*d : (i+1)*d] {
				row[j] += x
			}
		}
		f.env.put(dhs)
		f.env.accGradPut(f.h, f.m, d, dh)
	} else {
		f.tokenGrads(gs, nil)
	}
	f.env.put(f.dlogits)
	f.dlogits = nil
	return nil
}

// headGradChunk is the vocabulary rows per product of headGrad.
const headGradChunk = 1024

// headGrad computes dhs [n, d] = gs·dlogits [n, v]·W [v, d] as a sum of products over slices of headGradChunk
// vocabulary rows: each slice of dlogits and W is read from memory once and stays in cache for all of its
// tiles, where one product over the whole vocabulary streams them from memory tile by tile (smollm2's head,
// n = 255: 230–260 against 155–180 GFLOP/s on two threads, measured side by side).
func headGrad(pool *kernels.Pool, dhs, dlogits, w []float32, n, d, v int, gs float32) {
	for v0 := 0; v0 < v; v0 += headGradChunk {
		beta := float32(1)
		if v0 == 0 {
			beta = 0
		}
		kernels.Gemm(pool, false, false, n, d, min(headGradChunk, v-v0), gs, dlogits[v0:], v, w[v0*d:], d, beta, dhs, d)
	}
}

// headChunk is the number of vocabulary rows of a non-f32 LM head expanded at once.
const headChunk = 2048

// headGradChunked computes dhs = gs·dlogits·W for a bf16/f16/quantised head
// without expanding the whole [V, D] matrix: W is expanded in slices of rows.
func (f *lossFn) headGradChunked(dhs []float32, gs float32) {
	n, d, v := len(f.rows), f.d, f.v
	clear(dhs)
	buf := f.env.get(headChunk * d)
	defer f.env.put(buf)
	dense, isDense := f.head.(*nn.Dense)
	var full []float32
	if !isDense { // quantised or unknown: one full expansion
		var release func()
		full, release = f.env.baseWeight(f.head)
		defer release()
	}
	for v0 := 0; v0 < v; v0 += headChunk {
		v1 := min(v0+headChunk, v)
		wc := buf[:(v1-v0)*d]
		if isDense {
			for r := v0; r < v1; r++ {
				dense.Row(r, wc[(r-v0)*d:(r-v0+1)*d])
			}
		} else {
			wc = full[v0*d : v1*d]
		}
		kernels.Gemm(f.env.Pool, false, false, n, d, v1-v0, gs, f.dlogits[v0:], v, wc, d, 1, dhs, d)
	}
}

// tokenGrads adds the trained head rows' gradient (and corrects dhs, when given, for them).
func (f *lossFn) tokenGrads(gs float32, dhs []float32) {
	if f.tok == nil {
		return
	}
	n, d := len(f.rows), f.d
	hs := f.env.get(n * d)
	hv := vals(f.h)
	for i, r := range f.rows {
		copy(hs[i*d:(i+1)*d], hv[r*d:(r+1)*d])
	}
	dw := f.tok.tokenGrads(hs, f.dlogits, dhs, gs, n, d, f.v)
	f.env.put(hs)
	accGrad(f.tok.head, len(f.tok.ids), d, dw)
}
