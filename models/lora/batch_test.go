package lora

import (
	"math"
	"math/rand"
	"testing"

	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/safetensors"
)

// TestBatch sweeps the number of segments, their ranks and sizes (decode rows, small groups, a group of
// bigRows or more, empty and untouched segments) in each layout, with and without a pool, and compares
// Batch.Apply with the float64 product of the factors each segment stores (bf16-rounded for BF16), and with
// Factors.Apply run segment by segment.
func TestBatch(t *testing.T) {
	const in, out = 72, 40
	rng := rand.New(rand.NewSource(7))
	round := func(v []float32) []float32 {
		o := make([]float32, len(v))
		for i, f := range v {
			o[i] = safetensors.BF16ToF32(safetensors.F32ToBF16(f))
		}
		return o
	}
	pool := kernels.NewPool(2)
	var b Batch
	for _, l := range []Layout{F32, F32BT, BF16} {
		for _, sizes := range [][]int{{1}, {2, 2, 2, 2, 2, 2, 2, 2}, {1, 0, 3, 5}, {6, 1, 1}, {2, 40, 1, 3}, {33}, {4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4}} {
			for _, p := range []*kernels.Pool{nil, pool} {
				var segs []Segment
				type ref struct{ a, b []float32 }
				var refs []ref
				rows := 0
				for i, n := range sizes {
					r := []int{1, 4, 8, 16, 17}[i%5]
					_, q := randomAdapter(rng, in, out, r)
					f := q.Pack(l)
					if i%4 == 3 {
						f = nil // an adapter that does not touch this module
					}
					segs = append(segs, Segment{Start: rows, N: n, F: f})
					ra, rb := q.A, q.B
					if l == BF16 {
						ra, rb = round(q.A), round(q.B)
					}
					refs = append(refs, ref{ra, rb})
					rows += n
				}
				x, y := make([]float32, rows*in), make([]float32, rows*out)
				for i := range x {
					x[i] = float32(rng.NormFloat64())
				}
				for i := range y {
					y[i] = float32(rng.NormFloat64())
				}
				want, each := append([]float32(nil), y...), append([]float32(nil), y...)
				for i, s := range segs {
					if s.F == nil || s.N == 0 {
						continue
					}
					refApply(want[s.Start*out:(s.Start+s.N)*out], x[s.Start*in:(s.Start+s.N)*in], refs[i].a, refs[i].b, s.F.Scale, s.N, s.F.R, in, out)
					s.F.Apply(nil, each[s.Start*out:(s.Start+s.N)*out], x[s.Start*in:(s.Start+s.N)*in], s.N)
				}
				b.Apply(p, y, x, in, out, segs)
				for i := range y {
					if e := math.Abs(float64(y[i] - want[i])); e > 1e-3*(1+math.Abs(float64(want[i]))) {
						t.Fatalf("layout %d sizes %v pool=%v: y[%d]=%g, float64 %g", l, sizes, p != nil, i, y[i], want[i])
					}
					if e := math.Abs(float64(y[i] - each[i])); e > 1e-5*(1+math.Abs(float64(each[i]))) {
						t.Fatalf("layout %d sizes %v pool=%v: y[%d]=%g, segment by segment %g", l, sizes, p != nil, i, y[i], each[i])
					}
				}
			}
		}
	}
}

// TestBatchShared: ApplyShared over several modules of one x (q, k, v of different out sizes, segments of
// different sizes, some untouched) leaves each y bit for bit as Apply of that module alone, with and without a
// pool.
func TestBatchShared(t *testing.T) {
	const in = 72
	outs := []int{40, 16, 16}
	sizes := []int{2, 1, 2, 3, 2, 2, 1, 2}
	rng := rand.New(rand.NewSource(11))
	pool := kernels.NewPool(2)
	for _, l := range []Layout{F32, BF16} {
		for _, p := range []*kernels.Pool{nil, pool} {
			rows := 0
			for _, n := range sizes {
				rows += n
			}
			x := make([]float32, rows*in)
			for i := range x {
				x[i] = float32(rng.NormFloat64())
			}
			var ts []Target
			var want [][]float32
			for m, out := range outs {
				var segs []Segment
				start := 0
				for i, n := range sizes {
					_, q := randomAdapter(rng, in, out, []int{4, 8, 16}[(i+m)%3])
					f := q.Pack(l)
					if (i+m)%5 == 4 {
						f = nil
					}
					segs = append(segs, Segment{Start: start, N: n, F: f})
					start += n
				}
				y := make([]float32, rows*out)
				for i := range y {
					y[i] = float32(rng.NormFloat64())
				}
				w := append([]float32(nil), y...)
				var one Batch
				one.Apply(p, w, x, in, out, segs)
				want = append(want, w)
				ts = append(ts, Target{Y: y, Out: out, Segs: segs})
			}
			var b Batch
			b.ApplyShared(p, x, in, ts)
			for m := range ts {
				for i, v := range ts[m].Y {
					if v != want[m][i] {
						t.Fatalf("layout %d pool=%v module %d y[%d]=%g, Apply alone %g", l, p != nil, m, i, v, want[m][i])
					}
				}
			}
		}
	}
}

// TestBatchNoAllocs: a warm Batch of decode segments allocates nothing per module.
func TestBatchNoAllocs(t *testing.T) {
	const in, out = 576, 1536
	rng := rand.New(rand.NewSource(1))
	pool := kernels.NewPool(2)
	var segs []Segment
	for i := range 8 {
		_, q := randomAdapter(rng, in, out, 16)
		segs = append(segs, Segment{Start: 2 * i, N: 2, F: q.Pack(BF16)})
	}
	x, y := make([]float32, 16*in), make([]float32, 16*out)
	var b Batch
	b.Apply(pool, y, x, in, out, segs)
	if n := testing.AllocsPerRun(20, func() { b.Apply(pool, y, x, in, out, segs) }); n > 0 {
		t.Errorf("Batch.Apply of 8 segments allocates %.1f times per call", n)
	}
}

func TestBatchShapeMismatchPanics(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	_, q := randomAdapter(rng, 8, 8, 2)
	defer func() {
		if recover() == nil {
			t.Fatal("a segment of the wrong shape did not panic")
		}
	}()
	var b Batch
	b.Apply(nil, make([]float32, 16), make([]float32, 18), 9, 8, []Segment{{Start: 0, N: 2, F: q.Pack(BF16)}})
}

// BenchmarkBatchDecode is one module (576→1536, rank 16, bf16) of a decode step of 16 rows over 8 adapters,
// two rows each, next to the time to read those adapters' factors once.
func BenchmarkBatchDecode(b *testing.B) {
	const in, out, r = 576, 1536, 16
	rng := rand.New(rand.NewSource(1))
	pool := kernels.NewPool(0)
	var segs []Segment
	for i := range 8 {
		_, q := randomAdapter(rng, in, out, r)
		segs = append(segs, Segment{Start: 2 * i, N: 2, F: q.Pack(BF16)})
	}
	x, y := make([]float32, 16*in), make([]float32, 16*out)
	var bt Batch
	for b.Loop() {
		bt.Apply(pool, y, x, in, out, segs)
	}
	bytes := float64(8 * r * (in + out) * 2)
	b.ReportMetric(bytes*float64(b.N)/b.Elapsed().Seconds()/1e9, "adapter-GB/s")
}
