//go:build amd64 && !purego

package kernels

import (
	"math"
	"sync/atomic"

	"golang.org/x/sys/cpu"
)

// useAVX2 is fixed at start-up from the CPU's feature bits (read-only after).
var useAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA && cpu.X86.HasOSXSAVE

// hasF16C gates the f16 kernels (VCVTPH2PS).
var hasF16C = useAVX2 && cpu.X86.HasF16C

// hasAVX512 is the CPU's AVX-512 (F and BW), fixed at start-up.
var hasAVX512 = useAVX2 && cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW

// useAVX512 selects the AVX-512 kernels: the generated tiles and rows kernels of the matrix products
// (f32, bf16 with AVX512_BF16 or widened, f16), the 6×32 Gemm NN tile, and models/quant's VNNI kernels,
// which read it through AVX512(). On where the CPU has it unless SetAVX512(false).
var useAVX512 = func() (b atomic.Bool) { b.Store(hasAVX512); return }()

// SetAVX512 chooses the kernels: on (the default) uses the AVX-512 kernels where the CPU has them, off keeps
// the AVX2 ones, to measure on an AVX-512 machine what an AVX2-only one runs. It never turns AVX-512 on for a
// CPU without it. The CLI sets it once (--no-avx512, LORAKIT_NO_AVX512); a product already running keeps
// the kernels it chose.
func SetAVX512(on bool) { useAVX512.Store(on && hasAVX512) }

// AVX512 reports whether the AVX-512 kernels are in use.
func AVX512() bool { return useAVX512.Load() }

func dot(a, b []float32) float32 {
	if !useAVX2 || len(a) == 0 {
		return refDot(a, b)
	}
	return dotAVX2(&a[0], &b[0], len(a))
}

func axpy(alpha float32, x, y []float32) {
	if !useAVX2 || len(x) == 0 {
		refAxpy(alpha, x, y)
		return
	}
	axpyAVX2(alpha, &x[0], &y[0], len(x))
}

func scale(alpha float32, x []float32) {
	if !useAVX2 || len(x) == 0 {
		refScale(alpha, x)
		return
	}
	scaleAVX2(alpha, &x[0], len(x))
}

// matVecF32 computes rows [r0, r1) of y = W·x. When cols % 32 == 0 the rows
// stream one at a time (matVecRowsF32: 1.4× the GB/s of the four-row kernel
// on a DRAM-bound lm_head, one thread); otherwise four rows per kernel call,
// the last (r1-r0)%4 rows with stride 0 (one row four times).
func matVecF32(y, w, x []float32, r0, r1, cols int) {
	if cols > 0 && genMatVec() {
		matVecF32Gen(y, w, x, r0, r1, cols)
		return
	}
	if !useAVX2 || cols < 8 {
		refMatVecF32(y, w, x, r0, r1, cols)
		return
	}
	if cols%32 == 0 {
		matVecRowsF32(&w[r0*cols], &x[0], cols, r1-r0, &y[r0])
		return
	}
	fourRows(k4F32, y, w, nil, x, x, r0, r1, cols, cols&^7)
}

func matVecBF16(y []float32, w []uint16, x []float32, r0, r1, cols int) {
	if cols > 0 && genMatVec() {
		matVecBF16Gen(y, w, x, r0, r1, cols)
		return
	}
	if !useAVX2 || cols < 8 {
		refMatVecBF16(y, w, x, r0, r1, cols)
		return
	}
	matVec16(wBF16, y, w, x, r0, r1, cols)
}

func matVecF16(y []float32, w []uint16, x []float32, r0, r1, cols int) {
	if !hasF16C || cols < 8 {
		refMatVecF16(y, w, x, r0, r1, cols)
		return
	}
	matVec16(wF16, y, w, x, r0, r1, cols)
}

// matVec16 is matVecF32 for 16-bit weights (kind wBF16 or wF16).
func matVec16(kind int, y []float32, w []uint16, x []float32, r0, r1, cols int) {
	if kind == wF16 && cols%32 == 0 {
		matVecRowsF16(&w[r0*cols], &x[0], cols, r1-r0, &y[r0])
		return
	}
	k := k4BF16
	if kind == wF16 {
		k = k4F16
	}
	fourRows(k, y, nil, w, x, x, r0, r1, cols, cols&^7)
}

// rmsNorm: the sum of squares through the dot kernel (float32 lanes), then
// one scaling pass.
func rmsNorm(y, x, w []float32, eps float32) {
	if !useAVX2 {
		refRMSNorm(y, x, w, eps)
		return
	}
	ss := float64(dot(x, x))
	inv := float32(1 / math.Sqrt(ss/float64(len(x))+float64(eps)))
	y, w = y[:len(x)], w[:len(x)]
	scaleMulAVX2(inv, &x[0], &w[0], &y[0], len(x)) // y[i] = x[i]·inv·w[i], as refRMSNorm rounds it
}

// argmax takes two passes over x (AVX2, 32 values a step): the largest non-NaN value, then the first index
// holding it; the values after the last whole step are done in Go. One pass that keeps each lane's index too
// would need a compare and two blends (values, indices) per step; the second pass stops at the first match.
func argmax(x []float32) int {
	n := len(x) &^ 31
	if !useAVX2 || n == 0 {
		return refArgmax(x)
	}
	m := maxAVX2(&x[0], n)
	for _, v := range x[n:] {
		if v > m { // false for NaN
			m = v
		}
	}
	if i := findAVX2(&x[0], n, m); i < n {
		return i
	}
	for i := n; i < len(x); i++ {
		if x[i] == m {
			return i
		}
	}
	return 0 // every value is NaN
}

func softmax(x []float32) {
	n8 := len(x) &^ 7
	if !useAVX2 || n8 == 0 {
		refSoftmax(x)
		return
	}
	m := x[0]
	for _, v := range x[1:] {
		if v > m {
			m = v
		}
	}
	sum := float64(expSubSumAVX2(&x[0], n8, m))
	for i := n8; i < len(x); i++ {
		e := float32(math.Exp(float64(x[i] - m)))
		x[i] = e
		sum += float64(e)
	}
	scale(float32(1/sum), x)
}

func siluMul(y, gate, up []float32) {
	n8 := len(y) &^ 7
	if !useAVX2 || len(y) == 0 {
		refSiLUMul(y, gate, up)
		return
	}
	if n8 > 0 {
		siluMulAVX2(&y[0], &gate[0], &up[0], n8)
	}
	if n8 == len(y) {
		return
	}
	// the tail through the same polynomial, so that an element's result does not depend on where it falls in
	// the slice (a row of a batch gives the same values alone)
	var g, u, t [8]float32
	copy(g[:], gate[n8:])
	copy(u[:], up[n8:])
	siluMulAVX2(&t[0], &g[0], &u[0], 8)
	copy(y[n8:], t[:])
}

// AVX2 tiles (kernels_gen_amd64.s, mmT{rows}x{cols}{type}): up to avxRows rows of X by avxCols rows of W over K
// chunks that are multiples of 16. On the Zen 1 machine (one 8-lane FMA per cycle; BenchmarkAVX2Tile, K 576,
// L1-resident, one thread, load ~2 from other work) the 4×3 tile runs f32 and bf16 at 0.76-0.89 of the FMA
// peak and f16 at 0.53-0.59 (VCVTPH2PS: hence the block conversion past avxF16Rows), where the earlier 3×4 tile
// (VPMOVZXWD + VPSLLD per 8 bf16 weights, 8 columns per step) ran f32 at 0.62-0.74, bf16 0.33-0.46, f16
// 0.42-0.49. Tried without a measurable gain: 32 columns per step (half the pointer updates), no prefetch in
// the L1-resident case, W-tile-outer order over the row groups of a decode batch, prefetching 3 or 8 tiles
// ahead instead of 1 (BenchmarkDecodeStep m2-m8, all within the run-to-run noise of ±15%).
const (
	avxRows = 4
	avxCols = 3
	// avxK bounds a K chunk (the chunks of a product split its K evenly): a tile's X rows and W rows stay in L1
	avxK = 768
	// avxF16Rows: f16 products of more rows than this convert W once per block (matMulTile)
	avxF16Rows = 8
)

var avxF32Tiles = [avxCols][avxRows]tileF32Func{
	{mmT1x1F32, mmT2x1F32, mmT3x1F32, mmT4x1F32},
	{mmT1x2F32, mmT2x2F32, mmT3x2F32, mmT4x2F32},
	{mmT1x3F32, mmT2x3F32, mmT3x3F32, mmT4x3F32},
}

// avxBF16Tiles read X in permuteBF16's order (matMulTask.xp).
var avxBF16Tiles = [avxCols][avxRows]tile16Func{
	{mmT1x1BF16, mmT2x1BF16, mmT3x1BF16, mmT4x1BF16},
	{mmT1x2BF16, mmT2x2BF16, mmT3x2BF16, mmT4x2BF16},
	{mmT1x3BF16, mmT2x3BF16, mmT3x3BF16, mmT4x3BF16},
}

var avxF16Tiles = [avxCols][avxRows]tile16Func{
	{mmT1x1F16, mmT2x1F16, mmT3x1F16, mmT4x1F16},
	{mmT1x2F16, mmT2x2F16, mmT3x2F16, mmT4x2F16},
	{mmT1x3F16, mmT2x3F16, mmT3x3F16, mmT4x3F16},
}

// avxTiles reports whether t runs the AVX2 tiles (else the edge dot products do all of it).
func (t *matMulTask) avxTiles() bool {
	return t.gen == 0 && useAVX2 && (t.kind != wF16 || hasF16C) && t.k >= 16
}

// permuteX sets t.xp to X's rows in permuteBF16's order (the first k&^15 columns, rows k&^15 floats apart) in
// *buf, when t runs the AVX2 bf16 tiles; it reports whether it did.
func (t *matMulTask) permuteX(buf *[]float32) bool {
	if t.kind != wBF16 || !t.avxTiles() {
		return false
	}
	k16 := t.k &^ 15
	xp := growF32(buf, t.m*k16)
	for i := 0; i < t.m; i++ {
		x, d := t.x[i*t.ldx:i*t.ldx+k16], xp[i*k16:(i+1)*k16]
		for b := 0; b < k16; b += 16 {
			for j := 0; j < 8; j++ {
				d[b+j] = x[b+2*j]
				d[b+8+j] = x[b+2*j+1]
			}
		}
	}
	t.xp = xp
	return true
}

// matMulTile computes Y rows [i0, i1) × columns [j0, j1) of X·Wᵀ with the AVX2 tiles: groups of up to avxRows
// rows of X outside, avxCols rows of W inside, over K chunks (the first row group prefetches the next tile's
// W rows: the first pass over a block streams W from memory, the later ones find it in L2), then the K tail
// (k % 16) in Go. Every element is summed in the same order whatever the number of rows. Without the tiles
// (no AVX2, K < 16) the edge dot products compute everything.
func matMulTile(t *matMulTask, i0, i1, j0, j1 int) {
	if t.gen != 0 {
		matMulTileGen(t, i0, i1, j0, j1)
		return
	}
	if !t.avxTiles() {
		matMulEdges(t, i0, i1, j0, j1, i0, j0)
		return
	}
	k := t.k
	k16 := k &^ 15
	x, ldx := t.x, t.ldx
	esz := 4
	if t.kind != wF32 {
		esz = 2
	}
	if t.kind == wBF16 {
		x, ldx = t.xp, k16
	}
	ldy, ldw := t.ldy, t.ldw
	chunks := (k16 + avxK - 1) / avxK
	step := (k16/chunks + 15) &^ 15
	// f16 over more than avxF16Rows rows: each K chunk of the block's W rows converted once to float32 (wf,
	// rows step apart) for the f32 tiles, which sum as the f16 tiles do (VCVTPH2PS is exact), instead of once
	// per row group in the f16 tiles
	var wf []float32
	kind := t.kind
	if kind == wF16 && i1-i0 > avxF16Rows {
		buf := gemmScratch.Get().(*[]float32)
		defer gemmScratch.Put(buf)
		wf, kind = growF32(buf, (j1-j0)*step), wF32
	}
	for kb := 0; kb < k16; kb += step {
		kc := min(step, k16-kb)
		acc := 0
		if kb > 0 || t.accum {
			acc = 1
		}
		if wf != nil {
			for j := j0; j < j1; j++ {
				cvtF16F32(&wf[(j-j0)*step], &t.wh[j*ldw+kb], kc)
			}
		}
		for i := i0; i < i1; i += avxRows {
			nr := min(avxRows, i1-i)
			pf := 0
			if i == i0 && wf == nil {
				pf = avxCols * ldw * esz
			}
			xi := &x[i*ldx+kb]
			for j := j0; j < j1; j += avxCols {
				nc := min(avxCols, j1-j)
				c := &t.y[i*ldy+j]
				switch kind {
				case wF32:
					if wf != nil {
						avxF32Tiles[nc-1][nr-1](xi, ldx, &wf[(j-j0)*step], step, kc, c, ldy, acc, pf)
					} else {
						avxF32Tiles[nc-1][nr-1](xi, ldx, &t.wf[j*ldw+kb], ldw, kc, c, ldy, acc, pf)
					}
				case wBF16:
					avxBF16Tiles[nc-1][nr-1](xi, ldx, &t.wh[j*ldw+kb], ldw, kc, c, ldy, acc, pf)
				default:
					avxF16Tiles[nc-1][nr-1](xi, ldx, &t.wh[j*ldw+kb], ldw, kc, c, ldy, acc, pf)
				}
			}
		}
	}
	if k16 < k { // K tail
		for i := i0; i < i1; i++ {
			for j := j0; j < j1; j++ {
				s := t.y[i*ldy+j]
				for l := k16; l < k; l++ {
					s += t.x[i*t.ldx+l] * t.weight(j*ldw+l)
				}
				t.y[i*ldy+j] = s
			}
		}
	}
}

// matMulEdges computes the rows [iq, i1) over [j0, j1) and the columns
// [jq, j1) of rows [i0, iq) with full-length dot products.
func matMulEdges(t *matMulTask, i0, i1, j0, j1, iq, jq int) {
	for i := i0; i < i1; i++ {
		js := jq
		if i >= iq {
			js = j0
		}
		for j := js; j < j1; {
			nr := 4
			if j1-j < 4 {
				nr = 1
			}
			var out [4]float32
			t.dots(i, j, nr, &out)
			for r := 0; r < nr; r++ {
				if t.accum {
					t.y[i*t.ldy+j+r] += out[r]
				} else {
					t.y[i*t.ldy+j+r] = out[r]
				}
			}
			j += nr
		}
	}
}

// dots sets out[r] = X[i]·W[j+r] for r < nr (nr is 4 or 1).
func (t *matMulTask) dots(i, j, nr int, out *[4]float32) {
	k := t.k
	k8 := k &^ 7
	stride := t.ldw
	if nr == 1 {
		stride = 0
	}
	x := t.x[i*t.ldx : i*t.ldx+k]
	if useAVX2 && k8 > 0 && (t.kind != wF16 || hasF16C) {
		switch t.kind {
		case wF32:
			matVec4F32(&t.wf[j*t.ldw], stride, &x[0], k8, &out[0])
		case wBF16:
			matVec4BF16(&t.wh[j*t.ldw], stride, &x[0], k8, &out[0])
		case wF16:
			matVec4F16(&t.wh[j*t.ldw], stride, &x[0], k8, &out[0])
		}
	} else {
		k8 = 0
		*out = [4]float32{}
	}
	for r := 0; r < nr; r++ {
		s := out[r]
		for l := k8; l < k; l++ {
			s += x[l] * t.weight((j+r)*t.ldw+l)
		}
		out[r] = s
	}
}

// bcastAvailable reports whether gemmBcastTile has a fast kernel.
func bcastAvailable() bool { return useAVX2 }

// gemmBcastTile computes C rows [i0, i1) × columns [j0, j1) for op(B) = B:
// 6×16 tiles (A broadcast, B rows loaded in place: no transposes) over K
// chunks of bcK, then the edge rows and columns with axpy.
func gemmBcastTile(g *gemmArgs, accum bool, i0, i1, j0, j1 int) {
	k := g.k
	rs, ls := 4*g.lda, 4
	if g.transA {
		rs, ls = 4, 4*g.lda
	}
	iq := i0 + (i1-i0)/6*6
	jq := j0 + (j1-j0)/16*16
	// packed K chunk of B for the tile's full 16-column strips, rows of
	// bpLd floats (80: five cache lines, so that the kc rows of one strip
	// spread over every L1 set)
	const bpLd = bcCols + 16
	var bp [bcK * bpLd]float32
	w := jq - j0
	wide := useAVX512.Load()
	for kb := 0; kb < k && iq > i0; kb += bcK {
		kc := min(bcK, k-kb)
		acc := 0
		if kb > 0 || accum {
			acc = 1
		}
		for l := 0; l < kc; l++ {
			copy(bp[l*bpLd:l*bpLd+w], g.b[(kb+l)*g.ldb+j0:(kb+l)*g.ldb+jq])
		}
		for i := i0; i < iq; i += 6 {
			// A in place: TN walks it with stride lda per l (no packing:
			// 1.3-2.5× the packed version's GFLOP/s)
			var ap *float32
			if g.transA {
				ap = &g.a[kb*g.lda+i]
			} else {
				ap = &g.a[i*g.lda+kb]
			}
			for j := j0; j < jq; {
				if wide && j+32 <= jq {
					gemmBcast6x32Z(ap, rs, ls, &bp[j-j0], bpLd, kc, &g.c[i*g.ldc+j], g.ldc, acc, g.alpha)
					j += 32
					continue
				}
				gemmBcast6x16(ap, rs, ls, &bp[j-j0], bpLd, kc, &g.c[i*g.ldc+j], g.ldc, acc, g.alpha)
				j += 16
			}
		}
	}
	for i := i0; i < i1; i++ {
		if i < iq {
			gemmEdge(g, accum, i, jq, j1)
		} else {
			gemmEdge(g, accum, i, j0, j1)
		}
	}
}

// permuteBF16 writes x into *buf in the order of matVec4BF16PF: for every
// block of 16 columns, the 8 even columns then the 8 odd ones (a 32-byte
// load of 16 bf16 weights widens to the even lanes with one shift and to
// the odd lanes with one mask, no shuffles). Only the first cols&^15
// columns are reordered. It returns nil when the kernel is not used (without AVX2, or with the generated
// AVX-512 rows kernel, which reads x as it is).
func permuteBF16(buf *[]float32, x []float32) []float32 {
	n := len(x) &^ 15
	if !useAVX2 || n == 0 || genMatVec() {
		return nil
	}
	xp := growF32(buf, n)
	for b := 0; b < n; b += 16 {
		for j := 0; j < 8; j++ {
			xp[b+j] = x[b+2*j]
			xp[b+8+j] = x[b+2*j+1]
		}
	}
	return xp
}

// matVecBF16P is matVecBF16 with x also given reordered by permuteBF16. The
// kernel prefetches the next four rows (1.8× the GB/s of the earlier
// 16-column kernel without prefetch on smollm2's lm_head, one thread).
func matVecBF16P(y []float32, w []uint16, xp, x []float32, r0, r1, cols int) {
	c16 := len(xp)
	if cols%32 == 0 && c16 == cols {
		matVecRowsBF16P(&w[r0*cols], &xp[0], cols, r1-r0, &y[r0])
		return
	}
	fourRows(k4BF16P, y, nil, w, x, xp, r0, r1, cols, c16)
}

// The AVX2 four-row matrix-vector kernels fourRows runs.
const (
	k4F32   = iota // matVec4F32PF
	k4BF16         // matVec4BF16
	k4BF16P        // matVec4BF16PF, x in permuteBF16's order
	k4F16          // matVec4F16PF
)

// fourRows computes rows [r0, r1) of y = W·x with the four-row kernel k (f32 W in wf, 16-bit W in wh; xk is x
// as the kernel reads it): four rows per call, the last (r1-r0)%4 rows one at a time with stride 0 (one row
// four times); the kernel sums columns [0, c), Go the rest. The kernel is chosen by a switch, not a func value,
// so that out stays on the stack.
func fourRows(k int, y, wf []float32, wh []uint16, x, xk []float32, r0, r1, cols, c int) {
	var out [4]float32
	for r := r0; r < r1; {
		nr, stride := 4, cols
		if r1-r < 4 {
			nr, stride = 1, 0
		}
		lo, hi := r*cols, (r+nr)*cols // the kernel reads rows [r, r+nr)
		switch k {
		case k4F32:
			matVec4F32PF(&wf[lo:hi][0], stride, &xk[0], c, &out[0])
		case k4BF16:
			matVec4BF16(&wh[lo:hi][0], stride, &xk[0], c, &out[0])
		case k4BF16P:
			matVec4BF16PF(&wh[lo:hi][0], stride, &xk[0], c, &out[0])
		default:
			matVec4F16PF(&wh[lo:hi][0], stride, &xk[0], c, &out[0])
		}
		for i := range nr {
			s, row := out[i], lo+i*cols
			for j := c; j < cols; j++ {
				switch k {
				case k4F32:
					s += wf[row+j] * x[j]
				case k4F16:
					s += f16ToF32(wh[row+j]) * x[j]
				default:
					s += bf16ToF32(wh[row+j]) * x[j]
				}
			}
			y[r+i] = s
		}
		r += nr
	}
}
