package quant

import (
	"fmt"
	"sync"

	"github.com/lorakit/lorakit/models/kernels"
)

// scaleBuf is the number of decoded absmax values a worker keeps on its stack.
const scaleBuf = 256

// xPool recycles the kernel-ordered copies of x that MatVec shares between its workers, so that a decode
// step allocates nothing. It holds scratch memory only.
var xPool = sync.Pool{New: func() any { return new([]float32) }}

// fast reports whether MatVec can use the row kernel: a 4-bit type whose blocks never straddle rows and
// hold a multiple of 32 elements.
func (q *Blocks4) fast() bool {
	cols := q.Cols()
	return (q.Type == NF4 || q.Type == FP4) && q.BlockSize%32 == 0 && cols%q.BlockSize == 0
}

// MatVec computes y[r] = Σ_c W[r,c]·x[c] for the weight W [Rows, Cols] (HF [out, in]), dequantising each
// block in registers (16-entry table × absmax) and never materialising W. p may be nil.
func (q *Blocks4) MatVec(p *kernels.Pool, y, x []float32) {
	rows, cols := q.Rows(), q.Cols()
	if len(y) != rows || len(x) != cols {
		panic(fmt.Sprintf("quant: MatVec: len(y)=%d len(x)=%d, want %d and %d", len(y), len(x), rows, cols))
	}
	if q.int8x16() {
		q.matMul8(p, y, x, 1)
		return
	}
	if q.Type == Int8 && q.BlockSize == cols {
		p.For(rows, func(lo, hi int) {
			rows8(y[lo:hi], q.Packed[lo*cols:hi*cols], q.Absmax[lo:hi], x, cols)
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
	if !q.fast() {
		p.For(rows, func(lo, hi int) { q.matVecGeneric(y, x, lo, hi) })
		return
	}
	bp := xPool.Get().(*[]float32)
	if cap(*bp) < cols {
		*bp = make([]float32, cols)
	}
	xs := (*bp)[:cols]
	kernelOrder(xs, x)
	p.For(rows, func(lo, hi int) { q.matVecFast(y, xs, lo, hi) })
	xPool.Put(bp)
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
func (q *Blocks4) rowScales(buf []float32, r, n, nb int) []float32 {
	if !q.Double {
		return q.Absmax[r*nb : (r+n)*nb]
	}
	s := buf[:n*nb]
	q.AbsmaxRange(s, r*nb)
	return s
}

// lut16 returns the integer kernels' table when they can run this weight: a 4-bit type whose blocks are
// whole groups of 64 and never straddle rows.
func (q *Blocks4) lut16() (lut16, bool) {
	cols := q.Cols()
	if (q.Type != NF4 && q.Type != FP4) || q.BlockSize%group != 0 || cols%q.BlockSize != 0 {
		return lut16{}, false
	}
	return makeLUT16(&q.Code)
}

// matMul16 computes y[i·Rows + r] for the m rows of x with the integer kernels (see x16.go).
func (q *Blocks4) matMul16(p *kernels.Pool, y, x []float32, m int, l lut16) {
	xb := getX16(x, m, q.Cols(), q.BlockSize, &l)
	xb.w, xb.y, xb.l, xb.four = q, y, l, true
	p.Run(q.Rows(), xb)
	xb.w, xb.y = nil, nil
	x16Pool.Put(xb)
}

// rows16Range runs the integer kernels for weight rows [lo, hi) and every chunk of xb, a few rows at a
// time so that those rows stay in cache across the chunks.
func (q *Blocks4) rows16Range(y []float32, xb *x16Batch, l *lut16, lo, hi int) {
	rows, cols, bs := q.Rows(), q.Cols(), q.BlockSize
	nb := cols / bs
	var sbuf [scaleBuf]float32
	sc, step := scaleScratch(&sbuf, nb)
	for r := lo; r < hi; {
		n := min(hi-r, step)
		scales := q.rowScales(sc, r, n, nb)
		packed := q.Packed[r*cols/2 : (r+n)*cols/2]
		for ci := range xb.chunks {
			c := &xb.chunks[ci]
			rows16(y[c.row0*rows+r:], rows, packed, scales, c, l, n, nb)
		}
		r += n
	}
}

// int8x16 reports whether the int8 integer kernels can run this weight: row-wise Int8 (LLM.int8's
// layout) whose rows are whole groups of 64.
func (q *Blocks4) int8x16() bool {
	return q.Type == Int8 && q.BlockSize == q.Cols() && q.Cols()%group == 0
}

// matMul8 computes y[i·Rows + r] for the m rows of x with the int8 integer kernels: x is quantised per
// 64 columns to int16 (as for the 4-bit kernels), codes widen to int16 in registers.
func (q *Blocks4) matMul8(p *kernels.Pool, y, x []float32, m int) {
	xb := getX16Order(x, m, q.Cols(), group, 1, &naturalOrder, false)
	xb.w, xb.y, xb.four = q, y, false
	p.Run(q.Rows(), xb)
	xb.w, xb.y = nil, nil
	x16Pool.Put(xb)
}

// rows8Range runs the int8 integer kernels for weight rows [lo, hi) and every chunk of xb, a few rows at a
// time so that they stay in L1 across the chunks, then applies bitsandbytes' 1/127.
func (q *Blocks4) rows8Range(y []float32, xb *x16Batch, lo, hi int) {
	rows, cols := q.Rows(), q.Cols()
	const step = 16
	for r := lo; r < hi; r += step {
		n := min(step, hi-r)
		for ci := range xb.chunks {
			c := &xb.chunks[ci]
			rows8x16(y[c.row0*rows+r:], rows, q.Packed[r*cols:(r+n)*cols], q.Absmax[r:r+n], c, n, cols)
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

// matVecFast runs the row kernel over rows [lo, hi); xs is x in kernel order.
func (q *Blocks4) matVecFast(y, xs []float32, lo, hi int) {
	cols, bs := q.Cols(), q.BlockSize
	nbRow := cols / bs
	if !q.Double {
		rows4(y[lo:hi], q.Packed[lo*cols/2:hi*cols/2], q.Absmax[lo*nbRow:hi*nbRow], xs, &q.Code, nbRow, bs)
		return
	}
	var sbuf [scaleBuf]float32
	sc, step := scaleScratch(&sbuf, nbRow)
	for r := lo; r < hi; {
		n := min(hi-r, step)
		scales := q.rowScales(sc, r, n, nbRow)
		rows4(y[r:r+n], q.Packed[r*cols/2:(r+n)*cols/2], scales, xs, &q.Code, nbRow, bs)
		r += n
	}
}

// matVecGeneric handles any block size and Int8: each row is dequantised in short runs and dotted with x.
func (q *Blocks4) matVecGeneric(y, x []float32, lo, hi int) {
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

// matMulFast runs the fused kernels for weight rows [lo, hi) and all m kernel-ordered x rows.
func (q *Blocks4) matMulFast(y, xs []float32, m, lo, hi int) {
	rows, cols, bs := q.Rows(), q.Cols(), q.BlockSize
	nbRow := cols / bs
	var sbuf [scaleBuf]float32
	sc, step := scaleScratch(&sbuf, nbRow)
	for r := lo; r < hi; {
		n := min(hi-r, step)
		scales := q.rowScales(sc, r, n, nbRow)
		packed := q.Packed[r*cols/2 : (r+n)*cols/2]
		i := 0
		for ; i+4 <= m; i += 4 {
			rowsNx(4, y[i*rows+r:], rows, packed, scales, xs[i*cols:], cols, &q.Code, nbRow, bs)
		}
		if i+2 <= m {
			rowsNx(2, y[i*rows+r:], rows, packed, scales, xs[i*cols:], cols, &q.Code, nbRow, bs)
			i += 2
		}
		for ; i < m; i++ {
			rows4(y[i*rows+r:i*rows+r+n], packed, scales, xs[i*cols:(i+1)*cols], &q.Code, nbRow, bs)
		}
		r += n
	}
}

// rows4Go is the portable row kernel (the reference for the assembly one): for each of len(y) rows,
// y[r] = Σ_b scales[r·nb+b]·Σ_j code[q_j]·x[b·bs+j], x in natural order.
func rows4Go(y []float32, packed []byte, scales, x []float32, code *[16]float32, nb, bs int) {
	half := bs / 2
	for r := range y {
		var acc float32
		for b := 0; b < nb; b++ {
			pk := packed[(r*nb+b)*half : (r*nb+b+1)*half]
			xb := x[b*bs : (b+1)*bs]
			var a0, a1, a2, a3 float32
			for j := 0; j+1 < len(pk); j += 2 {
				c0, c1 := pk[j], pk[j+1]
				a0 += code[c0>>4] * xb[2*j]
				a1 += code[c0&15] * xb[2*j+1]
				a2 += code[c1>>4] * xb[2*j+2]
				a3 += code[c1&15] * xb[2*j+3]
			}
			acc += scales[r*nb+b] * ((a0 + a1) + (a2 + a3))
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

// rowsNxGo is the portable k-x-row kernel: rows4Go for x rows x[i·xstride:], results at y[i·ystride+r].
func rowsNxGo(k int, y []float32, ystride int, packed []byte, scales, x []float32, xstride int, code *[16]float32, nb, bs int) {
	n := len(packed) / (nb * bs / 2)
	for i := 0; i < k; i++ {
		rows4Go(y[i*ystride:i*ystride+n], packed, scales, x[i*xstride:i*xstride+nb*bs], code, nb, bs)
	}
}

// fusedMaxM is the batch size up to which MatMulT runs the fused kernels (each block decoded once per four
// rows of X); larger batches dequantise tiles and use the f32 GEMM.
const fusedMaxM = 32

// MatMulT computes Y[m, Rows] = X[m, Cols]·Wᵀ. One row of X is MatVec; for more, each worker dequantises a
// tile of W rows at a time into a small buffer and multiplies the whole batch with it, so every block is
// decoded once per call, not once per row of X.
func (q *Blocks4) MatMulT(p *kernels.Pool, y, x []float32, m int) {
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
	if q.int8x16() && m < fusedMaxM {
		q.matMul8(p, y, x, m)
		return
	}
	if l, ok := q.lut16(); ok && m < fusedMaxM {
		q.matMul16(p, y, x, m, l)
		return
	}
	if q.fast() && m < fusedMaxM {
		bp := xPool.Get().(*[]float32)
		if cap(*bp) < m*cols {
			*bp = make([]float32, m*cols)
		}
		xs := (*bp)[:m*cols]
		for i := 0; i < m; i++ {
			kernelOrder(xs[i*cols:(i+1)*cols], x[i*cols:(i+1)*cols])
		}
		p.For(rows, func(lo, hi int) { q.matMulFast(y, xs, m, lo, hi) })
		xPool.Put(bp)
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
func (q *Blocks4) DequantizeP(p *kernels.Pool, dst []float32) {
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
