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
type attentionFn struct {
	env       *Env
	qkv       mat.Tensor
	m         int
	h, kv, hd int
	segs      []Segment
	scale     float32
	out       *mat.Dense[float32]
	buf       []float32
}

// Attention runs causal GQA attention with h query heads and kv key/value heads of size hd.
func (e *Env) Attention(qkv mat.Tensor, m, h, kv, hd int, segs []Segment) mat.Tensor {
	return run(&attentionFn{env: e, qkv: qkv, m: m, h: h, kv: kv, hd: hd, segs: segs,
		scale: float32(1 / math.Sqrt(float64(hd)))})
}

func (f *attentionFn) Operands() []mat.Tensor { return []mat.Tensor{f.qkv} }

func (f *attentionFn) width() int { return (f.h + 2*f.kv) * f.hd }

// probs writes the causal softmax of Q_h·K_gᵀ·scale for segment s into p [L, L].
func (f *attentionFn) probs(p, qkv []float32, s Segment, head int) {
	w, hd, L := f.width(), f.hd, s.Len
	g := head / (f.h / f.kv)
	q := qkv[s.Start*w+head*hd:]
	k := qkv[s.Start*w+(f.h+g)*hd:]
	kernels.Gemm(nil, false, true, L, L, hd, f.scale, q, w, k, w, 0, p, L)
	for i := 0; i < L; i++ {
		row := p[i*L : (i+1)*L]
		kernels.Softmax(row[:i+1])
		clear(row[i+1:])
	}
}

func (f *attentionFn) Forward() (mat.Tensor, error) {
	qkv := vals(f.qkv)
	w, hd, ow := f.width(), f.hd, f.h*f.hd
	od, out := f.env.newOut(f.m, ow)
	f.out, f.buf = od, out
	units := len(f.segs) * f.h
	f.env.Pool.For(units, func(lo, hi int) {
		for u := lo; u < hi; u++ {
			s, head := f.segs[u/f.h], u%f.h
			g := head / (f.h / f.kv)
			L := s.Len
			p := f.env.get(L * L)
			f.probs(p, qkv, s, head)
			v := qkv[s.Start*w+(f.h+f.kv+g)*hd:]
			kernels.Gemm(nil, false, false, L, hd, L, 1, p, L, v, w, 0, out[s.Start*ow+head*hd:], ow)
			f.env.put(p)
		}
	})
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
	units := len(f.segs) * f.h
	dk := make([][]float32, units) // per unit dK, dV contributions, summed in head order below
	dv := make([][]float32, units)
	f.env.Pool.For(units, func(lo, hi int) {
		for u := lo; u < hi; u++ {
			s, head := f.segs[u/f.h], u%f.h
			g := head / (f.h / f.kv)
			L := s.Len
			p := f.env.get(L * L)
			dp := f.env.get(L * L)
			f.probs(p, qkv, s, head)
			do := dout[s.Start*ow+head*hd:]
			q := qkv[s.Start*w+head*hd:]
			k := qkv[s.Start*w+(f.h+g)*hd:]
			v := qkv[s.Start*w+(f.h+f.kv+g)*hd:]
			dv[u] = f.env.get(L * hd)
			kernels.Gemm(nil, true, false, L, hd, L, 1, p, L, do, ow, 0, dv[u], hd)
			kernels.Gemm(nil, false, true, L, L, hd, 1, do, ow, v, w, 0, dp, L)
			for i := 0; i < L; i++ {
				pr, dr := p[i*L:i*L+i+1], dp[i*L:(i+1)*L]
				var dot float32
				for j, pv := range pr {
					dot += pv * dr[j]
				}
				for j, pv := range pr {
					dr[j] = pv * (dr[j] - dot)
				}
				clear(dr[i+1:])
			}
			kernels.Gemm(nil, false, false, L, hd, L, f.scale, dp, L, k, w, 0, dqkv[s.Start*w+head*hd:], w)
			dk[u] = f.env.get(L * hd)
			kernels.Gemm(nil, true, false, L, hd, L, f.scale, dp, L, q, w, 0, dk[u], hd)
			f.env.put(p)
			f.env.put(dp)
		}
	})
	for u := 0; u < units; u++ {
		s, head := f.segs[u/f.h], u%f.h
		g := head / (f.h / f.kv)
		for i := 0; i < s.Len; i++ {
			row := dqkv[(s.Start+i)*w:]
			kr, vr := row[(f.h+g)*hd:(f.h+g+1)*hd], row[(f.h+f.kv+g)*hd:(f.h+f.kv+g+1)*hd]
			for j := 0; j < hd; j++ {
				kr[j] += dk[u][i*hd+j]
				vr[j] += dv[u][i*hd+j]
			}
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
