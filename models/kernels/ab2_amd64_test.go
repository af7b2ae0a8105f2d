//go:build amd64 && !purego

package kernels

import (
	"math/rand/v2"
	"os"
	"sort"
	"testing"
	"time"
)

// matVecBF16PWith is matVecBF16P with the 4-row kernel given.
func matVecBF16PWith(kern func(*uint16, int, *float32, int, *float32), y []float32, w []uint16, xp, x []float32, r0, r1, cols int) {
	c16 := len(xp)
	var out [4]float32
	for r := r0; r < r1; {
		nr, stride := 4, cols
		if r1-r < 4 {
			nr, stride = 1, 0
		}
		wr := w[r*cols : (r+nr-1)*cols+cols]
		kern(&wr[0], stride, &xp[0], c16, &out[0])
		for i := 0; i < nr; i++ {
			s := out[i]
			row := wr[i*cols : (i+1)*cols]
			for c := c16; c < cols; c++ {
				s += bf16ToF32(row[c]) * x[c]
			}
			y[r+i] = s
		}
		r += nr
	}
}

func TestABBF16GEMV(t *testing.T) {
	if os.Getenv("LORAKIT_KERNELS_AB") == "" {
		t.Skip("set LORAKIT_KERNELS_AB=1")
	}
	r := rand.New(rand.NewPCG(4, 4))
	for _, sh := range [][2]int{{49152, 576}, {4864, 896}} {
		rows, cols := sh[0], sh[1]
		w := toBF16(randF32(r, rows*cols))
		wf := randF32(r, rows*cols)
		x := randF32(r, cols)
		var buf []float32
		xp := permuteBF16(&buf, x)
		y := make([]float32, rows)
		var a, b, c []time.Duration
		for it := 0; it < 40; it++ {
			t0 := time.Now()
			matVecBF16PWith(matVec4BF16P, y, w, xp, x, 0, rows, cols)
			t1 := time.Now()
			matVecBF16PWith(matVec4BF16PF, y, w, xp, x, 0, rows, cols)
			t2 := time.Now()
			matVecF32(y, wf, x, 0, rows, cols)
			a, b, c = append(a, t1.Sub(t0)), append(b, t2.Sub(t1)), append(c, time.Since(t2))
		}
		med := func(d []time.Duration) float64 {
			sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
			return d[len(d)/2].Seconds()
		}
		gb := float64(rows*cols*2) / 1e9
		t.Logf("%dx%d 1 thread: bf16 old %.1f GB/s, bf16 prefetch %.1f GB/s (%.2f× old), f32 %.1f GB/s", rows, cols,
			gb/med(a), gb/med(b), med(a)/med(b), 2*gb/med(c))
	}
}

// matVecF32With is matVecF32 with the 4-row kernel given.
func matVecF32With(kern func(*float32, int, *float32, int, *float32), y, w, x []float32, r0, r1, cols int) {
	c8 := cols &^ 7
	var out [4]float32
	for r := r0; r < r1; {
		nr, stride := 4, cols
		if r1-r < 4 {
			nr, stride = 1, 0
		}
		wr := w[r*cols : (r+nr-1)*cols+cols]
		kern(&wr[0], stride, &x[0], c8, &out[0])
		for i := 0; i < nr; i++ {
			s := out[i]
			row := wr[i*cols : (i+1)*cols]
			for c := c8; c < cols; c++ {
				s += row[c] * x[c]
			}
			y[r+i] = s
		}
		r += nr
	}
}

func TestABF32GEMV(t *testing.T) {
	if os.Getenv("LORAKIT_KERNELS_AB") == "" {
		t.Skip("set LORAKIT_KERNELS_AB=1")
	}
	r := rand.New(rand.NewPCG(4, 4))
	for _, sh := range [][2]int{{49152, 576}, {4864, 896}, {1536, 576}} {
		rows, cols := sh[0], sh[1]
		wf := randF32(r, rows*cols)
		x := randF32(r, cols)
		y := make([]float32, rows)
		var a, b []time.Duration
		for it := 0; it < 40; it++ {
			t0 := time.Now()
			matVecF32With(matVec4F32, y, wf, x, 0, rows, cols)
			t1 := time.Now()
			matVecF32With(matVec4F32PF, y, wf, x, 0, rows, cols)
			a, b = append(a, t1.Sub(t0)), append(b, time.Since(t1))
		}
		med := func(d []time.Duration) float64 {
			sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
			return d[len(d)/2].Seconds()
		}
		gb := float64(rows*cols*4) / 1e9
		t.Logf("%dx%d 1 thread: f32 old %.1f GB/s, f32 prefetch %.1f GB/s (%.2f× old)", rows, cols, gb/med(a), gb/med(b), med(a)/med(b))
	}
}

func TestABF16GEMV(t *testing.T) {
	if os.Getenv("LORAKIT_KERNELS_AB") == "" {
		t.Skip("set LORAKIT_KERNELS_AB=1")
	}
	r := rand.New(rand.NewPCG(4, 4))
	for _, sh := range [][2]int{{151936, 896}, {4864, 896}, {1536, 576}, {7, 40}} {
		rows, cols := sh[0], sh[1]
		w := toF16(r, rows*cols)
		x := randF32(r, cols)
		y := make([]float32, rows)
		y2 := make([]float32, rows)
		c8 := cols &^ 7
		run := func(kern func(*uint16, int, *float32, int, *float32), y []float32) {
			var out [4]float32
			for r := 0; r+4 <= rows; r += 4 {
				kern(&w[r*cols], cols, &x[0], c8, &out[0])
				copy(y[r:r+4], out[:])
			}
		}
		var a, b []time.Duration
		for it := 0; it < 30; it++ {
			t0 := time.Now()
			run(matVec4F16, y)
			t1 := time.Now()
			run(matVec4F16PF, y2)
			a, b = append(a, t1.Sub(t0)), append(b, time.Since(t1))
		}
		for i := range y {
			if y[i] != y2[i] && !near(y[i], y2[i], float32(cols)) {
				t.Fatalf("row %d: %v vs %v", i, y[i], y2[i])
			}
		}
		med := func(d []time.Duration) float64 {
			sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
			return d[len(d)/2].Seconds()
		}
		gb := float64(rows*cols*2) / 1e9
		t.Logf("%dx%d 1 thread: f16 old %.1f GB/s, f16 prefetch %.1f GB/s (%.2f× old)", rows, cols, gb/med(a), gb/med(b), med(a)/med(b))
	}
}
