package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

func randF32(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

func toBF16(v []float32) []uint16 {
	u := make([]uint16, len(v))
	for i, f := range v {
		u[i] = uint16(math.Float32bits(f) >> 16)
	}
	return u
}

// toF16 rounds by truncation; only the bit patterns matter for the tests.
func toF16(r *rand.Rand, n int) []uint16 {
	u := make([]uint16, n)
	for i := range u {
		e := uint16(5 + r.IntN(20)) // exponents around 1, no inf/nan
		u[i] = uint16(r.IntN(2))<<15 | e<<10 | uint16(r.IntN(1024))
		if r.IntN(50) == 0 {
			u[i] = uint16(r.IntN(1024)) // subnormal
		}
	}
	return u
}

// close reports whether got is within a relative tolerance of want, scaled by
// the magnitude of the terms (mag = Σ|a·b|).
func near(got, want, mag float32) bool {
	d := math.Abs(float64(got - want))
	return d <= 1e-5*float64(mag)+1e-6
}

const sentinel = float32(-12345.5)

// padded returns a slice of n elements inside a larger buffer whose extra
// elements hold a sentinel, starting off elements into it.
func padded(n, off int) (inner, whole []float32) {
	whole = make([]float32, n+off+8)
	for i := range whole {
		whole[i] = sentinel
	}
	return whole[off : off+n], whole
}

func checkSentinels(t *testing.T, whole []float32, off, n int) {
	t.Helper()
	for i, v := range whole {
		if (i < off || i >= off+n) && v != sentinel {
			t.Fatalf("write outside output at %d (off %d, n %d)", i, off, n)
		}
	}
}

func magDot(a, b []float32) float32 {
	var s float32
	for i := range a {
		s += float32(math.Abs(float64(a[i] * b[i])))
	}
	return s
}

func TestDotAxpyScale(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n <= 300; n++ {
		for off := 0; off < 3; off++ {
			a := randF32(r, n+off)[off:]
			b := randF32(r, n+off)[off:]
			if got, want := Dot(a, b), refDot(a, b); !near(got, want, magDot(a, b)) {
				t.Fatalf("Dot n=%d off=%d: got %v want %v", n, off, got, want)
			}
			y, whole := padded(n, off)
			y0 := randF32(r, n)
			copy(y, y0)
			want := append([]float32(nil), y0...)
			refAxpy(0.75, a, want)
			Axpy(0.75, a, y)
			checkSentinels(t, whole, off, n)
			for i := range y {
				if !near(y[i], want[i], 2*float32(math.Abs(float64(y0[i])))+1) {
					t.Fatalf("Axpy n=%d i=%d: got %v want %v", n, i, y[i], want[i])
				}
			}
			copy(want, y)
			refScale(-1.5, want)
			Scale(-1.5, y)
			checkSentinels(t, whole, off, n)
			for i := range y {
				if y[i] != want[i] {
					t.Fatalf("Scale n=%d i=%d: got %v want %v", n, i, y[i], want[i])
				}
			}
		}
	}
}

func TestF16ToF32(t *testing.T) {
	cases := map[uint16]float32{0x3c00: 1, 0xc000: -2, 0x0001: 5.960464477539063e-08, 0x7bff: 65504, 0x8000: float32(math.Copysign(0, -1))}
	for h, want := range cases {
		if got := f16ToF32(h); got != want || math.Signbit(float64(got)) != math.Signbit(float64(want)) {
			t.Errorf("f16ToF32(%#x) = %v, want %v", h, got, want)
		}
	}
	if !math.IsInf(float64(f16ToF32(0x7c00)), 1) || !math.IsNaN(float64(f16ToF32(0x7e00))) {
		t.Error("f16ToF32 inf/nan")
	}
}

func pools() []*Pool { return []*Pool{nil, NewPool(1), NewPool(2), NewPool(3)} }

func TestMatVec(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	ps := pools()
	shapes := [][2]int{{0, 0}, {0, 5}, {5, 0}, {1, 1}, {3, 7}, {4, 8}, {5, 9}, {7, 16}, {8, 31}, {9, 33}, {13, 64}, {5, 32}, {3, 96}, {6, 1536}, {17, 100}, {33, 257}, {64, 576}, {300, 70}}
	for _, sh := range shapes {
		rows, cols := sh[0], sh[1]
		for off := 0; off < 3; off++ {
			for pi, p := range ps {
				w := randF32(r, rows*cols+off)[off:]
				wb := toBF16(randF32(r, rows*cols+off))[off:]
				wh := toF16(r, rows*cols+off)[off:]
				x := randF32(r, cols+off)[off:]
				for kind := 0; kind < 3; kind++ {
					y, whole := padded(rows, off)
					want := make([]float32, rows)
					switch kind {
					case wF32:
						MatVecF32(p, y, w, x, rows, cols)
						refMatVecF32(want, w, x, 0, rows, cols)
					case wBF16:
						MatVecBF16(p, y, wb, x, rows, cols)
						refMatVecBF16(want, wb, x, 0, rows, cols)
					case wF16:
						MatVecF16(p, y, wh, x, rows, cols)
						refMatVecF16(want, wh, x, 0, rows, cols)
					}
					checkSentinels(t, whole, off, rows)
					for i := range want {
						var row []float32
						switch kind {
						case wF32:
							row = w[i*cols : (i+1)*cols]
						case wBF16:
							row = make([]float32, cols)
							for c := range row {
								row[c] = bf16ToF32(wb[i*cols+c])
							}
						case wF16:
							row = make([]float32, cols)
							for c := range row {
								row[c] = f16ToF32(wh[i*cols+c])
							}
						}
						if !near(y[i], want[i], magDot(row, x)) {
							t.Fatalf("kind %d %dx%d off %d pool %d row %d: got %v want %v", kind, rows, cols, off, pi, i, y[i], want[i])
						}
					}
				}
			}
		}
	}
}

func TestMatMulT(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	ps := pools()
	shapes := [][3]int{{0, 3, 4}, {1, 5, 7}, {2, 16, 16}, {5, 17, 33}, {7, 40, 64}, {13, 33, 100}, {31, 70, 129}, {64, 96, 300}, {7, 9, 1100}}
	for _, sh := range shapes {
		m, n, k := sh[0], sh[1], sh[2]
		for pi, p := range ps {
			x := randF32(r, m*k)
			w := randF32(r, n*k)
			wb := toBF16(randF32(r, n*k))
			wh := toF16(r, n*k)
			for kind := 0; kind < 3; kind++ {
				y, whole := padded(m*n, 1)
				var wf []float32
				switch kind {
				case wF32:
					MatMulF32T(p, y, x, w, m, n, k)
					wf = w
				case wBF16:
					MatMulBF16T(p, y, x, wb, m, n, k)
					wf = make([]float32, n*k)
					for i := range wf {
						wf[i] = bf16ToF32(wb[i])
					}
				case wF16:
					MatMulF16T(p, y, x, wh, m, n, k)
					wf = make([]float32, n*k)
					for i := range wf {
						wf[i] = f16ToF32(wh[i])
					}
				}
				checkSentinels(t, whole, 1, m*n)
				for i := 0; i < m; i++ {
					for j := 0; j < n; j++ {
						xi, wj := x[i*k:(i+1)*k], wf[j*k:(j+1)*k]
						if want := refDot(xi, wj); !near(y[i*n+j], want, magDot(xi, wj)) {
							t.Fatalf("kind %d m%d n%d k%d pool %d (%d,%d): got %v want %v", kind, m, n, k, pi, i, j, y[i*n+j], want)
						}
					}
				}
			}
		}
	}
}

func TestGemm(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	ps := pools()
	shapes := [][3]int{{1, 1, 1}, {1, 7, 0}, {3, 5, 7}, {6, 16, 8}, {7, 17, 9}, {13, 40, 33}, {40, 13, 70}, {70, 65, 129}, {130, 50, 300}, {8, 9, 1037}, {200, 20, 7}, {97, 33, 1}, {50, 100, 40}}
	for _, sh := range shapes {
		m, n, k := sh[0], sh[1], sh[2]
		for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
			for _, ab := range [][2]float32{{1, 0}, {0.5, 1}, {-2, 0.25}} {
				p := ps[r.IntN(len(ps))]
				ta, tb := tr[0], tr[1]
				lda, ldb, ldc := k+1, n+2, n+3
				ar, br := m, k
				if ta {
					lda, ar = m+1, k
				}
				if tb {
					ldb, br = k+2, n
				}
				a := randF32(r, ar*lda)
				b := randF32(r, br*ldb)
				c := randF32(r, m*ldc)
				if ab[1] == 0 {
					for i := range c {
						c[i] = float32(math.NaN())
					}
				}
				want := append([]float32(nil), c...)
				refGemm(ta, tb, m, n, k, ab[0], a, lda, b, ldb, ab[1], want, ldc)
				Gemm(p, ta, tb, m, n, k, ab[0], a, lda, b, ldb, ab[1], c, ldc)
				for i := 0; i < m; i++ {
					for j := 0; j < ldc; j++ {
						g, w := c[i*ldc+j], want[i*ldc+j]
						if j >= n {
							if math.Float32bits(g) != math.Float32bits(w) {
								t.Fatalf("Gemm wrote padding at (%d,%d)", i, j)
							}
							continue
						}
						if math.IsNaN(float64(g)) || math.Abs(float64(g-w)) > 1e-4*math.Sqrt(float64(k+1))*float64(abs32(ab[0])+1) {
							t.Fatalf("Gemm ta=%v tb=%v m%d n%d k%d α%v β%v (%d,%d): got %v want %v", ta, tb, m, n, k, ab[0], ab[1], i, j, g, w)
						}
					}
				}
			}
		}
	}
}

func abs32(f float32) float32 { return float32(math.Abs(float64(f))) }

func TestOps(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for n := 0; n <= 130; n++ {
		x := randF32(r, n)
		w := randF32(r, n)
		y := make([]float32, n)
		want := make([]float32, n)
		if n > 0 {
			RMSNorm(y, x, w, 1e-5)
			refRMSNorm(want, x, w, 1e-5)
			for i := range y {
				if !near(y[i], want[i], abs32(want[i])+1e-3) {
					t.Fatalf("RMSNorm n=%d i=%d: %v vs %v", n, i, y[i], want[i])
				}
			}
		}
		s := append([]float32(nil), x...)
		Softmax(s)
		copy(want, x)
		refSoftmax(want)
		var sum float32
		for i := range s {
			sum += s[i]
			if !near(s[i], want[i], 1) {
				t.Fatalf("Softmax n=%d i=%d: %v vs %v", n, i, s[i], want[i])
			}
		}
		if n > 0 && math.Abs(float64(sum-1)) > 1e-5 {
			t.Fatalf("Softmax n=%d sums to %v", n, sum)
		}
		SiLUMul(y, x, w)
		refSiLUMul(want, x, w)
		for i := range y {
			if !near(y[i], want[i], abs32(want[i])+abs32(w[i])) {
				t.Fatalf("SiLUMul n=%d i=%d: %v vs %v", n, i, y[i], want[i])
			}
		}
	}
	// RoPE: position 0 is the identity; rotation preserves the norm of each pair.
	hd := 8
	inv := []float32{1, 0.1, 0.01, 0.001}
	x := randF32(r, 2*hd)
	x0 := append([]float32(nil), x...)
	RoPE(x, 0, hd, inv)
	for i := range x {
		if x[i] != x0[i] {
			t.Fatal("RoPE pos 0 not identity")
		}
	}
	RoPE(x, 7, hd, inv)
	for h := 0; h < 2; h++ {
		for i := 0; i < hd/2; i++ {
			a, b := x[h*hd+i], x[h*hd+i+hd/2]
			a0, b0 := x0[h*hd+i], x0[h*hd+i+hd/2]
			if math.Abs(float64(a*a+b*b-a0*a0-b0*b0)) > 1e-4 {
				t.Fatal("RoPE changed a pair's norm")
			}
		}
	}
	s, c := math.Sincos(7 * 1)
	if want := float32(float64(x0[0])*c - float64(x0[4])*s); !near(x[0], want, 10) {
		t.Fatalf("RoPE x[0] = %v, want %v", x[0], want)
	}
}

func TestPoolFor(t *testing.T) {
	for _, p := range pools() {
		for _, n := range []int{0, 1, 2, 3, 7, 100, 1001} {
			seen := make([]int32, n)
			p.For(n, func(lo, hi int) {
				for i := lo; i < hi; i++ {
					seen[i]++
				}
			})
			for i, s := range seen {
				if s != 1 {
					t.Fatalf("threads %d n %d: index %d visited %d times", p.Threads(), n, i, s)
				}
			}
		}
		// nested For runs inline instead of deadlocking
		var total int
		p.For(4, func(lo, hi int) {
			p.For(3, func(lo2, hi2 int) {})
		})
		_ = total
	}
}

// mustPanic reports an error unless f panics (a caller's programming error the kernels must refuse).
func mustPanic(t *testing.T, name string, f func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Errorf("%s did not panic", name)
		}
	}()
	f()
}

func TestPanicsOnBadLengths(t *testing.T) {
	mustPanic(t, "Dot", func() { Dot(make([]float32, 2), make([]float32, 3)) })
	mustPanic(t, "MatVecF32", func() { MatVecF32(nil, make([]float32, 2), make([]float32, 5), make([]float32, 3), 2, 3) })
	mustPanic(t, "MatMulF32T", func() { MatMulF32T(nil, make([]float32, 3), make([]float32, 6), make([]float32, 6), 2, 2, 3) })
	mustPanic(t, "Gemm", func() {
		Gemm(nil, false, false, 2, 2, 2, 1, make([]float32, 3), 2, make([]float32, 4), 2, 0, make([]float32, 4), 2)
	})
	mustPanic(t, "RoPE", func() { RoPE(make([]float32, 6), 1, 3, make([]float32, 2)) })
}

func TestExpKernelsExtremes(t *testing.T) {
	g := []float32{-200, -100, -88, -87, -20, -1e-3, 0, 1e-3, 0.5, 1, 5, 20, 87, 88, 100, 200, -3, 3}
	up := make([]float32, len(g))
	for i := range up {
		up[i] = 1.5
	}
	y := make([]float32, len(g))
	want := make([]float32, len(g))
	SiLUMul(y, g, up)
	refSiLUMul(want, g, up)
	for i := range y {
		if d := math.Abs(float64(y[i] - want[i])); d > 1e-6*math.Abs(float64(want[i]))+1e-30 {
			t.Errorf("SiLUMul(%v) = %v, want %v", g[i], y[i], want[i])
		}
	}
	for _, span := range []float32{1, 10, 80, 200} {
		x := make([]float32, 37)
		for i := range x {
			x[i] = span * float32(math.Sin(float64(i)))
		}
		w := append([]float32(nil), x...)
		Softmax(x)
		refSoftmax(w)
		for i := range x {
			if d := math.Abs(float64(x[i] - w[i])); d > 1e-6*float64(w[i])+1e-30 {
				t.Errorf("Softmax span %v [%d] = %v, want %v", span, i, x[i], w[i])
			}
		}
	}
}

// TestNoAllocs checks that the decode and prefill kernels allocate nothing
// per call once the pool's scratch has grown.
func TestNoAllocs(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	p := NewPool(2)
	rows, cols, m := 256, 320, 12
	w := randF32(r, rows*cols)
	wh := toF16(r, rows*cols)
	x := randF32(r, m*cols)
	y := make([]float32, m*rows)
	a := randF32(r, m*cols)
	c := make([]float32, m*rows)
	jobs := []MatVecJob{{Y: y[:rows], X: x[:cols], BF16: wh, Rows: rows, Cols: cols},
		{Y: y[rows : 2*rows], X: x[:cols], F32: w, Rows: rows, Cols: cols}}
	cases := map[string]func(){
		"MatVecF32":   func() { MatVecF32(p, y, w, x, rows, cols) },
		"MatVecBF16":  func() { MatVecBF16(p, y, wh, x, rows, cols) },
		"MatVecF16":   func() { MatVecF16(p, y, wh, x, rows, cols) },
		"MatMulF32T":  func() { MatMulF32T(p, y, x, w, m, rows, cols) },
		"MatMulF16T":  func() { MatMulF16T(p, y, x, wh, m, rows, cols) },
		"MatMulBF16T": func() { MatMulBF16T(p, y, x, wh, m, rows, cols) },
		"GemmNN":      func() { Gemm(p, false, false, m, rows, cols, 1, a, cols, w, rows, 0, c, rows) },
		"GemmNT":      func() { Gemm(p, false, true, m, rows, cols, 1, a, cols, w, cols, 1, c, rows) },
		"GemmTN":      func() { Gemm(p, true, false, cols, rows, m, 0.5, a, cols, y, rows, 0, w, rows) },
		"Softmax":     func() { Softmax(y) },
		"MatVecs":     func() { MatVecs(p, jobs) },
		"For":         func() { p.For(100, func(lo, hi int) {}) },
	}
	for name, f := range cases {
		f()
		if n := testing.AllocsPerRun(20, f); n != 0 {
			t.Errorf("%s: %v allocations per call", name, n)
		}
	}
}

type countTask struct{ hits []int32 }

func (c *countTask) Run(lo, hi int) {
	for i := lo; i < hi; i++ {
		c.hits[i]++
	}
}

// TestPoolRun: Run and RunBalanced cover every index once, inline on a nil or busy pool too, and allocate nothing.
func TestPoolRun(t *testing.T) {
	for _, p := range []*Pool{nil, NewPool(1), NewPool(2), NewPool(3)} {
		for _, run := range []func(int, Task){p.Run, p.RunBalanced} {
			for _, n := range []int{0, 1, 2, 7, 100} {
				c := &countTask{hits: make([]int32, n)}
				run(n, c)
				for i, h := range c.hits {
					if h != 1 {
						t.Fatalf("threads %d n %d: index %d ran %d times", p.Threads(), n, i, h)
					}
				}
			}
		}
		c := &countTask{hits: make([]int32, 64)}
		if a := testing.AllocsPerRun(20, func() { p.Run(64, c); p.RunBalanced(64, c) }); a != 0 {
			t.Fatalf("threads %d: Run or RunBalanced allocates %v times", p.Threads(), a)
		}
	}
}

// TestRoPEMatchesRef: RoPE (angles once, then the rotation) gives the reference loop's result bit for bit over
// head sizes, head counts and positions.
func TestRoPEMatchesRef(t *testing.T) {
	r := rand.New(rand.NewPCG(41, 42))
	for _, hd := range []int{2, 8, 64, 128, 600} {
		inv := make([]float32, hd/2)
		for i := range inv {
			inv[i] = float32(math.Pow(10000, -2*float64(i)/float64(hd)))
		}
		for _, heads := range []int{1, 3, 14} {
			for _, pos := range []int{0, 1, 7, 1000, 32767} {
				x := randF32(r, heads*hd)
				want := append([]float32(nil), x...)
				refRoPE(want, pos, hd, inv)
				RoPE(x, pos, hd, inv)
				for i := range x {
					if x[i] != want[i] {
						t.Fatalf("hd %d heads %d pos %d: x[%d] = %v, reference %v", hd, heads, pos, i, x[i], want[i])
					}
				}
			}
		}
	}
}
