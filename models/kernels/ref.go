package kernels

import "math"

// This file holds the reference loops. They define what each kernel
// computes, serve as the pure-Go implementation, and are what the tests
// compare the assembly against.

// bf16ToF32 widens a bfloat16 bit pattern to float32 (exact).
func bf16ToF32(u uint16) float32 { return math.Float32frombits(uint32(u) << 16) }

// f16ToF32 widens an IEEE half-precision bit pattern to float32 (exact).
func f16ToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // inf or NaN
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp != 0: // normal
		return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
	case mant == 0: // ±0
		return math.Float32frombits(sign)
	}
	// subnormal: value = mant · 2^-24
	v := float32(mant) * (1.0 / (1 << 24))
	if sign != 0 {
		v = -v
	}
	return v
}

func refDot(a, b []float32) float32 {
	var s float32
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

func refAxpy(alpha float32, x, y []float32) {
	for i := range x {
		y[i] += alpha * x[i]
	}
}

func refScale(alpha float32, x []float32) {
	for i := range x {
		x[i] *= alpha
	}
}

// refMatVecF32 computes rows [r0, r1) of y = W·x.
func refMatVecF32(y, w, x []float32, r0, r1, cols int) {
	for r := r0; r < r1; r++ {
		y[r] = refDot(w[r*cols:(r+1)*cols], x)
	}
}

func refDotBF16(w []uint16, x []float32) float32 {
	var s float32
	for i, u := range w {
		s += bf16ToF32(u) * x[i]
	}
	return s
}

func refDotF16(w []uint16, x []float32) float32 {
	var s float32
	for i, u := range w {
		s += f16ToF32(u) * x[i]
	}
	return s
}

func refMatVecBF16(y []float32, w []uint16, x []float32, r0, r1, cols int) {
	for r := r0; r < r1; r++ {
		y[r] = refDotBF16(w[r*cols:(r+1)*cols], x)
	}
}

func refMatVecF16(y []float32, w []uint16, x []float32, r0, r1, cols int) {
	for r := r0; r < r1; r++ {
		y[r] = refDotF16(w[r*cols:(r+1)*cols], x)
	}
}

// refGemm is the textbook triple loop of Gemm (used by tests).
func refGemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, c []float32, ldc int) {
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float32
			for l := 0; l < k; l++ {
				var av, bv float32
				if transA {
					av = a[l*lda+i]
				} else {
					av = a[i*lda+l]
				}
				if transB {
					bv = b[j*ldb+l]
				} else {
					bv = b[l*ldb+j]
				}
				s += av * bv
			}
			if beta == 0 {
				c[i*ldc+j] = alpha * s
			} else {
				c[i*ldc+j] = alpha*s + beta*c[i*ldc+j]
			}
		}
	}
}

func refRMSNorm(y, x, w []float32, eps float32) {
	var ss float64
	for _, v := range x {
		ss += float64(v) * float64(v)
	}
	inv := float32(1 / math.Sqrt(ss/float64(len(x))+float64(eps)))
	for i, v := range x {
		y[i] = v * inv * w[i]
	}
}

func refSoftmax(x []float32) {
	if len(x) == 0 {
		return
	}
	m := x[0]
	for _, v := range x[1:] {
		if v > m {
			m = v
		}
	}
	var sum float64
	for i, v := range x {
		e := float32(math.Exp(float64(v - m)))
		x[i] = e
		sum += float64(e)
	}
	inv := float32(1 / sum)
	for i := range x {
		x[i] *= inv
	}
}

func refSiLUMul(y, gate, up []float32) {
	for i, g := range gate {
		y[i] = g / (1 + float32(math.Exp(float64(-g)))) * up[i]
	}
}

func refArgmax(x []float32) int {
	start := 0
	for start < len(x) && x[start] != x[start] {
		start++
	}
	if start == len(x) {
		return 0
	}
	best, bv := start, x[start]
	for i := start + 1; i < len(x); i++ {
		if x[i] > bv { // false for NaN
			best, bv = i, x[i]
		}
	}
	return best
}

func refRoPE(x []float32, pos, headDim int, invFreq []float32) {
	half := headDim / 2
	for i := 0; i < half; i++ {
		sin, cos := math.Sincos(float64(float32(pos) * invFreq[i]))
		s, c := float32(sin), float32(cos)
		for h := 0; h+headDim <= len(x); h += headDim {
			x0, x1 := x[h+i], x[h+i+half]
			x[h+i] = x0*c - x1*s
			x[h+i+half] = x1*c + x0*s
		}
	}
}
