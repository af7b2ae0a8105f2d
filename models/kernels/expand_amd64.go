//go:build amd64 && !purego

package kernels

// addKernels are the register kernels of Y[m, n] += T[m, k]·B[k, n] for one element type of B: two rows of Y
// or one, AVX-512 (Z) or AVX2, and tail, the loop that does the columns [j0, n) the kernels leave.
type addKernels[E float32 | uint16] struct {
	x2Z, x2 func(y0, y1, t0, t1 *float32, b *E, ldb, k, n int)
	x1Z, x1 func(y0, t0 *float32, b *E, ldb, k, n int)
	tail    func(y, t []float32, ldt int, b []E, m, n, k, j0 int)
}

// matMulAddBF16 runs the first n &^ 15 columns with the AVX-512 kernels when they are on (AVX512()), the
// columns up to n &^ 7 with the AVX2 ones, and the rest with the reference loop. T's rows are ldt apart.
func matMulAddBF16(y, t []float32, ldt int, b []uint16, m, n, k int) {
	matMulAdd(y, t, ldt, b, m, n, k, addKernels[uint16]{mmAddBF16x2Z, mmAddBF16x2, mmAddBF16x1Z, mmAddBF16x1, refMatMulAddBF16})
}

// matMulAddF32 is matMulAddBF16 for f32 B (Y[m, n] += T[m, k]·B[k, n], T's rows ldt apart) with the mmAddF32
// kernels, the last n % 8 columns with axpy: every element is the fused multiply-add chain over l that an axpy
// per row of B computes (axpyRows), bit for bit.
func matMulAddF32(y, t []float32, ldt int, b []float32, m, n, k int) {
	matMulAdd(y, t, ldt, b, m, n, k, addKernels[float32]{mmAddF32x2Z, mmAddF32x2, mmAddF32x1Z, mmAddF32x1, axpyRows})
}

// matMulAdd is matMulAddBF16 and matMulAddF32 over the kernels ks: rows in pairs, then a last single row; the
// first n &^ 15 columns with the AVX-512 kernels when they are on, the columns up to n &^ 7 with the AVX2 ones,
// the rest (or everything, without AVX2 or with nothing to sum) with ks.tail.
func matMulAdd[E float32 | uint16](y, t []float32, ldt int, b []E, m, n, k int, ks addKernels[E]) {
	n8 := n &^ 7
	if !useAVX2 || n8 == 0 || k == 0 {
		ks.tail(y, t, ldt, b, m, n, k, 0)
		return
	}
	n16 := 0
	if useAVX512.Load() {
		n16 = n &^ 15
	}
	i := 0
	for ; i+2 <= m; i += 2 {
		y0, y1, t0, t1 := y[i*n:], y[(i+1)*n:], &t[i*ldt], &t[(i+1)*ldt]
		if n16 > 0 {
			ks.x2Z(&y0[0], &y1[0], t0, t1, &b[0], n, k, n16)
		}
		if n16 < n8 {
			ks.x2(&y0[n16], &y1[n16], t0, t1, &b[n16], n, k, n8-n16)
		}
	}
	if i < m {
		y0, t0 := y[i*n:], &t[i*ldt]
		if n16 > 0 {
			ks.x1Z(&y0[0], t0, &b[0], n, k, n16)
		}
		if n16 < n8 {
			ks.x1(&y0[n16], t0, &b[n16], n, k, n8-n16)
		}
	}
	if n8 < n { // the last n % 8 columns
		ks.tail(y, t, ldt, b, m, n, k, n8)
	}
}
