//go:build !amd64 || purego

package kernels

func lowRankAddBF16(y, x, t []float32, a, bt []uint16, m, n, k, r int, s float32, _, _ []uint16) {
	lowRankAddBF16Calls(y, x, t, a, bt, m, n, k, r, s)
}

// lowRankY reports false: this build has no AVX2 low-rank kernels.
func lowRankY(n, k, r int) bool { return false }
