package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestArgmax sweeps Argmax (the AVX2 passes where the CPU has them) against its Go twin and against the
// definition, read from float64 copies: the first index whose value is not NaN and not below any other
// non-NaN value. Lengths 0–300 and a vocabulary's, with NaNs, infinities, ties, signed zeros and the maximum
// in the vector steps and in the tail.
func TestArgmax(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 13))
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	def := func(x []float32) int {
		best := -1
		for i, v := range x {
			if v != v {
				continue
			}
			if best < 0 || float64(v) > float64(x[best]) {
				best = i
			}
		}
		return max(best, 0)
	}
	check := func(name string, x []float32) {
		t.Helper()
		got, twin, want := Argmax(x), refArgmax(x), def(x)
		if got != want || twin != want {
			t.Fatalf("%s (n=%d): Argmax %d, Go twin %d, definition %d", name, len(x), got, twin, want)
		}
	}
	lengths := []int{49152, 151936}
	for n := 0; n <= 300; n++ {
		lengths = append(lengths, n)
	}
	for _, n := range lengths {
		x := randF32(r, n)
		check("random", x)
		if n == 0 {
			continue
		}
		for trial := 0; trial < 4; trial++ {
			y := append([]float32(nil), x...)
			for range 1 + r.IntN(4) { // NaNs anywhere, including before and at the maximum
				y[r.IntN(n)] = nan
			}
			check("NaNs", y)
			i, j := r.IntN(n), r.IntN(n)
			y[i], y[j] = 100, 100 // a tie: the lower index wins
			check("tie", y)
			y[r.IntN(n)] = -inf
			check("-Inf", y)
			y[r.IntN(n)] = inf
			check("+Inf", y)
		}
		z := make([]float32, n) // zeros of both signs: all equal, the first wins
		for i := range z {
			if r.IntN(2) == 0 {
				z[i] = float32(math.Copysign(0, -1))
			}
		}
		check("zeros", z)
		all := make([]float32, n)
		for i := range all {
			all[i] = nan
		}
		check("all NaN", all)
		all[n-1] = -inf
		check("NaNs then -Inf", all)
		neg := make([]float32, n)
		for i := range neg {
			neg[i] = -inf
		}
		neg[r.IntN(n)] = nan
		check("-Inf and a NaN", neg)
	}
}

// BenchmarkArgmax times Argmax over one row of logits of smollm2-135m's vocabulary (49152), the maximum at a
// random place, against its Go twin.
func BenchmarkArgmax(b *testing.B) {
	x := randF32(rand.New(rand.NewPCG(3, 4)), 49152)
	for name, f := range map[string]func([]float32) int{"kernel": Argmax, "go": refArgmax} {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(4 * len(x)))
			for i := 0; i < b.N; i++ {
				f(x)
			}
		})
	}
}
