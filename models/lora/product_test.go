package lora

import (
	"math"
	"math/rand"
	"runtime"
	"slices"
	"testing"
	"unsafe"

	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/safetensors"
)

// refApply is y += s·B·(A·x) for every row in float64, from the f32 factors a [r, in] and b [out, r].
func refApply(y, x, a, b []float32, s float32, rows, r, in, out int) {
	for j := 0; j < rows; j++ {
		t := make([]float64, r)
		for k := range t {
			for i := 0; i < in; i++ {
				t[k] += float64(a[k*in+i]) * float64(x[j*in+i])
			}
		}
		for o := 0; o < out; o++ {
			var v float64
			for k := range t {
				v += float64(b[o*r+k]) * t[k]
			}
			y[j*out+o] += float32(float64(s) * v)
		}
	}
}

// randomAdapter is an adapter with one rank-r pair, module "m", of normal random factors and α = 2r.
func randomAdapter(rng *rand.Rand, in, out, r int) (*Adapter, *Pair) {
	cfg := NewConfig(r, float64(2*r), []string{"q_proj"})
	a := New(cfg)
	q := cfg.NewPair("m", in, out)
	for i := range q.A {
		q.A[i] = float32(rng.NormFloat64())
	}
	for i := range q.B {
		q.B[i] = float32(rng.NormFloat64())
	}
	a.Modules["m"] = q
	return a, q
}

// TestApplyLayouts checks Factors.Apply in every storage layout (reached through Pack and ApplyRows, as serving
// and generation reach it) against the float64 product of the factors it stores, for the per-row expand (few
// rows), the GEMM expand (many rows), with and without a pool, and that it does not allocate.
func TestApplyLayouts(t *testing.T) {
	const in, out, r = 40, 56, 4
	rng := rand.New(rand.NewSource(1))
	a, q := randomAdapter(rng, in, out, r)
	round := func(v []float32) []float32 {
		o := make([]float32, len(v))
		for i, f := range v {
			o[i] = safetensors.BF16ToF32(safetensors.F32ToBF16(f))
		}
		return o
	}
	a16, b16 := round(q.A), round(q.B)
	pool := kernels.NewPool(2)
	for _, l := range []Layout{F32, F32BT, BF16} {
		var d interface {
			ApplyRows(p *kernels.Pool, module string, y, x []float32, rows, in, out int)
		} = Pack(a, l)
		fa, fb := q.A, q.B
		if l == BF16 {
			fa, fb = a16, b16
		}
		if l == F32 {
			d = a
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
				refApply(want, x, fa, fb, q.Scale, rows, r, in, out)
				d.ApplyRows(p, "m", y, x, rows, in, out)
				d.ApplyRows(p, "other", y, x, rows, in, out) // not adapted: no-op
				for i := range y {
					if e := math.Abs(float64(y[i] - want[i])); e > 1e-3*(1+math.Abs(float64(want[i]))) {
						t.Fatalf("layout %d rows=%d pool=%v: y[%d]=%g, want %g", l, rows, p != nil, i, y[i], want[i])
					}
				}
			}
		}
		x, y := make([]float32, 4*in), make([]float32, 4*out)
		for _, rows := range []int{1, 4} {
			if n := testing.AllocsPerRun(50, func() { d.ApplyRows(nil, "m", y, x, rows, in, out) }); n > 0 {
				t.Errorf("layout %d: ApplyRows of %d rows allocates %.1f times per call", l, rows, n)
			}
		}
	}
}

// BenchmarkPacked times one adapter's delta on 4 decode rows of a 576→1536 linear (rank 16), single-threaded,
// in each layout.
func BenchmarkPacked(b *testing.B) {
	const in, out, r, rows = 576, 1536, 16, 4
	rng := rand.New(rand.NewSource(1))
	a, _ := randomAdapter(rng, in, out, r)
	x := make([]float32, rows*in)
	y := make([]float32, rows*out)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	for _, l := range []Layout{F32, F32BT, BF16} {
		pk := Pack(a, l)
		b.Run(map[Layout]string{F32: "f32", F32BT: "f32-bt", BF16: "bf16"}[l], func(b *testing.B) {
			for b.Loop() {
				pk.ApplyRows(nil, "m", y, x, rows, in, out)
			}
			b.ReportMetric(float64(2*rows*r*(in+out))*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// TestPackBF16Arena: Pack in BF16 puts every module's A then Bᵀ in one mapping, each on a cache line, holding the
// pair's factors rounded to bf16, and the product through them is the same as through heap copies.
func TestPackBF16Arena(t *testing.T) {
	rng := rand.New(rand.NewSource(11))
	a, _ := randomAdapter(rng, 40, 24, 4)
	for _, name := range []string{"n", "o", "p"} {
		_, q := randomAdapter(rng, 24+8*len(a.Modules), 16, 8)
		a.Modules[name] = q
	}
	pk := Pack(a, BF16)
	var prev uintptr
	for _, name := range []string{"m", "n", "o", "p"} {
		q, f := a.Modules[name], pk.Module(name)
		if f.arena == nil {
			t.Fatalf("module %s: factors not in an arena", name)
		}
		heap := q.Pack(BF16)
		if !slices.Equal(f.A16, heap.A16) || !slices.Equal(f.Bt16, heap.Bt16) {
			t.Fatalf("module %s: arena factors differ from the pair's bf16 copy", name)
		}
		pa, pb := uintptr(unsafe.Pointer(&f.A16[0])), uintptr(unsafe.Pointer(&f.Bt16[0]))
		if pa%arenaAlign != 0 || pb != pa+uintptr(alignUp(2*len(f.A16))) || (prev != 0 && pa != prev) {
			t.Fatalf("module %s: A at %#x, Bt at %#x, previous module ended at %#x", name, pa, pb, prev)
		}
		prev = pb + uintptr(alignUp(2*len(f.Bt16)))
		x := make([]float32, 3*q.In)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		y, want := make([]float32, 3*q.Out), make([]float32, 3*q.Out)
		f.Apply(nil, y, x, 3)
		heap.Apply(nil, want, x, 3)
		if !slices.Equal(y, want) {
			t.Fatalf("module %s: product through the arena %v, through the heap %v", name, y, want)
		}
	}
	runtime.KeepAlive(pk)
}
