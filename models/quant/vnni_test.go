package quant

import (
	"fmt"
	"math"
	"math/rand"
	"testing"

	"github.com/lorakit/lorakit/models/kernels"
)

// wideModes lists the chunkings the kernels run here: the AVX2 ones (0) and, on a CPU with AVX-512 VNNI, the
// VNNI ones.
func wideModes() []int {
	if k := vnniRows(); k > 0 {
		return []int{0, k}
	}
	return []int{0}
}

// withAVX512 runs f with the AVX-512 kernels on or off (the CLI's --no-avx512), restoring the setting after.
func withAVX512(on bool, f func()) {
	was := kernels.AVX512()
	kernels.SetAVX512(on)
	defer kernels.SetAVX512(was)
	f()
}

// randQ8 makes a Q8_0 weight as a GGUF file holds it: per 32-block a scale d (an f16 value) and int8 codes.
func randQ8(r *rand.Rand, rows, cols int) *Weight {
	q := &Weight{Type: Q8_0, Shape: []int{rows, cols}, BlockSize: group / 2, Packed: make([]byte, rows*cols),
		Absmax: make([]float32, rows*cols/(group/2))}
	for i := range q.Packed {
		q.Packed[i] = byte(int8(r.Intn(255) - 127))
	}
	for i := range q.Absmax {
		q.Absmax[i] = float32(r.Intn(1024)+1) / 65536 // exact in f16
	}
	return q
}

// TestRowsQ8MatchesGo runs the Q8_0 kernel against its portable twin on the same quantised x, for every
// chunk size up to vnniK.
func TestRowsQ8MatchesGo(t *testing.T) {
	if vnniRows() == 0 {
		t.Skip("no AVX-512 VNNI on this CPU (or purego): the Q8_0 kernel is the portable one")
	}
	r := rand.New(rand.NewSource(21))
	for _, cols := range []int{64, 128, 576} {
		for m := 1; m <= vnniK+1; m++ {
			rows := 7
			q := randQ8(r, rows, cols)
			x := randW(r, m*cols, 1)
			xb := getX16Order(x, m, cols, group/2, 1, nil, false, vnniRows())
			got, want := make([]float32, m*rows), make([]float32, m*rows)
			for _, c := range xb.chunks {
				rowsQ8(got[c.row0*rows:], rows, q.Packed, q.Absmax, &c, rows, cols)
				rowsQ8Go(want[c.row0*rows:], rows, q.Packed, q.Absmax, &c, rows, cols)
			}
			for i := range got {
				if math.Abs(float64(got[i]-want[i])) > 1e-5*math.Abs(float64(want[i]))+1e-4 {
					t.Fatalf("cols %d m %d y[%d]: %v vs %v", cols, m, i, got[i], want[i])
				}
			}
			x16Pool.Put(xb)
		}
	}
}

// TestKernelSweep runs MatMulT through every kernel family this CPU has (AVX2 and, where present, AVX-512 VNNI),
// for 1..vnniK+1 rows of x and several shapes and block sizes, against the float64 reference within the
// integer path's rounding bound (tol16).
func TestKernelSweep(t *testing.T) {
	r := rand.New(rand.NewSource(22))
	p := kernels.NewPool(2)
	type weight struct {
		name string
		q    *Weight
	}
	var ws []weight
	for _, sh := range [][2]int{{9, 64}, {13, 192}, {5, 576}, {16, 64}, {48, 192}, {32, 576}} { // tiled and not
		rows, cols := sh[0], sh[1]
		for _, typ := range []Type{NF4, FP4} {
			for _, bs := range []int{32, 64, 128} {
				if cols%bs != 0 {
					continue
				}
				for _, dq := range []bool{false, true} {
					q, err := Quantize4(typ, randW(r, rows*cols, 0.05), []int{rows, cols}, bs, dq)
					if err != nil {
						t.Fatal(err)
					}
					ws = append(ws, weight{fmt.Sprintf("%s/bs%d/dq=%v/%dx%d", typ, bs, dq, rows, cols), q})
				}
			}
		}
		q4, _ := Quantize4(NF4, randW(r, rows*cols, 0.05), []int{rows, cols}, 32, false)
		q4.Type, q4.Code = Q4_0, q40Code // Q4_0's levels on the same codes
		ws = append(ws, weight{fmt.Sprintf("q4_0/%dx%d", rows, cols), q4})
		q8, err := Quantize8(randW(r, rows*cols, 0.05), []int{rows, cols})
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, weight{fmt.Sprintf("int8/%dx%d", rows, cols), q8})
		ws = append(ws, weight{fmt.Sprintf("q8_0/%dx%d", rows, cols), randQ8(r, rows, cols)})
	}
	for _, avx512 := range []bool{false, true} {
		withAVX512(avx512, func() {
			for _, w := range ws {
				q := w.q
				rows, cols := q.Rows(), q.Cols()
				for _, m := range []int{1, 2, 3, 4, 5, 8, 11, 16, 17} {
					x := randW(r, m*cols, 1)
					x[cols/2] = 20 // an outlier
					y := make([]float32, m*rows)
					q.MatMulT(p, y, x, m)
					for i := 0; i < m; i++ {
						xi := x[i*cols : (i+1)*cols]
						want, mag := refMatVec(q, xi)
						checkClose(t, fmt.Sprintf("avx512=%v %s m=%d row %d", avx512, w.name, m, i), q, xi, y[i*rows:(i+1)*rows], want, mag)
					}
				}
			}
		})
	}
}

// BenchmarkKernels times MatMulT on a smollm2-135m gate_proj shape ([1536, 576]) for each kernel family, with the
// AVX-512 (VNNI) kernels and without (AVX2), for 1, 8 and 16 rows of x. Bytes are the weight's, once per call.
func BenchmarkKernels(b *testing.B) {
	r := rand.New(rand.NewSource(3))
	rows, cols := 1536, 576
	nf4, _ := Quantize4(NF4, randW(r, rows*cols, 0.05), []int{rows, cols}, 64, false)
	q4, _ := Quantize4(NF4, randW(r, rows*cols, 0.05), []int{rows, cols}, 32, false)
	q4.Type, q4.Code = Q4_0, q40Code
	i8, _ := Quantize8(randW(r, rows*cols, 0.05), []int{rows, cols})
	q8 := randQ8(r, rows, cols)
	p := kernels.NewPool(0)
	for _, w := range []struct {
		name string
		q    *Weight
	}{{"nf4", nf4}, {"q4_0", q4}, {"int8", i8}, {"q8_0", q8}} {
		for _, m := range []int{1, 8, 16} {
			for _, avx512 := range []bool{false, true} {
				x := randW(r, m*cols, 1)
				y := make([]float32, m*rows)
				b.Run(fmt.Sprintf("%s/m=%d/avx512=%v", w.name, m, avx512), func(b *testing.B) {
					withAVX512(avx512, func() {
						b.SetBytes(int64(w.q.Bytes()))
						for i := 0; i < b.N; i++ {
							w.q.MatMulT(p, y, x, m)
						}
					})
				})
			}
		}
	}
}
