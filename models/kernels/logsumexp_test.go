package kernels

import (
	"math"
	"testing"
)

func TestLogSumExp(t *testing.T) {
	inf := float32(math.Inf(-1))
	for _, c := range []struct {
		x    []float32
		want float64
	}{
		{[]float32{0}, 0},
		{[]float32{1, 1}, 1 + math.Ln2},
		{[]float32{1000, 1000}, 1000 + math.Ln2}, // no overflow
		{[]float32{-1000, inf}, -1000},
		{[]float32{inf, inf}, math.Inf(-1)},
		{nil, math.Inf(-1)},
		{[]float32{0, float32(math.Log(3))}, math.Log(4)},
	} {
		if got := LogSumExp(c.x); math.Abs(got-c.want) > 1e-6 && got != c.want {
			t.Errorf("LogSumExp(%v) = %v, want %v", c.x, got, c.want)
		}
	}
}
