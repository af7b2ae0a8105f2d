package quant

import (
	"fmt"
	"math"
	"math/rand"
	"runtime"
	"testing"

	"github.com/lorakit/lorakit/models/kernels"
)

// refMatVec dequantises the whole weight and accumulates in float64.
func refMatVec(q *Weight, x []float32) (y, mag []float64) {
	rows, cols := q.Rows(), q.Cols()
	w := make([]float32, q.Elems())
	q.Dequantize(w)
	y, mag = make([]float64, rows), make([]float64, rows)
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			p := float64(w[r*cols+c]) * float64(x[c])
			y[r] += p
			mag[r] += math.Abs(p)
		}
	}
	return y, mag
}

// checkClose compares with float32 accumulation's tolerance plus the rounding bound of the integer path that
// runs q: tol8 for the dot kernels, tol16 for the others.
func checkClose(t *testing.T, what string, q *Weight, x, got []float32, want, mag []float64) {
	t.Helper()
	if q.useDot8() {
		checkTol(t, what, tol8(q, x), got, want, mag)
		return
	}
	checkTol(t, what, tol16(q, x), got, want, mag)
}

// checkTol compares got with want within tol plus float32 accumulation's tolerance.
func checkTol(t *testing.T, what string, tol []float64, got []float32, want, mag []float64) {
	t.Helper()
	for i := range want {
		if d := math.Abs(float64(got[i]) - want[i]); d > tol[i]+1e-5*mag[i]+1e-6 {
			t.Fatalf("%s: y[%d] = %v, want %v (|Σ| %v)", what, i, got[i], want[i], mag[i])
		}
	}
}

func TestMatVec(t *testing.T) {
	r := rand.New(rand.NewSource(7))
	pools := []*kernels.Pool{nil, kernels.NewPool(2), kernels.NewPool(3)}
	shapes := [][2]int{{1, 64}, {3, 64}, {5, 96}, {7, 128}, {17, 576}, {33, 1536}, {4, 4096}, {3, 40}, {2, 33}, {9, 100}}
	for _, sh := range shapes {
		for _, typ := range []Type{NF4, FP4, Int8} {
			for _, bs := range []int{32, 64, 128} {
				for _, dq := range []bool{false, true} {
					if typ == Int8 && (bs != 32 || dq) {
						continue
					}
					rows, cols := sh[0], sh[1]
					w := randW(r, rows*cols, 0.05)
					var q *Weight
					var err error
					if typ == Int8 {
						q, err = Quantize8(w, []int{rows, cols})
					} else {
						q, err = Quantize4(typ, w, []int{rows, cols}, bs, dq)
					}
					if err != nil {
						t.Fatal(err)
					}
					// x at several alignments inside a larger slice, sentinels around y
					for _, off := range []int{0, 1, 3} {
						xs := randW(r, cols+off, 1)[off:]
						want, mag := refMatVec(q, xs)
						for pi, p := range pools {
							whole := make([]float32, rows+2)
							whole[0], whole[rows+1] = 42, 42
							y := whole[1 : rows+1]
							q.MatVec(p, y, xs)
							name := fmt.Sprintf("%s %dx%d bs%d dq=%v off%d pool%d", typ, rows, cols, bs, dq, off, pi)
							checkClose(t, name, q, xs, y, want, mag)
							if whole[0] != 42 || whole[rows+1] != 42 {
								t.Fatalf("%s: wrote outside y", name)
							}
						}
					}
				}
			}
		}
	}
}

func TestMatMulT(t *testing.T) {
	r := rand.New(rand.NewSource(9))
	p := kernels.NewPool(2)
	for _, m := range []int{1, 2, 4, 5, 8, 11, 50} {
		for ci, sh := range [][2]int{{7, 64}, {40, 576}, {3, 33}, {9, 256}} {
			rows, cols := sh[0], sh[1]
			w := randW(r, rows*cols, 0.05)
			typ, bs := NF4, 32
			if ci == 3 {
				typ, bs = FP4, 128
			}
			q, err := Quantize4(typ, w, []int{rows, cols}, bs, ci != 3)
			if err != nil {
				t.Fatal(err)
			}
			x := randW(r, m*cols, 1)
			y := make([]float32, m*rows)
			q.MatMulT(p, y, x, m)
			for i := 0; i < m; i++ {
				want, mag := refMatVec(q, x[i*cols:(i+1)*cols])
				checkClose(t, fmt.Sprintf("m=%d %dx%d row %d", m, rows, cols, i), q, x[i*cols:(i+1)*cols], y[i*rows:(i+1)*rows], want, mag)
			}
		}
	}
}

func TestMatVecPanicsOnBadLengths(t *testing.T) {
	q, _ := Quantize4(NF4, make([]float32, 128), []int{2, 64}, 64, false)
	defer func() {
		if recover() == nil {
			t.Error("no panic")
		}
	}()
	q.MatVec(nil, make([]float32, 3), make([]float32, 64))
}

// Benchmarks on the SmolLM2-135M shapes; bytes = packed codes + statistics read per call.
func benchMatVec(b *testing.B, rows, cols int, dq bool, threads int) {
	r := rand.New(rand.NewSource(1))
	w := randW(r, rows*cols, 0.02)
	q, _ := Quantize4(NF4, w, []int{rows, cols}, 64, dq)
	x := randW(r, cols, 1)
	y := make([]float32, rows)
	var p *kernels.Pool
	if threads > 1 {
		p = kernels.NewPool(threads)
	}
	b.SetBytes(int64(q.Bytes()))
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ResetTimer()
	c0 := cpuTime(threads > 1)
	for i := 0; i < b.N; i++ {
		q.MatVec(p, y, x)
	}
	reportCPU(b, c0, threads > 1, int64(q.Bytes()))
}

// reportCPU adds CPU-time based figures, meaningful when the machine is shared: cpu-ns/op is the CPU time of
// this thread (or, with a pool, of the process) per op, and cpu-GB/s the bytes per CPU second.
func reportCPU(b *testing.B, c0 float64, process bool, bytes int64) {
	c := cpuTime(process) - c0
	if c <= 0 {
		return
	}
	b.ReportMetric(c*1e9/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(bytes)*float64(b.N)/c/1e9, "cpu-GB/s")
}

func BenchmarkMatVecNF4(b *testing.B) {
	for _, sh := range [][2]int{{576, 576}, {1536, 576}, {576, 1536}, {4864, 896}} {
		for _, dq := range []bool{false, true} {
			for _, th := range []int{1, 2} {
				b.Run(fmt.Sprintf("%dx%d/dq=%v/t%d", sh[0], sh[1], dq, th), func(b *testing.B) {
					benchMatVec(b, sh[0], sh[1], dq, th)
				})
			}
		}
	}
}

// BenchmarkSmolLM2Layers runs the 7 linear layers of all 30 SmolLM2-135M blocks (one decode token's worth
// of quantised GEMVs, lm_head excluded).
func BenchmarkSmolLM2Layers(b *testing.B) {
	for _, th := range []int{1, 2} {
		b.Run(fmt.Sprintf("t%d", th), func(b *testing.B) {
			r := rand.New(rand.NewSource(1))
			shapes := [][2]int{{576, 576}, {192, 576}, {192, 576}, {576, 576}, {1536, 576}, {1536, 576}, {576, 1536}}
			var qs []*Weight
			var bytes int64
			for l := 0; l < 30; l++ {
				for _, s := range shapes {
					q, _ := Quantize4(NF4, randW(r, s[0]*s[1], 0.02), []int{s[0], s[1]}, 64, true)
					qs = append(qs, q)
					bytes += int64(q.Bytes())
				}
			}
			var p *kernels.Pool
			if th > 1 {
				p = kernels.NewPool(th)
			}
			x := randW(r, 1536, 1)
			y := make([]float32, 1536)
			b.SetBytes(bytes)
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			b.ResetTimer()
			c0 := cpuTime(th > 1)
			for i := 0; i < b.N; i++ {
				for _, q := range qs {
					q.MatVec(p, y[:q.Rows()], x[:q.Cols()])
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tok/s")
			if c := cpuTime(th > 1) - c0; c > 0 {
				// tokens per second if each thread had a core of its own
				b.ReportMetric(float64(b.N)*float64(th)/c, "cpu-tok/s")
			}
			reportCPU(b, c0, th > 1, bytes)
		})
	}
}

func BenchmarkMatMulT(b *testing.B) {
	for _, m := range []int{2, 4, 16, 128} {
		b.Run(fmt.Sprintf("1536x576/m%d", m), func(b *testing.B) {
			r := rand.New(rand.NewSource(1))
			rows, cols := 1536, 576
			q, _ := Quantize4(NF4, randW(r, rows*cols, 0.02), []int{rows, cols}, 64, true)
			x := randW(r, m*cols, 1)
			y := make([]float32, m*rows)
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			b.ResetTimer()
			c0 := cpuTime(false)
			for i := 0; i < b.N; i++ {
				q.MatMulT(nil, y, x, m)
			}
			if c := cpuTime(false) - c0; c > 0 {
				b.ReportMetric(c*1e9/float64(b.N)/float64(m), "cpu-ns/row")
				b.ReportMetric(2*float64(rows*cols*m)*float64(b.N)/c/1e9, "cpu-GFLOP/s")
			}
		})
	}
}

func BenchmarkMatVecInt8(b *testing.B) {
	r := rand.New(rand.NewSource(1))
	rows, cols := 1536, 576
	q, _ := Quantize8(randW(r, rows*cols, 0.02), []int{rows, cols})
	x := randW(r, cols, 1)
	y := make([]float32, rows)
	b.SetBytes(int64(q.Bytes()))
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ResetTimer()
	c0 := cpuTime(false)
	for i := 0; i < b.N; i++ {
		q.MatVec(nil, y, x)
	}
	reportCPU(b, c0, false, int64(q.Bytes()))
}

func BenchmarkDequantize(b *testing.B) {
	for _, dq := range []bool{false, true} {
		b.Run(fmt.Sprintf("1536x576/dq=%v", dq), func(b *testing.B) {
			r := rand.New(rand.NewSource(1))
			rows, cols := 1536, 576
			q, _ := Quantize4(NF4, randW(r, rows*cols, 0.02), []int{rows, cols}, 64, dq)
			dst := make([]float32, rows*cols)
			b.SetBytes(int64(4 * rows * cols))
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			b.ResetTimer()
			c0 := cpuTime(false)
			for i := 0; i < b.N; i++ {
				q.Dequantize(dst)
			}
			if c := cpuTime(false) - c0; c > 0 {
				b.ReportMetric(float64(rows*cols)*float64(b.N)/c/1e9, "cpu-Gelem/s")
			}
		})
	}
}
