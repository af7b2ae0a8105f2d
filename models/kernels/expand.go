package kernels

// MatMulAddBF16 computes Y[m, n] += T[m, k]·B[k, n] for B of bfloat16 bit patterns stored row-major [k, n]:
//
//	Y[i*n+j] += Σ_l T[i*k+l]·bf16(B[l*n+j])
//
// It is the expand of a low-rank product (k is the rank, B holds Bᵀ of a LoRA B [n, k]): each row of B is
// streamed once per pair of rows of T with n-wide vector FMAs, where a [n, k]-by-k dot product would spend
// most of its time reducing 16-term sums. Sums over l run in order, in f32.
func MatMulAddBF16(y, t []float32, b []uint16, m, n, k int) {
	if m < 0 || n < 0 || k < 0 || len(y) < m*n || len(t) < m*k || len(b) < k*n {
		panic("kernels: MatMulAddBF16: slice lengths do not match m, n, k")
	}
	if m == 0 || n == 0 || k == 0 {
		return
	}
	matMulAddBF16(y, t, k, b, m, n, k)
}

// refMatMulAddBF16 is MatMulAddBF16's reference loop, for the columns [j0, n) of every row, with T's rows
// ldt apart.
func refMatMulAddBF16(y, t []float32, ldt int, b []uint16, m, n, k, j0 int) {
	for i := range m {
		for j := j0; j < n; j++ {
			s := y[i*n+j]
			for l := range k {
				s += t[i*ldt+l] * bf16ToF32(b[l*n+j])
			}
			y[i*n+j] = s
		}
	}
}

// axpyRows computes Y[m, n] += T[m, k]·B[k, n] for f32 B [k, n] and T's rows ldt apart, one axpy per row of T
// and row of B, l in order: the sum Gemm's edge rows run, which matMulAddF32's kernels run in registers.
func axpyRows(y, t []float32, ldt int, b []float32, m, n, k, j0 int) {
	for i := range m {
		yi := y[i*n+j0 : (i+1)*n]
		for l := range k {
			axpy(t[i*ldt+l], b[l*n+j0:(l+1)*n], yi)
		}
	}
}
