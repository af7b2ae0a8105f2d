//go:build amd64 && !purego

package kernels

// lowRankAddBF16 runs the generated low-rank kernels on pairs of rows (then one) where they apply; the factors
// of a pair after the first are in cache, so only the first prefetches the next product's.
func lowRankAddBF16(y, x, t []float32, a, bt []uint16, m, n, k, r int, s float32, nextA, nextBt []uint16) {
	if !hasTile512 || !useAVX512.Load() || r%4 != 0 || n%16 != 0 || k == 0 {
		lowRankAddBF16Calls(y, x, t, a, bt, m, n, k, r, s)
		return
	}
	if len(nextA) == 0 || len(nextBt) == 0 { // nothing next: the prefetches re-read this product's first line
		nextA, nextBt = a[:1], bt[:1]
	}
	for i := 0; i < m; i += 2 {
		if i+1 < m {
			lowRankBF16R2(&x[i*k], k, &a[0], k, r, s, &t[i*r], &bt[0], n, &y[i*n], n, &nextA[0], len(nextA), &nextBt[0], len(nextBt))
		} else {
			lowRankBF16R1(&x[i*k], k, &a[0], k, r, s, &t[i*r], &bt[0], n, &y[i*n], n, &nextA[0], len(nextA), &nextBt[0], len(nextBt))
		}
		if i == 0 {
			nextA, nextBt = a[:1], bt[:1]
		}
	}
}
