package merge

import (
	"context"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/safetensors"
	"github.com/lorakit/lorakit/models/sample"
	"github.com/lorakit/lorakit/models/testmodel"
)

// TestMergeDoRAPEFT: a DoRA adapter written by the test as PEFT saves one (testmodel.PEFTDoRA: use_dora, lora_A/B
// and lora_magnitude_vector) for the real stories260K checkpoints (f32 and bf16) loads, merges to PEFT's merged
// weights (float64 reference, rounded once to the base dtype), passes --verify, and greedy generation with the
// adapter applied unmerged equals greedy generation of the merged f32 model (and differs from the base's).
func TestMergeDoRAPEFT(t *testing.T) {
	for _, name := range []string{"stories260K", "stories260K-bf16"} {
		base := storiesModel(t, name)
		dir := filepath.Join(t.TempDir(), "dora")
		want, err := testmodel.PEFTDoRA(dir, base, 11, []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "merged")
		res, err := Run(context.Background(), base, out, Options{Adapters: []Source{{Dir: dir, Weight: 1}}, Verify: true, Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Verify.OK || res.Merged != len(want) {
			t.Fatalf("%s: merged %d tensors (want %d), verify %+v", name, res.Merged, len(want), res.Verify)
		}
		for tn, ref := range want {
			got, dt := tensorF32(t, out, tn)
			rel := 1e-5
			if dt == safetensors.BF16 {
				rel = 1.0 / 256 // one rounding to bf16
			}
			for i, v := range got {
				if d := math.Abs(float64(v) - ref[i]); d > rel*math.Abs(ref[i])+1e-6 {
					t.Fatalf("%s: %s[%d] = %g, PEFT's DoRA merge %g", name, tn, i, v, ref[i])
				}
			}
		}
		if name != "stories260K" {
			continue // greedy text of a bf16-rounded merge may part from the f32 product at a near tie
		}
		bm, err := models.Load(base, models.LoadOptions{Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		ad, err := bm.LoadAdapter(dir)
		if err != nil {
			t.Fatal(err)
		}
		mm, err := models.Load(out, models.LoadOptions{Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		gen := func(m *models.Model, a *lora.Adapter) []int {
			ids := m.Tok.Encode("Lily wanted to", true)
			o := models.GenerateOptions{MaxTokens: 40, Sampling: sample.Options{Temperature: 0}, IgnoreEOS: true}
			if a != nil {
				o.Adapter = a
			}
			r, err := m.Generate(context.Background(), ids, o)
			if err != nil {
				t.Fatal(err)
			}
			return r.IDs
		}
		unmerged, merged, plain := gen(bm, ad), gen(mm, nil), gen(bm, nil)
		bm.Close()
		mm.Close()
		if !slices.Equal(unmerged, merged) || slices.Equal(unmerged, plain) {
			t.Fatalf("greedy ids: unmerged DoRA %v, merged %v, base %v", unmerged, merged, plain)
		}
	}
}

// TestMergeDoRARefusals: a DoRA adapter merges alone and with weight 1 (PEFT defines nothing else).
func TestMergeDoRARefusals(t *testing.T) {
	base := storiesModel(t, "stories260K")
	dir := filepath.Join(t.TempDir(), "dora")
	if _, err := testmodel.PEFTDoRA(dir, base, 3, []string{"q_proj"}); err != nil {
		t.Fatal(err)
	}
	bm, closeB := loadModel(t, base)
	other := saveAdapter(t, randomAdapter(bm, 5, 4, 8))
	closeB()
	for _, c := range []struct {
		srcs []Source
		want string
	}{
		{[]Source{{Dir: dir, Weight: 0.5}}, "weight must be 1"},
		{[]Source{{Dir: other, Weight: 1}, {Dir: dir, Weight: 1}}, "merge it on its own"},
	} {
		_, err := Run(context.Background(), base, filepath.Join(t.TempDir(), "out"), Options{Adapters: c.srcs, Threads: 1})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("err = %v, want it to mention %q", err, c.want)
		}
	}
}

// TestMergeDoRANF4Base: a DoRA adapter over a stored NF4 base (the QLoRA case) merges as PEFT merges it, over
// the dequantised weight: (m/‖W + s·B·A‖)⊙(W + s·B·A) rounded once to bf16, and --verify (the unmerged adapter,
// its row scales taken from the NF4 rows) passes.
func TestMergeDoRANF4Base(t *testing.T) {
	root := t.TempDir()
	base := filepath.Join(root, "nf4")
	deq := writeNF4Base(t, base)
	ad := makeAdapter(t, 41, 4, 8, []string{"q_proj", "v_proj", "up_proj", "down_proj"}, false)
	ad.Config.UseDoRA = true
	want := map[string][]float64{}
	for m, q := range ad.Modules {
		v := make([]float64, q.Out*q.In)
		d := lora.DeltaWeight(q)
		q.Magnitude = make([]float32, q.Out)
		w := deq[m+".weight"]
		for o := 0; o < q.Out; o++ {
			var ss float64
			for i := 0; i < q.In; i++ {
				v[o*q.In+i] = float64(w[o*q.In+i]) + float64(d[o*q.In+i])
				ss += v[o*q.In+i] * v[o*q.In+i]
			}
			q.Magnitude[o] = float32(math.Sqrt(ss) * (0.6 + 0.8*float64((o*7)%10)/10))
			for i := 0; i < q.In; i++ {
				v[o*q.In+i] *= float64(q.Magnitude[o]) / math.Sqrt(ss)
			}
		}
		want[m+".weight"] = v
	}
	dir := saveAdapter(t, ad)
	res, err := Run(context.Background(), base, filepath.Join(root, "merged"), Options{Adapters: []Source{{Dir: dir, Weight: 1}}, Verify: true, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Verify.OK || res.Verify.AdapterEffect < 1e-2 {
		t.Fatalf("verify %+v", res.Verify)
	}
	for name, ref := range want {
		got, dt := tensorF32(t, filepath.Join(root, "merged"), name)
		if dt != safetensors.BF16 {
			t.Fatalf("%s: %s", name, dt)
		}
		for i, v := range got {
			if math.Abs(float64(v)-ref[i]) > math.Abs(ref[i])/256+1e-6 {
				t.Fatalf("%s[%d] = %g, PEFT's DoRA merge of the dequantised weight %g", name, i, v, ref[i])
			}
		}
	}
}
