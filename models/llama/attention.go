package llama

import (
	"math"

	"github.com/lorakit/lorakit/models/kernels"
)

// attentionRange computes, for the workers w in [lo, hi), s.att[r, h] = softmax(q[r,h]·K[kvh]ᵀ/√D over the
// cached positions ≤ pos(r)) · V[kvh], where kvh = h / (heads/kv_heads) (grouped-query attention). The work items
// are (row, kv head) pairs, interleaved over the workers, each with its own score buffer. The query heads of a
// group are the rows of small tile products (kernels.AttendF32, AttendBF16), so the cached keys and values are
// read once per group, at tile speed. They are read in place through the sequence's block table, one run of
// adjacent blocks at a time (a sequence on a shared prefix reads the prefix's blocks where they are), with the
// sums of a single contiguous matrix.
func (m *Model) attentionRange(lo, hi int) {
	c := m.Config
	s := &m.s
	batch, l := s.batch, s.layer
	D, Q, nkv := c.HeadDim, c.QDim(), c.NumKeyValueHeads
	group := c.NumAttentionHeads / nkv
	scale := float32(1 / math.Sqrt(float64(D)))
	items := len(s.short) * nkv
	nw := len(s.scores)
	for w := lo; w < hi; w++ {
		for it := w; it < items; it += nw {
			r, kvh := s.short[it/nkv], it%nkv
			kc, pos := batch[s.rowSeq[r]].Cache, s.rowPos[r]
			start := 0
			if c.SlidingWindow > 0 && pos-c.SlidingWindow+1 > 0 {
				start = pos - c.SlidingWindow + 1
			}
			n, i := pos+1-start, l*nkv+kvh
			q0 := r*Q + kvh*group*D // the group's query heads are adjacent rows of D
			q, att := s.q[q0:q0+group*D], s.att[q0:q0+group*D]
			S := s.scores[w][:group*n]
			// runs that start off a multiple of 4 positions would change which keys take the kernels' 4-key
			// tiles (and so the scores' last bits): a window starting there is gathered into one run
			gather := start%4 != 0
			if kc.pool.dtype == KVBF16 {
				s.runs16[w].attend(kc, pickBF16, kernels.AttendBF16, att, S, q, group, D, i, start, pos+1, scale, gather)
				continue
			}
			s.runs[w].attend(kc, pickF32, kernels.AttendF32, att, S, q, group, D, i, start, pos+1, scale, gather)
		}
	}
}

// kvRunBuf is one attention worker's reused lists of a cache's runs of keys and values (kvRuns), and the keys
// and values it gathers when a sliding window starts off the kernels' 4-key tiles (span).
type kvRunBuf[T float32 | uint16] struct {
	k, v   [][]T
	gk, gv []T
}

// attend computes one group's decode attention over positions [lo, hi) of slot i of kc with attend, reading the
// cache's runs of adjacent blocks in place, or gathered into one run when gather is set. The run lists keep their
// slices, not the arenas they pointed into.
func (b *kvRunBuf[T]) attend(kc *KVCache, pick func(*kvArena) (k, v [][]T),
	attend func(att, s, q []float32, m, d int, k, v [][]T, scale float32),
	att, S, q []float32, group, D, i, lo, hi int, scale float32, gather bool) {
	k, v := b.k[:0], b.v[:0]
	if gather {
		k1, v1 := span(kc, pick, i, lo, hi, &b.gk, &b.gv)
		k, v = append(k, k1), append(v, v1)
	} else {
		k, v = kvRuns(kc, pick, i, lo, hi, k, v)
	}
	attend(att, S, q, group, D, k, v, scale)
	clear(k)
	clear(v)
	b.k, b.v = k, v
}

// blockedMin is the number of new tokens from which a sequence's attention runs as matrix multiplications.
const blockedMin = 16

// attentionBlocked computes the attention of the n new tokens of sq (rows r0..r0+n-1) with two GEMMs per head
// and block of rows: S = Q_h·K_hᵀ over the visible positions, a causal (and sliding-window) masked softmax of
// each row of S/√D, then att_h = S·V_h. The heads of a block are spread over the pool, each with its own S; the
// keys and values of each key/value head are taken from the block table once per block of rows.
func (m *Model) attentionBlocked(sq Seq, r0, l int) {
	c := m.Config
	s := &m.s
	kc, n := sq.Cache, len(sq.Tokens)
	p0 := kc.n                // position of the first new token (the cache length advances after the last layer)
	const blk = 128           // query rows per block
	const maxScores = 1 << 22 // floats of S for all heads of a block (16 MB): long contexts take fewer rows
	bf16 := kc.pool.dtype == KVBF16
	for b0, bn := 0, 0; b0 < n; b0 += bn {
		lo := 0
		if c.SlidingWindow > 0 {
			lo = max(0, p0+b0-c.SlidingWindow+1)
		}
		bn = min(blk, n-b0, max(16, maxScores/(c.NumAttentionHeads*(p0+b0+blk-lo))))
		hi := p0 + b0 + bn // keys [lo, hi) are visible to some row of the block
		w := hi - lo
		s.blockS = grow(s.blockS, c.NumAttentionHeads*bn*w)
		if bf16 { // the bf16 products take each head's queries and outputs as contiguous rows
			s.blockQ, s.blockO = grow(s.blockQ, c.NumAttentionHeads*bn*c.HeadDim), grow(s.blockO, c.NumAttentionHeads*bn*c.HeadDim)
		}
		nkv := c.NumKeyValueHeads
		s.ab = blockJob{bf16: bf16, row0: r0 + b0, rows: bn, pos0: p0 + b0, lo: lo, w: w,
			k: s.ab.k[:0], v: s.ab.v[:0], k16: s.ab.k16[:0], v16: s.ab.v16[:0]}
		j := &s.ab
		for h := range nkv {
			if bf16 {
				k, v := span(kc, pickBF16, l*nkv+h, lo, hi, &s.bk16[h], &s.bv16[h])
				j.k16, j.v16 = append(j.k16, k), append(j.v16, v)
			} else {
				k, v := span(kc, pickF32, l*nkv+h, lo, hi, &s.bk[h], &s.bv[h])
				j.k, j.v = append(j.k, k), append(j.v, v)
			}
		}
		m.Pool.For(c.NumAttentionHeads, m.headsFn)
	}
	// keep the per-head slices for the next call, not what they point to
	clear(s.ab.k)
	clear(s.ab.v)
	clear(s.ab.k16)
	clear(s.ab.v16)
	s.ab = blockJob{k: s.ab.k[:0], v: s.ab.v[:0], k16: s.ab.k16[:0], v16: s.ab.v16[:0]}
}

// blockJob is one block of query rows for attentionHeads: rows row0..row0+rows-1 of s.q (positions pos0...)
// against the keys and values lo..lo+w-1 of the layer, per key/value head (k, v or k16, v16 when bf16).
type blockJob struct {
	bf16                    bool
	k, v                    [][]float32
	k16, v16                [][]uint16
	row0, rows, pos0, lo, w int
}

// attentionHeads runs the block s.ab for heads [h0, h1).
func (m *Model) attentionHeads(h0, h1 int) {
	c, s, j := m.Config, &m.s, &m.s.ab
	D, Q := c.HeadDim, c.QDim()
	group := c.NumAttentionHeads / c.NumKeyValueHeads
	scale := float32(1 / math.Sqrt(float64(D)))
	for h := h0; h < h1; h++ {
		kvh := h / group
		S := s.blockS[h*j.rows*j.w : (h+1)*j.rows*j.w]
		var qh, oh []float32 // bf16: the head's query rows gathered, its outputs before the scatter
		if j.bf16 {
			qh, oh = s.blockQ[h*j.rows*D:(h+1)*j.rows*D], s.blockO[h*j.rows*D:(h+1)*j.rows*D]
			for r := range j.rows {
				copy(qh[r*D:(r+1)*D], s.q[(j.row0+r)*Q+h*D:])
			}
			kernels.MatMulBF16T(nil, S, qh, j.k16[kvh], j.rows, j.w, D)
		} else {
			kernels.Gemm(nil, false, true, j.rows, j.w, D, 1, s.q[j.row0*Q+h*D:], Q, j.k[kvh], D, 0, S, j.w)
		}
		for r := range j.rows {
			pos := j.pos0 + r
			row := S[r*j.w : (r+1)*j.w]
			first := 0
			if c.SlidingWindow > 0 {
				first = max(0, pos-c.SlidingWindow+1-j.lo)
			}
			last := pos - j.lo // inclusive
			kernels.Scale(scale, row[first:last+1])
			kernels.Softmax(row[first : last+1])
			clear(row[:first])
			clear(row[last+1:])
		}
		if j.bf16 {
			clear(oh)
			kernels.MatMulAddBF16(oh, S, j.v16[kvh], j.rows, D, j.w)
			for r := range j.rows {
				copy(s.att[(j.row0+r)*Q+h*D:(j.row0+r)*Q+(h+1)*D], oh[r*D:(r+1)*D])
			}
			continue
		}
		kernels.Gemm(nil, false, false, j.rows, D, j.w, 1, S, j.w, j.v[kvh], D, 0, s.att[j.row0*Q+h*D:], Q)
	}
}
