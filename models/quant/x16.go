package quant

import (
	"math"
	"sync"
)

// The integer GEMV path. Decoding 4-bit codes to float32 costs several shuffles per eight weights, which
// made the float kernel compute-bound at a fraction of memory bandwidth. Instead, the 16 code levels are
// held as int16 (two VPSHUFB byte tables), x is quantised per weight block to int16 (one scale per block),
// and VPMADDWD forms the products exactly in int32; each block's sum is scaled back once. The only
// rounding beyond float32 is x to 15 bits of its block maximum and the levels to 2⁻¹⁴: both far below
// the bf16 arithmetic bitsandbytes itself computes in.

// lutOne is the int16 value of a level of magnitude max|code|.
const lutOne = 1 << 14

// lut16 is a code table as int16 levels, split into low and high bytes for VPSHUFB, plus the nibble mask.
// The assembly reads the three 16-byte tables at offsets 0, 16 and 32.
type lut16 struct {
	lo, hi, mask [16]byte
	level        [16]int16 // the levels themselves, for the portable kernel
	inv          float32   // level units → code units
}

// makeLUT16 rounds a code table to int16 levels; ok is false for a table the integer path cannot hold.
func makeLUT16(code *[16]float32) (l lut16, ok bool) {
	var m float32
	for _, c := range code {
		if c != c || math.IsInf(float64(c), 0) {
			return l, false
		}
		m = max(m, abs32(c))
	}
	if m == 0 {
		return l, false
	}
	scale := lutOne / float64(m)
	for i, c := range code {
		v := int16(math.Round(float64(c) * scale))
		l.level[i] = v
		l.lo[i], l.hi[i] = byte(uint16(v)), byte(uint16(v)>>8)
		l.mask[i] = 0x0f
	}
	l.inv = float32(1 / scale)
	return l, true
}

func abs32(v float32) float32 { return math.Float32frombits(math.Float32bits(v) &^ (1 << 31)) }

// xLimit is the largest |x| step count for block size bs such that one int32 lane, which sums
// max(bs, 64)/8 products of |level| ≤ 2¹⁴ and |x| ≤ limit, cannot overflow.
func xLimit(bs int) float32 {
	return float32(min(32767, (math.MaxInt32)/(lutOne*max(bs, group)/8)))
}

// vnniK is the most x rows one VNNI kernel call takes (the generator in asm/ makes one kernel per count).
const vnniK = 16

// group is the element count the kernels decode at once (32 packed bytes).
const group = 64

// groupPerm[p] is the element (within a group of 64) that the kernel multiplies at position p. VPUNPCK
// interleaves within 128-bit lanes, so the kernel's four int16 vectors hold: even elements 0..14 and
// 32..46, even 16..30 and 48..62, then the same two for the odd elements.
var groupPerm = func() (p [group]uint8) {
	for i := range p {
		v, q := i/16, i%16
		lane, k := q/8, q%8
		b := lane*16 + (v&1)*8 + k
		p[i] = uint8(2*b + v>>1)
	}
	return p
}()

// naturalOrder is the identity order of a group (the int8 kernels widen bytes in place).
var naturalOrder = func() (p [group]uint8) {
	for i := range p {
		p[i] = uint8(i)
	}
	return p
}()

// x16 is k rows of x quantised for the integer kernels, interleaved so one pointer walks all k rows:
// q holds, per group of 64 columns, k runs of 64 int16 in kernel order; s holds, per weight block, k runs
// of 8 copies of that row's step·inv (the factor from level·step units to output units, absmax aside) —
// for 32-blocks, per group, k runs of 4 copies for each of its two blocks (see scaleAt).
type x16 struct {
	k, bs int
	row0  int  // the first x row of the batch in this chunk
	vnni  bool // for the VNNI kernels (any k up to vnniK; the AVX2 ones take 1, 2 or 4)
	q     []int16
	s     []float32
}

// order is the order of each group's values in an int8 chunk: natural for the AVX2 and portable int8
// kernels, groupPerm's (written by quantizeRow) for the VNNI ones.
func (xq *x16) order() *[group]uint8 {
	if xq.vnni {
		return &groupPerm
	}
	return &naturalOrder
}

// x16Batch is m rows of x as chunks of four rows (the four-row kernel's layout), then two and one, or for the
// VNNI kernels chunks of up to vnniK rows (each weight group decoded once for all of them). It is
// also the pool job that multiplies them with a weight (Run), so that a call allocates nothing.
type x16Batch struct {
	chunks []x16
	q      []int16
	s      []float32

	// the job: y[i·Rows + r] for weight w, with the 4-bit table l (int8 when !four)
	w    *Weight
	y    []float32
	l    lut16
	four bool
}

// Run computes weight rows [lo, hi) for every x row.
func (xb *x16Batch) Run(lo, hi int) {
	switch {
	case xb.four:
		xb.w.rows16Range(xb.y, xb, &xb.l, lo, hi)
	case xb.w.Type == Q8_0:
		xb.w.rowsQ8Range(xb.y, xb, lo, hi)
	default:
		xb.w.rows8Range(xb.y, xb, lo, hi)
	}
}

var x16Pool = sync.Pool{New: func() any { return new(x16Batch) }}

// getX16 quantises the m rows of x (cols each, natural order) for block size bs, each group of 64 in the
// 4-bit kernels' order. Return it to x16Pool.
func getX16(x []float32, m, cols, bs int, l *lut16, wide int) *x16Batch {
	return getX16Order(x, m, cols, bs, l.inv, nil, true, wide)
}

// getX16Order is getX16 with the levels' scale inv and, if perm is not nil, groups in that order (the
// portable quantiser) instead of groupPerm's (the assembly one); pairs allows chunks of two rows; wide > 0
// makes chunks of up to wide rows for the VNNI kernels.
func getX16Order(x []float32, m, cols, bs int, inv float32, perm *[group]uint8, pairs bool, wide int) *x16Batch {
	xb := x16Pool.Get().(*x16Batch)
	nb := cols / bs
	xb.q = grow(xb.q, m*cols)
	xb.s = grow(xb.s, m*nb*8)
	xb.chunks = xb.chunks[:0]
	lim := xLimit(bs)
	for i := 0; i < m; {
		k := 1
		switch {
		case wide > 0:
			k = min(wide, m-i)
		case m-i >= 4:
			k = 4
		case m-i >= 2 && pairs:
			k = 2
		}
		c := x16{k: k, bs: bs, row0: i, vnni: wide > 0, q: xb.q[i*cols : (i+k)*cols], s: xb.s[i*nb*8 : (i+k)*nb*8]}
		for j := 0; j < k; j++ {
			if perm != nil {
				quantizeRowGo(&c, j, x[(i+j)*cols:(i+j+1)*cols], lim, inv, perm)
			} else {
				quantizeRow(&c, j, x[(i+j)*cols:(i+j+1)*cols], lim, inv)
			}
		}
		xb.chunks = append(xb.chunks, c)
		i += k
	}
	return xb
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// quantizeRowGo writes row i of x into xq (the portable twin of quantX16AVX2): per block the step is
// max|x|/lim, and each element becomes the nearest multiple of it, ties to even.
func quantizeRowGo(xq *x16, i int, x []float32, lim, inv float32, perm *[group]uint8) {
	bs := xq.bs
	var rs [2]float32 // the reciprocal steps of the blocks of a group's elements 0..31 and 32..63
	last, r := -1, float32(0)
	for g := 0; g*group < len(x); g++ {
		for h := range rs {
			if b := (g*group + h*group/2) / bs; b != last { // each block's step once
				r, last = xq.blockStep(i, b, x[b*bs:(b+1)*bs], lim, inv), b
			}
			rs[h] = r
		}
		src := x[g*group : (g+1)*group : (g+1)*group]
		dst := xq.q[(g*xq.k+i)*group : (g*xq.k+i+1)*group : (g*xq.k+i+1)*group]
		for p, e := range perm {
			dst[p] = roundEven(src[e] * rs[e/32])
		}
	}
}

// blockStep stores block b's step·inv in row i's scale slot(s) and returns lim/max|x| (0 for a zero
// block).
func (xq *x16) blockStep(i, b int, xb []float32, lim, inv float32) float32 {
	var m float32
	for _, v := range xb {
		m = max(m, abs32(v))
	}
	var step, r float32
	if m != 0 {
		r, step = lim/m, m/lim
	}
	j, n := xq.scaleAt(b, i), 8
	if xq.bs < group {
		n = 4
	}
	for k := range xq.s[j : j+n] {
		xq.s[j+k] = step * inv
	}
	return r
}

// scaleAt is the index in s of block b's x scale for row i: 8 copies per block of 64 or more, and for
// 32-blocks 4 copies each, two blocks per group (each 128-bit lane of a group's products is one block).
func (xq *x16) scaleAt(b, i int) int {
	if xq.bs < group {
		return ((b/2)*xq.k+i)*8 + 4*(b%2)
	}
	return (b*xq.k + i) * 8
}

// roundEven rounds v (|v| < 2²²) to the nearest integer, ties to even, as VCVTPS2DQ does.
func roundEven(v float32) int16 {
	const magic = 1 << 23 * 1.5
	t := v + magic
	return int16(t - magic)
}

// rows16Go is the portable integer kernel and the reference for the assembly: for weight rows r < n
// and x rows i < xq.k, y[i·ystride+r] = Σ_b absmax[r·nb+b]·s_i[b]·Σ_{j∈b} level[code_j]·q_i[j], each group of
// 64 converted to float on its own as the assembly does.
func rows16Go(y []float32, ystride int, packed []byte, scales []float32, xq *x16, l *lut16, n, nb int) {
	k, bs := xq.k, xq.bs
	cols := nb * bs
	for r := 0; r < n; r++ {
		row := packed[r*cols/2 : (r+1)*cols/2]
		for i := 0; i < k; i++ {
			var acc float32
			for g := 0; g < cols/group; g++ {
				q := xq.q[(g*k+i)*group : (g*k+i+1)*group]
				pg := row[g*group/2 : (g+1)*group/2]
				var sums [2]int64 // elements 0..31 and 32..63
				for p, e := range groupPerm {
					c := pg[e/2] >> 4
					if e&1 == 1 {
						c = pg[e/2] & 15
					}
					sums[e/32] += int64(l.level[c]) * int64(q[p])
				}
				if bs >= group {
					b := g * group / bs
					acc += float32(sums[0]+sums[1]) * (scales[r*nb+b] * xq.s[xq.scaleAt(b, i)])
					continue
				}
				for h, sum := range sums {
					b := 2*g + h
					acc += float32(sum) * (scales[r*nb+b] * xq.s[xq.scaleAt(b, i)])
				}
			}
			y[i*ystride+r] = acc
		}
	}
}

// rows8x16Go is the portable int8 integer kernel and the reference for the assembly: for weight rows r < n
// (cols int8 codes each, one scale per row) and x rows i < xq.k (each group in the order perm),
// y[i·ystride+r] = scales[r]·Σ_b s_i[b]·Σ_{j∈b} code_j·q_i[j]. The caller applies bitsandbytes' 1/127.
func rows8x16Go(y []float32, ystride int, packed []byte, scales []float32, xq *x16, n, cols int, perm *[group]uint8) {
	k := xq.k
	for r := 0; r < n; r++ {
		row := packed[r*cols : (r+1)*cols]
		for i := 0; i < k; i++ {
			var acc float32
			for g := 0; g < cols/group; g++ {
				q := xq.q[(g*k+i)*group : (g*k+i+1)*group]
				codes := row[g*group : (g+1)*group]
				var sum int32 // at most 64 products of 127·32767
				for p, e := range perm {
					sum += int32(int8(codes[e])) * int32(q[p])
				}
				acc += float32(sum) * xq.s[(g*k+i)*8]
			}
			y[i*ystride+r] = acc * scales[r]
		}
	}
}

// rowsQ8Go is the portable Q8_0 kernel and the reference for the assembly: for weight rows r < n (cols int8
// codes, a scale per 32-block) and x rows i < xq.k (32-blocks, groupPerm order),
// y[i·ystride+r] = Σ_b scales[r·nb+b]·s_i[b]·Σ_{j∈b} code_j·q_i[j].
func rowsQ8Go(y []float32, ystride int, packed []byte, scales []float32, xq *x16, n, cols int) {
	k, nb := xq.k, cols/(group/2)
	for r := 0; r < n; r++ {
		row := packed[r*cols : (r+1)*cols]
		for i := 0; i < k; i++ {
			var acc float32
			for g := 0; g < cols/group; g++ {
				q := xq.q[(g*k+i)*group : (g*k+i+1)*group]
				codes := row[g*group : (g+1)*group]
				var sums [2]int32 // elements 0..31 and 32..63
				for p, e := range groupPerm {
					sums[e/32] += int32(int8(codes[e])) * int32(q[p])
				}
				for h, sum := range sums {
					b := 2*g + h
					acc += float32(sum) * (scales[r*nb+b] * xq.s[xq.scaleAt(b, i)])
				}
			}
			y[i*ystride+r] = acc
		}
	}
}
