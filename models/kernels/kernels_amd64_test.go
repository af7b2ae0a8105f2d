//go:build amd64 && !purego

package kernels

import "testing"

// TestTilePaths runs the matrix tests once more on the other tile width
// (AVX2 when the CPU has AVX-512, and the reference path without AVX2).
func TestTilePaths(t *testing.T) {
	t.Logf("AVX2 %v, AVX-512 tile %v, F16C %v", useAVX2, useAVX512.Load(), hasF16C)
	saved := useAVX512.Load()
	defer SetAVX512(saved)
	SetAVX512(false)
	TestMatVec(t) // the AVX2 rows and four-row kernels (with AVX-512 on, f32 and bf16 take the generated rows kernel)
	TestMatVecs(t)
	TestMatMulT(t)
	TestGemm(t)
	savedAVX2 := useAVX2
	defer func() { useAVX2 = savedAVX2 }()
	useAVX2 = false
	TestMatVec(t)
	TestMatMulT(t)
	TestGemm(t)
	TestDotAxpyScale(t)
	TestOps(t)
}
