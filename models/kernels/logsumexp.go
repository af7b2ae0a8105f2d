package kernels

import "math"

// LogSumExp is log Σᵢ exp(x[i]), computed as m + log Σᵢ exp(x[i]−m) with m = max(x) and the sum in float64 (so
// it needs no assembly twin: it runs once per scored row, not per weight). It is −Inf when x is empty or all
// −Inf. Token losses, data scores and served log-probabilities all take log-softmax from here:
// log p(t) = x[t] − LogSumExp(x).
func LogSumExp(x []float32) float64 {
	m := math.Inf(-1)
	for _, v := range x {
		if float64(v) > m {
			m = float64(v)
		}
	}
	if math.IsInf(m, -1) {
		return m
	}
	var sum float64
	for _, v := range x {
		sum += math.Exp(float64(v) - m)
	}
	return m + math.Log(sum)
}
