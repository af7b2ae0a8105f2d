package kernels

import "math"

// Dot returns Σ_i a[i]·b[i]. len(a) must equal len(b).
func Dot(a, b []float32) float32 {
	if len(a) != len(b) {
		panic("kernels: Dot length mismatch")
	}
	return dot(a, b)
}

// Axpy computes y[i] += alpha·x[i] for every i. len(x) must equal len(y).
func Axpy(alpha float32, x, y []float32) {
	if len(x) != len(y) {
		panic("kernels: Axpy length mismatch")
	}
	axpy(alpha, x, y)
}

// Scale computes x[i] *= alpha for every i.
func Scale(alpha float32, x []float32) { scale(alpha, x) }

// weight element types of the matrix kernels
const (
	wF32 = iota
	wBF16
	wF16
)

func checkMatVec(name string, y []float32, wlen int, x []float32, rows, cols int) {
	if rows < 0 || cols < 0 || len(y) < rows || wlen < rows*cols || len(x) < cols {
		panic("kernels: " + name + ": slice lengths do not match rows×cols")
	}
}

// matVecTask computes y = W·x over blocks of matVecBlock rows.
type matVecTask struct {
	kind       int
	y, x, wf   []float32
	wh         []uint16
	rows, cols int
	xp         []float32 // x in the even/odd order of the paired bf16 kernel, or nil
}

// matVecBlock is the row granularity of the parallel split.
const matVecBlock = 4

func (t *matVecTask) run(lo, hi int) {
	r0, r1 := lo*matVecBlock, hi*matVecBlock
	if r1 > t.rows {
		r1 = t.rows
	}
	switch t.kind {
	case wF32:
		matVecF32(t.y, t.wf, t.x, r0, r1, t.cols)
	case wBF16:
		if t.xp != nil {
			matVecBF16P(t.y, t.wh, t.xp, t.x, r0, r1, t.cols)
		} else {
			matVecBF16(t.y, t.wh, t.x, r0, r1, t.cols)
		}
	case wF16:
		matVecF16(t.y, t.wh, t.x, r0, r1, t.cols)
	}
}

// matVecInline is the size (rows×cols) under which a matrix-vector product runs inline on its caller, without
// the pool (and, bf16, without reordering x for the paired kernel).
const matVecInline = 1 << 14

// matVec runs t over the pool; small matrices run inline.
func (p *Pool) matVec(t matVecTask) {
	blocks := (t.rows + matVecBlock - 1) / matVecBlock
	if t.rows*t.cols < matVecInline || p == nil || !p.mu.TryLock() {
		t.run(0, blocks)
		return
	}
	if t.kind == wBF16 {
		t.xp = permuteBF16(&p.xperm, t.x[:t.cols])
	}
	if p.threads == 1 {
		t.run(0, blocks)
	} else {
		p.mv = t
		// one contiguous share per thread: every extra chunk restarts the weight stream (prefetchers
		// included), which cost smollm2's decode 5% (f32) to 15% (bf16) against 8 chunks per thread
		p.runLocked(blocks, p.threads, &p.mv)
		p.mv = matVecTask{}
	}
	p.mu.Unlock()
}

// MatVecF32 computes y[r] = Σ_c W[r*cols+c]·x[c] for r in [0, rows), with W
// [rows, cols] row-major f32. p may be nil.
func MatVecF32(p *Pool, y []float32, w []float32, x []float32, rows, cols int) {
	checkMatVec("MatVecF32", y, len(w), x, rows, cols)
	p.matVec(matVecTask{kind: wF32, y: y, wf: w, x: x, rows: rows, cols: cols})
}

// MatVecBF16 computes y[r] = Σ_c bf16(W[r*cols+c])·x[c], W [rows, cols] of
// bfloat16 bit patterns (widened in registers: float32frombits(u<<16)).
func MatVecBF16(p *Pool, y []float32, w []uint16, x []float32, rows, cols int) {
	checkMatVec("MatVecBF16", y, len(w), x, rows, cols)
	p.matVec(matVecTask{kind: wBF16, y: y, wh: w, x: x, rows: rows, cols: cols})
}

// MatVecF16 computes y[r] = Σ_c f16(W[r*cols+c])·x[c], W [rows, cols] of IEEE
// half-precision bit patterns.
func MatVecF16(p *Pool, y []float32, w []uint16, x []float32, rows, cols int) {
	checkMatVec("MatVecF16", y, len(w), x, rows, cols)
	p.matVec(matVecTask{kind: wF16, y: y, wh: w, x: x, rows: rows, cols: cols})
}

func checkMatMul(name string, y, x []float32, wlen, m, n, k int) {
	if m < 0 || n < 0 || k < 0 || len(y) < m*n || len(x) < m*k || wlen < n*k {
		panic("kernels: " + name + ": slice lengths do not match m, n, k")
	}
}

// MatMulF32T computes Y[i, j] = Σ_l X[i*k+l]·W[j*k+l]: Y[m, n] = X[m, k]·W[n, k]ᵀ,
// a batch of m rows through a linear layer with weight W [out=n, in=k].
// Y is overwritten.
func MatMulF32T(p *Pool, y, x, w []float32, m, n, k int) {
	checkMatMul("MatMulF32T", y, x, len(w), m, n, k)
	p.matMulT(matMulTask{kind: wF32, y: y, x: x, wf: w, m: m, n: n, k: k})
}

// MatMulBF16T is MatMulF32T with W [n, k] of bfloat16 bit patterns.
func MatMulBF16T(p *Pool, y, x []float32, w []uint16, m, n, k int) {
	checkMatMul("MatMulBF16T", y, x, len(w), m, n, k)
	p.matMulT(matMulTask{kind: wBF16, y: y, x: x, wh: w, m: m, n: n, k: k})
}

// MatMulF16T is MatMulF32T with W [n, k] of IEEE half-precision bit patterns.
func MatMulF16T(p *Pool, y, x []float32, w []uint16, m, n, k int) {
	checkMatMul("MatMulF16T", y, x, len(w), m, n, k)
	p.matMulT(matMulTask{kind: wF16, y: y, x: x, wh: w, m: m, n: n, k: k})
}

// Gemm computes C = alpha·op(A)·op(B) + beta·C, row-major, where op(A) is
// [m, k] (A is [m, lda≥k], or [k, lda≥m] when transA) and op(B) is [k, n]
// (B is [k, ldb≥n], or [n, ldb≥k] when transB); C is [m, ldc≥n].
// Reference loop:
//
//	C[i*ldc+j] = alpha·Σ_l opA(i,l)·opB(l,j) + beta·C[i*ldc+j]
//
// With beta == 0, C is not read (NaNs in C do not propagate), as in BLAS.
func Gemm(p *Pool, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m < 0 || n < 0 || k < 0 {
		panic("kernels: Gemm: negative dimension")
	}
	if m == 0 || n == 0 {
		return
	}
	ar, ac := m, k
	if transA {
		ar, ac = k, m
	}
	br, bc := k, n
	if transB {
		br, bc = n, k
	}
	if lda < max(ac, 1) || ldb < max(bc, 1) || ldc < n ||
		(ar > 0 && len(a) < (ar-1)*lda+ac) || (br > 0 && len(b) < (br-1)*ldb+bc) || len(c) < (m-1)*ldc+n {
		panic("kernels: Gemm: slice lengths or leading dimensions do not match m, n, k")
	}
	p.gemm(gemmArgs{transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha,
		a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc})
}

// RMSNorm computes y[i] = x[i] / sqrt(mean(x²) + eps) · w[i]. The sum of
// squares is accumulated in float64. y may alias x.
func RMSNorm(y, x, w []float32, eps float32) {
	if len(y) != len(x) || len(w) != len(x) {
		panic("kernels: RMSNorm length mismatch")
	}
	if len(x) == 0 {
		return
	}
	rmsNorm(y, x, w, eps)
}

// Argmax returns the index of the largest value of x that is not NaN, the first one if several are equal
// (+0 and −0 are), and 0 when x is empty or every value is NaN: greedy sampling over a row of logits.
func Argmax(x []float32) int { return argmax(x) }

// Softmax replaces x with exp(x[i]-max(x)) / Σ_j exp(x[j]-max(x)).
func Softmax(x []float32) { softmax(x) }

// SiLUMul computes y[i] = silu(gate[i])·up[i], silu(g) = g / (1 + exp(-g)).
// y may alias gate or up.
func SiLUMul(y, gate, up []float32) {
	if len(gate) != len(y) || len(up) != len(y) {
		panic("kernels: SiLUMul length mismatch")
	}
	siluMul(y, gate, up)
}

// RoPE rotates every head of x ([heads*headDim]) by position pos with the
// rotate_half convention: for each head h and i < headDim/2, with
// θ = float32(pos)·invFreq[i] (cos, sin evaluated in float64),
//
//	x[h,i]        = x[h,i]·cos θ − x[h,i+half]·sin θ
//	x[h,i+half]   = x[h,i+half]·cos θ + x[h,i]·sin θ
//
// It is RoPEAngles then RoPERotate; a caller rotating several vectors at one position (every layer's q and k
// of a token) computes the angles once.
func RoPE(x []float32, pos int, headDim int, invFreq []float32) {
	if headDim <= 0 || headDim%2 != 0 || len(x)%headDim != 0 || len(invFreq) < headDim/2 {
		panic("kernels: RoPE: bad headDim or invFreq length")
	}
	var buf [256]float32
	cs := buf[:0]
	if headDim > len(buf) {
		cs = make([]float32, headDim)
	}
	cs = cs[:headDim]
	RoPEAngles(cs, pos, invFreq)
	RoPERotate(x, headDim, cs)
}

// RoPEAngles writes RoPE's cos θ_i to cs[i] and sin θ_i to cs[half+i], θ_i = float32(pos)·invFreq[i], for
// i < half = len(cs)/2.
func RoPEAngles(cs []float32, pos int, invFreq []float32) {
	half := len(cs) / 2
	if len(cs)%2 != 0 || len(invFreq) < half {
		panic("kernels: RoPEAngles: odd cs or short invFreq")
	}
	for i := range half {
		sin, cos := math.Sincos(float64(float32(pos) * invFreq[i]))
		cs[i], cs[half+i] = float32(cos), float32(sin)
	}
}

// RoPERotate is RoPE with the angles of RoPEAngles (cs: headDim values, the cosines then the sines).
func RoPERotate(x []float32, headDim int, cs []float32) {
	if headDim <= 0 || headDim%2 != 0 || len(x)%headDim != 0 || len(cs) != headDim {
		panic("kernels: RoPERotate: bad headDim or cs length")
	}
	half := headDim / 2
	for h := 0; h+headDim <= len(x); h += headDim {
		xh := x[h : h+headDim]
		for i, c := range cs[:half] {
			s := cs[half+i]
			x0, x1 := xh[i], xh[i+half]
			xh[i] = x0*c - x1*s
			xh[i+half] = x1*c + x0*s
		}
	}
}
