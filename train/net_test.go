package train

import (
	"math"
	"testing"

	spnn "github.com/nlpodyssey/spago/nn"

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

// TestNetGradient checks the whole graph (every op composed) against central
// differences of the f32 loss for a sample of parameter entries.
func TestNetGradient(t *testing.T) {
	for _, method := range []Method{LoRA, Full} {
		t.Run(string(method), func(t *testing.T) {
			o := testmodel.Default()
			o.ModelType = "qwen3"
			o.HeadDim = 8
			base := loadTestModel(t, o)
			net, err := NewNet(base, method, LoRAOptions{Targets: []string{"all-linear"}, Rank: 2, Alpha: 4, Seed: 3})
			if err != nil {
				t.Fatal(err)
			}
			for i, p := range net.Params { // make B non-zero so every path carries gradient
				v := vals(p)
				for j := range v {
					if v[j] == 0 {
						v[j] = float32(math.Sin(float64(i*131+j))) * 0.05
					}
				}
			}
			batch := []Sample{
				{IDs: []int{5, 70, 80, 90, 100, 3}, Mask: []bool{false, true, true, true, true, false}},
				{IDs: []int{7, 8, 9, 10}, Mask: []bool{true, false, true, false}},
			}
			denom := float32(batch[0].Targets() + batch[1].Targets())
			if _, _, err := net.Accumulate(batch, denom, 1); err != nil {
				t.Fatal(err)
			}
			loss := func() float64 {
				s, c, err := net.Loss(batch)
				if err != nil {
					t.Fatal(err)
				}
				return s / float64(c)
			}
			checked := 0
			for i, p := range net.Params {
				if !p.HasGrad() {
					t.Fatalf("%s: no gradient", net.Names[i])
				}
				g := vals(p.Grad())
				v := vals(p)
				for _, j := range []int{0, len(v) / 2, len(v) - 1} {
					old := v[j]
					h := float32(1e-2)
					v[j] = old + h
					fp := loss()
					v[j] = old - h
					fm := loss()
					v[j] = old
					num := (fp - fm) / float64(2*h)
					if math.Abs(num-float64(g[j])) > 2e-3+0.05*math.Abs(num) {
						t.Errorf("%s[%d]: grad %g, finite difference %g", net.Names[i], j, g[j], num)
					}
					checked++
				}
			}
			t.Logf("%d entries checked", checked)
		})
	}
}

// TestAdamWMatchesPyTorch checks two updates against torch.optim.AdamW's formulas, computed in float64.
func TestAdamWMatchesPyTorch(t *testing.T) {
	w0 := []float32{0.5, -1, 2}
	grads := [][]float32{{0.1, -0.2, 0.3}, {-0.05, 0.4, 0.0}}
	p := spnn.NewParam(newMat(3, 1, append([]float32(nil), w0...)))
	const lr, b1, b2, eps, wd = 0.01, 0.9, 0.999, 1e-8, 0.1
	o := &AdamW{LR: lr, Beta1: b1, Beta2: b2, Eps: eps, WeightDecay: wd, ClipCoef: 1}
	w := []float64{0.5, -1, 2}
	m, v := make([]float64, 3), make([]float64, 3)
	for s, g := range grads {
		p.AccGrad(newMat(3, 1, g))
		o.Step = s + 1
		if err := ApplyUpdate([]*spnn.Param{p}, o); err != nil {
			t.Fatal(err)
		}
		for i := range w {
			gi := float64(g[i])
			w[i] *= 1 - lr*wd
			m[i] = b1*m[i] + (1-b1)*gi
			v[i] = b2*v[i] + (1-b2)*gi*gi
			mh := m[i] / (1 - math.Pow(b1, float64(s+1)))
			vh := v[i] / (1 - math.Pow(b2, float64(s+1)))
			w[i] -= lr * mh / (math.Sqrt(vh) + eps)
		}
	}
	got := vals(p)
	for i := range w {
		if math.Abs(float64(got[i])-w[i]) > 1e-6 {
			t.Fatalf("w[%d] = %g, torch AdamW %g", i, got[i], w[i])
		}
	}
}
