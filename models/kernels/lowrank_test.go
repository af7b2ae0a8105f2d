package kernels

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestLowRankAddBF16 sweeps rows, ranks (multiples of 4, where the fused kernel runs, and others), inner sizes
// (multiples of 16 and ragged tails; past avxK, where the AVX2 tiles split K in chunks) and output sizes
// (multiples of 64, of 16, and others), with and without AVX-512, and requires the result to equal the three
// calls it fuses (MatMulBF16T, Scale, MatMulAddBF16) bit for bit (a lone row on the AVX2 kernel: that row of the
// three calls on two rows), and the float64 product within f32 rounding of its sums.
func TestLowRankAddBF16(t *testing.T) {
	defer SetAVX512(AVX512())
	for _, wide := range []bool{true, false} {
		SetAVX512(wide)
		testLowRankAddBF16(t)
	}
}

func testLowRankAddBF16(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, m := range []int{1, 2, 3, 4, 5} {
		for _, r := range []int{1, 4, 6, 8, 16, 32} {
			for _, k := range []int{1, 15, 16, 17, 40, 576, 1040, 1536} {
				for _, n := range []int{8, 16, 48, 64, 80, 192, 200} {
					x, y0 := randF32(rng, m*k), randF32(rng, m*n)
					a, bt := toBF16(randF32(rng, r*k)), toBF16(randF32(rng, r*n))
					const s = 1.7
					next := toBF16(randF32(rng, 300))
					got, want := slices.Clone(y0), slices.Clone(y0)
					LowRankAddBF16(got, x, make([]float32, m*r), a, bt, m, n, k, r, s, next[:100], next[100:])
					if m == 1 && !AVX512() && lowRankY(n, k, r) {
						// the AVX2 kernel sums a lone row as MatMulBF16T's tiles sum each of two
						x2, y2 := append(slices.Clone(x), x...), append(slices.Clone(y0), y0...)
						lowRankAddBF16Calls(y2, x2, make([]float32, 2*r), a, bt, 2, n, k, r, s)
						want = y2[:n]
					} else {
						lowRankAddBF16Calls(want, x, make([]float32, m*r), a, bt, m, n, k, r, s)
					}
					for i := range m {
						tf := make([]float64, r)
						tmag := make([]float64, r)
						for l := range r {
							for j := range k {
								p := float64(x[i*k+j]) * float64(bf16ToF32(a[l*k+j]))
								tf[l] += p
								tmag[l] += math.Abs(p)
							}
						}
						for j := range n {
							ref, mag := float64(y0[i*n+j]), math.Abs(float64(y0[i*n+j]))
							for l := range r {
								b := float64(bf16ToF32(bt[l*n+j]))
								ref += s * tf[l] * b
								mag += s * tmag[l] * math.Abs(b)
							}
							g := got[i*n+j]
							if g != want[i*n+j] {
								t.Fatalf("avx512=%v m=%d r=%d k=%d n=%d Y[%d,%d]: %g, the three calls %g", AVX512(), m, r, k, n, i, j, g, want[i*n+j])
							}
							if tol := 1e-6 * (mag + 1) * float64(k+r); math.Abs(float64(g)-ref) > tol {
								t.Fatalf("avx512=%v m=%d r=%d k=%d n=%d Y[%d,%d]: %g, float64 %g", AVX512(), m, r, k, n, i, j, g, ref)
							}
						}
					}
				}
			}
		}
	}
	LowRankAddBF16(nil, nil, nil, nil, nil, 0, 4, 0, 0, 1, nil, nil) // empty: no-op
}

func TestLowRankAddBF16Panics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("short scratch did not panic")
		}
	}()
	LowRankAddBF16(make([]float32, 32), make([]float32, 32), make([]float32, 7), make([]uint16, 64), make([]uint16, 64), 2, 16, 16, 4, 1, nil, nil)
}
