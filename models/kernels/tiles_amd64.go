//go:build amd64 && !purego

package kernels

import "golang.org/x/sys/cpu"

// hasBF16 is the CPU's AVX512_BF16 (VDPBF16PS, VCVTNE2PS2BF16) with the AVX-512 VL masked stores the
// generated tiles end with; hasTile512 is the same without BF16 (the f32 tiles).
var (
	hasTile512 = hasAVX512 && cpu.X86.HasAVX512VL
	hasBF16    = hasTile512 && cpu.X86.HasAVX512BF16
)

// Tile shapes of the generated families (kernels_gen_amd64.s): up to dpRows rows of X by dpCols rows of W.
const (
	dpRows = 8
	dpCols = 3
	// dpXBytes bounds the bytes of X one block of the parallel split reads (its rows × K), so that X stays in
	// L2 while every dpCols rows of W meet all of its rows
	dpXBytes = 512 << 10
)

type tileFunc func(x *uint16, ldx int, w *uint16, ldw int, k int, c *float32, ldc int, acc int, pf int)

type tileF32Func func(x *float32, ldx int, w *float32, ldw int, k int, c *float32, ldc int, acc int, pf int)

var dpBF16Tiles = [dpCols][dpRows]tileFunc{
	{dpBF16R1C1, dpBF16R2C1, dpBF16R3C1, dpBF16R4C1, dpBF16R5C1, dpBF16R6C1, dpBF16R7C1, dpBF16R8C1},
	{dpBF16R1C2, dpBF16R2C2, dpBF16R3C2, dpBF16R4C2, dpBF16R5C2, dpBF16R6C2, dpBF16R7C2, dpBF16R8C2},
	{dpBF16R1C3, dpBF16R2C3, dpBF16R3C3, dpBF16R4C3, dpBF16R5C3, dpBF16R6C3, dpBF16R7C3, dpBF16R8C3},
}

var fmaF32Tiles = [dpCols][dpRows]tileF32Func{
	{fmaF32R1C1, fmaF32R2C1, fmaF32R3C1, fmaF32R4C1, fmaF32R5C1, fmaF32R6C1, fmaF32R7C1, fmaF32R8C1},
	{fmaF32R1C2, fmaF32R2C2, fmaF32R3C2, fmaF32R4C2, fmaF32R5C2, fmaF32R6C2, fmaF32R7C2, fmaF32R8C2},
	{fmaF32R1C3, fmaF32R2C3, fmaF32R3C3, fmaF32R4C3, fmaF32R5C3, fmaF32R6C3, fmaF32R7C3, fmaF32R8C3},
}

type tile16Func func(x *float32, ldx int, w *uint16, ldw int, k int, c *float32, ldc int, acc int, pf int)

// fmaBF16Tiles widen bf16 weights in registers (AVX-512 without AVX512_BF16, or no scratch for the hi/lo X).
var fmaBF16Tiles = [dpCols][dpRows]tile16Func{
	{fmaBF16R1C1, fmaBF16R2C1, fmaBF16R3C1, fmaBF16R4C1, fmaBF16R5C1, fmaBF16R6C1, fmaBF16R7C1, fmaBF16R8C1},
	{fmaBF16R1C2, fmaBF16R2C2, fmaBF16R3C2, fmaBF16R4C2, fmaBF16R5C2, fmaBF16R6C2, fmaBF16R7C2, fmaBF16R8C2},
	{fmaBF16R1C3, fmaBF16R2C3, fmaBF16R3C3, fmaBF16R4C3, fmaBF16R5C3, fmaBF16R6C3, fmaBF16R7C3, fmaBF16R8C3},
}

var fmaF16Tiles = [dpCols][dpRows]tile16Func{
	{fmaF16R1C1, fmaF16R2C1, fmaF16R3C1, fmaF16R4C1, fmaF16R5C1, fmaF16R6C1, fmaF16R7C1, fmaF16R8C1},
	{fmaF16R1C2, fmaF16R2C2, fmaF16R3C2, fmaF16R4C2, fmaF16R5C2, fmaF16R6C2, fmaF16R7C2, fmaF16R8C2},
	{fmaF16R1C3, fmaF16R2C3, fmaF16R3C3, fmaF16R4C3, fmaF16R5C3, fmaF16R6C3, fmaF16R7C3, fmaF16R8C3},
}

// generated tile families a matMulTask can run (matMulTask.gen; 0: the macro-built AVX2 tiles)
const (
	genDPBF16 = 1 + iota
	genF32
	genWideBF16
	genF16
)

// prepare readies t for the tiles that will run it: for bf16 weights on the VDPBF16PS tiles, X split into
// the hi/lo bfloat16 layout (once per product, into *buf; with no buf they keep the widening tiles), and the
// blocks of the generated tiles' parallel split.
func (t *matMulTask) prepare(buf *[]uint16) {
	if !hasTile512 || !useAVX512.Load() || t.k == 0 {
		return
	}
	xrow := 4 * t.k // bytes of one row of X as the tiles read it (f32, or bf16 hi and lo)
	switch {
	case t.kind == wBF16 && buf != nil && hasBF16:
		t.ldxb = bf16Blocks(t.k)
		xb := growU16(buf, t.m*t.ldxb)
		for i := 0; i < t.m; i++ {
			cvtBF16HiLo(&t.x[i*t.ldx], t.k, &xb[i*t.ldxb])
		}
		t.xb, t.gen = xb, genDPBF16
	case t.kind == wBF16:
		t.gen = genWideBF16
	case t.kind == wF32:
		t.gen = genF32
	case t.kind == wF16 && hasF16C:
		t.gen = genF16
	default:
		return
	}
	t.mb = min(max(dpXBytes/max(xrow, 1)/dpRows, 1)*dpRows, mmRows)
	t.nb = dpBlockCols
}

// dpBlockCols is the column block of the generated tiles' parallel split (a multiple of dpCols).
const dpBlockCols = 16 * dpCols

// matMulTileGen computes Y rows [i0, i1) × columns [j0, j1) with the generated tiles: for every dpCols rows
// of W, every group of up to dpRows rows of X, each over the whole K (so that every element of Y is summed
// in the same order whatever m is: batching never changes a result). The first row group prefetches the
// next W rows, so that a decode batch streams each weight from memory once, in order.
func matMulTileGen(t *matMulTask, i0, i1, j0, j1 int) {
	k := t.k
	acc := 0
	if t.accum {
		acc = 1
	}
	esz := 2
	if t.gen == genF32 {
		esz = 4
	}
	for j := j0; j < j1; j += dpCols {
		nc := min(dpCols, j1-j)
		pf := 0
		if j+2*dpCols <= t.n {
			pf = dpCols * t.ldw * esz
		}
		for i := i0; i < i1; i += dpRows {
			nr := min(dpRows, i1-i)
			c := &t.y[i*t.ldy+j]
			switch t.gen {
			case genDPBF16:
				dpBF16Tiles[nc-1][nr-1](&t.xb[i*t.ldxb], t.ldxb, &t.wh[j*t.ldw], t.ldw, k, c, t.ldy, acc, pf)
			case genF32:
				fmaF32Tiles[nc-1][nr-1](&t.x[i*t.ldx], t.ldx, &t.wf[j*t.ldw], t.ldw, k, c, t.ldy, acc, pf)
			case genWideBF16:
				fmaBF16Tiles[nc-1][nr-1](&t.x[i*t.ldx], t.ldx, &t.wh[j*t.ldw], t.ldw, k, c, t.ldy, acc, pf)
			case genF16:
				fmaF16Tiles[nc-1][nr-1](&t.x[i*t.ldx], t.ldx, &t.wh[j*t.ldw], t.ldw, k, c, t.ldy, acc, pf)
			}
			pf = 0
		}
	}
}

// growU16 returns (*buf)[:n], reallocating when too small.
func growU16(buf *[]uint16, n int) []uint16 {
	if cap(*buf) < n {
		*buf = make([]uint16, n)
	}
	return (*buf)[:n]
}

// genMatVec reports whether f32 matrix-vector products run the generated rows kernel, which sums each row
// exactly as the tiles do (a decoded row's result does not depend on the batch around it).
func genMatVec() bool { return hasTile512 && useAVX512.Load() }

// pfTriples is how many row triples ahead the rows kernels prefetch.
const pfTriples = 2

// hiLoX converts x for matVecBF16HL into *buf, or returns nil when bf16 products keep the widening kernels.
func hiLoX(buf *[]uint16, x []float32) []uint16 {
	if !hasBF16 || !useAVX512.Load() || len(x) == 0 {
		return nil
	}
	xb := growU16(buf, bf16Blocks(len(x)))
	cvtBF16HiLo(&x[0], len(x), &xb[0])
	return xb
}

// matVecBF16HL computes rows [r0, r1) of y = W·x for bf16 W with x given by hiLoX: row triples through the
// rows kernel, the one or two rows left through the 1×1 or 1×2 tile (the same sums).
func matVecBF16HL(y []float32, w []uint16, xb []uint16, r0, r1, cols int) {
	n3 := (r1 - r0) / 3
	if n3 > 0 {
		dpBF16Rows(&xb[0], &w[r0*cols], cols, cols, &y[r0], n3, pfTriples*3*cols*2)
	}
	if r := r0 + 3*n3; r < r1 {
		dpBF16Tiles[r1-r-1][0](&xb[0], 0, &w[r*cols], cols, cols, &y[r], 0, 0, 0)
	}
}

// matVecF32Gen is matVecF32 through the generated rows kernel (as matVecBF16HL).
func matVecF32Gen(y, w, x []float32, r0, r1, cols int) {
	n3 := (r1 - r0) / 3
	if n3 > 0 {
		fmaF32Rows(&x[0], &w[r0*cols], cols, cols, &y[r0], n3, pfTriples*3*cols*4)
	}
	if r := r0 + 3*n3; r < r1 {
		fmaF32Tiles[r1-r-1][0](&x[0], 0, &w[r*cols], cols, cols, &y[r], 0, 0, 0)
	}
}
