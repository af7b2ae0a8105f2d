package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestMatMulAddBF16 sweeps rows, columns (multiples of 32 and 8 and ragged ends) and ranks, and compares the
// kernel (AVX2 on amd64, the reference loop under purego) with the reference loop and with the float64 product,
// within f32 rounding of a k-term sum.
func TestMatMulAddBF16(t *testing.T) {
	defer SetAVX512(AVX512())
	for _, wide := range []bool{true, false} { // the AVX-512 kernels (where the CPU has them), then AVX2 only
		SetAVX512(wide)
		testMatMulAddBF16(t)
	}
}

func testMatMulAddBF16(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, m := range []int{1, 2, 3, 4, 5, 8} {
		for _, n := range []int{1, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 40, 63, 64, 65, 72, 80, 100, 192, 576} {
			for _, k := range []int{1, 2, 8, 16, 17, 64} {
				y0 := randF32(rng, m*n)
				tt := randF32(rng, m*k)
				b := toBF16(randF32(rng, k*n))
				got := append([]float32(nil), y0...)
				MatMulAddBF16(got, tt, b, m, n, k)
				ref := append([]float32(nil), y0...)
				refMatMulAddBF16(ref, tt, k, b, m, n, k, 0)
				for i := range m {
					for j := range n {
						want, mag := float64(y0[i*n+j]), math.Abs(float64(y0[i*n+j]))
						for l := range k {
							p := float64(tt[i*k+l]) * float64(bf16ToF32(b[l*n+j]))
							want += p
							mag += math.Abs(p)
						}
						tol := 1e-6 * (mag + 1) * float64(k+1)
						g, r := float64(got[i*n+j]), float64(ref[i*n+j])
						if math.Abs(g-want) > tol || math.Abs(r-want) > tol || math.Abs(g-r) > tol {
							t.Fatalf("avx512=%v m=%d n=%d k=%d Y[%d,%d]: kernel %g, reference loop %g, float64 %g", AVX512(), m, n, k, i, j, g, r, want)
						}
					}
				}
			}
		}
	}
	MatMulAddBF16(nil, nil, nil, 0, 5, 0) // empty: no-op
}

func TestMatMulAddBF16Panics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("short y did not panic")
		}
	}()
	MatMulAddBF16(make([]float32, 3), make([]float32, 4), make([]uint16, 8), 2, 2, 2)
}

// BenchmarkMatMulAddBF16 is the expand of a rank-16 LoRA on 2 decode rows of a 576→1536 linear.
func BenchmarkMatMulAddBF16(b *testing.B) {
	defer SetAVX512(AVX512())
	for _, wide := range []bool{false, true} {
		SetAVX512(wide)
		b.Run(map[bool]string{false: "avx2", true: "avx512"}[AVX512()], func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 1))
			const m, n, k = 2, 1536, 16
			y, tt, w := randF32(rng, m*n), randF32(rng, m*k), toBF16(randF32(rng, k*n))
			for b.Loop() {
				MatMulAddBF16(y, tt, w, m, n, k)
			}
			b.ReportMetric(float64(2*m*n*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
