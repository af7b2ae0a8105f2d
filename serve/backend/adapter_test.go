package backend

import (
	"math"
	"math/rand"
	"testing"

	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/safetensors"
)

// TestServedAdapterMatchesPair checks the serving layout (A, Bᵀ) against lora.Pair.Apply for the per-row Axpy
// expand (few rows), the GEMM expand (many rows), with and without a pool, f32 and bf16 storage.
func TestServedAdapterMatchesPair(t *testing.T) {
	const in, out, r = 40, 56, 4
	rng := rand.New(rand.NewSource(1))
	cfg := lora.NewConfig(r, 8, []string{"q_proj"})
	a := lora.New(cfg)
	q := cfg.NewPair("m", in, out)
	for i := range q.A {
		q.A[i] = float32(rng.NormFloat64())
	}
	for i := range q.B {
		q.B[i] = float32(rng.NormFloat64())
	}
	a.Modules["m"] = q
	round := func(v []float32) []float32 {
		o := make([]float32, len(v))
		for i, f := range v {
			o[i] = safetensors.BF16ToF32(safetensors.F32ToBF16(f))
		}
		return o
	}
	q16 := &lora.Pair{A: round(q.A), B: round(q.B), R: r, In: in, Out: out, Scale: q.Scale}
	pool := kernels.NewPool(2)
	for _, bf16 := range []bool{false, true} {
		sa := newServedAdapter(a, bf16)
		ref := q
		if bf16 {
			ref = q16
		}
		for _, rows := range []int{1, 3, 4, 31, 32, 70} {
			for _, p := range []*kernels.Pool{nil, pool} {
				x := make([]float32, rows*in)
				y := make([]float32, rows*out)
				for i := range x {
					x[i] = float32(rng.NormFloat64())
				}
				for i := range y {
					y[i] = float32(rng.NormFloat64())
				}
				want := append([]float32(nil), y...)
				ref.Apply(nil, want, x, in, out)
				sa.ApplyRows(p, "m", y, x, rows, in, out)
				sa.ApplyRows(p, "other", y, x, rows, in, out) // not adapted: no-op
				for i := range y {
					if d := math.Abs(float64(y[i] - want[i])); d > 1e-3*(1+math.Abs(float64(want[i]))) {
						t.Fatalf("bf16=%v rows=%d pool=%v: y[%d]=%g, want %g", bf16, rows, p != nil, i, y[i], want[i])
					}
				}
			}
		}
		x := make([]float32, in)
		y1, y2 := make([]float32, out), make([]float32, out)
		x[3] = 1
		sa.Apply("m", y1, x, in, out)
		ref.Apply(nil, y2, x, in, out)
		for i := range y1 {
			if d := math.Abs(float64(y1[i] - y2[i])); d > 1e-3*(1+math.Abs(float64(y2[i]))) {
				t.Fatalf("Apply bf16=%v: y[%d]=%g, want %g", bf16, i, y1[i], y2[i])
			}
		}
		if n := testing.AllocsPerRun(50, func() { sa.ApplyRows(nil, "m", y1, x, 1, in, out) }); n > 0 {
			t.Errorf("bf16=%v: ApplyRows allocates %.1f times per call", bf16, n)
		}
	}
}

// BenchmarkServedAdapter times one adapter's delta on 4 decode rows of a 576→1536 linear (rank 16), single-threaded.
func BenchmarkServedAdapter(b *testing.B) {
	const in, out, r, rows = 576, 1536, 16, 4
	rng := rand.New(rand.NewSource(1))
	cfg := lora.NewConfig(r, 32, []string{"up_proj"})
	a := lora.New(cfg)
	q := cfg.NewPair("m", in, out)
	for i := range q.A {
		q.A[i] = float32(rng.NormFloat64())
	}
	for i := range q.B {
		q.B[i] = float32(rng.NormFloat64())
	}
	a.Modules["m"] = q
	x := make([]float32, rows*in)
	y := make([]float32, rows*out)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	for _, bf16 := range []bool{false, true} {
		sa := newServedAdapter(a, bf16)
		name := map[bool]string{false: "f32", true: "bf16"}[bf16]
		b.Run(name, func(b *testing.B) {
			for n := 0; n < b.N; n++ {
				sa.ApplyRows(nil, "m", y, x, rows, in, out)
			}
			b.ReportMetric(float64(2*rows*r*(in+out))*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
		b.Run(name+"-pair", func(b *testing.B) {
			for n := 0; n < b.N; n++ {
				q.Apply(nil, y, x, in, out)
			}
			b.ReportMetric(float64(2*rows*r*(in+out))*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
