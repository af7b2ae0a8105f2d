package serve

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/testmodel"
	"github.com/lorakit/lorakit/serve/backend"
	"github.com/lorakit/lorakit/serve/engine"
)

// BenchmarkDecodeStep times one 32-row decode step (what the engine runs per token) on the SmolLM2-135M shape
// (8 layers to keep it short), base only versus rows spread over 8 rank-16 adapters:
//
//	go test ./serve -run XXX -bench DecodeStep -benchtime 20x   (LORAKIT_BENCH_THREADS=1 for pure compute cost)
func BenchmarkDecodeStep(b *testing.B) {
	dir := b.TempDir()
	o := testmodel.Options{ModelType: "llama", Hidden: 576, Intermediate: 1536, Layers: 8, Heads: 9, KVHeads: 3,
		Vocab: 49152, MaxPositions: 2048, Tied: true, DType: "BF16", Seed: 1, Std: 0.02}
	if err := testmodel.Write(filepath.Join(dir, "model"), o); err != nil {
		b.Fatal(err)
	}
	threads, _ := strconv.Atoi(os.Getenv("LORAKIT_BENCH_THREADS"))
	m, err := models.Load(filepath.Join(dir, "model"), models.LoadOptions{Threads: threads})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	be := backend.FromModel(m)
	var deltas []engine.Delta
	for i := 0; i < 8; i++ {
		p := filepath.Join(dir, fmt.Sprintf("a%d", i))
		writeRandomAdapter16(b, m, p, int64(i))
		d, err := be.LoadAdapter(p)
		if err != nil {
			b.Fatal(err)
		}
		deltas = append(deltas, d)
	}
	if os.Getenv("LORAKIT_BENCH_AB") != "" {
		decodeStepAB(b, be, deltas)
		return
	}
	for _, mixed := range []bool{false, true} {
		name := "base"
		if mixed {
			name = "8adapters"
		}
		b.Run(name, func(b *testing.B) {
			rows := make([]engine.Row, 32)
			for i := range rows {
				rows[i] = engine.Row{State: be.NewState(2048)}
				if mixed {
					rows[i].Adapter = deltas[i%8]
				}
				prompt := make([]int, 40)
				for j := range prompt {
					prompt[j] = (i*40 + j) % 300
				}
				rows[i].Tokens = prompt
			}
			// grouped by adapter, as the engine sends them
			if mixed {
				engineOrder(rows)
			}
			if _, err := be.Forward(rows); err != nil {
				b.Fatal(err)
			}
			for i := range rows {
				rows[i].Tokens = []int{7}
			}
			b.ResetTimer()
			cpu0 := cpuSeconds()
			for n := 0; n < b.N; n++ {
				if _, err := be.Forward(rows); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/step")
			b.ReportMetric(1000*(cpuSeconds()-cpu0)/float64(b.N), "cpu-ms/step")
		})
	}
}

// engineOrder groups rows by adapter the way the engine does (stable).
func engineOrder(rows []engine.Row) {
	out := make([]engine.Row, 0, len(rows))
	done := make([]bool, len(rows))
	for i := range rows {
		if done[i] {
			continue
		}
		for j := i; j < len(rows); j++ {
			if !done[j] && rows[j].Adapter == rows[i].Adapter {
				out = append(out, rows[j])
				done[j] = true
			}
		}
	}
	copy(rows, out)
}

// decodeStepAB alternates base-only and mixed-adapter 32-row decode steps in one process (LORAKIT_BENCH_AB=1,
// LORAKIT_BENCH_ROUNDS rounds of 5 steps each, default 5) and reports the medians of wall and process-CPU time
// per step and their mixed/base ratios, which survive a shared machine better than separate runs.
func decodeStepAB(b *testing.B, be Model, deltas []engine.Delta) {
	rounds, _ := strconv.Atoi(os.Getenv("LORAKIT_BENCH_ROUNDS"))
	if rounds <= 0 {
		rounds = 5
	}
	const steps = 5
	nAdapters, _ := strconv.Atoi(os.Getenv("LORAKIT_BENCH_ADAPTERS")) // rows spread over this many adapters (8)
	if nAdapters <= 0 || nAdapters > len(deltas) {
		nAdapters = len(deltas)
	}
	mk := func(mixed bool) []engine.Row {
		rows := make([]engine.Row, 32)
		for i := range rows {
			rows[i] = engine.Row{State: be.NewState(2048)}
			if mixed {
				rows[i].Adapter = deltas[i%nAdapters]
			}
			prompt := make([]int, 40)
			for j := range prompt {
				prompt[j] = (i*40 + j) % 300
			}
			rows[i].Tokens = prompt
		}
		if mixed {
			engineOrder(rows)
		}
		if _, err := be.Forward(rows); err != nil {
			b.Fatal(err)
		}
		for i := range rows {
			rows[i].Tokens = []int{7}
		}
		return rows
	}
	sets := [2][]engine.Row{mk(false), mk(true)}
	var wall, cpu [2][]float64
	for n := 0; n < rounds; n++ {
		for mode, rows := range sets {
			for i := range rows {
				rows[i].State.(interface{ Reset() }).Reset()
			}
			for i := range rows { // restore a 40-token context so every round decodes at the same length
				prompt := make([]int, 40)
				for j := range prompt {
					prompt[j] = (i*40 + j) % 300
				}
				rows[i].Tokens = prompt
			}
			if _, err := be.Forward(rows); err != nil {
				b.Fatal(err)
			}
			for i := range rows {
				rows[i].Tokens = []int{7}
			}
			t0, c0 := time.Now(), cpuSeconds()
			for s := 0; s < steps; s++ {
				if _, err := be.Forward(rows); err != nil {
					b.Fatal(err)
				}
			}
			wall[mode] = append(wall[mode], 1000*time.Since(t0).Seconds()/steps)
			cpu[mode] = append(cpu[mode], 1000*(cpuSeconds()-c0)/steps)
		}
	}
	med := func(v []float64) float64 { v = append([]float64(nil), v...); sort.Float64s(v); return v[len(v)/2] }
	b.Logf("32-row decode step, %d rounds × %d steps alternating: base wall %.1f ms cpu %.1f ms; mixed wall %.1f ms cpu %.1f ms; base/mixed throughput ratio wall %.3f cpu %.3f",
		rounds, steps, med(wall[0]), med(cpu[0]), med(wall[1]), med(cpu[1]), med(wall[0])/med(wall[1]), med(cpu[0])/med(cpu[1]))
	b.ReportMetric(med(wall[0])/med(wall[1]), "mixed/base-wall")
	b.ReportMetric(med(cpu[0])/med(cpu[1]), "mixed/base-cpu")
}
