package lora

import (
	"math"
	"math/rand"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/safetensors"
)

// refDoRA is PEFT's DoRA weight in float64: V = W + s·B·A, W' = (m/‖V‖)⊙V per output row.
func refDoRA(w []float32, q *Pair) []float64 {
	v := make([]float64, q.Out*q.In)
	for o := 0; o < q.Out; o++ {
		var ss float64
		for i := 0; i < q.In; i++ {
			var d float64
			for k := 0; k < q.R; k++ {
				d += float64(q.B[o*q.R+k]) * float64(q.A[k*q.In+i])
			}
			v[o*q.In+i] = float64(w[o*q.In+i]) + float64(q.Scale)*d
			ss += v[o*q.In+i] * v[o*q.In+i]
		}
		for i := 0; i < q.In; i++ {
			v[o*q.In+i] *= float64(q.Magnitude[o]) / math.Sqrt(ss)
		}
	}
	return v
}

// doraPair is a random DoRA pair over a random base W [out, in] with bias b; row 3 of W + s·B·A is zero.
func doraPair(rng *rand.Rand, in, out, r int) (*Adapter, *Pair, []float32, []float32) {
	a, q := randomAdapter(rng, in, out, r)
	a.Config.UseDoRA = true
	w, b := make([]float32, out*in), make([]float32, out)
	for i := range w {
		w[i] = float32(rng.NormFloat64())
	}
	for i := range b {
		b[i] = float32(rng.NormFloat64())
	}
	clear(q.B[3*r : 4*r])
	clear(w[3*in : 4*in])
	q.Magnitude = make([]float32, out)
	for o := range q.Magnitude {
		q.Magnitude[o] = float32(0.5 + rng.Float64())
	}
	return a, q, w, b
}

// TestDoRAMergeAndUnmerged: MergeDoRA is PEFT's merge (float64 reference), and the unmerged form (PrepareDoRA's
// row scale after the LoRA product, in every layout) computes x·W'ᵀ + b, bias unscaled.
func TestDoRAMergeAndUnmerged(t *testing.T) {
	const in, out, r, rows = 24, 40, 3, 5
	rng := rand.New(rand.NewSource(9))
	a, q, w, bias := doraPair(rng, in, out, r)
	want := refDoRA(w, q)
	merged := slices.Clone(w)
	q.MergeDoRA(nil, merged)
	for i, v := range merged {
		if math.Abs(float64(v)-want[i]) > 1e-5*(1+math.Abs(want[i])) {
			t.Fatalf("merged[%d] = %g, reference %g", i, v, want[i])
		}
	}
	for o := 0; o < in; o++ {
		if merged[3*in+o] != 0 {
			t.Fatal("a zero row of W + s·B·A must stay zero")
		}
	}
	base := Base{Rows: func(string) (RowReader, []float32, error) { return F32Rows(w, in), bias, nil }}
	if err := a.PrepareDoRA(kernels.NewPool(2), base); err != nil {
		t.Fatal(err)
	}
	x := make([]float32, rows*in)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	ref := make([]float64, rows*out)
	for j := 0; j < rows; j++ {
		for o := 0; o < out; o++ {
			s := float64(bias[o])
			for i := 0; i < in; i++ {
				s += want[o*in+i] * float64(x[j*in+i])
			}
			ref[j*out+o] = s
		}
	}
	for _, l := range []Layout{F32, F32BT, BF16} {
		pk := Pack(a, l)
		for _, n := range []int{1, rows} {
			y := make([]float32, n*out)
			kernels.MatMulF32T(nil, y, x[:n*in], w, n, out, in)
			for j := 0; j < n; j++ {
				kernels.Axpy(1, bias, y[j*out:(j+1)*out])
			}
			pk.ApplyRows(nil, "m", y, x[:n*in], n, in, out)
			tol := 1e-4
			if l == BF16 {
				tol = 3e-2
			}
			for i, v := range y {
				if math.Abs(float64(v)-ref[i]) > tol*(1+math.Abs(ref[i])) {
					t.Fatalf("layout %d, %d rows: y[%d] = %g, merged %g", l, n, i, v, ref[i])
				}
			}
		}
	}
	a.Modules["m"].RowScale = nil
	if err := a.PrepareDoRA(nil, Base{}); err == nil || !strings.Contains(err.Error(), "lorakit merge") {
		t.Fatalf("DoRA without base weights: %v", err)
	}
}

// TestDoRASaveLoad: the magnitude is saved under PEFT's key (…lora_magnitude_vector, no .weight, shape [out])
// with use_dora true, reads back bit for bit, and the other key forms PEFT or exporters write load too.
func TestDoRASaveLoad(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	a, q, _, _ := doraPair(rng, 6, 8, 2)
	a.Modules = map[string]*Pair{"model.layers.0.self_attn.q_proj": q}
	dir := filepath.Join(t.TempDir(), "ad")
	if err := a.Save(dir); err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Open(filepath.Join(dir, WeightsName))
	if err != nil {
		t.Fatal(err)
	}
	const key = "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"
	info, ok := f.Info(key)
	f.Close()
	if !ok || !slices.Equal(info.Shape, []int{8}) {
		t.Fatalf("saved keys %v: want %s [8]", f.Names(), key)
	}
	b, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !b.Config.UseDoRA || !slices.Equal(b.Modules["model.layers.0.self_attn.q_proj"].Magnitude, q.Magnitude) {
		t.Fatalf("loaded use_dora %v magnitude %v, want %v", b.Config.UseDoRA, b.Modules["model.layers.0.self_attn.q_proj"].Magnitude, q.Magnitude)
	}
	cfg, err := a.Config.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	pre := "base_model.model.model.layers.0.self_attn.q_proj."
	ab := []safetensors.Tensor{encode(t, safetensors.F32, pre+"lora_A.weight", []int{2, 6}, q.A), encode(t, safetensors.F32, pre+"lora_B.weight", []int{8, 2}, q.B)}
	for _, suf := range []string{"lora_magnitude_vector.weight", "lora_magnitude_vector.default.weight"} {
		ts := append(slices.Clone(ab), encode(t, safetensors.BF16, pre+suf, []int{8}, q.Magnitude))
		c, err := Load(writePEFT(t, string(cfg), ts))
		if err != nil {
			t.Fatalf("%s: %v", suf, err)
		}
		if m := c.Modules["model.layers.0.self_attn.q_proj"].Magnitude; len(m) != 8 {
			t.Fatalf("%s: magnitude %v", suf, m)
		}
	}
	for _, c := range []struct {
		name string
		ts   []safetensors.Tensor
		want string
	}{
		{"shape", append(slices.Clone(ab), encode(t, safetensors.F32, pre+"lora_magnitude_vector", []int{6}, q.Magnitude[:6])), "want [8]"},
		{"2-D", append(slices.Clone(ab), encode(t, safetensors.F32, pre+"lora_magnitude_vector", []int{8, 1}, q.Magnitude)), "1-D"},
		{"orphan", append(slices.Clone(ab), encode(t, safetensors.F32, pre+"lora_magnitude_vector", []int{8}, q.Magnitude),
			encode(t, safetensors.F32, "base_model.model.model.layers.1.self_attn.q_proj.lora_magnitude_vector", []int{8}, q.Magnitude)), "no matching lora_A"},
		{"nan", append(slices.Clone(ab), encode(t, safetensors.F32, pre+"lora_magnitude_vector", []int{8}, append([]float32{float32(math.NaN())}, q.Magnitude[1:]...))), "NaN"},
	} {
		if _, err := Load(writePEFT(t, string(cfg), c.ts)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to mention %q", c.name, err, c.want)
		}
	}
}

// TestDoRABatch: the batched per-module call of serving (Batch, one segment per adapter, small segments beside
// each other and a large one on its own) finishes every DoRA segment with its own row scale.
func TestDoRABatch(t *testing.T) {
	const in, out, r = 24, 40, 3
	rng := rand.New(rand.NewSource(21))
	a1, q1, w, bias := doraPair(rng, in, out, r)
	a2, q2, _, _ := doraPair(rng, in, out, r)
	base := Base{Rows: func(string) (RowReader, []float32, error) { return F32Rows(w, in), bias, nil }}
	for _, a := range []*Adapter{a1, a2} {
		if err := a.PrepareDoRA(nil, base); err != nil {
			t.Fatal(err)
		}
	}
	segs := []Segment{{Start: 0, N: 3, F: Pack(a1, F32BT).Module("m")}, {Start: 3, N: 2, F: Pack(a2, F32).Module("m")},
		{Start: 5, N: bigRows, F: Pack(a1, F32BT).Module("m")}}
	rows := 5 + bigRows
	x := make([]float32, rows*in)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	y := make([]float32, rows*out)
	kernels.MatMulF32T(nil, y, x, w, rows, out, in)
	for j := 0; j < rows; j++ {
		kernels.Axpy(1, bias, y[j*out:(j+1)*out])
	}
	var b Batch
	b.Apply(kernels.NewPool(2), y, x, in, out, segs)
	for _, s := range segs {
		q := q1
		if s.Start == 3 {
			q = q2
		}
		wm := refDoRA(w, q)
		for j := s.Start; j < s.Start+s.N; j++ {
			for o := 0; o < out; o++ {
				ref := float64(bias[o])
				for i := 0; i < in; i++ {
					ref += wm[o*in+i] * float64(x[j*in+i])
				}
				if math.Abs(float64(y[j*out+o])-ref) > 1e-4*(1+math.Abs(ref)) {
					t.Fatalf("row %d (segment at %d): y[%d] = %g, merged %g", j, s.Start, o, y[j*out+o], ref)
				}
			}
		}
	}
}
