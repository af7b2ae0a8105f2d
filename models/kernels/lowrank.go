package kernels

// LowRankAddBF16 adds s·(X·Aᵀ)·Bᵀ to Y [m, n] for X [m, k], A [r, k] and Bᵀ [r, n] of bfloat16 bit patterns: the
// delta of one LoRA module on m rows, in one call. T = X·Aᵀ is summed exactly as MatMulBF16T sums it, scaled by s
// as Scale does and added as MatMulAddBF16 adds it, so Y ends bit for bit as after those three calls; t is scratch
// of at least m·r floats (it holds s·T afterwards). The one exception is a single row on the AVX2 kernel: its T is
// summed as MatMulBF16T sums each of two rows or more (the tiles), where MatMulBF16T's one-row product (the GEMV)
// sums in another order, so that a row's delta does not depend on how many rows share its adapter.
//
// nextA and nextBt are the factors of the product the caller runs next (nil: none). Where a fused kernel runs
// (AVX-512: r % 4 == 0, n % 16 == 0; AVX2: also k % 16 == 0) it prefetches them while it reads its own, at the
// same pace: a loop over many small products (a decode step's adapters, a few rows each) then streams the
// factors from memory instead of waiting on the first lines of every short matrix.
func LowRankAddBF16(y, x, t []float32, a, bt []uint16, m, n, k, r int, s float32, nextA, nextBt []uint16) {
	if m < 0 || n < 0 || k < 0 || r < 0 || len(y) < m*n || len(x) < m*k || len(t) < m*r || len(a) < r*k || len(bt) < r*n {
		panic("kernels: LowRankAddBF16: slice lengths do not match m, n, k, r")
	}
	if m == 0 || n == 0 || r == 0 {
		return
	}
	lowRankAddBF16(y, x, t, a, bt, m, n, k, r, s, nextA, nextBt)
}

// lowRankAddBF16Calls is LowRankAddBF16 as the three calls whose result it equals (the pure-Go twin on a
// purego build, and the path where no fused kernel applies).
func lowRankAddBF16Calls(y, x, t []float32, a, bt []uint16, m, n, k, r int, s float32) {
	t = t[:m*r]
	MatMulBF16T(nil, t, x, a, m, r, k)
	Scale(s, t)
	MatMulAddBF16(y, t, bt, m, n, r)
}
