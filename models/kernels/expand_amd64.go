//go:build amd64 && !purego

package kernels

// mmAddBF16x2 is MatMulAddBF16 on two rows y0, y1 (T rows t0, t1) and the first n columns, n % 8 == 0, k ≥ 1;
// ldb is B's row length in elements. mmAddBF16x1 is the same on one row.
//
//go:noescape
func mmAddBF16x2(y0, y1, t0, t1 *float32, b *uint16, ldb, k, n int)

//go:noescape
func mmAddBF16x1(y0, t0 *float32, b *uint16, ldb, k, n int)

func matMulAddBF16(y, t []float32, b []uint16, m, n, k int) {
	n8 := n &^ 7
	if !useAVX2 || n8 == 0 {
		refMatMulAddBF16(y, t, b, m, n, k, 0)
		return
	}
	i := 0
	for ; i+2 <= m; i += 2 {
		mmAddBF16x2(&y[i*n], &y[(i+1)*n], &t[i*k], &t[(i+1)*k], &b[0], n, k, n8)
	}
	if i < m {
		mmAddBF16x1(&y[i*n], &t[i*k], &b[0], n, k, n8)
	}
	if n8 < n { // the last n % 8 columns
		refMatMulAddBF16(y, t, b, m, n, k, n8)
	}
}
