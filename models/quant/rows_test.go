package quant

import (
	"math"
	"math/rand"
	"testing"
)

// TestDequantBlocksMatchesGo sweeps block sizes and block counts through the dispatching block dequantiser
// (the AVX2 assembly where it runs) against the portable one: a table lookup times one scale, so the two must
// agree bit for bit.
func TestDequantBlocksMatchesGo(t *testing.T) {
	r := rand.New(rand.NewSource(21))
	for _, typ := range []Type{NF4, FP4} {
		for _, bs := range []int{32, 64, 128, 256, 512} {
			for _, nb := range []int{1, 2, 3, 7, 16} {
				q, err := Quantize4(typ, randW(r, nb*bs, 1), []int{1, nb * bs}, bs, false)
				if err != nil {
					t.Fatal(err)
				}
				got, want := make([]float32, nb*bs+1), make([]float32, nb*bs+1)
				got[nb*bs], want[nb*bs] = 7, 7 // past the end: untouched
				dequantBlocks(got, q.Packed, q.Absmax, &q.Code, bs)
				dequantBlocksGo(want, q.Packed, q.Absmax, &q.Code, bs)
				for i := range got {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("%v bs %d nb %d [%d]: %v, portable %v", typ, bs, nb, i, got[i], want[i])
					}
				}
			}
		}
	}
}

// TestRows8MatchesGo sweeps rows and columns (multiples of 32 for the AVX2 kernel, and others that fall back)
// through the dispatching LLM.int8 row kernel against the portable one and the float64 sum.
func TestRows8MatchesGo(t *testing.T) {
	r := rand.New(rand.NewSource(22))
	for _, rows := range []int{1, 2, 5, 16} {
		for _, cols := range []int{8, 32, 64, 96, 100, 576} {
			packed := make([]byte, rows*cols)
			for i := range packed {
				packed[i] = byte(r.Intn(256))
			}
			scales, x := randW(r, rows, 1), randW(r, cols, 1)
			got, want := make([]float32, rows), make([]float32, rows)
			rows8(got, packed, scales, x, cols)
			rows8Go(want, packed, scales, x, cols)
			for i := range got {
				var exact, mag float64
				for c := 0; c < cols; c++ {
					p := float64(int8(packed[i*cols+c])) * float64(x[c])
					exact += p
					mag += math.Abs(p)
				}
				exact *= float64(scales[i])
				mag *= math.Abs(float64(scales[i]))
				tol := 1e-6 * (mag + 1)
				if math.Abs(float64(got[i])-exact) > tol || math.Abs(float64(got[i]-want[i])) > tol {
					t.Fatalf("rows %d cols %d y[%d]: %v, portable %v, float64 %v", rows, cols, i, got[i], want[i], exact)
				}
			}
		}
	}
}
