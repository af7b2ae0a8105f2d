package train

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/safetensors"
	"github.com/lorakit/lorakit/models/testmodel"
)

// TestDoRAStepMatchesFloat64 reproduces a DoRA training step independently in float64 on a tiny qwen2 (q/k/v
// biases, which DoRA leaves unscaled): PEFT's DoRA forward is, without dropout, the decoder with every adapted
// weight replaced by (m/n)⊙(W + s·B·A), n = ‖W + s·B·A‖ per row held at its value (detached). It checks the
// loss, the gradients of A, B and the magnitudes (central differences of the float64 loss, norms fixed), one
// AdamW update, the loss after the step (norms recomputed from the new factors) and PEFT's merge of the
// trained adapter (m/‖W + s·B·A‖)⊙(W + s·B·A).
func TestDoRAStepMatchesFloat64(t *testing.T) {
	o := testmodel.Default()
	o.ModelType, o.Tied = "qwen2", false
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
	defer ck.Close()
	base, err := llama.Load(ck, cfg, llama.LoadOptions{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	net, err := NewNet(base, LoRA, LoRAOptions{Targets: []string{"all-linear"}, Rank: 2, Alpha: 4, DoRA: true, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	bw := map[string][]float64{} // the base tensors in float64
	for _, name := range ck.Names() {
		v, err := ck.Float32s(name)
		if err != nil {
			t.Fatal(err)
		}
		bw[name] = f64s(v)
	}
	// A trained-looking adapter: B non-zero, magnitudes away from their initial ‖W‖.
	rng := rand.New(rand.NewPCG(4, 5))
	idx := map[string]int{}
	for i, name := range net.Names {
		idx[name] = i
		v := vals(net.Params[i])
		switch {
		case strings.HasSuffix(name, ".lora_B.weight"):
			for j := range v {
				v[j] = float32(rng.NormFloat64() * 0.3)
			}
		case strings.HasSuffix(name, ".lora_magnitude_vector"):
			for j := range v {
				v[j] *= float32(1 + 0.3*rng.NormFloat64())
			}
		}
	}
	mods := []string{}
	for name, p := range net.Projs {
		if p.Mag == nil {
			t.Fatalf("%s: no DoRA magnitude", name)
		}
		mods = append(mods, name)
	}
	theta := func() [][]float64 {
		th := make([][]float64, len(net.Params))
		for i, p := range net.Params {
			th[i] = f64s(vals(p))
		}
		return th
	}
	// direction is W + s·B·A of module in float64 from the parameters th.
	direction := func(th [][]float64, module string) []float64 {
		p := net.Projs[module]
		a, b := th[idx[lora.KeyPrefix+module+".lora_A.weight"]], th[idx[lora.KeyPrefix+module+".lora_B.weight"]]
		v := append([]float64(nil), bw[module+".weight"]...)
		for o := 0; o < p.Out; o++ {
			for i := 0; i < p.In; i++ {
				for k := 0; k < p.R; k++ {
					v[o*p.In+i] += float64(p.Scale) * b[o*p.R+k] * a[k*p.In+i]
				}
			}
		}
		return v
	}
	norms := func(th [][]float64) map[string][]float64 {
		n := map[string][]float64{}
		for _, m := range mods {
			v, in := direction(th, m), net.Projs[m].In
			for o := 0; o < net.Projs[m].Out; o++ {
				n[m] = append(n[m], l2(v[o*in:(o+1)*in]))
			}
		}
		return n
	}
	// merged is PEFT's DoRA weight (m/n)⊙(W + s·B·A) of every module, with the norms n given.
	merged := func(th [][]float64, n map[string][]float64) map[string][]float64 {
		eff := map[string][]float64{}
		for _, m := range mods {
			v, in, mag := direction(th, m), net.Projs[m].In, th[idx[lora.KeyPrefix+m+".lora_magnitude_vector"]]
			for j := range v {
				v[j] *= mag[j/in] / n[m][j/in]
			}
			eff[m+".weight"] = v
		}
		return eff
	}
	batch := []Sample{
		{IDs: []int{5, 70, 80, 90, 100, 3}, Mask: []bool{false, true, true, true, true, false}},
		{IDs: []int{7, 8, 9, 10}, Mask: []bool{true, false, true, false}},
	}
	denom := batch[0].Targets() + batch[1].Targets()
	rc := testmodel.RefConfig{Hidden: cfg.HiddenSize, HeadDim: cfg.HeadDim, Heads: cfg.NumAttentionHeads, KVHeads: cfg.NumKeyValueHeads,
		Layers: cfg.NumHiddenLayers, RMSNormEps: cfg.RMSNormEps, InvFreq: cfg.InvFreq()}
	lossRef := func(th [][]float64, n map[string][]float64) float64 {
		eff := merged(th, n)
		tensor := func(name string) ([]float64, bool) {
			if v, ok := eff[name]; ok {
				return v, true
			}
			v, ok := bw[name]
			return v, ok
		}
		var sum float64
		for _, s := range batch {
			hs, err := testmodel.RefHiddenFrom(tensor, rc, s.IDs)
			if err != nil {
				t.Fatal(err)
			}
			for pos, h := range hs {
				if pos+1 >= len(s.IDs) || !s.Mask[pos] {
					continue
				}
				z := matvec64(bw["lm_head.weight"], h)
				mx := math.Inf(-1)
				for _, v := range z {
					mx = math.Max(mx, v)
				}
				var e float64
				for _, v := range z {
					e += math.Exp(v - mx)
				}
				sum += mx + math.Log(e) - z[s.IDs[pos+1]]
			}
		}
		return sum / float64(denom)
	}
	th0 := theta()
	n0 := norms(th0)
	sum, _, err := net.Accumulate(batch, float32(denom), 1)
	if err != nil {
		t.Fatal(err)
	}
	want := lossRef(th0, n0)
	if d := math.Abs(sum/float64(denom) - want); d > 1e-5*math.Abs(want) {
		t.Fatalf("loss %.8g, float64 DoRA forward %.8g", sum/float64(denom), want)
	}
	// Gradients against central differences of the float64 loss with the norms held (detached).
	grads := make([][]float64, len(net.Params))
	checked := 0
	for i, p := range net.Params {
		g := vals(p.Grad())
		grads[i] = make([]float64, len(g))
		for j := 0; j < len(g); j += 9 {
			v := th0[i][j]
			const h = 1e-6
			th0[i][j] = v + h
			fp := lossRef(th0, n0)
			th0[i][j] = v - h
			fm := lossRef(th0, n0)
			th0[i][j] = v
			num := (fp - fm) / (2 * h)
			grads[i][j] = num
			if math.Abs(float64(g[j])-num) > 1e-5+1e-3*math.Abs(num) {
				t.Fatalf("%s[%d]: gradient %g, float64 %g", net.Names[i], j, g[j], num)
			}
			checked++
		}
	}
	// One AdamW update (first step: w ← w·(1 − lr·λ) − lr·g/(|g| + ε)).
	const lr, wd, eps = 1e-2, 0.01, 1e-8
	if err := ApplyUpdate(net.Params, &AdamW{LR: lr, Beta1: 0.9, Beta2: 0.999, Eps: eps, WeightDecay: wd, Step: 1, ClipCoef: 1, NoDecay: net.NoDecay}); err != nil {
		t.Fatal(err)
	}
	th1 := theta()
	for i := range net.Params {
		for j := 0; j < len(th1[i]); j += 9 {
			g := grads[i][j]
			if math.Abs(g) < 1e-4 { // the sign of a vanishing gradient is rounding
				continue
			}
			w1 := th0[i][j]*(1-lr*wd) - lr*g/(math.Abs(g)+eps)
			if math.Abs(th1[i][j]-w1) > 1e-6 {
				t.Fatalf("%s[%d] after the step: %g, float64 AdamW %g", net.Names[i], j, th1[i][j], w1)
			}
		}
	}
	// The next forward uses the norms of the new factors.
	s1, c1, err := net.Loss(batch)
	if err != nil {
		t.Fatal(err)
	}
	want1 := lossRef(th1, norms(th1))
	if d := math.Abs(s1/float64(c1) - want1); d > 1e-5*math.Abs(want1) || math.Abs(want1-want) < 1e-4 {
		t.Fatalf("loss after the step %.8g, float64 %.8g (before %.8g)", s1/float64(c1), want1, want)
	}
	// PEFT's merge of the trained adapter.
	ad := net.Adapter()
	eff := merged(th1, norms(th1))
	for _, m := range mods {
		w := f32s(bw[m+".weight"])
		ad.Modules[m].MergeDoRA(nil, w)
		ref := eff[m+".weight"]
		for j, v := range w {
			if math.Abs(float64(v)-ref[j]) > 1e-5*(1+math.Abs(ref[j])) {
				t.Fatalf("%s merged[%d] = %g, float64 PEFT merge %g", m, j, v, ref[j])
			}
		}
	}
	t.Logf("loss %.6f → %.6f; %d gradient entries checked", want, want1, checked)
}

func f64s(v []float32) []float64 {
	o := make([]float64, len(v))
	for i, x := range v {
		o[i] = float64(x)
	}
	return o
}

func f32s(v []float64) []float32 {
	o := make([]float32, len(v))
	for i, x := range v {
		o[i] = float32(x)
	}
	return o
}

func l2(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x * x
	}
	return math.Sqrt(s)
}

func matvec64(w, x []float64) []float64 {
	y := make([]float64, len(w)/len(x))
	for o := range y {
		for i, v := range x {
			y[o] += w[o*len(x)+i] * v
		}
	}
	return y
}
