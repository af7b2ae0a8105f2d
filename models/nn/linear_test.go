package nn

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/safetensors"
)

// normals draws n standard normal values.
func normals(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return v
}

// f32Dense is a float32 Dense of w ([rows, cols]).
func f32Dense(t *testing.T, w []float32, rows, cols int) *Dense {
	t.Helper()
	raw, _ := safetensors.Encode(safetensors.F32, w)
	d, err := NewDense(safetensors.F32, raw, rows, cols)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDenseForward(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	rows, cols, m := 5, 7, 3
	w := normals(rng, rows*cols)
	x := normals(rng, m*cols)
	bias := []float32{1, 2, 3, 4, 5}
	for _, dt := range []safetensors.DType{safetensors.F32, safetensors.BF16, safetensors.F16, safetensors.F64} {
		raw, err := safetensors.Encode(dt, w)
		if err != nil {
			t.Fatal(err)
		}
		// misaligned copy of the same bytes exercises the copying path
		buf := make([]byte, len(raw)+1)
		copy(buf[1:], raw)
		for _, r := range [][]byte{raw, buf[1:]} {
			d, err := NewDense(dt, r, rows, cols)
			if err != nil {
				t.Fatal(err)
			}
			d.Bias = bias
			wf := d.ToF32()
			for _, mm := range []int{1, m} {
				y := make([]float32, mm*rows)
				d.Forward(nil, y, x, mm)
				for i := range mm {
					for o := range rows {
						var s float64
						for c := range cols {
							s += float64(wf[o*cols+c]) * float64(x[i*cols+c])
						}
						s += float64(bias[o])
						if math.Abs(s-float64(y[i*rows+o])) > 1e-4 {
							t.Fatalf("%s m=%d y[%d,%d] = %g want %g", dt, mm, i, o, y[i*rows+o], s)
						}
					}
				}
			}
			tol := 1e-2
			if dt == safetensors.F32 || dt == safetensors.F64 {
				tol = 0
			}
			row := make([]float32, cols)
			d.Row(2, row)
			for c := range cols {
				if math.Abs(float64(row[c]-w[2*cols+c])) > tol*math.Abs(float64(w[2*cols+c]))+1e-7 {
					t.Fatalf("%s row: %g vs %g", dt, row[c], w[2*cols+c])
				}
			}
		}
	}
	if _, err := NewDense(safetensors.F32, make([]byte, 10), 2, 2); err == nil {
		t.Fatal("bad length accepted")
	}
	if _, err := NewDense(safetensors.I32, make([]byte, 16), 2, 2); err == nil {
		t.Fatal("int dtype accepted")
	}
}

func TestQuantized(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	rows, cols, m := 8, 128, 3
	w := normals(rng, rows*cols)
	d := f32Dense(t, w, rows, cols)
	d.Bias = make([]float32, rows)
	d.Bias[3] = 5
	q, err := Quantize(d, "nf4", true)
	if err != nil {
		t.Fatal(err)
	}
	if q.In() != cols || q.Out() != rows {
		t.Fatal("shape")
	}
	deq := q.ToF32()
	x := normals(rng, m*cols)
	y := make([]float32, m*rows)
	q.Forward(nil, y, x, m)
	for i := range m {
		for o := range rows {
			var s, mag float64
			for c := range cols {
				p := float64(deq[o*cols+c]) * float64(x[i*cols+c])
				s += p
				mag += math.Abs(p)
			}
			s += float64(d.Bias[o])
			// rows that do not tile run the 15-bit path (x rounded to 15 bits of its block maximum,
			// models/quant/x16.go): ~1e-5 of Σ|w·x|; TestQuantizedTiled covers the dot kernels
			if math.Abs(s-float64(y[i*rows+o])) > 1e-4*mag {
				t.Fatalf("y[%d,%d] = %g want %g", i, o, y[i*rows+o], s)
			}
		}
	}
}

// TestQuantizedTiled is TestQuantized on a shape whose rows tile (32 × 256), so that the dot kernels run it (x
// rounded to int8 per 32 values, the NF4 levels to bytes: see models/quant/dot8.go) rather than the 15-bit path;
// Compact succeeding shows they do. Each output must be within the rounding those kernels do — per product at most
// half a level step (absmax/126, levels of ±63 since session 10) times |x| plus x's half step (its 32-block's
// max/254) times |w| — of the float64 product of the dequantised weights, and of bitsandbytes' way (dequantise
// the weight, multiply in f32); and on average under 1e-3 of Σ|w·x| from float64. Measured (AVX2; the AVX-512
// VNNI dot kernels give the same bits): at most 3.4e-3 of Σ|w·x|, 9.8e-4 on average (2.5e-3 and 6.3e-4 with
// levels of ±127), 0.09 of the stated bound at worst. The 15-bit path keeps ~1e-5 (TestQuantized).
func TestQuantizedTiled(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const rows, cols, m = 32, 256, 4
	w := normals(rng, rows*cols)
	d := f32Dense(t, w, rows, cols)
	q, err := Quantize(d, "nf4", false)
	if err != nil {
		t.Fatal(err)
	}
	deq := q.ToF32()
	x := normals(rng, m*cols)
	yf32 := make([]float32, m*rows) // bitsandbytes' way: dequantised weight, f32 product
	dd := f32Dense(t, deq, rows, cols)
	dd.Forward(nil, yf32, x, m)
	if !q.Q.Compact() {
		t.Skip("the dot kernels do not run this weight here (a purego build)")
	}
	y := make([]float32, m*rows)
	q.Forward(nil, y, x, m)
	var worst, mean, worstFrac float64
	for i := range m {
		for o := range rows {
			var s, mag, bound float64
			for b := 0; b < cols; b += 32 {
				var xmax float64
				for c := b; c < b+32; c++ {
					xmax = math.Max(xmax, math.Abs(float64(x[i*cols+c])))
				}
				for c := b; c < b+32; c++ {
					wv, xv := float64(deq[o*cols+c]), float64(x[i*cols+c])
					s += wv * xv
					mag += math.Abs(wv * xv)
					absmax := float64(q.Q.BlockAbsmax((o*cols + c) / q.Q.BlockSize))
					bound += absmax/126*(math.Abs(xv)+xmax/254) + math.Abs(wv)*xmax/254
				}
			}
			bound += 1e-6 * mag // float32 sums
			got := float64(y[i*rows+o])
			for _, ref := range []struct {
				name string
				v    float64
			}{{"float64", s}, {"dequantised f32", float64(yf32[i*rows+o])}} {
				if e := math.Abs(got - ref.v); e > bound {
					t.Fatalf("y[%d,%d] = %g, %s %g: error %.3g over the bound %.3g", i, o, got, ref.name, ref.v, e, bound)
				}
			}
			e := math.Abs(got - s)
			worst, mean, worstFrac = math.Max(worst, e/mag), mean+e/mag/float64(m*rows), math.Max(worstFrac, e/bound)
		}
	}
	if mean > 1e-3 {
		t.Errorf("mean error %.2g of Σ|w·x| vs float64, want under 1e-3", mean)
	}
	t.Logf("error of Σ|w·x| vs float64: worst %.2g, mean %.2g; worst fraction of the bound %.2f", worst, mean, worstFrac)
}

// TestForwardSharedDense: q, k and v shapes (with a bias on one) of f32, bf16 and f16 weights through
// ForwardShared give each layer's own Forward bit for bit, for one row (kernels.MatVecs) and for three and
// eight (kernels.MatMulsT), with the pool and without.
func TestForwardSharedDense(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	const cols = 192 // 128 rows × 192 columns: past MatVecs' inline threshold, so the pool splits the pass
	rows := []int{64, 32, 32}
	for _, dt := range []safetensors.DType{safetensors.F32, safetensors.BF16, safetensors.F16} {
		lins := make([]Linear, len(rows))
		for i, r := range rows {
			raw, _ := safetensors.Encode(dt, normals(rng, r*cols))
			d, err := NewDense(dt, raw, r, cols)
			if err != nil {
				t.Fatal(err)
			}
			if i == 1 {
				d.Bias = normals(rng, r)
			}
			lins[i] = d
		}
		for _, p := range []*kernels.Pool{nil, kernels.NewPool(2)} {
			for _, m := range []int{1, 3, 8} {
				x := normals(rng, m*cols)
				ys, want := make([][]float32, len(rows)), make([][]float32, len(rows))
				for i, r := range rows {
					ys[i], want[i] = make([]float32, m*r), make([]float32, m*r)
					lins[i].Forward(p, want[i], x, m)
				}
				var jobs []kernels.MatVecJob
				ForwardShared(p, &jobs, ys, lins, x, m)
				for i := range ys {
					for j := range ys[i] {
						if ys[i][j] != want[i][j] {
							t.Fatalf("%s m=%d layer %d [%d]: %v, alone %v", dt, m, i, j, ys[i][j], want[i][j])
						}
					}
				}
			}
		}
	}
}
