//go:build amd64 && !purego

package kernels

// matMulAddBF16 runs the first n &^ 15 columns with the AVX-512 kernels when they are on (AVX512()), the
// columns up to n &^ 7 with the AVX2 ones, and the rest with the reference loop. T's rows are ldt apart.
func matMulAddBF16(y, t []float32, ldt int, b []uint16, m, n, k int) {
	n8 := n &^ 7
	if !useAVX2 || n8 == 0 {
		refMatMulAddBF16(y, t, ldt, b, m, n, k, 0)
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
			mmAddBF16x2Z(&y0[0], &y1[0], t0, t1, &b[0], n, k, n16)
		}
		if n16 < n8 {
			mmAddBF16x2(&y0[n16], &y1[n16], t0, t1, &b[n16], n, k, n8-n16)
		}
	}
	if i < m {
		y0, t0 := y[i*n:], &t[i*ldt]
		if n16 > 0 {
			mmAddBF16x1Z(&y0[0], t0, &b[0], n, k, n16)
		}
		if n16 < n8 {
			mmAddBF16x1(&y0[n16], t0, &b[n16], n, k, n8-n16)
		}
	}
	if n8 < n { // the last n % 8 columns
		refMatMulAddBF16(y, t, ldt, b, m, n, k, n8)
	}
}

// matMulAddF32 is matMulAddBF16 for f32 B (Y[m, n] += T[m, k]·B[k, n], T's rows ldt apart) with the mmAddF32
// kernels, the last n % 8 columns with axpy: every element is the fused multiply-add chain over l that an axpy
// per row of B computes (axpyRows), bit for bit.
func matMulAddF32(y, t []float32, ldt int, b []float32, m, n, k int) {
	n8 := n &^ 7
	if !useAVX2 || n8 == 0 || k == 0 {
		axpyRows(y, t, ldt, b, m, n, k, 0)
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
			mmAddF32x2Z(&y0[0], &y1[0], t0, t1, &b[0], n, k, n16)
		}
		if n16 < n8 {
			mmAddF32x2(&y0[n16], &y1[n16], t0, t1, &b[n16], n, k, n8-n16)
		}
	}
	if i < m {
		y0, t0 := y[i*n:], &t[i*ldt]
		if n16 > 0 {
			mmAddF32x1Z(&y0[0], t0, &b[0], n, k, n16)
		}
		if n16 < n8 {
			mmAddF32x1(&y0[n16], t0, &b[n16], n, k, n8-n16)
		}
	}
	if n8 < n {
		axpyRows(y, t, ldt, b, m, n, k, n8)
	}
}
