//go:build amd64 && !purego

package kernels

import "golang.org/x/sys/cpu"

// hasTile512 is AVX-512 with the VL masked stores the generated tiles end with.
var hasTile512 = hasAVX512 && cpu.X86.HasAVX512VL

// Tile shapes of the generated families (kernels_gen_amd64.s): up to dpRows rows of X by dpCols rows of W.
const (
	dpRows = 8
	dpCols = 3
	// dpXBytes bounds the bytes of X one block of the parallel split reads (its rows × K), so that X stays in
	// L2 while every dpCols rows of W meet all of its rows
	dpXBytes = 512 << 10
)

type tileF32Func func(x *float32, ldx int, w *float32, ldw int, k int, c *float32, ldc int, acc int, pf int)

var fmaF32Tiles = [dpCols][dpRows]tileF32Func{
	{fmaF32R1C1, fmaF32R2C1, fmaF32R3C1, fmaF32R4C1, fmaF32R5C1, fmaF32R6C1, fmaF32R7C1, fmaF32R8C1},
	{fmaF32R1C2, fmaF32R2C2, fmaF32R3C2, fmaF32R4C2, fmaF32R5C2, fmaF32R6C2, fmaF32R7C2, fmaF32R8C2},
	{fmaF32R1C3, fmaF32R2C3, fmaF32R3C3, fmaF32R4C3, fmaF32R5C3, fmaF32R6C3, fmaF32R7C3, fmaF32R8C3},
}

type tile16Func func(x *float32, ldx int, w *uint16, ldw int, k int, c *float32, ldc int, acc int, pf int)

// fmaBF16Tiles widen bf16 weights in registers against float32 X.
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

// AVX-512 tile families a matMulTask can run (matMulTask.gen; 0: the AVX2 tiles, mmT*)
const (
	genF32 = 1 + iota
	genBF16
	genF16
)

// prepare chooses the generated tiles for t where they run, and the blocks of their parallel split.
func (t *matMulTask) prepare() {
	if !hasTile512 || !useAVX512.Load() || t.k == 0 {
		return
	}
	switch {
	case t.kind == wF32:
		t.gen = genF32
	case t.kind == wBF16:
		t.gen = genBF16
	case t.kind == wF16 && hasF16C:
		t.gen = genF16
	default:
		return
	}
	t.mb = min(max(dpXBytes/(4*t.k)/dpRows, 1)*dpRows, mmRows) // rows of X (float32) that fit dpXBytes
	t.nb = dpBlockCols
	if t.m <= walkRows {
		t.walk = true
		t.mb = t.m
		t.nb = matVecBlock
	}
}

// walkRows is the largest batch the generated tiles walk one W row at a time (matMulTask.walk). BenchmarkDecodeStep
// bf16, two threads, load 2.7-3.0, walk against the 3-column tiles: 2 rows 5.9-6.5 ms against 7.9-8.3, 4 rows 7.2
// against 8.1-8.7, 8 rows 10.4-10.7 against 9.1-10.0 (the 8×3 tile is compute bound there: 16 rows take twice 8
// rows' time; the walk's 8 loads of X per weight vector cost more than its single stream saves). End to end
// (bench --shape smollm2-135m --dtype bf16, load 2.0-2.9) batch 2 went from 8.4-8.8 to 7.3-7.7 ms/step, three
// rounds alternated; batch 4 did not move beyond the noise (7.3-9.7 against 8.3-9.5), so it keeps the tiles.
const walkRows = 2

// dpBlockCols is the column block of the generated tiles' parallel split (a multiple of dpCols).
const dpBlockCols = 16 * dpCols

// matMulTileGen computes Y rows [i0, i1) × columns [j0, j1) with the generated tiles: for every group of up to
// dpRows rows of X, every dpCols rows of W, each over the whole K (so that every element of Y is summed in the
// same order whatever m is: batching never changes a result). Row groups outside: one group's X stays in L1
// while the block's W (dpBlockCols rows, 55-150 KB of bf16 at smollm2's K) comes from L2 for the later groups,
// instead of every group's X passing through L1 for each W tile (BenchmarkDecodeStep bf16 m16, best of 4
// alternated at load 1.4-1.6: 14.4 ms against 16.4; bench --batch 16, 2 rounds at load 1.8-1.9: 19.1, 18.6
// ms/step against 19.4, 22.5, pp512 1038-1066 tok/s against 871-984). The first row group prefetches W
// pfRows bytes ahead as one linear run, as the rows kernel does, so that a decode batch streams each weight
// from memory once, in order. Against the tile's own dpCols row streams one tile ahead (the previous prefetch;
// 2-16 tiles ahead did not differ from 1), BenchmarkDecodeStep bf16 m8, best of 5 alternated runs at load
// 3.5-4.7: 9.6 against 10.6 ms; bench --shape smollm2-135m --dtype bf16 --batch 8, 4 alternated rounds at load
// 1.6-3.0: 11.3-12.5 against 11.0-13.3 ms/step. Prefetching to L2 (PREFETCHT1) measured the same (9.4 ms, 10.8-13.0).
//
// The tile itself is not the limit: over L1-resident operands the 8×3 bf16 tile runs at 0.89-0.96 of the
// core's FMA peak (BenchmarkGenTileFMA hot), over a whole matrix in L2 at 0.82-0.92, but over weights streamed
// from DRAM at 0.55-0.72 (one thread or two, 8 or 16 rows): the loss is in hiding the memory stream, not in
// the loads per FMA.
func matMulTileGen(t *matMulTask, i0, i1, j0, j1 int) {
	k := t.k
	acc := 0
	if t.accum {
		acc = 1
	}
	if t.walk {
		matMulWalkGen(t, i0, i1, j0, j1)
		return
	}
	for i := i0; i < i1; i += dpRows {
		nr := min(dpRows, i1-i)
		pf := 0
		if i == i0 {
			pf = pfRows
		}
		for j := j0; j < j1; j += dpCols {
			nc := min(dpCols, j1-j)
			c := &t.y[i*t.ldy+j]
			switch t.gen {
			case genF32:
				fmaF32Tiles[nc-1][nr-1](&t.x[i*t.ldx], t.ldx, &t.wf[j*t.ldw], t.ldw, k, c, t.ldy, acc, pf)
			case genBF16:
				fmaBF16Tiles[nc-1][nr-1](&t.x[i*t.ldx], t.ldx, &t.wh[j*t.ldw], t.ldw, k, c, t.ldy, acc, pf)
			case genF16:
				fmaF16Tiles[nc-1][nr-1](&t.x[i*t.ldx], t.ldx, &t.wh[j*t.ldw], t.ldw, k, c, t.ldy, acc, pf)
			}
		}
	}
}

// genMatVec reports whether f32 and bf16 matrix-vector products run the generated rows kernels, which sum
// each row exactly as the tiles do (a decoded row's result does not depend on the batch around it).
func genMatVec() bool { return hasTile512 && useAVX512.Load() }

// pfRows is how far ahead (bytes) the rows kernels prefetch: 16 KiB against 8, 32 and 64 KiB on the smollm2 and
// qwen2.5-0.5b decode matrices, two threads (bf16: 44–46 GB/s at 8–64 KiB, within noise of each other; f32:
// 48.8 GB/s at 16 against 43.8 and 42.5).
const pfRows = 16 << 10

// matVecBF16Gen computes rows [r0, r1) of y = W·x for bf16 W with the rows kernel (the 1×1 tile's sums).
func matVecBF16Gen(y []float32, w []uint16, x []float32, r0, r1, cols int) {
	if r1 > r0 {
		fmaBF16Rows(&x[0], &w[r0*cols], cols, cols, &y[r0], r1-r0, pfRows)
	}
}

// matVecF32Gen is matVecBF16Gen for f32 W.
func matVecF32Gen(y, w, x []float32, r0, r1, cols int) {
	if r1 > r0 {
		fmaF32Rows(&x[0], &w[r0*cols], cols, cols, &y[r0], r1-r0, pfRows)
	}
}

// matMulWalkGen is matMulTileGen for t.walk: W rows [j0, j1) one at a time, each against X rows [i0, i1) in
// groups of up to dpRows (the 1-column tiles, which sum every element as the wider tiles and the rows kernel
// do), prefetching pfRows bytes ahead as the rows kernel does: W streams as in a decode step.
func matMulWalkGen(t *matMulTask, i0, i1, j0, j1 int) {
	k := t.k
	acc := 0
	if t.accum {
		acc = 1
	}
	for j := j0; j < j1; j++ {
		for i := i0; i < i1; i += dpRows {
			nr := min(dpRows, i1-i)
			c := &t.y[i*t.ldy+j]
			switch t.gen {
			case genF32:
				fmaF32Tiles[0][nr-1](&t.x[i*t.ldx], t.ldx, &t.wf[j*t.ldw], t.ldw, k, c, t.ldy, acc, pfRows)
			case genBF16:
				fmaBF16Tiles[0][nr-1](&t.x[i*t.ldx], t.ldx, &t.wh[j*t.ldw], t.ldw, k, c, t.ldy, acc, pfRows)
			case genF16:
				fmaF16Tiles[0][nr-1](&t.x[i*t.ldx], t.ldx, &t.wh[j*t.ldw], t.ldw, k, c, t.ldy, acc, pfRows)
			}
		}
	}
}
