package nn

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/lorakit/lorakit/models/safetensors"
)

func TestDenseForward(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	rows, cols, m := 5, 7, 3
	w := make([]float32, rows*cols)
	for i := range w {
		w[i] = float32(rng.NormFloat64())
	}
	x := make([]float32, m*cols)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
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
	w := make([]float32, rows*cols)
	for i := range w {
		w[i] = float32(rng.NormFloat64())
	}
	raw, _ := safetensors.Encode(safetensors.F32, w)
	d, err := NewDense(safetensors.F32, raw, rows, cols)
	if err != nil {
		t.Fatal(err)
	}
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
	x := make([]float32, m*cols)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
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
			// the 4-bit kernels round x to 15 bits of its block maximum (models/quant/x16.go): ~1e-5 of Σ|w·x|
			if math.Abs(s-float64(y[i*rows+o])) > 1e-4*mag {
				t.Fatalf("y[%d,%d] = %g want %g", i, o, y[i*rows+o], s)
			}
		}
	}
}
