package train

import (
	"math"

	"github.com/nlpodyssey/spago/mat"

	"github.com/lorakit/lorakit/models/kernels"
)

// attentionFn is causal grouped-query attention over a packed qkv matrix
// [m, (H+2·KV)·hd] (after RoPE), per sequence segment (block-diagonal):
//
//	O_h = softmax(Q_h·K_gᵀ/√hd + causal mask)·V_g,  g = h / (H/KV)
//
// The output is [m, H·hd]. Probabilities are recomputed in the backward pass
// instead of being stored (O(L²) memory per head saved for one more product).
//
// Each head runs in blocks of attBlock query rows: block [i0, i1) meets only
// keys [0, i1), so the products skip most of the masked upper triangle (56%
// of the full L×L work at L = 256), and every product is a Gemm whose shared
// dimension is contiguous in memory (Kᵀ and Vᵀ are transposed once per
// segment and group): the broadcast tiles, not dot products of length hd.
type attentionFn struct {
	env       *Env
	qkv       mat.Tensor
	m         int
	h, kv, hd int
	segs      []Segment
	scale     float32
	out       *node
	buf       []float32
}

// attBlock is the query-row block: a multiple of 6 (the broadcast tile's rows) and of 16 (its column strips),
// so that the blocked products run whole tiles.
const attBlock = 48

// Attention runs causal GQA attention with h query heads and kv key/value heads of size hd.
func (e *Env) Attention(qkv mat.Tensor, m, h, kv, hd int, segs []Segment) mat.Tensor {
	return run(&attentionFn{env: e, qkv: qkv, m: m, h: h, kv: kv, hd: hd, segs: segs,
		scale: float32(1 / math.Sqrt(float64(hd)))})
}

func (f *attentionFn) Operands() []mat.Tensor { return []mat.Tensor{f.qkv} }

func (f *attentionFn) width() int { return (f.h + 2*f.kv) * f.hd }

// transposed returns, for column offset col (a K or V group), the [hd, Len] transpose of every segment's rows,
// segment s at s.Start·hd (its rows of length s.Len).
func (f *attentionFn) transposed(qkv []float32, col int) []float32 {
	w, hd := f.width(), f.hd
	t := f.env.get(f.m * hd)
	for _, s := range f.segs {
		ts := t[s.Start*hd:]
		for i := 0; i < s.Len; i++ {
			row := qkv[(s.Start+i)*w+col : (s.Start+i)*w+col+hd]
			for d, x := range row {
				ts[d*s.Len+i] = x
			}
		}
	}
	return t
}

// probs writes rows [i0, i1) of the causal softmax of Q_h·K_gᵀ·scale for a segment into p [i1−i0, L]:
// row i holds keys [0, i] and zeros up to i1 (columns from i1 on are not written). q is the segment's first
// query row of the head, kt its group's Kᵀ [hd, L].
func (f *attentionFn) probs(p, q, kt []float32, L, i0, i1 int) {
	w, hd := f.width(), f.hd
	kernels.Gemm(nil, false, false, i1-i0, i1, hd, f.scale, q[i0*w:], w, kt, L, 0, p, L)
	for i := i0; i < i1; i++ {
		row := p[(i-i0)*L : (i-i0)*L+i1]
		kernels.Softmax(row[:i+1])
		clear(row[i+1:])
	}
}

func (f *attentionFn) Forward() (mat.Tensor, error) {
	qkv := vals(f.qkv)
	w, hd, ow := f.width(), f.hd, f.h*f.hd
	od, out := f.env.newOut(f.m, ow)
	f.out, f.buf = od, out
	kts := make([][]float32, f.kv)
	for g := range kts {
		kts[g] = f.transposed(qkv, (f.h+g)*hd)
	}
	units := len(f.segs) * f.h
	f.env.Pool.For(units, func(lo, hi int) {
		for u := lo; u < hi; u++ {
			s, head := f.segs[u/f.h], u%f.h
			g := head / (f.h / f.kv)
			L := s.Len
			q := qkv[s.Start*w+head*hd:]
			v := qkv[s.Start*w+(f.h+f.kv+g)*hd:]
			kt := kts[g][s.Start*hd:]
			p := f.env.get(attBlock * L)
			for i0 := 0; i0 < L; i0 += attBlock {
				i1 := min(i0+attBlock, L)
				f.probs(p, q, kt, L, i0, i1)
				kernels.Gemm(nil, false, false, i1-i0, hd, i1, 1, p, L, v, w, 0, out[(s.Start+i0)*ow+head*hd:], ow)
			}
			f.env.put(p)
		}
	})
	for _, t := range kts {
		f.env.put(t)
	}
	return od, nil
}

func (f *attentionFn) Backward(gy mat.Tensor) error {
	if !needsGrad(f.qkv) {
		f.env.release(f.out, f.buf)
		return nil
	}
	qkv, dout := vals(f.qkv), vals(gy)
	w, hd, ow := f.width(), f.hd, f.h*f.hd
	dqkv := f.env.getZero(f.m * w)
	kts := make([][]float32, f.kv)
	vts := make([][]float32, f.kv)
	for g := range kts {
		kts[g] = f.transposed(qkv, (f.h+g)*hd)
		vts[g] = f.transposed(qkv, (f.h+f.kv+g)*hd)
	}
	units := len(f.segs) * f.h
	dk := make([][]float32, units) // per unit dK, dV contributions, summed in head order below
	dv := make([][]float32, units)
	f.env.Pool.For(units, func(lo, hi int) {
		for u := lo; u < hi; u++ {
			s, head := f.segs[u/f.h], u%f.h
			g := head / (f.h / f.kv)
			L := s.Len
			p := f.env.get(attBlock * L)
			dp := f.env.get(attBlock * L)
			do := dout[s.Start*ow+head*hd:]
			q := qkv[s.Start*w+head*hd:]
			k := qkv[s.Start*w+(f.h+g)*hd:]
			kt, vt := kts[g][s.Start*hd:], vts[g][s.Start*hd:]
			dv[u] = f.env.getZero(L * hd)
			dk[u] = f.env.getZero(L * hd)
			for i0 := 0; i0 < L; i0 += attBlock {
				i1 := min(i0+attBlock, L)
				nr := i1 - i0
				f.probs(p, q, kt, L, i0, i1)
				// dV[0:i1] += P_blockᵀ·dO_block;  dP_block = dO_block·Vᵀ[:, 0:i1]
				kernels.Gemm(nil, true, false, i1, hd, nr, 1, p, L, do[i0*ow:], ow, 1, dv[u], hd)
				kernels.Gemm(nil, false, false, nr, i1, hd, 1, do[i0*ow:], ow, vt, L, 0, dp, L)
				for i := i0; i < i1; i++ { // dS = P ⊙ (dP − rowsum(P ⊙ dP)), zero above the diagonal
					pr, dr := p[(i-i0)*L:(i-i0)*L+i+1], dp[(i-i0)*L:(i-i0)*L+i1]
					dot := kernels.Dot(pr, dr[:i+1])
					for j, pv := range pr {
						dr[j] = pv * (dr[j] - dot)
					}
					clear(dr[i+1:])
				}
				// dQ_block = scale·dS·K[0:i1];  dK[0:i1] += scale·dSᵀ·Q_block
				kernels.Gemm(nil, false, false, nr, hd, i1, f.scale, dp, L, k, w, 0, dqkv[(s.Start+i0)*w+head*hd:], w)
				kernels.Gemm(nil, true, false, i1, hd, nr, f.scale, dp, L, q[i0*w:], w, 1, dk[u], hd)
			}
			f.env.put(p)
			f.env.put(dp)
		}
	})
	for g := range kts {
		f.env.put(kts[g])
		f.env.put(vts[g])
	}
	for u := 0; u < units; u++ {
		s, head := f.segs[u/f.h], u%f.h
		g := head / (f.h / f.kv)
		for i := 0; i < s.Len; i++ {
			row := dqkv[(s.Start+i)*w:]
			kernels.Axpy(1, dk[u][i*hd:(i+1)*hd], row[(f.h+g)*hd:(f.h+g+1)*hd])
			kernels.Axpy(1, dv[u][i*hd:(i+1)*hd], row[(f.h+f.kv+g)*hd:(f.h+f.kv+g+1)*hd])
		}
	}
	for u := range dk {
		f.env.put(dk[u])
		f.env.put(dv[u])
	}
	f.env.accGradPut(f.qkv, f.m, w, dqkv)
	f.env.release(f.out, f.buf)
	return nil
}
