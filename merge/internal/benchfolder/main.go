// Command benchfolder writes a qwen2.5-0.5b-shaped base (random bf16 weights, ~1 GB) and an r=16 adapter on all
// seven projections, for measuring `lorakit merge` (time, peak RSS) in its own process:
//
//	go run ./merge/internal/benchfolder -out /tmp/mb
//	/usr/bin/time -v lorakit merge /tmp/mb/base /tmp/mb/adapter /tmp/mb/merged
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/testmodel"
)

func main() {
	out := flag.String("out", "", "folder to write base/ and adapter/ into")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "benchfolder: -out DIR is required")
		os.Exit(2)
	}
	if err := write(*out); err != nil {
		fmt.Fprintln(os.Stderr, "benchfolder:", err)
		os.Exit(1)
	}
}

// write writes DIR/base and DIR/adapter.
func write(dir string) error {
	o := testmodel.Options{ModelType: "qwen2", Hidden: 896, Intermediate: 4864, Layers: 24, Heads: 14, KVHeads: 2,
		HeadDim: 64, Vocab: 151936, MaxPositions: 32768, Tied: true, DType: "BF16", Seed: 1, Std: 0.02}
	if err := testmodel.Write(filepath.Join(dir, "base"), o); err != nil {
		return err
	}
	a := lora.New(lora.NewConfig(16, 32, lora.DefaultTargets))
	rng := rand.New(rand.NewPCG(1, 2))
	dims := map[string][2]int{"self_attn.q_proj": {896, 896}, "self_attn.k_proj": {896, 128}, "self_attn.v_proj": {896, 128},
		"self_attn.o_proj": {896, 896}, "mlp.gate_proj": {896, 4864}, "mlp.up_proj": {896, 4864}, "mlp.down_proj": {4864, 896}}
	for l := 0; l < o.Layers; l++ {
		for sub, d := range dims {
			m := fmt.Sprintf("model.layers.%d.%s", l, sub)
			p := a.Config.NewPair(m, d[0], d[1])
			for i := range p.A {
				p.A[i] = float32(rng.NormFloat64() * 0.03)
			}
			for i := range p.B {
				p.B[i] = float32(rng.NormFloat64() * 0.001)
			}
			a.Modules[m] = p
		}
	}
	return a.Save(filepath.Join(dir, "adapter"))
}
