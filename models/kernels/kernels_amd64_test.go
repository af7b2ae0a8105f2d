//go:build amd64 && !purego

package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

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

// TestScaleMul: scaleMulAVX2 (RMSNorm's last pass) rounds every element as the Go expression x·alpha·w does,
// bit for bit, for lengths 0–300 at unaligned offsets, written to another slice and in place.
func TestScaleMul(t *testing.T) {
	if !useAVX2 {
		t.Skip("no AVX2")
	}
	r := rand.New(rand.NewPCG(11, 12))
	for n := 0; n <= 300; n++ {
		for off := 0; off < 3; off++ {
			x, w := randF32(r, n+off)[off:], randF32(r, n+off)[off:]
			alpha := float32(r.NormFloat64())
			want := make([]float32, n)
			for i, v := range x {
				want[i] = v * alpha * w[i]
			}
			if n == 0 {
				continue
			}
			y := make([]float32, n)
			scaleMulAVX2(alpha, &x[0], &w[0], &y[0], n)
			scaleMulAVX2(alpha, &x[0], &w[0], &x[0], n) // in place, as RMSNorm(x, x, w) runs it
			for i := range want {
				if math.Float32bits(y[i]) != math.Float32bits(want[i]) || math.Float32bits(x[i]) != math.Float32bits(want[i]) {
					t.Fatalf("n=%d off=%d i=%d: %v and in place %v, want %v", n, off, i, y[i], x[i], want[i])
				}
			}
		}
	}
}
