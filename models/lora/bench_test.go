package lora

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/safetensors"
)

// Qwen2.5-0.5B gate_proj with r=16: the LoRA path of one decode row, next to the bf16 base GEMV it rides on.
func benchPair(rng *rand.Rand) (*Adapter, string) {
	cfg := NewConfig(16, 32, DefaultTargets)
	a := New(cfg)
	m := "model.layers.0.mlp.gate_proj"
	p := cfg.NewPair(m, 896, 4864)
	copy(p.A, randVec(rng, len(p.A)))
	copy(p.B, randVec(rng, len(p.B)))
	a.Modules[m] = p
	return a, m
}

func BenchmarkApplyRow(b *testing.B) {
	a, m := benchPair(rand.New(rand.NewPCG(1, 1)))
	x, y := make([]float32, 896), make([]float32, 4864)
	b.ReportAllocs()
	for b.Loop() {
		a.ApplyRows(nil, m, y, x, 1, 896, 4864)
	}
}

func BenchmarkApplyRows16(b *testing.B) {
	a, m := benchPair(rand.New(rand.NewPCG(1, 1)))
	x, y := make([]float32, 16*896), make([]float32, 16*4864)
	for b.Loop() {
		a.ApplyRows(nil, m, y, x, 16, 896, 4864)
	}
}

func BenchmarkBaseGEMVBF16(b *testing.B) {
	w := make([]uint16, 896*4864)
	x, y := make([]float32, 896), make([]float32, 4864)
	for b.Loop() {
		kernels.MatVecBF16(nil, y, w, x, 4864, 896)
	}
}

// smolModules is the [in, out] of the seven projections of one SmolLM2-135M layer (30 layers).
var smolModules = [][2]int{{576, 576}, {576, 192}, {576, 192}, {576, 576}, {576, 1536}, {576, 1536}, {1536, 576}}

// BenchmarkBatchStep is the adapters' part of one decode step of the SmolLM2-135M shape: rows spread over
// rank-16 bf16 adapters on all seven projections of 30 layers, each module's segments through Batch.Apply on a
// pool of one or two threads, as llama.applyDeltas runs them. The adapters (78 MB for 8) do not fit the caches,
// so every step reads them from memory: adapter-GB/s is their bytes over the step's time. threads=1/rows=2 is one
// adapter (9.8 MB), which stays in cache between steps: the kernels' own speed. shared=true runs q, k and v (and
// gate and up) through one Batch.ApplyShared each, as llama.linearsShared does.
func BenchmarkBatchStep(b *testing.B) {
	for _, c := range []struct{ threads, rows, adapters int }{{1, 2, 1}, {1, 16, 8}, {2, 16, 8}, {2, 64, 32}} {
		for _, shared := range []bool{false, true} {
			b.Run(fmt.Sprintf("threads=%d/rows=%d/adapters=%d/shared=%v", c.threads, c.rows, c.adapters, shared), func(b *testing.B) {
				benchBatchStep(b, c.threads, c.rows, c.adapters, shared)
			})
		}
	}
}

// smolShared is the modules of smolModules that share x, in the order a layer runs them.
var smolShared = [][]int{{0, 1, 2}, {3}, {4, 5}, {6}}

func benchBatchStep(b *testing.B, threads, rows, nAdapters int, shared bool) {
	const layers, r = 30, 16
	rng := rand.New(rand.NewPCG(3, 3))
	bf := func(n int) []uint16 {
		v := make([]uint16, n)
		for i := range v {
			v[i] = safetensors.F32ToBF16(float32(rng.NormFloat64()) * 0.05)
		}
		return v
	}
	// fs[l*7+m][a]: adapter a's factors of module m of layer l
	fs := make([][]*Factors, layers*len(smolModules))
	bytes := 0
	for range nAdapters {
		for i := range fs {
			io := smolModules[i%len(smolModules)]
			f := &Factors{Layout: BF16, R: r, In: io[0], Out: io[1], Scale: 2, A16: bf(r * io[0]), Bt16: bf(r * io[1])}
			fs[i] = append(fs[i], f)
			bytes += 2 * (len(f.A16) + len(f.Bt16))
		}
	}
	x, y := make([]float32, rows*1536), make([]float32, rows*1536)
	ys := [][]float32{y, make([]float32, rows*1536), make([]float32, rows*1536)}
	segsOf := make([][]Segment, len(smolModules))
	for m := range segsOf {
		segsOf[m] = make([]Segment, nAdapters)
	}
	var ts []Target
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	pool := kernels.NewPool(threads)
	var bt Batch
	segs := make([]Segment, nAdapters)
	per := rows / nAdapters
	b.ResetTimer()
	for b.Loop() {
		if shared {
			for l := range layers {
				for _, g := range smolShared {
					ts = ts[:0]
					for k, m := range g {
						io := smolModules[m]
						for a := range nAdapters {
							segsOf[m][a] = Segment{Start: a * per, N: per, F: fs[l*len(smolModules)+m][a]}
						}
						ts = append(ts, Target{Y: ys[k][:rows*io[1]], Out: io[1], Segs: segsOf[m]})
					}
					in := smolModules[g[0]][0]
					bt.ApplyShared(pool, x[:rows*in], in, ts)
				}
			}
			continue
		}
		for i, mf := range fs {
			io := smolModules[i%len(smolModules)]
			for a := range segs {
				segs[a] = Segment{Start: a * per, N: per, F: mf[a]}
			}
			bt.Apply(pool, y[:rows*io[1]], x[:rows*io[0]], io[0], io[1], segs)
		}
	}
	ms := b.Elapsed().Seconds() * 1e3 / float64(b.N)
	b.ReportMetric(ms, "ms/step")
	b.ReportMetric(float64(bytes)/1e6, "adapter-MB")
	b.ReportMetric(float64(bytes)/(ms*1e6), "adapter-GB/s")
}
