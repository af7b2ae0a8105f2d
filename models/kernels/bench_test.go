package kernels

import (
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the process's user+system CPU time: on a shared machine,
// work per CPU-second tells the kernel's efficiency apart from the load.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Benchmark shapes: smollm2-135m's lm_head (49152×576, beyond the caches,
// DRAM bound), its MLP up projection (1536×576) and a qwen2.5-0.5b MLP
// (4864×896). GB/s counts weight bytes read per product.
var gemvShapes = [][2]int{{1536, 576}, {4864, 896}, {49152, 576}}

func benchMatVec(b *testing.B, kind int) {
	r := rand.New(rand.NewPCG(1, 1))
	for _, threads := range []int{1, 2} {
		p := NewPool(threads)
		for _, sh := range gemvShapes {
			rows, cols := sh[0], sh[1]
			b.Run(fmt.Sprintf("%dx%d/t%d", rows, cols, threads), func(b *testing.B) {
				x := randF32(r, cols)
				y := make([]float32, rows)
				var wf []float32
				var wh []uint16
				esz := 4
				if kind == wF32 {
					wf = randF32(r, rows*cols)
				} else {
					wh = toF16(r, rows*cols)
					esz = 2
				}
				b.SetBytes(int64(rows * cols * esz))
				b.ResetTimer()
				c0 := cpuTime()
				for i := 0; i < b.N; i++ {
					switch kind {
					case wF32:
						MatVecF32(p, y, wf, x, rows, cols)
					case wBF16:
						MatVecBF16(p, y, wh, x, rows, cols)
					case wF16:
						MatVecF16(p, y, wh, x, rows, cols)
					}
				}
				b.ReportMetric(float64(rows*cols*esz)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
				b.ReportMetric(float64(rows*cols*esz)*float64(b.N)/(cpuTime()-c0).Seconds()/1e9, "GB/cpu-s")
			})
		}
	}
}

func BenchmarkMatVecF32(b *testing.B)  { benchMatVec(b, wF32) }
func BenchmarkMatVecBF16(b *testing.B) { benchMatVec(b, wBF16) }
func BenchmarkMatVecF16(b *testing.B)  { benchMatVec(b, wF16) }

func BenchmarkDot(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{64, 576, 4096} {
		x, y := randF32(r, n), randF32(r, n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			var s float32
			for i := 0; i < b.N; i++ {
				s += Dot(x, y)
			}
			b.ReportMetric(2*float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

func BenchmarkAxpy(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 3))
	for _, n := range []int{64, 576, 4096} {
		x, y := randF32(r, n), randF32(r, n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				Axpy(1e-9, x, y)
			}
			b.ReportMetric(2*float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// prefill-like shapes: m tokens through smollm2's up projection and qwen's.
var mmShapes = [][3]int{{512, 1536, 576}, {512, 576, 1536}, {512, 4864, 896}, {8, 1536, 576}}

// matMulKind runs the product Y = X·Wᵀ of the weight kind: MatMulF32T on wf, MatMulBF16T or MatMulF16T on wh.
func matMulKind(kind int, p *Pool, y, x, wf []float32, wh []uint16, m, n, k int) {
	switch kind {
	case wF32:
		MatMulF32T(p, y, x, wf, m, n, k)
	case wBF16:
		MatMulBF16T(p, y, x, wh, m, n, k)
	default:
		MatMulF16T(p, y, x, wh, m, n, k)
	}
}

func benchMatMul(b *testing.B, kind int) {
	r := rand.New(rand.NewPCG(2, 1))
	for _, threads := range []int{1, 2} {
		p := NewPool(threads)
		for _, sh := range mmShapes {
			m, n, k := sh[0], sh[1], sh[2]
			b.Run(fmt.Sprintf("m%d_n%d_k%d/t%d", m, n, k, threads), func(b *testing.B) {
				x := randF32(r, m*k)
				y := make([]float32, m*n)
				wf := randF32(r, n*k)
				wh := toF16(r, n*k)
				b.ResetTimer()
				c0 := cpuTime()
				for i := 0; i < b.N; i++ {
					matMulKind(kind, p, y, x, wf, wh, m, n, k)
				}
				b.ReportMetric(2*float64(m*n*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				b.ReportMetric(2*float64(m*n*k)*float64(b.N)/(cpuTime()-c0).Seconds()/1e9, "GFLOP/cpu-s")
			})
		}
	}
}

func BenchmarkMatMulF32T(b *testing.B)  { benchMatMul(b, wF32) }
func BenchmarkMatMulBF16T(b *testing.B) { benchMatMul(b, wBF16) }
func BenchmarkMatMulF16T(b *testing.B)  { benchMatMul(b, wF16) }

func BenchmarkGemm(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 1))
	p := NewPool(2)
	m, n, k := 512, 576, 1536
	for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}} {
		b.Run(fmt.Sprintf("tA%v_tB%v_m%d_n%d_k%d/t2", tr[0], tr[1], m, n, k), func(b *testing.B) {
			a := randF32(r, m*k)
			bb := randF32(r, k*n)
			c := make([]float32, m*n)
			lda, ldb := k, n
			if tr[0] {
				lda = m
			}
			if tr[1] {
				ldb = k
			}
			b.ResetTimer()
			c0 := cpuTime()
			for i := 0; i < b.N; i++ {
				Gemm(p, tr[0], tr[1], m, n, k, 1, a, lda, bb, ldb, 0, c, n)
			}
			b.ReportMetric(2*float64(m*n*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			b.ReportMetric(2*float64(m*n*k)*float64(b.N)/(cpuTime()-c0).Seconds()/1e9, "GFLOP/cpu-s")
		})
	}
}

// Elementwise ops over an MLP row (1536) and a vocabulary (49152); GB/s
// counts the bytes read and written.
func BenchmarkOps(b *testing.B) {
	r := rand.New(rand.NewPCG(4, 1))
	for _, n := range []int{1536, 49152} {
		x, g, u, w := randF32(r, n), randF32(r, n), randF32(r, n), randF32(r, n)
		y := make([]float32, n)
		b.Run(fmt.Sprintf("SiLUMul/%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				SiLUMul(y, g, u)
			}
			b.ReportMetric(12*float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
		})
		b.Run(fmt.Sprintf("Softmax/%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				copy(y, x)
				Softmax(y)
			}
			b.ReportMetric(8*float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
		})
		b.Run(fmt.Sprintf("RMSNorm/%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				RMSNorm(y, x, w, 1e-5)
			}
			b.ReportMetric(12*float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
		})
	}
}

// BenchmarkDecodeStep runs the matrix products of one smollm2-135m decode step (30 layers' q, k, v, o, gate,
// up, down and the 49152-row head: 268 MB of bf16, 536 MB of f32, more than the caches, so the weights come from
// DRAM as in a real step) for 1 to 16 rows, two threads: the kernels' part of `lorakit bench --batch`'s step
// ratio, without attention, norms or the pool's hand-offs between layers.
func BenchmarkDecodeStep(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 1))
	type mat struct{ n, k int }
	var shapes []mat
	for l := 0; l < 30; l++ {
		shapes = append(shapes, mat{576, 576}, mat{192, 576}, mat{192, 576}, mat{576, 576}, mat{1536, 576},
			mat{1536, 576}, mat{576, 1536})
	}
	shapes = append(shapes, mat{49152, 576})
	p := NewPool(2)
	x := randF32(r, 16*1536)
	y := make([]float32, 16*49152)
	for _, kind := range []int{wBF16, wF32} {
		name := map[int]string{wBF16: "bf16", wF32: "f32"}[kind]
		// the weights are made inside the kind's run, so that a -bench pattern naming one kind makes only its own
		b.Run(name, func(b *testing.B) {
			ws := make([][]uint16, len(shapes))
			wf := make([][]float32, len(shapes))
			for i, s := range shapes {
				if kind == wBF16 {
					ws[i] = toBF16(randF32(r, s.n*s.k))
				} else {
					wf[i] = randF32(r, s.n*s.k)
				}
			}
			for _, m := range []int{1, 2, 4, 8, 16} {
				b.Run(fmt.Sprintf("m%d", m), func(b *testing.B) {
					for i := 0; i < b.N; i++ {
						for j, s := range shapes {
							if kind == wBF16 {
								MatMulBF16T(p, y, x, ws[j], m, s.n, s.k)
							} else {
								MatMulF32T(p, y, x, wf[j], m, s.n, s.k)
							}
						}
					}
					b.ReportMetric(float64(b.Elapsed().Microseconds())/1e3/float64(b.N), "ms/step")
				})
			}
		})
	}
}
