package quant

import (
	"fmt"

	"github.com/lorakit/lorakit/models/kernels"
)

// scaleBuf is the number of decoded absmax values a worker keeps on its stack.
const scaleBuf = 256

// MatVec computes y[r] = Σ_c W[r,c]·x[c] for the weight W [Rows, Cols] (HF [out, in]) without
// materialising W: the dot kernels (dot8.go) where AVX-512 VNNI runs and the rows tile, otherwise the integer
// kernels (x16.go) for 4-bit blocks of 32 or a multiple of 64 in rows of whole groups of 64 and for row-wise
// int8, short dequantised runs otherwise. p may be nil.
func (q *Weight) MatVec(p *kernels.Pool, y, x []float32) {
	rows, cols := q.Rows(), q.Cols()
	if len(y) != rows || len(x) != cols {
		panic(fmt.Sprintf("quant: MatVec: len(y)=%d len(x)=%d, want %d and %d", len(y), len(x), rows, cols))
	}
	if q.useDot8() {
		q.matMulDot8(p, y, x, 1)
		return
	}
	if q.int8x16() {
		q.matMul8(p, y, x, 1)
		return
	}
	if q.q8Kernel() {
		q.matMulQ8(p, y, x, 1)
		return
	}
	if q.Type == Int8 && q.BlockSize == cols {
		p.For(rows, func(lo, hi int) {
			rows8(y[lo:hi], q.packed()[lo*cols:hi*cols], q.absmaxes()[lo:hi], x, cols)
			for r := lo; r < hi; r++ {
				y[r] *= int8Scale
			}
		})
		return
	}
	if l, ok := q.lut16(); ok {
		q.matMul16(p, y, x, 1, l)
		return
	}
	p.For(rows, func(lo, hi int) { q.matVecGeneric(y, x, lo, hi) })
}

// scaleScratch returns the buffer for decoded absmax values (buf, or a new slice when one row has more
// blocks than it holds) and how many rows of nb blocks it takes at once.
func scaleScratch(buf *[scaleBuf]float32, nb int) ([]float32, int) {
	sc := buf[:]
	if nb > scaleBuf {
		sc = make([]float32, nb)
	}
	return sc, len(sc) / nb
}

// rowScales returns the absmax of the blocks of rows [r, r+n) (nb per row): the stored values, or with
// double quantisation decoded into buf.
func (q *Weight) rowScales(buf []float32, r, n, nb int) []float32 {
	if !q.Double {
		return q.absmaxes()[r*nb : (r+n)*nb]
	}
	s := buf[:n*nb]
	q.AbsmaxRange(s, r*nb)
	return s
}

// lut16 returns the integer kernels' table when they can run this weight: a 4-bit type whose blocks
// (32 or a multiple of 64) never straddle rows, in rows of whole groups of 64.
func (q *Weight) lut16() (lut16, bool) {
	cols, bs := q.Cols(), q.BlockSize
	if (q.Type != NF4 && q.Type != FP4 && q.Type != Q4_0) || (bs%group != 0 && bs != group/2) || cols%bs != 0 || cols%group != 0 {
		return lut16{}, false
	}
	return makeLUT16(&q.Code)
}

// matMul16 computes y[i·Rows + r] for the m rows of x with the integer kernels (see x16.go).
func (q *Weight) matMul16(p *kernels.Pool, y, x []float32, m int, l lut16) {
	xb := getX16(x, m, q.Cols(), q.BlockSize, &l, vnniRows())
	xb.w, xb.y, xb.l, xb.four = q, y, l, true
	p.Run(q.Rows(), xb)
	xb.w, xb.y = nil, nil
	x16Pool.Put(xb)
}

// rows16Range runs the integer kernels for weight rows [lo, hi) and every chunk of xb, a few rows at a
// time so that those rows stay in cache across the chunks.
func (q *Weight) rows16Range(y []float32, xb *x16Batch, l *lut16, lo, hi int) {
	rows, cols, bs := q.Rows(), q.Cols(), q.BlockSize
	nb := cols / bs
	var sbuf [scaleBuf]float32
	sc, step := scaleScratch(&sbuf, nb)
	for r := lo; r < hi; {
		n := min(hi-r, step)
		scales := q.rowScales(sc, r, n, nb)
		packed := q.packed()[r*cols/2 : (r+n)*cols/2]
		for ci := range xb.chunks {
			c := &xb.chunks[ci]
			rows16(y[c.row0*rows+r:], rows, packed, scales, c, l, n, nb)
		}
		r += n
	}
}

// int8x16 reports whether the int8 integer kernels can run this weight: row-wise Int8 (LLM.int8's
// layout) whose rows are whole groups of 64.
func (q *Weight) int8x16() bool {
	return q.Type == Int8 && q.BlockSize == q.Cols() && q.Cols()%group == 0
}

// matMul8 computes y[i·Rows + r] for the m rows of x with the int8 integer kernels: x is quantised per
// 64 columns to int16 (as for the 4-bit kernels), codes widen to int16 in registers.
func (q *Weight) matMul8(p *kernels.Pool, y, x []float32, m int) {
	var xb *x16Batch
	if k := vnniRows(); k > 0 {
		xb = getX16Order(x, m, q.Cols(), group, 1, nil, false, k)
	} else {
		xb = getX16Order(x, m, q.Cols(), group, 1, &naturalOrder, false, 0)
	}
	xb.w, xb.y, xb.four = q, y, false
	p.Run(q.Rows(), xb)
	xb.w, xb.y = nil, nil
	x16Pool.Put(xb)
}

// rows8Range runs the int8 integer kernels for weight rows [lo, hi) and every chunk of xb, a few rows at a
// time so that they stay in L1 across the chunks, then applies bitsandbytes' 1/127.
func (q *Weight) rows8Range(y []float32, xb *x16Batch, lo, hi int) {
	rows, cols := q.Rows(), q.Cols()
	const step = 16
	for r := lo; r < hi; r += step {
		n := min(step, hi-r)
		for ci := range xb.chunks {
			c := &xb.chunks[ci]
			rows8x16(y[c.row0*rows+r:], rows, q.packed()[r*cols:(r+n)*cols], q.absmaxes()[r:r+n], c, n, cols)
		}
	}
	for ci := range xb.chunks {
		c := &xb.chunks[ci]
		for i := c.row0; i < c.row0+c.k; i++ {
			yi := y[i*rows+lo : i*rows+hi]
			for j := range yi {
				yi[j] *= int8Scale
			}
		}
	}
}

// q8Kernel reports whether the Q8_0 kernel runs this weight: Q8_0 rows of whole groups of 64, with the VNNI
// kernels in use (elsewhere Q8_0 takes the dequantising paths, which keep the AVX2 dot and GEMM busy).
func (q *Weight) q8Kernel() bool {
	return q.Type == Q8_0 && q.BlockSize == group/2 && q.Cols()%group == 0 && vnniRows() > 0
}

// matMulQ8 computes y[i·Rows + r] for the m rows of x with the Q8_0 kernel: x is quantised per 32-block to
// int16, as for Q4_0.
func (q *Weight) matMulQ8(p *kernels.Pool, y, x []float32, m int) {
	xb := getX16Order(x, m, q.Cols(), group/2, 1, nil, false, vnniRows())
	xb.w, xb.y, xb.four = q, y, false
	p.Run(q.Rows(), xb)
	xb.w, xb.y = nil, nil
	x16Pool.Put(xb)
}

// rowsQ8Range runs the Q8_0 kernel for weight rows [lo, hi) and every chunk of xb, a few rows at a time.
func (q *Weight) rowsQ8Range(y []float32, xb *x16Batch, lo, hi int) {
	rows, cols := q.Rows(), q.Cols()
	nb := cols / (group / 2)
	const step = 16
	for r := lo; r < hi; r += step {
		n := min(step, hi-r)
		for ci := range xb.chunks {
			c := &xb.chunks[ci]
			rowsQ8(y[c.row0*rows+r:], rows, q.packed()[r*cols:(r+n)*cols], q.absmaxes()[r*nb:(r+n)*nb], c, n, cols)
		}
	}
}

// matVecGeneric handles any block size and Int8: each row is dequantised in short runs and dotted with x.
func (q *Weight) matVecGeneric(y, x []float32, lo, hi int) {
	cols := q.Cols()
	var buf [256]float32
	for r := lo; r < hi; r++ {
		var acc float32
		for c := 0; c < cols; c += len(buf) {
			k := min(len(buf), cols-c)
			q.DequantizeRange(buf[:k], r*cols+c)
			acc += kernels.Dot(buf[:k], x[c:c+k])
		}
		y[r] = acc
	}
}

// rows8Go is the portable int8 row kernel: y[r] = scales[r]·Σ_c int8(packed[r·cols+c])·x[c].
func rows8Go(y []float32, packed []byte, scales, x []float32, cols int) {
	x = x[:cols]
	for r := range y {
		row := packed[r*cols : (r+1)*cols]
		var a0, a1 float32
		c := 0
		for ; c+1 < cols; c += 2 {
			a0 += float32(int8(row[c])) * x[c]
			a1 += float32(int8(row[c+1])) * x[c+1]
		}
		if c < cols {
			a0 += float32(int8(row[c])) * x[c]
		}
		y[r] = scales[r] * (a0 + a1)
	}
}

// fusedMaxM is the batch size up to which MatMulT runs the integer kernels (each group decoded once per
// four, two or one rows of X); larger batches dequantise tiles and use the f32 GEMM.
const fusedMaxM = 32

// MatMulT computes Y[m, Rows] = X[m, Cols]·Wᵀ. One row of X is MatVec, small batches run the integer
// kernels; otherwise each worker dequantises a tile of W rows at a time into a buffer and multiplies the
// whole batch with it, so every block is decoded once per call, not once per row of X.
func (q *Weight) MatMulT(p *kernels.Pool, y, x []float32, m int) {
	rows, cols := q.Rows(), q.Cols()
	if m < 0 || len(x) != m*cols || len(y) != m*rows {
		panic(fmt.Sprintf("quant: MatMulT: len(y)=%d len(x)=%d m=%d for weight [%d, %d]", len(y), len(x), m, rows, cols))
	}
	if m == 0 {
		return
	}
	if m == 1 {
		q.MatVec(p, y, x)
		return
	}
	if q.useDot8() {
		q.matMulDot8(p, y, x, m)
		return
	}
	if q.int8x16() && m < fusedMaxM {
		q.matMul8(p, y, x, m)
		return
	}
	if q.q8Kernel() && m < fusedMaxM {
		q.matMulQ8(p, y, x, m)
		return
	}
	if l, ok := q.lut16(); ok && m < fusedMaxM {
		q.matMul16(p, y, x, m, l)
		return
	}
	p.For(rows, func(lo, hi int) {
		// tiles of up to 2 MiB of f32 rows (1, 2 and 4 MiB measured alike), a multiple of the GEMM's four-row
		// tile: every tile streams all of X again, so small tiles (64 KiB gave 3 rows for a 4864-column
		// down_proj) starve the GEMM
		const tileElems = 1 << 19
		tr := max(4, tileElems/cols&^3)
		buf := make([]float32, min(tr, hi-lo)*cols)
		for r0 := lo; r0 < hi; r0 += tr {
			r1 := min(hi, r0+tr)
			t := buf[:(r1-r0)*cols]
			q.DequantizeRange(t, r0*cols)
			kernels.Gemm(nil, false, true, m, r1-r0, cols, 1, x, cols, t, cols, 0, y[r0:], rows)
		}
	})
}

// DequantizeP is Dequantize split over the pool's threads (rows of 4096 blocks' worth at a time).
func (q *Weight) DequantizeP(p *kernels.Pool, dst []float32) {
	n := q.Elems()
	if len(dst) < n {
		panic(fmt.Sprintf("quant: DequantizeP: dst has %d elements, want %d", len(dst), n))
	}
	const chunk = 1 << 16
	p.For((n+chunk-1)/chunk, func(lo, hi int) {
		e0, e1 := lo*chunk, min(hi*chunk, n)
		q.DequantizeRange(dst[e0:e1], e0)
	})
}
