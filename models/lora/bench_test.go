package lora

import (
	"math/rand/v2"
	"testing"

	"github.com/lorakit/lorakit/models/kernels"
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
