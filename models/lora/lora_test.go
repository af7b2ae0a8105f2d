package lora

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/models/safetensors"
)

func randVec(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

func testAdapter(t *testing.T, rng *rand.Rand) *Adapter {
	t.Helper()
	cfg := NewConfig(4, 8, DefaultTargets)
	cfg.RankPattern = map[string]float64{"v_proj": 2}
	a := New(cfg)
	for _, m := range []struct {
		name    string
		in, out int
	}{{"model.layers.0.self_attn.q_proj", 16, 16}, {"model.layers.0.self_attn.v_proj", 16, 8}, {"model.layers.1.mlp.down_proj", 24, 16}} {
		p := cfg.NewPair(m.name, m.in, m.out)
		copy(p.A, randVec(rng, len(p.A)))
		copy(p.B, randVec(rng, len(p.B)))
		a.Modules[m.name] = p
	}
	return a
}

func TestSaveLoadBitIdentical(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, dt := range []safetensors.DType{"", safetensors.BF16} {
		a := testAdapter(t, rng)
		a.DType = dt
		if dt == safetensors.BF16 { // values representable in bf16 round-trip exactly
			for _, p := range a.Modules {
				for _, v := range [][]float32{p.A, p.B} {
					for i := range v {
						v[i] = safetensors.BF16ToF32(safetensors.F32ToBF16(v[i]))
					}
				}
			}
		}
		a.Saved["lm_head.weight"] = safetensors.F32Tensor("lm_head.weight", []int{2, 3}, []float32{1, 2, 3, 4, 5, 6})
		a.Config.ModulesToSave = []string{"lm_head"}
		dir := filepath.Join(t.TempDir(), "ad")
		if err := a.Save(dir); err != nil {
			t.Fatal(err)
		}
		if err := a.Save(dir); err != nil { // replacing an existing folder works
			t.Fatal(err)
		}
		b, err := Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(b.Modules) != len(a.Modules) {
			t.Fatalf("modules %v vs %v", b.Names(), a.Names())
		}
		for name, p := range a.Modules {
			q := b.Modules[name]
			if q == nil || q.R != p.R || q.In != p.In || q.Out != p.Out || q.Scale != p.Scale {
				t.Fatalf("%s: %+v vs %+v", name, q, p)
			}
			for i := range p.A {
				if math.Float32bits(p.A[i]) != math.Float32bits(q.A[i]) {
					t.Fatalf("%s A[%d] %v vs %v", name, i, p.A[i], q.A[i])
				}
			}
			for i := range p.B {
				if math.Float32bits(p.B[i]) != math.Float32bits(q.B[i]) {
					t.Fatalf("%s B[%d]", name, i)
				}
			}
		}
		if !reflect.DeepEqual(b.Saved["lm_head.weight"].Data, a.Saved["lm_head.weight"].Data) {
			t.Fatal("saved module changed")
		}
		if b.Modules["model.layers.0.self_attn.v_proj"].R != 2 || b.Modules["model.layers.0.self_attn.v_proj"].Scale != 4 {
			t.Fatal("rank_pattern not applied after reload")
		}
		f, err := safetensors.Open(filepath.Join(dir, WeightsName))
		if err != nil {
			t.Fatal(err)
		}
		if f.Metadata["format"] != "pt" {
			t.Fatalf("metadata %v", f.Metadata)
		}
		if _, ok := f.Info("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"); !ok {
			t.Fatalf("PEFT key missing: %v", f.Names())
		}
		f.Close()
		// The config is PEFT's sorted, indented JSON with the fields PEFT writes.
		raw, _ := os.ReadFile(filepath.Join(dir, ConfigName))
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"peft_type", "task_type", "r", "lora_alpha", "lora_dropout", "target_modules", "bias",
			"use_rslora", "use_dora", "rank_pattern", "alpha_pattern", "modules_to_save", "base_model_name_or_path",
			"inference_mode", "fan_in_fan_out", "init_lora_weights"} {
			if _, ok := m[k]; !ok {
				t.Errorf("adapter_config.json lacks %q", k)
			}
		}
		if !strings.Contains(string(raw), `"lora_alpha": 8,`) || !strings.Contains(string(raw), "\n  \"alpha_pattern\"") {
			t.Errorf("config not written like PEFT:\n%s", raw)
		}
	}
}

// writePEFT writes an adapter folder by hand, as PEFT would, with the given tensors.
func writePEFT(t *testing.T, cfg string, ts []safetensors.Tensor) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ConfigName), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := safetensors.Write(filepath.Join(dir, WeightsName), ts, nil); err != nil {
		t.Fatal(err)
	}
	return dir
}

func encode(t *testing.T, dt safetensors.DType, name string, shape []int, v []float32) safetensors.Tensor {
	b, err := safetensors.Encode(dt, v)
	if err != nil {
		t.Fatal(err)
	}
	return safetensors.Tensor{Name: name, DType: dt, Shape: shape, Data: b}
}

const peftConfig = `{
  "alpha_pattern": {"layers\\.1\\..*": 64},
  "auto_mapping": null,
  "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M",
  "bias": "none",
  "corda_config": null,
  "eva_config": null,
  "exclude_modules": null,
  "fan_in_fan_out": false,
  "inference_mode": true,
  "init_lora_weights": true,
  "layer_replication": null,
  "layers_pattern": null,
  "layers_to_transform": null,
  "loftq_config": {},
  "lora_alpha": 16,
  "lora_bias": false,
  "lora_dropout": 0.05,
  "megatron_config": null,
  "megatron_core": "megatron.core",
  "modules_to_save": null,
  "peft_type": "LORA",
  "peft_version": "0.17.1",
  "r": 8,
  "rank_pattern": {"model.layers.0.self_attn.k_proj": 4},
  "revision": null,
  "target_modules": ["q_proj", "k_proj"],
  "target_parameters": null,
  "task_type": "CAUSAL_LM",
  "trainable_token_indices": null,
  "use_dora": false,
  "use_qalora": false,
  "use_rslora": %s,
  "some_future_field": {"x": 1}
}`

func TestLoadHandWrittenPEFT(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, rs := range []bool{false, true} {
		cfg := strings.Replace(peftConfig, "%s", map[bool]string{false: "false", true: "true"}[rs], 1)
		ts := []safetensors.Tensor{
			encode(t, safetensors.BF16, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", []int{8, 6}, randVec(rng, 48)),
			encode(t, safetensors.BF16, "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", []int{6, 8}, randVec(rng, 48)),
			encode(t, safetensors.F16, "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight", []int{4, 6}, randVec(rng, 24)),
			encode(t, safetensors.F16, "base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight", []int{2, 4}, randVec(rng, 8)),
			encode(t, safetensors.F32, "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight", []int{8, 6}, randVec(rng, 48)),
			encode(t, safetensors.F32, "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight", []int{6, 8}, randVec(rng, 48)),
		}
		a, err := Load(writePEFT(t, cfg, ts))
		if err != nil {
			t.Fatal(err)
		}
		q0 := a.Modules["model.layers.0.self_attn.q_proj"]
		k0 := a.Modules["model.layers.0.self_attn.k_proj"]
		q1 := a.Modules["model.layers.1.self_attn.q_proj"]
		if q0 == nil || k0 == nil || q1 == nil {
			t.Fatalf("modules %v", a.Names())
		}
		want := func(alpha float64, r int) float32 {
			if rs {
				return float32(alpha / math.Sqrt(float64(r)))
			}
			return float32(alpha / float64(r))
		}
		if q0.Scale != want(16, 8) || k0.Scale != want(16, 4) || q1.Scale != want(64, 8) {
			t.Fatalf("rslora=%v scales %v %v %v", rs, q0.Scale, k0.Scale, q1.Scale)
		}
		if k0.R != 4 || k0.In != 6 || k0.Out != 2 {
			t.Fatalf("k0 %+v", k0)
		}
		if _, ok := a.Config.Extra["some_future_field"]; !ok {
			t.Fatal("unknown key dropped")
		}
		if a.Config.Dropout != 0.05 || a.Config.BaseModel != "HuggingFaceTB/SmolLM2-135M" {
			t.Fatalf("config %+v", a.Config)
		}
		// Values decoded from F16/BF16 exactly.
		raw := ts[0].Data
		if got := q0.A[1]; got != safetensors.BF16ToF32(uint16(raw[2])|uint16(raw[3])<<8) {
			t.Fatalf("bf16 decode %v", got)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	good := []safetensors.Tensor{
		encode(t, safetensors.F32, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", []int{8, 6}, randVec(rng, 48)),
		encode(t, safetensors.F32, "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", []int{6, 8}, randVec(rng, 48)),
	}
	base := strings.Replace(peftConfig, "%s", "false", 1)
	cases := []struct {
		name, cfg string
		ts        []safetensors.Tensor
		want      string
	}{
		{"dora without magnitudes", strings.Replace(base, `"use_dora": false`, `"use_dora": true`, 1), good, "lora_magnitude_vector"},
		{"ia3", strings.Replace(base, `"peft_type": "LORA"`, `"peft_type": "IA3"`, 1), good, `peft_type "IA3"`},
		{"no peft_type", strings.Replace(base, `"peft_type": "LORA",`, ``, 1), good, "peft_type"},
		{"rank vs config", strings.Replace(base, `"r": 8`, `"r": 4`, 1), good, "rank mismatch"},
		{"unknown key", base, append(append([]safetensors.Tensor{}, good...),
			encode(t, safetensors.F32, "base_model.model.model.layers.0.self_attn.q_proj.weight", []int{2}, []float32{1, 2})), "model.layers.0.self_attn.q_proj.weight"},
		{"magnitude", base, append(append([]safetensors.Tensor{}, good...),
			encode(t, safetensors.F32, "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector", []int{6}, randVec(rng, 6))), "use_dora false"},
		{"missing B", base, good[:1], "no matching"},
		{"A/B rank", base, []safetensors.Tensor{good[0],
			encode(t, safetensors.F32, "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", []int{12, 4}, randVec(rng, 48))}, "rank mismatch"},
		{"no prefix", base, []safetensors.Tensor{encode(t, safetensors.F32, "model.layers.0.x.lora_A.weight", []int{1, 1}, []float32{1})}, "unknown key"},
		{"bad json", "{", good, "adapter_config.json"},
	}
	for _, c := range cases {
		_, err := Load(writePEFT(t, c.cfg, c.ts))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to mention %q", c.name, err, c.want)
		}
	}
}

func TestPatterns(t *testing.T) {
	c := Config{R: 8, Alpha: 16,
		RankPattern:  map[string]float64{"q_proj": 4, `layers\.1\.self_attn\.q_proj`: 2, "model.layers.2.mlp.up_proj": 32},
		RankOrder:    []string{"q_proj", `layers\.1\.self_attn\.q_proj`, "model.layers.2.mlp.up_proj"},
		AlphaPattern: map[string]float64{`.*down_proj`: 1}}
	cases := []struct {
		m     string
		r     int
		alpha float64
	}{
		{"model.layers.0.self_attn.q_proj", 4, 16},
		{"model.layers.1.self_attn.q_proj", 4, 16}, // first key in file order wins, as in PEFT
		{"model.layers.2.mlp.up_proj", 32, 16},
		{"model.layers.12.mlp.up_proj", 8, 16}, // "(.*\.)?(key)$" anchors at a dot boundary
		{"model.layers.0.self_attn.xq_proj", 8, 16},
		{"model.layers.3.mlp.down_proj", 8, 1},
	}
	for _, cs := range cases {
		if r, a := c.RankFor(cs.m), c.AlphaFor(cs.m); r != cs.r || a != cs.alpha {
			t.Errorf("%s: r=%d α=%v, want %d %v", cs.m, r, a, cs.r, cs.alpha)
		}
	}
	c.RankOrder = []string{`layers\.1\.self_attn\.q_proj`, "q_proj", "model.layers.2.mlp.up_proj"}
	if r := c.RankFor("model.layers.1.self_attn.q_proj"); r != 2 {
		t.Errorf("order: r=%d", r)
	}
	if s := Scaling(16, 4, true); s != 8 {
		t.Errorf("rslora scaling %v", s)
	}
}

func TestTargets(t *testing.T) {
	list := Config{TargetModules: []string{"q_proj", "v_proj"}}
	re := Config{TargetRegex: `.*\.(q|k)_proj`}
	all := Config{TargetRegex: "all-linear", ExcludeModules: []string{"down_proj"}}
	layers := Config{TargetModules: []string{"q_proj"}, LayersToTransform: []int{1}}
	for _, c := range []struct {
		cfg  Config
		m    string
		want bool
	}{
		{list, "model.layers.0.self_attn.q_proj", true},
		{list, "model.layers.0.self_attn.k_proj", false},
		{list, "model.layers.0.self_attn.xq_proj", false},
		{re, "model.layers.0.self_attn.k_proj", true},
		{re, "model.layers.0.self_attn.v_proj", false},
		{all, "model.layers.0.mlp.up_proj", true},
		{all, "model.layers.0.mlp.down_proj", false},
		{all, "lm_head", false},
		{layers, "model.layers.1.self_attn.q_proj", true},
		{layers, "model.layers.0.self_attn.q_proj", false},
	} {
		if got := c.cfg.Targets(c.m); got != c.want {
			t.Errorf("%+v Targets(%s) = %v", c.cfg, c.m, got)
		}
	}
}

func naive(p *Pair, y, x []float32) {
	t := make([]float64, p.R)
	for k := 0; k < p.R; k++ {
		for i := 0; i < p.In; i++ {
			t[k] += float64(p.A[k*p.In+i]) * float64(x[i])
		}
	}
	for o := 0; o < p.Out; o++ {
		var s float64
		for k := 0; k < p.R; k++ {
			s += float64(p.B[o*p.R+k]) * t[k]
		}
		y[o] += float32(float64(p.Scale) * s)
	}
}

func TestApplyAndDelta(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	a := testAdapter(t, rng)
	m := "model.layers.1.mlp.down_proj"
	p := a.Modules[m]
	rows := 5
	x := randVec(rng, rows*p.In)
	y := randVec(rng, rows*p.Out)
	want := append([]float32(nil), y...)
	for r := 0; r < rows; r++ {
		naive(p, want[r*p.Out:(r+1)*p.Out], x[r*p.In:(r+1)*p.In])
	}
	got := append([]float32(nil), y...)
	a.ApplyRows(nil, m, got, x, rows, p.In, p.Out) // all rows at once
	one := append([]float32(nil), y...)
	for r := 0; r < rows; r++ { // one row at a time
		a.ApplyRows(nil, m, one[r*p.Out:(r+1)*p.Out], x[r*p.In:(r+1)*p.In], 1, p.In, p.Out)
	}
	d := DeltaWeight(p)
	viaDelta := append([]float32(nil), y...)
	for r := 0; r < rows; r++ {
		for o := 0; o < p.Out; o++ {
			var s float64
			for i := 0; i < p.In; i++ {
				s += float64(d[o*p.In+i]) * float64(x[r*p.In+i])
			}
			viaDelta[r*p.Out+o] += float32(s)
		}
	}
	for i := range want {
		for name, v := range map[string][]float32{"rows": got, "one": one, "delta": viaDelta} {
			if math.Abs(float64(v[i]-want[i])) > 1e-4*(1+math.Abs(float64(want[i]))) {
				t.Fatalf("%s[%d] = %v, want %v", name, i, v[i], want[i])
			}
		}
	}
	a.ApplyRows(nil, "model.layers.9.mlp.up_proj", got, x, rows, p.In, p.Out) // untouched module: no-op

}

func TestCheck(t *testing.T) {
	a := testAdapter(t, rand.New(rand.NewPCG(9, 9)))
	shapes := func(m string) (int, int, bool) {
		switch m {
		case "model.layers.0.self_attn.q_proj":
			return 16, 16, true
		case "model.layers.0.self_attn.v_proj":
			return 16, 4, true // wrong out
		}
		return 0, 0, false
	}
	err := a.Check(shapes)
	if err == nil || !strings.Contains(err.Error(), "v_proj.lora_B.weight") || !strings.Contains(err.Error(), "down_proj") {
		t.Fatalf("Check: %v", err)
	}
}
