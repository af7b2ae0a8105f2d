package merge

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/safetensors"
	"github.com/lorakit/lorakit/models/testmodel"
)

// randomAdapter targets every linear module of m (attention and MLP) with non-zero A and B.
func randomAdapter(m *llama.Model, seed uint64, r int, alpha float64) *lora.Adapter {
	a := lora.New(lora.NewConfig(r, alpha, lora.DefaultTargets))
	rng := rand.New(rand.NewPCG(seed, 3))
	for _, name := range m.Modules() {
		if !a.Config.Targets(name) {
			continue
		}
		lin, _ := m.Linear(name)
		p := a.Config.NewPair(name, lin.In(), lin.Out())
		for i := range p.A {
			p.A[i] = float32(rng.NormFloat64() * 0.2)
		}
		for i := range p.B {
			p.B[i] = float32(rng.NormFloat64() * 0.02)
		}
		a.Modules[name] = p
	}
	return a
}

// TestMergeArchitectures merges into testmodel checkpoints of every supported family and dtype.
func TestMergeArchitectures(t *testing.T) {
	for _, o := range []testmodel.Options{
		{ModelType: "llama", DType: "F32", Tied: true, Std: 0.1},
		{ModelType: "qwen2", DType: "F32"},
		{ModelType: "qwen3", DType: "BF16", Shards: 2},
		{ModelType: "mistral", DType: "F16"},
	} {
		t.Run(fmt.Sprintf("%s-%s", o.ModelType, o.DType), func(t *testing.T) {
			o.Seed = 3
			root := t.TempDir()
			base := filepath.Join(root, "base")
			if err := testmodel.Write(base, o); err != nil {
				t.Fatal(err)
			}
			bm, closeB := loadModel(t, base)
			defer closeB()
			ad := randomAdapter(bm, 5, 4, 8)
			plain, adapted := logits(t, bm, nil), logits(t, bm, ad)
			if maxDiff(plain, adapted) < 1e-2 {
				t.Fatalf("adapter changes logits by only %g", maxDiff(plain, adapted))
			}
			out := filepath.Join(root, "out")
			res, err := Run(context.Background(), base, out, Options{Adapters: []Source{{Dir: "mem", Weight: 1, Adapter: ad}}, Verify: true})
			if err != nil {
				t.Fatal(err)
			}
			mm, closeM := loadModel(t, out)
			defer closeM()
			d := maxDiff(adapted, logits(t, mm, nil))
			bound := 1e-5
			if o.DType != "F32" {
				bound = BoundFor(safetensors.DType(o.DType), res.Verify.MaxAbsLogit)
			}
			if d > bound {
				t.Fatalf("merged vs base+adapter %g > %g", d, bound)
			}
			t.Logf("adapter effect %.3g, merged vs base+adapter %.3g (bound %.3g), max logit %.3g, shards %d", maxDiff(plain, adapted), d, bound, res.Verify.MaxAbsLogit, res.Shards)
		})
	}
}
