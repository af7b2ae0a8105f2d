package engine

import (
	"math"
	"testing"
)

// TestFinite checks the word-wise pass of finite against the definition (no NaN, no +Inf; −Inf allowed) with each
// special value at every position of slices of several lengths, so both the unrolled loop and its tail see it.
func TestFinite(t *testing.T) {
	ref := func(x []float32) bool {
		for _, v := range x {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 1) {
				return false
			}
		}
		return true
	}
	specials := []float32{
		float32(math.NaN()), math.Float32frombits(0xffc00000), math.Float32frombits(0x7f800001), // NaNs, either sign
		float32(math.Inf(1)), float32(math.Inf(-1)),
		math.MaxFloat32, -math.MaxFloat32, math.SmallestNonzeroFloat32, math.Float32frombits(0x7f7fffff), 0,
		float32(math.Copysign(0, -1)), 1e38, -1e-38,
	}
	for n := 1; n <= 11; n++ {
		for pos := range n {
			for _, sv := range specials {
				x := make([]float32, n)
				for i := range x {
					x[i] = float32(i) - 3.5
				}
				x[pos] = sv
				if got, want := finite(x), ref(x); got != want {
					t.Fatalf("n=%d, %v at %d: finite %v, want %v", n, sv, pos, got, want)
				}
			}
		}
	}
	if !finite(nil) {
		t.Fatal("finite(nil) = false")
	}
}
