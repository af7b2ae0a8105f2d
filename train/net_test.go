package train

import (
	"math"
	"testing"

	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/safetensors"
	"github.com/lorakit/lorakit/models/testmodel"
)

func loadTestModel(t *testing.T, o testmodel.Options) *llama.Model {
	t.Helper()
	dir := t.TempDir()
	if err := testmodel.Write(dir, o); err != nil {
		t.Fatal(err)
	}
	cfg, err := llama.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := safetensors.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ck.Close() })
	m, err := llama.Load(ck, cfg, llama.LoadOptions{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func baseLogits(t *testing.T, m *llama.Model, ids []int, ad llama.Delta) []float32 {
	t.Helper()
	out, err := m.Forward([]llama.Seq{{Tokens: ids, AllLogits: true, Adapter: ad}})
	if err != nil {
		t.Fatal(err)
	}
	var flat []float32
	for _, row := range out[0] {
		flat = append(flat, row...)
	}
	return flat
}

func maxDiff(a, b []float32) float64 {
	d := 0.0
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

func TestZeroBIsBaseThenOneStepDiffers(t *testing.T) {
	for _, mt := range []string{"llama", "qwen2", "qwen3"} {
		t.Run(mt, func(t *testing.T) {
			o := testmodel.Default()
			o.ModelType = mt
			if mt == "qwen3" {
				o.HeadDim = 8
			}
			base := loadTestModel(t, o)
			net, err := NewNet(base, LoRA, LoRAOptions{Targets: []string{"all-linear"}, Rank: 4, Alpha: 8, Seed: 1})
			if err != nil {
				t.Fatal(err)
			}
			ids := []int{5, 70, 80, 90, 100, 3, 44, 12}
			want := baseLogits(t, base, ids, nil)
			ad := net.Adapter()
			if got := baseLogits(t, base, ids, ad); maxDiff(got, want) != 0 {
				t.Fatalf("inference with the B=0 adapter differs from the base by %g", maxDiff(got, want))
			}
			got, err := net.Logits(ids)
			if err != nil {
				t.Fatal(err)
			}
			if d := maxDiff(got, want); d > 1e-4 {
				t.Fatalf("training forward differs from inference by %g", d)
			}
			// One optimizer step moves B, and then the logits.
			s := Sample{IDs: ids, Mask: []bool{false, false, true, true, true, true, true, false}}
			if _, _, err := net.Accumulate([]Sample{s}, float32(s.Targets()), 1); err != nil {
				t.Fatal(err)
			}
			opt := &AdamW{LR: 1e-2, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, Step: 1, ClipCoef: 1, NoDecay: net.NoDecay}
			if err := ApplyUpdate(net.Params, opt); err != nil {
				t.Fatal(err)
			}
			after, _ := net.Logits(ids)
			if d := maxDiff(after, got); d == 0 {
				t.Fatal("logits unchanged after one step")
			}
			// The trained adapter, applied by the inference engine, matches the training forward.
			if d := maxDiff(baseLogits(t, base, ids, net.Adapter()), after); d > 1e-4 {
				t.Fatalf("adapter at inference differs from training forward by %g", d)
			}
		})
	}
}
