//go:build amd64 && !purego

package kernels

// lowRankAddBF16 runs the generated low-rank kernels on pairs of rows (then one) where they apply: the AVX-512 ones
// (lowRankBF16R*: r % 4 == 0, n % 16 == 0) when AVX-512 is on, else the AVX2 ones (lowRankBF16Y*: also k % 16 ==
// 0). The factors of a pair after the first are in cache, so only the first prefetches the next product's.
func lowRankAddBF16(y, x, t []float32, a, bt []uint16, m, n, k, r int, s float32, nextA, nextBt []uint16) {
	avx512 := hasTile512 && useAVX512.Load()
	fused := r%4 == 0 && n%16 == 0 && k > 0 // the AVX-512 kernels' shapes
	if !avx512 {
		fused = lowRankY(n, k, r)
	}
	if !fused {
		lowRankAddBF16Calls(y, x, t, a, bt, m, n, k, r, s)
		return
	}
	if len(nextA) == 0 || len(nextBt) == 0 { // nothing next: the prefetches re-read this product's first line
		nextA, nextBt = a[:1], bt[:1]
	}
	if !avx512 {
		lowRankAddBF16Y(y, x, t, a, bt, m, n, k, r, s, nextA, nextBt)
		return
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

// lowRankY reports whether lowRankAddBF16 runs the AVX2 kernels when AVX-512 is off.
func lowRankY(n, k, r int) bool { return useAVX2 && r%4 == 0 && n%16 == 0 && k%16 == 0 && k > 0 }

// lowRankAddBF16Y is lowRankAddBF16 on the AVX2 kernels (k % 16 == 0). They sum T in the AVX2 tiles' order and
// split of K (avxK), which MatMulBF16T follows on two rows or more: every row of X, a lone one included, gets the
// T those tiles give it (MatMulBF16T's one-row product is the GEMV, whose sums differ).
func lowRankAddBF16Y(y, x, t []float32, a, bt []uint16, m, n, k, r int, s float32, nextA, nextBt []uint16) {
	chunks := (k + avxK - 1) / avxK
	kc := (k/chunks + 15) &^ 15 // matMulTile's step
	buf := gemmScratch.Get().(*[]float32)
	xp := growF32(buf, 2*k)
	for i := 0; i < m; i += 2 {
		if i+1 < m {
			lowRankBF16Y2(&x[i*k], k, &xp[0], &a[0], k, kc, r, s, &t[i*r], &bt[0], n, &y[i*n], n, &nextA[0], len(nextA), &nextBt[0], len(nextBt))
		} else {
			lowRankBF16Y1(&x[i*k], k, &xp[0], &a[0], k, kc, r, s, &t[i*r], &bt[0], n, &y[i*n], n, &nextA[0], len(nextA), &nextBt[0], len(nextBt))
		}
		if i == 0 {
			nextA, nextBt = a[:1], bt[:1]
		}
	}
	gemmScratch.Put(buf)
}
