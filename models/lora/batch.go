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
// per module, no per-row dispatch). Segments of bigRows rows or more run one after another, each with the
// whole pool. A Batch is reused from step to step and is not safe for concurrent use; it does not allocate
// once warm.
type Batch struct {
	segs    []Segment
	small   []int // indices of the segments run beside each other
	y, x    []float32
	in, out int
	fn      func(lo, hi int)
}

// bigRows is the segment size from which a segment's products get the whole pool.
const bigRows = 32

// Apply adds s·B·(A·x) to the rows of y [rows, out] from x [rows, in] of every segment, with segs[i].F's
// factors. Segments must not overlap; a factor shape that disagrees with in/out panics (Check the adapter
// against the base first).
func (b *Batch) Apply(p *kernels.Pool, y, x []float32, in, out int, segs []Segment) {
	b.small = b.small[:0]
	work := 0
	for i, s := range segs {
		if s.F == nil || s.N <= 0 {
			continue
		}
		f := s.F
		if f.In != in || f.Out != out || s.Start < 0 || (s.Start+s.N)*in > len(x) || (s.Start+s.N)*out > len(y) {
			panic(fmt.Sprintf("lora: segment %d (rows [%d, %d)) with in %d out %d does not fit a rank-%d pair [%d×%d] or x, y of %d, %d values",
				i, s.Start, s.Start+s.N, in, out, f.R, f.Out, f.In, len(x), len(y)))
		}
		if s.N >= bigRows {
			f.Apply(p, y[s.Start*out:(s.Start+s.N)*out], x[s.Start*in:(s.Start+s.N)*in], s.N)
			continue
		}
		b.small = append(b.small, i)
		work += s.N * f.R * (in + out)
	}
	switch {
	case len(b.small) == 0:
		return
	case len(b.small) == 1 || work < inlineAt: // one segment pools its own products; little work stays inline
		for _, i := range b.small {
			s := segs[i]
			s.F.Apply(p, y[s.Start*out:(s.Start+s.N)*out], x[s.Start*in:(s.Start+s.N)*in], s.N)
		}
		return
	}
	if b.fn == nil {
		b.fn = b.run
	}
	b.segs, b.y, b.x, b.in, b.out = segs, y, x, in, out
	p.For(len(b.small), b.fn)
	b.segs, b.y, b.x = nil, nil, nil
}

// run applies the small segments [lo, hi) inline.
func (b *Batch) run(lo, hi int) {
	in, out := b.in, b.out
	for _, i := range b.small[lo:hi] {
		s := b.segs[i]
		s.F.Apply(nil, b.y[s.Start*out:(s.Start+s.N)*out], b.x[s.Start*in:(s.Start+s.N)*in], s.N)
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
