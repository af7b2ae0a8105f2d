package lora

import (
	"fmt"

	"github.com/lorakit/lorakit/models/kernels"
)

// Segment is the rows [Start, Start+N) of a batch whose adapter has the factors F for the module being run
// (nil: the adapter does not touch it).
type Segment struct {
	Start, N int
	F        *Factors
}

// Batch adds the deltas of one module for every segment of a step in one call: the rows of each adapter are
// one segment, and every segment's shrink T = X·Aᵀ and expand Y += s·T·Bᵀ run over the pool together, the
// segments shared out between the threads (the SGMV/BGMV idea of Punica and S-LoRA: one batched LoRA kernel
// per module, no per-row dispatch); a bf16 segment is one fused kernel call that prefetches the next segment's
// factors (run). Segments of bigRows rows or more run one after another, each with the whole pool, except a
// bf16 one without AVX-512 (a prompt being prefilled), split into items of chunkRows rows shared out as the
// small segments are. ApplyShared does the same for several modules that take the same x (q, k and v; gate and
// up) in one pool job. A Batch is reused from step to step and is not safe for concurrent use; it does not
// allocate once warm.
type Batch struct {
	ts    []Target
	small []item // the segments run beside each other
	x     []float32
	in    int
	fn    func(lo, hi int)
	one   [1]Target
}

// Target is one module of an ApplyShared call: its output Y [rows, Out] and the segments of its adapters.
type Target struct {
	Y    []float32
	Out  int
	Segs []Segment
}

// item is the rows [R0, R0+N) of segment Seg of target T.
type item struct{ T, Seg, R0, N int32 }

// bigRows is the segment size from which a segment's products get the whole pool. Without AVX-512 a bf16
// segment of more than chunkRows rows is shared out as items of chunkRows rows instead (one hand-off for the
// whole call, items of similar work for the threads; the fused kernel's result does not depend on how the rows
// are split): on Zen 1 the pooled path's hand-offs per segment and module cost more than its products (the
// AVX-512 path, tuned on Zen 5 and not measured with items, keeps the pool).
const (
	bigRows   = 32
	chunkRows = 16
)

// Apply adds s·B·(A·x) to the rows of y [rows, out] from x [rows, in] of every segment, with segs[i].F's
// factors. Segments must not overlap; a factor shape that disagrees with in/out panics (Check the adapter
// against the base first).
func (b *Batch) Apply(p *kernels.Pool, y, x []float32, in, out int, segs []Segment) {
	b.one[0] = Target{Y: y, Out: out, Segs: segs}
	b.ApplyShared(p, x, in, b.one[:])
	b.one[0] = Target{}
}

// ApplyShared is Apply for several modules that read the same x [rows, in] (each target its own y, out size
// and segments): the small segments of all of them are shared out between the threads in one pool job, so a
// layer's q, k and v (or gate and up) cost one hand-off instead of one each. Each y ends bit for bit as after
// Apply on its own.
func (b *Batch) ApplyShared(p *kernels.Pool, x []float32, in int, ts []Target) {
	b.small = b.small[:0]
	work := 0
	for t, tg := range ts {
		y, out := tg.Y, tg.Out
		for i, s := range tg.Segs {
			if s.F == nil || s.N <= 0 {
				continue
			}
			f := s.F
			if f.In != in || f.Out != out || s.Start < 0 || (s.Start+s.N)*in > len(x) || (s.Start+s.N)*out > len(y) {
				panic(fmt.Sprintf("lora: segment %d (rows [%d, %d)) with in %d out %d does not fit a rank-%d pair [%d×%d] or x, y of %d, %d values",
					i, s.Start, s.Start+s.N, in, out, f.R, f.Out, f.In, len(x), len(y)))
			}
			if s.N >= bigRows && (f.Layout != BF16 || kernels.AVX512()) {
				f.Apply(p, y[s.Start*out:(s.Start+s.N)*out], x[s.Start*in:(s.Start+s.N)*in], s.N)
				continue
			}
			step := s.N // a segment below bigRows is one item, as it was before items had rows
			if s.N >= bigRows {
				step = chunkRows // a bf16 segment without AVX-512 (the others returned above)
			}
			for r0 := 0; r0 < s.N; r0 += step {
				b.small = append(b.small, item{int32(t), int32(i), int32(r0), int32(min(step, s.N-r0))})
			}
			work += s.N * f.R * (in + out)
		}
	}
	if len(b.small) == 0 {
		return
	}
	if b.fn == nil {
		b.fn = b.run
	}
	b.ts, b.x, b.in = ts, x, in
	switch {
	case len(b.small) == 1 && b.small[0].N >= poolRows: // one segment of many rows pools its own products
		tg, s := ts[b.small[0].T], b.seg(0)
		s.F.Apply(p, tg.Y[s.Start*tg.Out:(s.Start+s.N)*tg.Out], x[s.Start*in:(s.Start+s.N)*in], s.N)
	case len(b.small) == 1 || work < inlineAt: // little work stays inline
		b.run(0, len(b.small))
	default:
		p.For(len(b.small), b.fn)
	}
	b.ts, b.x = nil, nil
}

// seg returns the k-th small segment.
func (b *Batch) seg(k int) Segment {
	it := b.small[k]
	return b.ts[it.T].Segs[it.Seg]
}

// poolRows is the rows from which a lone segment's own products are worth splitting over the pool (expandBF16's
// threshold).
const poolRows = 8

// run applies the small segments [lo, hi) inline. A bf16 segment runs as one fused kernel call
// (kernels.LowRankAddBF16) that prefetches the factors of the segment after it (in b.small's order, whichever
// thread runs that one): the threads' shares are contiguous, so each streams its adapters' factors one after the
// other instead of starting every short matrix cold.
func (b *Batch) run(lo, hi int) {
	in := b.in
	var bp *[]float32
	for k := lo; k < hi; k++ {
		it, f := b.small[k], b.seg(k).F
		r0, n, out := b.seg(k).Start+int(it.R0), int(it.N), b.ts[it.T].Out
		y, x := b.ts[it.T].Y[r0*out:(r0+n)*out], b.x[r0*in:(r0+n)*in]
		if f.Layout != BF16 {
			f.Apply(nil, y, x, n)
			continue
		}
		if bp == nil {
			bp = scratch.Get().(*[]float32)
		}
		if cap(*bp) < n*f.R {
			*bp = make([]float32, n*f.R)
		}
		var nextA, nextBt []uint16
		if k+1 < len(b.small) {
			if g := b.seg(k + 1).F; g.Layout == BF16 && g != f {
				nextA, nextBt = g.A16, g.Bt16
			}
		}
		kernels.LowRankAddBF16(y, x, (*bp)[:n*f.R], f.A16, f.Bt16, n, out, in, f.R, f.Scale, nextA, nextBt)
		if f.RowScale != nil {
			f.applyRowScale(y, n)
		}
	}
	if bp != nil {
		scratch.Put(bp)
	}
}

// expandBF16 adds T[rows, r]·Bᵀ to Y[rows, out] for a bf16 Bᵀ [r, out], the rows split over p when there are
// enough of them to pay for the hand-off.
func expandBF16(p *kernels.Pool, y, t []float32, bt []uint16, rows, out, r int) {
	if p == nil || p.Threads() == 1 || rows < 8 || rows*out*r < 1<<18 {
		kernels.MatMulAddBF16(y, t, bt, rows, out, r)
		return
	}
	pairs := (rows + 1) / 2 // row pairs: the kernel's unit
	p.For(pairs, func(lo, hi int) {
		r0, r1 := 2*lo, min(2*hi, rows)
		kernels.MatMulAddBF16(y[r0*out:r1*out], t[r0*r:r1*r], bt, r1-r0, out, r)
	})
}

// Module returns the factors of module in the packed layout, or nil when the adapter does not touch it.
func (pk *Packed) Module(module string) *Factors { return pk.modules[module] }
