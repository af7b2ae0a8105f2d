package kernels

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sort"
	"sync"
	"testing"
	"time"
)

func TestMatVecs(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	for _, p := range pools() {
		for _, shapes := range [][][2]int{
			{{576, 576}, {192, 576}, {192, 576}}, // q, k, v
			{{1536, 576}, {1536, 576}},           // gate, up
			{{0, 5}, {7, 33}, {5, 0}, {130, 70}, {1, 16}},
		} {
			for kindOff := 0; kindOff < 3; kindOff++ {
				jobs := make([]MatVecJob, len(shapes))
				want := make([][]float32, len(shapes))
				shared := randF32(r, shapes[0][1])
				for i, sh := range shapes {
					rows, cols := sh[0], sh[1]
					x := shared
					if cols != len(shared) || i == 2 {
						x = randF32(r, cols)
					}
					j := MatVecJob{Y: make([]float32, rows), X: x, Rows: rows, Cols: cols}
					want[i] = make([]float32, rows)
					switch (i + kindOff) % 3 {
					case wF32:
						j.F32 = randF32(r, rows*cols)
						MatVecF32(p, want[i], j.F32, x, rows, cols)
					case wBF16:
						j.BF16 = toBF16(randF32(r, rows*cols))
						MatVecBF16(p, want[i], j.BF16, x, rows, cols)
					case wF16:
						j.F16 = toF16(r, rows*cols)
						MatVecF16(p, want[i], j.F16, x, rows, cols)
					}
					jobs[i] = j
				}
				MatVecs(p, jobs)
				for i := range jobs {
					for k, v := range jobs[i].Y {
						if v != want[i][k] {
							t.Fatalf("threads %d shapes %v job %d row %d: got %v, separate call %v", p.Threads(), shapes, i, k, v, want[i][k])
						}
					}
				}
			}
		}
	}
	mustPanic(t, "two weights", func() {
		MatVecs(nil, []MatVecJob{{Y: make([]float32, 1), X: make([]float32, 1), F32: make([]float32, 1), F16: make([]uint16, 1), Rows: 1, Cols: 1}})
	})
	mustPanic(t, "short W", func() {
		MatVecs(nil, []MatVecJob{{Y: make([]float32, 2), X: make([]float32, 2), F32: make([]float32, 3), Rows: 2, Cols: 2}})
	})
}

// TestMatMulsT: every product of a MatMulsT batch (q, k and v; gate and up; odd shapes) equals the separate
// MatMul*T call bit for bit, for 1-67 rows of f32, bf16 and f16 weights, on the AVX-512 tiles and without
// them, with every pool.
func TestMatMulsT(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 24))
	saved := AVX512()
	defer SetAVX512(saved)
	for _, avx512 := range []bool{true, false} {
		SetAVX512(avx512)
		for _, p := range pools() {
			for _, shapes := range [][][2]int{
				{{576, 576}, {192, 576}, {192, 576}}, // q, k, v
				{{1536, 576}, {1536, 576}},           // gate, up
				{{0, 5}, {7, 33}, {130, 70}},
			} {
				for _, m := range []int{1, 2, 3, 4, 7, 8, 9, 16, 17, 67} {
					matMulsTCase(t, r, p, shapes, m)
				}
			}
		}
	}
	mustPanic(t, "two weights", func() {
		MatMulsT(nil, []MatVecJob{{Y: make([]float32, 2), X: make([]float32, 2), F32: make([]float32, 1), F16: make([]uint16, 1), Rows: 1, Cols: 1}}, 2)
	})
	mustPanic(t, "short X", func() {
		MatMulsT(nil, []MatVecJob{{Y: make([]float32, 4), X: make([]float32, 3), F32: make([]float32, 4), Rows: 2, Cols: 2}}, 2)
	})
	mustPanic(t, "four jobs", func() {
		j := MatVecJob{Y: make([]float32, 2), X: make([]float32, 2), F32: make([]float32, 1), Rows: 1, Cols: 1}
		MatMulsT(nil, []MatVecJob{j, j, j, j}, 2)
	})
}

// matMulsTCase is one TestMatMulsT batch: m rows through products of shapes [rows, cols], the weights' kinds
// rotating (f32, bf16, f16), products of equal cols sharing one X (as q, k and v do).
func matMulsTCase(t *testing.T, r *rand.Rand, p *Pool, shapes [][2]int, m int) {
	t.Helper()
	for kindOff := 0; kindOff < 3; kindOff++ {
		jobs := make([]MatVecJob, len(shapes))
		want := make([][]float32, len(shapes))
		shared := randF32(r, m*shapes[0][1])
		for i, sh := range shapes {
			rows, cols := sh[0], sh[1]
			x := shared
			if m*cols != len(shared) {
				x = randF32(r, m*cols)
			}
			j := MatVecJob{Y: make([]float32, m*rows), X: x, Rows: rows, Cols: cols}
			for k := range j.Y {
				j.Y[k] = float32(k) // overwritten
			}
			want[i] = make([]float32, m*rows)
			switch (i + kindOff) % 3 {
			case wF32:
				j.F32 = randF32(r, rows*cols)
				MatMulF32T(p, want[i], x, j.F32, m, rows, cols)
			case wBF16:
				j.BF16 = toBF16(randF32(r, rows*cols))
				MatMulBF16T(p, want[i], x, j.BF16, m, rows, cols)
			case wF16:
				j.F16 = toF16(r, rows*cols)
				MatMulF16T(p, want[i], x, j.F16, m, rows, cols)
			}
			jobs[i] = j
		}
		MatMulsT(p, jobs, m)
		for i := range jobs {
			for k, v := range jobs[i].Y {
				if v != want[i][k] {
					t.Fatalf("avx512 %v threads %d shapes %v m %d job %d [%d]: got %v, separate call %v",
						AVX512(), p.Threads(), shapes, m, i, k, v, want[i][k])
				}
			}
		}
	}
}

// TestPoolStress runs many small jobs on several pools at once, with work
// functions that yield (a worker descheduled mid-job), checking coverage.
func TestPoolStress(t *testing.T) {
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := NewPool(3)
			for it := 0; it < 300; it++ {
				n := 1 + it%37
				seen := make([]int32, n)
				p.For(n, func(lo, hi int) {
					if lo%3 == 0 {
						runtime.Gosched()
					}
					for i := lo; i < hi; i++ {
						seen[i]++
					}
				})
				for i, s := range seen {
					if s != 1 {
						t.Errorf("n %d: index %d visited %d times", n, i, s)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}

// BenchmarkABMatVecs compares separate MatVecF32/MatVecBF16 calls with one
// MatVecs batch (smollm2 q, k, v and gate, up), alternating the two in each
// iteration so that both see the same machine state; it reports the median
// time of each (separate-ns, batched-ns) and their ratio.
//
//	go test ./models/kernels -run X -bench ABMatVecs -benchtime 2000x
func BenchmarkABMatVecs(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	p := NewPool(2)
	for _, bf := range []bool{false, true} {
		b.Run(fmt.Sprintf("bf16=%v", bf), func(b *testing.B) { abMatVecs(b, p, r, bf) })
	}
}

// abMatVecs is one BenchmarkABMatVecs case.
func abMatVecs(b *testing.B, p *Pool, r *rand.Rand, bf bool) {
	x := randF32(r, 576)
	shapes := [][2]int{{576, 576}, {192, 576}, {192, 576}, {1536, 576}, {1536, 576}}
	jobs := make([]MatVecJob, len(shapes))
	for i, sh := range shapes {
		jobs[i] = MatVecJob{Y: make([]float32, sh[0]), X: x, Rows: sh[0], Cols: sh[1]}
		if bf {
			jobs[i].BF16 = toBF16(randF32(r, sh[0]*sh[1]))
		} else {
			jobs[i].F32 = randF32(r, sh[0]*sh[1])
		}
	}
	sep := func() {
		for _, j := range jobs {
			if bf {
				MatVecBF16(p, j.Y, j.BF16, j.X, j.Rows, j.Cols)
			} else {
				MatVecF32(p, j.Y, j.F32, j.X, j.Rows, j.Cols)
			}
		}
	}
	bat := func() { MatVecs(p, jobs[:3]); MatVecs(p, jobs[3:]) }
	var a, c []time.Duration
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		sep()
		t1 := time.Now()
		bat()
		a, c = append(a, t1.Sub(t0)), append(c, time.Since(t1))
	}
	med := func(d []time.Duration) time.Duration {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return d[len(d)/2]
	}
	b.ReportMetric(float64(med(a).Nanoseconds()), "separate-ns")
	b.ReportMetric(float64(med(c).Nanoseconds()), "batched-ns")
	b.ReportMetric(float64(med(c))/float64(med(a)), "batched/separate")
}
