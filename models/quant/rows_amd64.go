//go:build amd64 && !purego

package quant

import (
	"golang.org/x/sys/cpu"

	"github.com/lorakit/lorakit/models/kernels"
)

// useAVX2 selects the assembly row kernel (AVX2 + FMA). It is set once at initialisation.
var useAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// hasVNNI reports the AVX-512 subsets the VNNI kernels (generated into quant_gen_amd64.s) use.
var hasVNNI = useAVX2 && cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512DQ && cpu.X86.HasAVX512VL &&
	cpu.X86.HasAVX512VNNI

// vnniRows is the most x rows a VNNI kernel call takes, or 0 when they are not in use: a CPU without them, or
// AVX-512 turned off through kernels.SetAVX512 (the CLI's --no-avx512), the one switch for every kernel family.
func vnniRows() int {
	if hasVNNI && kernels.AVX512() {
		return vnniK
	}
	return 0
}

// rows8 computes y[r] = scales[r]·Σ_c int8(packed[r·cols+c])·x[c] for len(y) rows.
func rows8(y []float32, packed []byte, scales, x []float32, cols int) {
	if len(y) == 0 {
		return
	}
	if !useAVX2 || cols%32 != 0 {
		rows8Go(y, packed, scales, x, cols)
		return
	}
	if len(packed) < len(y)*cols || len(scales) < len(y) || len(x) < cols {
		panic("quant: rows8: slice lengths do not match")
	}
	int8RowsAVX2(&y[0], &packed[0], &scales[0], &x[0], len(y), cols)
}

// dequantBlocks writes the len(scales) whole blocks starting at packed into dst (natural order).
func dequantBlocks(dst []float32, packed []byte, scales []float32, code *[16]float32, bs int) {
	nb := len(scales)
	if nb == 0 {
		return
	}
	if !useAVX2 || bs%16 != 0 {
		dequantBlocksGo(dst, packed, scales, code, bs)
		return
	}
	if len(dst) < nb*bs || len(packed) < nb*bs/2 {
		panic("quant: dequantBlocks: slice lengths do not match")
	}
	dequant4AVX2(&dst[0], &packed[0], &scales[0], code, nb, bs)
}

// rows16 runs the integer kernel for n weight rows and the xq.k (1, 2 or 4) x rows of one chunk; the result
// of x row i and weight row r goes to y[i·ystride + r].
func rows16(y []float32, ystride int, packed []byte, scales []float32, xq *x16, l *lut16, n, nb int) {
	if n == 0 {
		return
	}
	bs := xq.bs
	if !useAVX2 {
		rows16Go(y, ystride, packed, scales, xq, l, n, nb)
		return
	}
	if len(y) < (xq.k-1)*ystride+n || len(packed) < n*nb*bs/2 || len(scales) < n*nb ||
		len(xq.q) < xq.k*nb*bs || len(xq.s) < xq.k*nb*8 || (bs%group != 0 && bs != group/2) || nb*bs%group != 0 {
		panic("quant: rows16: slice lengths do not match")
	}
	if xq.vnni {
		if xq.k < 1 || xq.k > vnniK {
			panic("quant: rows16: a VNNI chunk holds 1 to vnniK rows")
		}
		ng := nb * bs / group
		if bs < group {
			nf4VNNIPair[xq.k-1](&y[0], ystride, &packed[0], &scales[0], &xq.q[0], &xq.s[0], &l.level[0], n, ng, 1)
		} else {
			nf4VNNI[xq.k-1](&y[0], ystride, &packed[0], &scales[0], &xq.q[0], &xq.s[0], &l.level[0], n, ng, bs/group)
		}
		return
	}
	switch xq.k {
	case 1:
		nf4Rows16AVX2(&y[0], &packed[0], &scales[0], &xq.q[0], &xq.s[0], &l.lo[0], n, nb, bs)
	case 2:
		nf4Rows16x2AVX2(&y[0], ystride, &packed[0], &scales[0], &xq.q[0], &xq.s[0], &l.lo[0], n, nb, bs)
	case 4:
		nf4Rows16x4AVX2(&y[0], ystride, &packed[0], &scales[0], &xq.q[0], &xq.s[0], &l.lo[0], n, nb, bs)
	default:
		panic("quant: rows16: chunks hold 1, 2 or 4 rows")
	}
}

// quantizeRow writes row i of x into the chunk xq; see quantizeRowGo.
func quantizeRow(xq *x16, i int, x []float32, lim, inv float32) {
	if !useAVX2 {
		quantizeRowGo(xq, i, x, lim, inv, &groupPerm)
		return
	}
	nb := len(x) / xq.bs
	if nb == 0 {
		return
	}
	if len(x)%xq.bs != 0 || (xq.bs%group != 0 && xq.bs != group/2) || len(x)%group != 0 || len(xq.q) < xq.k*len(x) ||
		len(xq.s) < xq.k*nb*8 || i >= xq.k {
		panic("quant: quantizeRow: slice lengths do not match")
	}
	quantX16AVX2(&xq.q[i*group], &xq.s[i*8], &x[0], nb, xq.bs, xq.k*group*2, lim, inv)
}

// rows8x16 runs the int8 integer kernel (see rows8x16Go) for n weight rows and one chunk of x rows: in
// natural order (k = 1 or 4), or for the VNNI kernels in groupPerm's (k up to vnniK).
func rows8x16(y []float32, ystride int, packed []byte, scales []float32, xq *x16, n, cols int) {
	if n == 0 {
		return
	}
	if !useAVX2 {
		rows8x16Go(y, ystride, packed, scales, xq, n, cols, xq.order())
		return
	}
	if len(y) < (xq.k-1)*ystride+n || len(packed) < n*cols || len(scales) < n || len(xq.q) < xq.k*cols ||
		len(xq.s) < xq.k*cols/group*8 || cols%group != 0 || xq.bs != group {
		panic("quant: rows8x16: slice lengths do not match")
	}
	if xq.vnni {
		if xq.k < 1 || xq.k > vnniK {
			panic("quant: rows8x16: a VNNI chunk holds 1 to vnniK rows")
		}
		int8VNNI[xq.k-1](&y[0], ystride, &packed[0], &scales[0], &xq.q[0], &xq.s[0], n, cols/group)
		return
	}
	switch xq.k {
	case 1:
		int8Rows16AVX2(&y[0], &packed[0], &scales[0], &xq.q[0], &xq.s[0], n, cols)
	case 4:
		int8Rows16x4AVX2(&y[0], ystride, &packed[0], &scales[0], &xq.q[0], &xq.s[0], n, cols)
	default:
		panic("quant: rows8x16: chunks hold 1 or 4 rows")
	}
}

// rowsQ8 runs the Q8_0 kernel (see rowsQ8Go) for n weight rows and one chunk of x rows (32-blocks, groupPerm
// order): the VNNI kernel when the chunk was made for it, the portable one otherwise.
func rowsQ8(y []float32, ystride int, packed []byte, scales []float32, xq *x16, n, cols int) {
	if n == 0 {
		return
	}
	if !xq.vnni || !useAVX2 {
		rowsQ8Go(y, ystride, packed, scales, xq, n, cols)
		return
	}
	if len(y) < (xq.k-1)*ystride+n || len(packed) < n*cols || len(scales) < n*cols/(group/2) || len(xq.q) < xq.k*cols ||
		len(xq.s) < xq.k*cols/group*8 || cols%group != 0 || xq.bs != group/2 || xq.k < 1 || xq.k > vnniK {
		panic("quant: rowsQ8: slice lengths do not match")
	}
	int8VNNIPair[xq.k-1](&y[0], ystride, &packed[0], &scales[0], &xq.q[0], &xq.s[0], n, cols/group)
}

// dotKernels are the dot kernels by layout (dotL4, dotQ4, dotB8) and x-row count.
var dotKernels = [3]*[dotK]func(y *float32, ystride int, codes *byte, scales *float32, xq *byte, xs *float32, xc *int32, lut *byte, ntiles, nblocks, bpw int){
	&dotL4Kernels, &dotQ4Kernels, &dotB8Kernels,
}

// dotKY is the most x rows an AVX2 dot kernel call takes (the generator makes one kernel per count); dot8Rows
// runs a chunk of up to dotK rows as groups of at most dotKY.
const dotKY = 4

// dotKernelsY are the AVX2 dot kernels by layout and x-row count.
var dotKernelsY = [3]*[dotKY]func(y *float32, ystride int, codes *byte, scales *float32, xq *byte, xs *float32, xc *int32, lut *byte, ntiles, nblocks, bpw, xk int){
	&dotL4KernelsY, &dotQ4KernelsY, &dotB8KernelsY,
}

// wholeRows is the most x rows for which dot8Job.Run gives a weight's tiles to the kernel in one call: the
// AVX2 kernels take up to dotKY rows a call, so every code is read once; 0 with the VNNI kernels, which keep
// their two-tile steps.
func wholeRows() int {
	if vnniRows() > 0 {
		return 0
	}
	return dotKY
}

// dot8On reports whether the dot kernels run the weights that tile: with AVX-512 VNNI (VPDPBUSD) or AVX2
// (VPMADDUBSW), which give the same integer sums.
func dot8On() bool { return useAVX2 }

// dot8Rows runs the dot kernel (see dot8Go) for tiles [t0, t0+n) and the x rows of xd: the AVX-512 VNNI assembly
// when it is in use, else the AVX2 assembly (groups of up to dotKY rows of the chunk), else the portable twin.
func dot8Rows(y []float32, ystride int, t *dot8, xd *xDot, t0, n, cols int) {
	if n == 0 {
		return
	}
	if !useAVX2 {
		dot8Go(y, ystride, t, xd, t0, n, cols)
		return
	}
	nb, bb := cols/xBlock, t.blockBytes()
	nwb := nb / t.bpw
	if xd.k < 1 || xd.k > dotK || len(y) < (xd.k-1)*ystride+n*tileRows || len(t.codes) < (t0+n)*nb*bb ||
		len(t.scales) < (t0+n)*nwb*tileRows || len(xd.q) < xd.k*cols || len(xd.s) < xd.k*nb || len(xd.c) < xd.k*nb ||
		cols%xBlock != 0 || nb%t.bpw != 0 {
		panic("quant: dot8Rows: slice lengths do not match")
	}
	codes, scales := &t.codes[t0*nb*bb], &t.scales[t0*nwb*tileRows]
	if vnniRows() > 0 {
		dotKernels[t.kind][xd.k-1](&y[0], ystride, codes, scales, &xd.q[0], &xd.s[0], &xd.c[0], &t.lut[0], n, nb, t.bpw)
		return
	}
	ng := (xd.k + dotKY - 1) / dotKY // groups of balanced sizes
	for g, i := 0, 0; g < ng; g++ {
		k := (xd.k - i) / (ng - g)
		dotKernelsY[t.kind][k-1](&y[i*ystride], ystride, codes, scales, &xd.q[i*xBlock], &xd.s[i], &xd.c[i], &t.lut[0], n, nb,
			t.bpw, xd.k)
		i += k
	}
}

// quantizeX8 writes row i of x into xd for zero point z (see quantizeX8Go).
func quantizeX8(xd *xDot, i int, x []float32, z int32) {
	if !useAVX2 {
		quantizeX8Go(xd, i, x, z)
		return
	}
	nb := len(x) / xBlock
	if nb == 0 {
		return
	}
	if len(x)%xBlock != 0 || i >= xd.k || len(xd.q) < xd.k*len(x) || len(xd.s) < xd.k*nb || len(xd.c) < xd.k*nb {
		panic("quant: quantizeX8: slice lengths do not match")
	}
	if vnniRows() > 0 {
		quantX8(&xd.q[i*xBlock], &xd.s[i], &xd.c[i], &x[0], nb, xd.k, int(z))
		return
	}
	quantX8y(&xd.q[i*xBlock], &xd.s[i], &xd.c[i], &x[0], nb, xd.k, int(z))
}
