package train

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nlpodyssey/spago/mat"

	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/nn"
	"github.com/lorakit/lorakit/models/quant"
	"github.com/lorakit/lorakit/models/safetensors"
	"github.com/lorakit/lorakit/models/testmodel"
)

// refDoRALinear is PEFT's DoRA forward in float64 for one projection: with x̃ = x⊙keep (keep nil: no dropout),
// n = ‖W + s·B₀·A₀‖ from the unperturbed factors a0, b0 (detached), g = m/n,
// y = W·x + b + (g − 1)⊙(W·x̃) + g⊙(s·B·A·x̃).
func refDoRALinear(x, w, bias, a, b, mag []float64, a0, b0 []float32, keep []float32, s float64, m, in, out, r int) []float64 {
	n := make([]float64, out)
	for o := 0; o < out; o++ {
		var ss float64
		for i := 0; i < in; i++ {
			v := w[o*in+i]
			for k := 0; k < r; k++ {
				v += s * float64(b0[o*r+k]) * float64(a0[k*in+i])
			}
			ss += v * v
		}
		n[o] = math.Sqrt(ss)
	}
	xd := append([]float64(nil), x...)
	if keep != nil {
		for i := range xd {
			xd[i] *= float64(keep[i])
		}
	}
	base, wxd := matmulT(x, w, m, out, in), matmulT(xd, w, m, out, in)
	lo := matmulT(matmulT(xd, a, m, r, in), b, m, out, r)
	y := make([]float64, m*out)
	for j := 0; j < m; j++ {
		for o := 0; o < out; o++ {
			g := mag[o] / n[o]
			k := j*out + o
			y[k] = base[k] + (g-1)*wxd[k] + g*s*lo[k]
			if bias != nil {
				y[k] += bias[o]
			}
		}
	}
	return y
}

// dropoutKeep is the keep-scale mask linearFn draws for projection i with seed (white-box: the same generator).
func dropoutKeep(seed uint64, i int, p float32, n int) []float32 {
	rng := rand.New(rand.NewPCG(seed, uint64(i)+1))
	keep := float32(1 / (1 - float64(p)))
	k := make([]float32, n)
	for j := range k {
		if rng.Float32() >= p {
			k[j] = keep
		}
	}
	return k
}

// TestLinearDoRAGrad checks the DoRA projection (beside a plain LoRA one sharing the input, and alone) on dense
// f32 with a bias, bf16 and NF4 bases, with and without dropout: the forward against PEFT's formula in float64
// and the gradients of x, A, B and the magnitude against central finite differences of it, the weight norm held
// at its value (detached, as PEFT does).
func TestLinearDoRAGrad(t *testing.T) {
	for _, c := range []struct {
		name    string
		base    string
		dropout float32
		single  bool
	}{{"f32-bias", "f32", 0, false}, {"bf16", "bf16", 0, false}, {"nf4", "nf4", 0, false}, {"dropout", "f32", 0.3, false}, {"single", "f32", 0, true}} {
		t.Run(c.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(31, 32))
			m, in, r, out := 4, 64, 3, 5
			x := newLeaf(rng, "x", m, in, 1)
			w := randSlice(rng, out*in, 0.2)
			var bias []float32
			var base BaseLinear
			switch c.base {
			case "bf16":
				u := make([]uint16, len(w))
				for j := range w {
					u[j] = safetensors.F32ToBF16(w[j])
					w[j] = safetensors.BF16ToF32(u[j])
				}
				base = &nn.Dense{Rows: out, Cols: in, DType: safetensors.BF16, U16: u}
			case "nf4":
				q, err := quant.Quantize4(quant.NF4, w, []int{out, in}, 64, true)
				if err != nil {
					t.Fatal(err)
				}
				q.Dequantize(w)
				base = &nf4Linear{q: q, rows: out, cols: in, scratch: NewEnv(nil)}
			default:
				bias = randSlice(rng, out, 1)
				base = &nn.Dense{Rows: out, Cols: in, DType: safetensors.F32, F32: w, Bias: bias}
			}
			a := newLeaf(rng, "A", r, in, 0.3)
			b := newLeaf(rng, "B", out, r, 0.3)
			mag := newLeaf(rng, "m", out, 1, 1)
			for j := range mag.data { // magnitudes near the row norms, as after some training
				mag.data[j] = float32(1 + 0.5*rng.Float64())
				vals(mag.p)[j] = mag.data[j]
			}
			p := &Proj{In: in, Out: out, Base: base, A: a.p, B: b.p, R: r, Scale: 1.5, Dropout: c.dropout, Mag: mag.p, baseBias: bias}
			projs, leaves := []*Proj{p}, []*leaf{x, a, b, mag}
			w2 := randSlice(rng, 2*in, 0.2)
			a2, b2 := newLeaf(rng, "A2", r, in, 0.3), newLeaf(rng, "B2", 2, r, 0.3)
			if !c.single {
				projs = append(projs, &Proj{In: in, Out: 2, R: r, Scale: 0.5, A: a2.p, B: b2.p,
					Base: &nn.Dense{Rows: 2, Cols: in, DType: safetensors.F32, F32: w2}})
				leaves = append(leaves, a2, b2)
			}
			env := NewEnv(kernels.NewPool(2))
			const seed = 9
			var keep []float32
			if c.dropout > 0 {
				keep = dropoutKeep(seed, 0, c.dropout, m*in)
			}
			f64 := func(v []float32) []float64 {
				o := make([]float64, len(v))
				for i, x := range v {
					o[i] = float64(x)
				}
				return o
			}
			checkOp(t, leaves, func() mat.Tensor { return env.Linear(x.p, m, projs, true, seed) }, func(v [][]float64) []float64 {
				var bb []float64
				if bias != nil {
					bb = f64(bias)
				}
				y0 := refDoRALinear(v[0], f64(w), bb, v[1], v[2], v[3], a.data, b.data, keep, 1.5, m, in, out, r)
				if c.single {
					return y0
				}
				lo := matmulT(matmulT(v[0], v[4], m, r, in), v[5], m, 2, r)
				y1 := matmulT(v[0], f64(w2), m, 2, in)
				y := make([]float64, 0, m*(out+2))
				for j := 0; j < m; j++ {
					y = append(y, y0[j*out:(j+1)*out]...)
					for o := 0; o < 2; o++ {
						y = append(y, y1[j*2+o]+0.5*lo[j*2+o])
					}
				}
				return y
			})
		})
	}
}

// TestRunDoRA trains DoRA (--use-dora, with dropout) over LoRA and QLoRA bases: the adapter folder is PEFT's
// DoRA format (use_dora, one lora_magnitude_vector [out] per module, moved by training), and applying it unmerged
// as generate/eval/serve do (models.LoadAdapter over the same base) gives the logits of the training network
// holding the same adapter.
func TestRunDoRA(t *testing.T) {
	for _, method := range []Method{LoRA, QLoRA} {
		t.Run(string(method), func(t *testing.T) {
			dir := setupTiny(t)
			res, err := tinyRun(t, dir, func(c *Config) { c.Method, c.UseDoRA, c.Dropout = string(method), true, 0.1 })
			if err != nil {
				t.Fatal(err)
			}
			ad, err := lora.Load(res.Out)
			if err != nil {
				t.Fatal(err)
			}
			if !ad.Config.UseDoRA || len(ad.Modules) != 14 {
				t.Fatalf("use_dora %v, %d modules", ad.Config.UseDoRA, len(ad.Modules))
			}
			m, err := models.Load(filepath.Join(dir, "model"), BaseOptions(2, method == QLoRA))
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			net, err := NewNet(m.Net, method, LoRAOptions{Targets: []string{"all-linear"}, Rank: 4, Alpha: 8, DoRA: true})
			if err != nil {
				t.Fatal(err)
			}
			init := net.Adapter() // magnitudes at PEFT's initial ‖W‖
			moved := 0.0
			for name, q := range ad.Modules {
				for o, v := range q.Magnitude {
					moved = math.Max(moved, math.Abs(float64(v-init.Modules[name].Magnitude[o])))
				}
			}
			if moved == 0 {
				t.Fatal("training left every magnitude at its initial value")
			}
			if err := net.SetAdapter(ad); err != nil {
				t.Fatal(err)
			}
			ids := []int{5, 70, 80, 90, 100, 3, 40}
			want, err := net.Logits(ids)
			if err != nil {
				t.Fatal(err)
			}
			un, err := m.LoadAdapter(res.Out)
			if err != nil {
				t.Fatal(err)
			}
			got := baseLogits(t, m.Net, ids, un)
			plain := baseLogits(t, m.Net, ids, nil)
			if d := maxDiff(got, want); d > 1e-4 || maxDiff(plain, want) < 1e-3 {
				t.Fatalf("unmerged DoRA logits differ from training's by %g (adapter effect %g)", d, maxDiff(plain, want))
			}
		})
	}
}

// TestDoRAFromLoRAAdapter: a DoRA run started from a LoRA adapter (--init-adapter) gets PEFT's initial magnitude
// ‖W + s·B·A‖ over its factors, so it computes exactly what the LoRA adapter computes; a LoRA run refuses a DoRA
// adapter (its magnitudes would be lost).
func TestDoRAFromLoRAAdapter(t *testing.T) {
	o := testmodel.Default()
	o.ModelType = "qwen2"
	base := loadTestModel(t, o)
	lo := LoRAOptions{Targets: []string{"q", "v", "down"}, Rank: 2, Alpha: 4, Seed: 5}
	plain, err := NewNet(base, LoRA, lo)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range plain.Params { // a trained-looking LoRA adapter
		for j := range vals(p) {
			if vals(p)[j] == 0 {
				vals(p)[j] = float32(math.Sin(float64(i*37+j))) * 0.2
			}
		}
	}
	ids := []int{5, 70, 80, 90, 100, 3}
	want, err := plain.Logits(ids)
	if err != nil {
		t.Fatal(err)
	}
	lo.DoRA = true
	dora, err := NewNet(base, LoRA, lo)
	if err != nil {
		t.Fatal(err)
	}
	if err := dora.SetAdapter(plain.Adapter()); err != nil {
		t.Fatal(err)
	}
	got, err := dora.Logits(ids)
	if err != nil {
		t.Fatal(err)
	}
	if d := maxDiff(got, want); d > 1e-4 || maxDiff(got, baseLogits(t, base, ids, nil)) < 1e-3 {
		t.Fatalf("DoRA from a LoRA adapter differs from it by %g", d)
	}
	if err := plain.SetAdapter(dora.Adapter()); err == nil || !strings.Contains(err.Error(), "--use-dora") {
		t.Fatalf("LoRA run given a DoRA adapter: %v", err)
	}
}
