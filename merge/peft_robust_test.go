package merge

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/lora"
	bnb "github.com/lorakit/lorakit/models/quant"
	"github.com/lorakit/lorakit/models/safetensors"
	"github.com/lorakit/lorakit/models/testmodel"
	"github.com/lorakit/lorakit/quant"
)

// These tests build adapter folders byte for byte as PEFT (and exporters around it) write them — config fields of
// recent PEFT versions, key spellings, embedding LoRA, saved base layers, modules_to_save, biases — over tiny
// testmodel bases of every family and dtype, run them through Run (what `lorakit merge` calls) with --verify,
// and check every merged tensor against W + s·B·A computed here in float64.

// peftConfig is adapter_config.json as PEFT 0.17 saves it (sorted keys, every field), with overrides; a nil
// override deletes the key.
func peftConfig(over map[string]any) []byte {
	c := map[string]any{
		"alpha_pattern": map[string]any{}, "auto_mapping": nil, "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M",
		"bias": "none", "corda_config": nil, "eva_config": nil, "exclude_modules": nil, "fan_in_fan_out": false,
		"inference_mode": true, "init_lora_weights": true, "layer_replication": nil, "layers_pattern": nil,
		"layers_to_transform": nil, "loftq_config": map[string]any{}, "lora_alpha": 16, "lora_bias": false,
		"lora_dropout": 0.05, "megatron_config": nil, "megatron_core": "megatron.core", "modules_to_save": nil,
		"peft_type": "LORA", "peft_version": "0.17.1", "qalora_group_size": 16, "r": 8, "rank_pattern": map[string]any{},
		"revision": nil, "target_modules": []string{"q_proj", "v_proj"}, "target_parameters": nil, "task_type": "CAUSAL_LM",
		"trainable_token_indices": nil, "use_dora": false, "use_qalora": false, "use_rslora": false,
		"runtime_config": map[string]any{"ephemeral_gpu_offload": false},
	}
	for k, v := range over {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	b, _ := json.MarshalIndent(c, "", "  ")
	return b
}

// mod is one LoRA pair to write: module name, rank, the scaling PEFT would use (what the test expects), the
// adapter-name segment in the key ("" as PEFT saves, "default" as some exporters do), and whether it is an
// embedding (lora_embedding_A/B).
type mod struct {
	name   string
	r      int
	scale  float64
	adName string
	embed  bool
}

type peftAdapter struct {
	cfg   []byte
	mods  []mod
	extra []safetensors.Tensor // written as is (saved tensors, odd keys)
	dtype safetensors.DType    // of lora_A/B (default F32)
}

// fixture holds the A/B values written, for the expected result.
type fixture struct {
	A, B map[string][]float32
}

func baseShape(t *testing.T, base, name string) []int {
	t.Helper()
	ck, err := safetensors.OpenCheckpoint(base)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	info, _, ok := ck.Info(name)
	if !ok {
		t.Fatalf("base has no %s", name)
	}
	return info.Shape
}

func randVals(rng *rand.Rand, n int, std float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64() * std)
	}
	return v
}

func tensorOf(name string, dt safetensors.DType, shape []int, v []float32) safetensors.Tensor {
	if dt == "" {
		dt = safetensors.F32
	}
	b, err := safetensors.Encode(dt, v)
	if err != nil {
		panic(err)
	}
	return safetensors.Tensor{Name: name, DType: dt, Shape: shape, Data: b}
}

// writePEFT writes the adapter folder for base and returns it with the values written.
func writePEFT(t *testing.T, base string, a peftAdapter, seed uint64) (string, fixture) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "adapter")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 99))
	fx := fixture{A: map[string][]float32{}, B: map[string][]float32{}}
	var ts []safetensors.Tensor
	for _, m := range a.mods {
		wname := m.name + ".weight"
		if m.name == "lm_head" && !hasTensor(t, base, "lm_head.weight") {
			wname = "model.embed_tokens.weight"
		}
		sh := baseShape(t, base, wname) // [out, in], or [vocab, dim] for an embedding
		in, out := sh[1], sh[0]
		if m.embed {
			in, out = sh[0], sh[1] // A [r, vocab], B [dim, r]
		}
		A, B := randVals(rng, m.r*in, 0.3), randVals(rng, out*m.r, 0.05)
		// What is stored is what the test expects: round through the storage dtype first.
		ta, tb := tensorOf("", a.dtype, []int{m.r, in}, A), tensorOf("", a.dtype, []int{out, m.r}, B)
		safetensors.Decode(ta.DType, ta.Data, A)
		safetensors.Decode(tb.DType, tb.Data, B)
		fx.A[m.name], fx.B[m.name] = A, B
		seg := ""
		if m.adName != "" {
			seg = "." + m.adName
		}
		ka, kb := lora.KeyPrefix+m.name+".lora_A"+seg+".weight", lora.KeyPrefix+m.name+".lora_B"+seg+".weight"
		if m.embed {
			ka, kb = lora.KeyPrefix+m.name+".lora_embedding_A"+seg, lora.KeyPrefix+m.name+".lora_embedding_B"+seg
		}
		ta.Name, tb.Name = ka, kb
		ts = append(ts, ta, tb)
	}
	ts = append(ts, a.extra...)
	if err := safetensors.Write(filepath.Join(dir, lora.WeightsName), ts, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, lora.ConfigName), a.cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, fx
}

func hasTensor(t *testing.T, dir, name string) bool {
	ck, err := safetensors.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	_, _, ok := ck.Info(name)
	return ok
}

func readAll(t *testing.T, dir string) (map[string][]float32, map[string]safetensors.DType) {
	t.Helper()
	ck, err := safetensors.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	v, d := map[string][]float32{}, map[string]safetensors.DType{}
	for _, n := range ck.Names() {
		info, _, _ := ck.Info(n)
		if !info.DType.IsFloat() {
			continue
		}
		x, err := ck.Float32s(n)
		if err != nil {
			t.Fatal(err)
		}
		v[n], d[n] = x, info.DType
	}
	return v, d
}

// expectDelta adds s·B·A (or s·(B·A)ᵀ for an embedding) to w in float64 arithmetic.
func expectDelta(w []float32, A, B []float32, r int, s float64, embed bool) []float64 {
	out := make([]float64, len(w))
	for i, x := range w {
		out[i] = float64(x)
	}
	if embed { // w [vocab, dim]; A [r, vocab], B [dim, r]
		vocab := len(A) / r
		dim := len(B) / r
		for v := 0; v < vocab; v++ {
			for j := 0; j < dim; j++ {
				var acc float64
				for k := 0; k < r; k++ {
					acc += float64(B[j*r+k]) * float64(A[k*vocab+v])
				}
				out[v*dim+j] += s * acc
			}
		}
		return out
	}
	in := len(A) / r
	o := len(B) / r
	for i := 0; i < o; i++ {
		for j := 0; j < in; j++ {
			var acc float64
			for k := 0; k < r; k++ {
				acc += float64(B[i*r+k]) * float64(A[k*in+j])
			}
			out[i*in+j] += s * acc
		}
	}
	return out
}

// closeTo compares a merged tensor with the float64 expectation, allowing one rounding to dt.
func closeTo(t *testing.T, name string, got []float32, want []float64, dt safetensors.DType) {
	t.Helper()
	rel := map[safetensors.DType]float64{safetensors.F32: 1e-6, safetensors.BF16: 1.0 / 128, safetensors.F16: 1.0 / 1024}[dt]
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", name, len(got), len(want))
	}
	for i := range got {
		if d := math.Abs(float64(got[i]) - want[i]); d > rel*math.Abs(want[i])+1e-6 {
			t.Fatalf("%s[%d] = %g, want %g (|Δ| %.3g)", name, i, got[i], want[i], d)
		}
	}
}

func layerMods(layers []int, subs []string, r int, s float64) []mod {
	var out []mod
	for _, l := range layers {
		for _, sub := range subs {
			out = append(out, mod{name: fmt.Sprintf("model.layers.%d.%s", l, sub), r: r, scale: s})
		}
	}
	return out
}

var qv = []string{"self_attn.q_proj", "self_attn.v_proj"}
var all7 = []string{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}

func TestMergePEFTVariants(t *testing.T) {
	llamaF32 := testmodel.Options{ModelType: "llama", DType: "F32", Seed: 3}
	rng := rand.New(rand.NewPCG(7, 7))
	type tc struct {
		name  string
		base  testmodel.Options
		ad    func(base string) peftAdapter
		dtype string // merge --dtype
		// replaced: base tensor name → values the output must hold exactly (modules_to_save, bias="all")
		replaced func(base string) map[string][]float32
		untied   bool   // the output must have lm_head.weight and tie_word_embeddings false
		headFrom string // untied: lm_head must equal this base tensor (plus its own LoRA, if any)
	}
	saved := map[string][]float32{} // values written as full tensors, by base name
	full := func(base, name string, std float64) safetensors.Tensor {
		sh := baseShape(t, base, name)
		n := 1
		for _, d := range sh {
			n *= d
		}
		v := randVals(rng, n, std)
		saved[name] = v
		return tensorOf(lora.KeyPrefix+name, safetensors.F32, sh, v)
	}
	cases := []tc{
		{name: "list-targets-peft-0.17-fields", base: llamaF32, ad: func(string) peftAdapter {
			return peftAdapter{cfg: peftConfig(nil), mods: layerMods([]int{0, 1}, qv, 8, 2)}
		}},
		{name: "regex-string-targets", base: llamaF32, ad: func(string) peftAdapter {
			return peftAdapter{cfg: peftConfig(map[string]any{"target_modules": `.*\.layers\.\d+\.self_attn\.(q|k)_proj`}),
				mods: layerMods([]int{0, 1}, []string{"self_attn.q_proj", "self_attn.k_proj"}, 8, 2)}
		}},
		{name: "all-linear-exclude", base: testmodel.Options{ModelType: "mistral", DType: "F32", Seed: 4}, ad: func(string) peftAdapter {
			return peftAdapter{cfg: peftConfig(map[string]any{"target_modules": "all-linear", "exclude_modules": []string{"down_proj"}, "r": 4, "lora_alpha": 4}),
				mods: layerMods([]int{0, 1}, all7[:6], 4, 1)}
		}},
		{name: "layers_to_transform-pattern", base: llamaF32, ad: func(string) peftAdapter {
			return peftAdapter{cfg: peftConfig(map[string]any{"layers_to_transform": []int{1}, "layers_pattern": "layers"}),
				mods: layerMods([]int{1}, qv, 8, 2)}
		}},
		{name: "rslora-rank-alpha-patterns", base: llamaF32, ad: func(string) peftAdapter {
			cfg := peftConfig(map[string]any{"use_rslora": true, "target_modules": []string{"q_proj", "k_proj", "v_proj"},
				"rank_pattern":  map[string]any{"q_proj": 4, "model.layers.1.self_attn.v_proj": 2},
				"alpha_pattern": map[string]any{"v_proj": 3, `model\.layers\.0\.self_attn\.k_proj`: 5}})
			return peftAdapter{cfg: cfg, mods: []mod{
				{name: "model.layers.0.self_attn.q_proj", r: 4, scale: 16 / 2.0},
				{name: "model.layers.1.self_attn.q_proj", r: 4, scale: 16 / 2.0},
				{name: "model.layers.0.self_attn.v_proj", r: 8, scale: 3 / math.Sqrt(8)},
				{name: "model.layers.1.self_attn.v_proj", r: 2, scale: 3 / math.Sqrt(2)},
				{name: "model.layers.0.self_attn.k_proj", r: 8, scale: 5 / math.Sqrt(8)},
				{name: "model.layers.1.self_attn.k_proj", r: 8, scale: 16 / math.Sqrt(8)},
			}}
		}},
		{name: "default-adapter-name-in-keys-bf16-lora", base: llamaF32, ad: func(string) peftAdapter {
			ms := layerMods([]int{0, 1}, qv, 8, 2)
			for i := range ms {
				ms[i].adName = "default"
			}
			return peftAdapter{cfg: peftConfig(nil), mods: ms, dtype: safetensors.BF16}
		}},
		{name: "qwen2-bias-all", base: testmodel.Options{ModelType: "qwen2", DType: "F32", Seed: 5}, ad: func(base string) peftAdapter {
			var extra []safetensors.Tensor
			for l := 0; l < 2; l++ {
				for _, p := range []string{"q_proj", "k_proj", "v_proj"} {
					extra = append(extra, full(base, fmt.Sprintf("model.layers.%d.self_attn.%s.bias", l, p), 0.1))
				}
			}
			return peftAdapter{cfg: peftConfig(map[string]any{"bias": "all"}), mods: layerMods([]int{0, 1}, qv, 8, 2), extra: extra}
		}, replaced: func(string) map[string][]float32 {
			m := map[string][]float32{}
			for k, v := range saved {
				if strings.HasSuffix(k, ".bias") {
					m[k] = v
				}
			}
			return m
		}},
		{name: "qwen2-bias-lora_only-f16", base: testmodel.Options{ModelType: "qwen2", DType: "F16", Seed: 6}, ad: func(base string) peftAdapter {
			delete(saved, "model.layers.1.self_attn.q_proj.bias")
			extra := []safetensors.Tensor{full(base, "model.layers.1.self_attn.q_proj.bias", 0.1)}
			return peftAdapter{cfg: peftConfig(map[string]any{"bias": "lora_only"}), mods: layerMods([]int{1}, qv, 8, 2), extra: extra}
		}, replaced: func(string) map[string][]float32 {
			return map[string][]float32{"model.layers.1.self_attn.q_proj.bias": saved["model.layers.1.self_attn.q_proj.bias"]}
		}},
		{name: "modules_to_save-lm_head-embed-untied", base: llamaF32, ad: func(base string) peftAdapter {
			extra := []safetensors.Tensor{full(base, "lm_head.weight", 0.3), full(base, "model.embed_tokens.weight", 0.3)}
			return peftAdapter{cfg: peftConfig(map[string]any{"modules_to_save": []string{"lm_head", "embed_tokens"}}), mods: layerMods([]int{0}, qv, 8, 2), extra: extra}
		}, replaced: func(string) map[string][]float32 {
			return map[string][]float32{"lm_head.weight": saved["lm_head.weight"], "model.embed_tokens.weight": saved["model.embed_tokens.weight"]}
		}},
		{name: "modules_to_save-embed-only-tied", base: testmodel.Options{ModelType: "llama", DType: "BF16", Tied: true, Seed: 8}, ad: func(base string) peftAdapter {
			extra := []safetensors.Tensor{full(base, "model.embed_tokens.weight", 0.3)}
			extra[0].Name = lora.KeyPrefix + "model.embed_tokens.modules_to_save.default.weight" // unstripped exporter spelling
			return peftAdapter{cfg: peftConfig(map[string]any{"modules_to_save": []string{"embed_tokens"}}), mods: layerMods([]int{0}, qv, 8, 2), extra: extra}
		}, dtype: "f32", replaced: func(string) map[string][]float32 {
			return map[string][]float32{"model.embed_tokens.weight": saved["model.embed_tokens.weight"]}
		}, untied: true, headFrom: "model.embed_tokens.weight"},
		{name: "embedding-lora-untied-with-base_layer", base: llamaF32, ad: func(base string) peftAdapter {
			// PEFT saves the targeted embedding's base layer beside lora_embedding_A/B (save_embedding_layers).
			ck, _ := safetensors.OpenCheckpoint(base)
			defer ck.Close()
			raw, _ := ck.Bytes("model.embed_tokens.weight")
			info, _, _ := ck.Info("model.embed_tokens.weight")
			bl := safetensors.Tensor{Name: lora.KeyPrefix + "model.embed_tokens.base_layer.weight", DType: info.DType, Shape: info.Shape, Data: append([]byte(nil), raw...)}
			return peftAdapter{cfg: peftConfig(map[string]any{"target_modules": []string{"embed_tokens", "q_proj"}}),
				mods:  append(layerMods([]int{0}, []string{"self_attn.q_proj"}, 8, 2), mod{name: "model.embed_tokens", r: 8, scale: 2, embed: true}),
				extra: []safetensors.Tensor{bl}}
		}},
		{name: "embedding-lora-tied-qwen3-bf16", base: testmodel.Options{ModelType: "qwen3", DType: "BF16", Tied: true, Seed: 9}, ad: func(string) peftAdapter {
			return peftAdapter{cfg: peftConfig(map[string]any{"target_modules": []string{"embed_tokens"}, "r": 4, "lora_alpha": 8}),
				mods: []mod{{name: "model.embed_tokens", r: 4, scale: 2, embed: true, adName: "default"}}}
		}, untied: true, headFrom: "model.embed_tokens.weight"},
		{name: "lm_head-lora-untied", base: llamaF32, ad: func(string) peftAdapter {
			return peftAdapter{cfg: peftConfig(map[string]any{"target_modules": []string{"q_proj", "lm_head"}}),
				mods: append(layerMods([]int{1}, []string{"self_attn.q_proj"}, 8, 2), mod{name: "lm_head", r: 8, scale: 2})}
		}},
		{name: "lm_head-lora-tied", base: testmodel.Options{ModelType: "llama", DType: "F32", Tied: true, Seed: 10}, ad: func(string) peftAdapter {
			return peftAdapter{cfg: peftConfig(map[string]any{"target_modules": []string{"lm_head"}}), mods: []mod{{name: "lm_head", r: 8, scale: 2}}}
		}, untied: true, headFrom: "model.embed_tokens.weight"},
		{name: "qwen3-bf16-sharded", base: testmodel.Options{ModelType: "qwen3", DType: "BF16", Shards: 3, Seed: 11}, ad: func(string) peftAdapter {
			return peftAdapter{cfg: peftConfig(map[string]any{"target_modules": "all-linear", "r": 4, "lora_alpha": 8}), mods: layerMods([]int{0, 1}, all7, 4, 2)}
		}},
		{name: "qwen2-f16-to-bf16", base: testmodel.Options{ModelType: "qwen2", DType: "F16", Seed: 12}, dtype: "bf16", ad: func(string) peftAdapter {
			return peftAdapter{cfg: peftConfig(nil), mods: layerMods([]int{0, 1}, qv, 8, 2)}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			base := filepath.Join(root, "base")
			if err := testmodel.Write(base, c.base); err != nil {
				t.Fatal(err)
			}
			ad := c.ad(base)
			adDir, fx := writePEFT(t, base, ad, 1)
			out := filepath.Join(root, "out")
			res, err := Run(context.Background(), base, out, Options{Adapters: []Source{{Dir: adDir, Weight: 1}}, DType: c.dtype, Verify: true, Threads: 1})
			if err != nil {
				t.Fatal(err)
			}
			if !res.Verify.OK {
				t.Fatalf("verify %+v", res.Verify)
			}
			bw, bdt := readAll(t, base)
			ow, odt := readAll(t, out)
			touched := map[string]bool{}
			for _, m := range ad.mods {
				wname := m.name + ".weight"
				src := wname
				if m.name == "lm_head" && bw[wname] == nil {
					src = "model.embed_tokens.weight"
				}
				touched[wname] = true
				closeTo(t, wname, ow[wname], expectDelta(bw[src], fx.A[m.name], fx.B[m.name], m.r, m.scale, m.embed), odt[wname])
			}
			if c.replaced != nil {
				for name, v := range c.replaced(base) {
					touched[name] = true
					want := make([]float64, len(v))
					for i, x := range v {
						want[i] = float64(x)
					}
					closeTo(t, name, ow[name], want, odt[name])
				}
			}
			cfg, _ := os.ReadFile(filepath.Join(out, "config.json"))
			if c.untied {
				if !strings.Contains(string(cfg), `"tie_word_embeddings": false`) || ow["lm_head.weight"] == nil {
					t.Fatalf("tied base not untied: %s", cfg)
				}
				if !touched["lm_head.weight"] {
					touched["lm_head.weight"] = true
					want := make([]float64, len(bw[c.headFrom]))
					for i, x := range bw[c.headFrom] {
						want[i] = float64(x)
					}
					closeTo(t, "lm_head.weight", ow["lm_head.weight"], want, odt["lm_head.weight"])
				}
			}
			for name, v := range bw { // every other tensor: the base's values (rounded once when --dtype changes it)
				if touched[name] {
					continue
				}
				want := make([]float64, len(v))
				for i, x := range v {
					want[i] = float64(x)
				}
				dt := odt[name]
				if dt == bdt[name] {
					dt = safetensors.F32 // bit for bit
				}
				closeTo(t, name, ow[name], want, dt)
			}
			// The merged folder loads as lorakit loads models for generate/serve.
			m, err := models.Load(out, models.LoadOptions{Threads: 1})
			if err != nil {
				t.Fatal(err)
			}
			m.Close()
			t.Logf("verify diff %.3g, effect %.3g; warnings %q", res.Verify.MaxAbsDiff, res.Verify.AdapterEffect, res.Warnings)
		})
	}
}

// TestMergeBaseFolderFiles: whatever non-weight files the base has are copied (no generation_config.json here),
// and weights/pickles are not.
func TestMergeBaseFolderFiles(t *testing.T) {
	root := t.TempDir()
	base := filepath.Join(root, "base")
	if err := testmodel.Write(base, testmodel.Options{Seed: 2}); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(base, "generation_config.json"))
	files := map[string]string{"special_tokens_map.json": `{"bos_token":"<s>"}`, "merges.txt": "#version: 0.2\n", "vocab.json": `{}`,
		"chat_template.jinja": "{{ messages }}", "README.md": "# base\n", "pytorch_model.bin": "pickle", "model.gguf": "gguf"}
	for n, c := range files {
		os.WriteFile(filepath.Join(base, n), []byte(c), 0o644)
	}
	adDir, _ := writePEFT(t, base, peftAdapter{cfg: peftConfig(nil), mods: layerMods([]int{0}, qv, 8, 2)}, 3)
	out := filepath.Join(root, "out")
	if _, err := Run(context.Background(), base, out, Options{Adapters: []Source{{Dir: adDir, Weight: 1}}}); err != nil {
		t.Fatal(err)
	}
	for n, c := range files {
		b, err := os.ReadFile(filepath.Join(out, n))
		weight := strings.HasSuffix(n, ".bin") || strings.HasSuffix(n, ".gguf")
		if weight != (err != nil) || (!weight && string(b) != c) {
			t.Errorf("%s: copied=%v (%q)", n, err == nil, b)
		}
	}
	if _, err := os.Stat(filepath.Join(out, "generation_config.json")); err == nil {
		t.Error("generation_config.json invented")
	}
}

// TestMergeAdapterErrors: adapters lorakit cannot merge correctly are refused before anything is written, with
// the file and the tensor or field named.
func TestMergeAdapterErrors(t *testing.T) {
	root := t.TempDir()
	base := filepath.Join(root, "base")
	if err := testmodel.Write(base, testmodel.Options{Seed: 2, Tied: true}); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(root, "other") // hidden 48: another model
	if err := testmodel.Write(other, testmodel.Options{Seed: 2, Hidden: 48, Heads: 4, KVHeads: 2}); err != nil {
		t.Fatal(err)
	}
	q0 := "model.layers.0.self_attn.q_proj"
	for _, c := range []struct {
		name string
		ad   peftAdapter
		on   string // base the tensors are shaped for (default base)
		edit func(dir string)
		want []string
	}{
		{name: "dora", ad: peftAdapter{cfg: peftConfig(map[string]any{"use_dora": true}), mods: layerMods([]int{0}, qv, 8, 2)},
			want: []string{"adapter_config.json", "use_dora", "DoRA"}},
		{name: "dora-magnitude-tensor", ad: peftAdapter{cfg: peftConfig(nil), mods: layerMods([]int{0}, qv, 8, 2),
			extra: []safetensors.Tensor{tensorOf(lora.KeyPrefix+q0+".lora_magnitude_vector", "", []int{32}, make([]float32, 32))}},
			want: []string{"adapter_model.safetensors", q0 + ".lora_magnitude_vector", "DoRA"}},
		{name: "lora_bias", ad: peftAdapter{cfg: peftConfig(map[string]any{"lora_bias": true}), mods: layerMods([]int{0}, qv, 8, 2)},
			want: []string{"lora_bias"}},
		{name: "lora_B-bias-tensor", ad: peftAdapter{cfg: peftConfig(nil), mods: layerMods([]int{0}, qv, 8, 2),
			extra: []safetensors.Tensor{tensorOf(lora.KeyPrefix+q0+".lora_B.bias", "", []int{32}, make([]float32, 32))}},
			want: []string{q0 + ".lora_B.bias"}},
		{name: "fan_in_fan_out", ad: peftAdapter{cfg: peftConfig(map[string]any{"fan_in_fan_out": true}), mods: layerMods([]int{0}, qv, 8, 2)},
			want: []string{"fan_in_fan_out"}},
		{name: "other-model", on: other, ad: peftAdapter{cfg: peftConfig(nil), mods: layerMods([]int{0}, qv, 8, 2)},
			want: []string{q0 + ".lora_A.weight", "[8 48]", "another model"}},
		{name: "other-model-embedding", on: other, ad: peftAdapter{cfg: peftConfig(nil), mods: []mod{{name: "model.embed_tokens", r: 8, embed: true}}},
			want: []string{"model.embed_tokens.lora_embedding_B", "another model"}},
		{name: "rank-vs-config", ad: peftAdapter{cfg: peftConfig(map[string]any{"r": 16}), mods: layerMods([]int{0}, qv, 8, 2)},
			want: []string{"rank mismatch", q0 + ".lora_A.weight", "rank 16"}},
		{name: "unknown-key", ad: peftAdapter{cfg: peftConfig(nil), mods: layerMods([]int{0}, qv, 8, 2),
			extra: []safetensors.Tensor{tensorOf(lora.KeyPrefix+"model.norm.weight", "", []int{32}, make([]float32, 32))}},
			want: []string{"model.norm.weight", "unknown key", "modules_to_save"}},
		{name: "no-prefix", ad: peftAdapter{cfg: peftConfig(nil),
			extra: []safetensors.Tensor{tensorOf(q0+".lora_A.weight", "", []int{8, 32}, make([]float32, 256))}},
			want: []string{q0 + ".lora_A.weight", "base_model.model."}},
		{name: "two-adapters-in-one-file", ad: peftAdapter{cfg: peftConfig(nil), mods: []mod{{name: q0, r: 8, adName: "default"}},
			extra: []safetensors.Tensor{tensorOf(lora.KeyPrefix+"model.layers.1.self_attn.q_proj.lora_A.other.weight", "", []int{8, 32}, make([]float32, 256)),
				tensorOf(lora.KeyPrefix+"model.layers.1.self_attn.q_proj.lora_B.other.weight", "", []int{32, 8}, make([]float32, 256))}},
			want: []string{"several adapters", "default, other"}},
		{name: "resized-vocab", ad: peftAdapter{cfg: peftConfig(map[string]any{"target_modules": []string{"q_proj"}, "modules_to_save": nil}), mods: layerMods([]int{0}, []string{"self_attn.q_proj"}, 8, 2),
			extra: []safetensors.Tensor{tensorOf(lora.KeyPrefix+"model.embed_tokens.base_layer.weight", "", []int{302, 32}, make([]float32, 302*32))}},
			want: []string{"model.embed_tokens.base_layer.weight", "[302 32]", "resized vocabulary"}},
		{name: "peft_type", ad: peftAdapter{cfg: peftConfig(map[string]any{"peft_type": "IA3"}), mods: layerMods([]int{0}, qv, 8, 2)},
			want: []string{"peft_type", "IA3"}},
		{name: "bin-only", ad: peftAdapter{cfg: peftConfig(nil), mods: layerMods([]int{0}, qv, 8, 2)}, edit: func(dir string) {
			os.Rename(filepath.Join(dir, lora.WeightsName), filepath.Join(dir, "adapter_model.bin"))
		}, want: []string{"adapter_model.bin", "pickle", "convert"}},
		{name: "truncated-safetensors", ad: peftAdapter{cfg: peftConfig(nil), mods: layerMods([]int{0}, qv, 8, 2)}, edit: func(dir string) {
			p := filepath.Join(dir, lora.WeightsName)
			st, _ := os.Stat(p)
			os.Truncate(p, st.Size()-100)
		}, want: []string{"adapter_model.safetensors"}},
		{name: "garbage-safetensors", ad: peftAdapter{cfg: peftConfig(nil), mods: layerMods([]int{0}, qv, 8, 2)}, edit: func(dir string) {
			os.WriteFile(filepath.Join(dir, lora.WeightsName), []byte("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 12\n"), 0o644)
		}, want: []string{"adapter_model.safetensors"}},
		{name: "bad-config-json", ad: peftAdapter{cfg: []byte(`{"peft_type": "LORA", "r": 8,`), mods: layerMods([]int{0}, qv, 8, 2)},
			want: []string{"adapter_config.json"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			on := base
			if c.on != "" {
				on = c.on
			}
			dir, _ := writePEFT(t, on, c.ad, 5)
			if c.edit != nil {
				c.edit(dir)
			}
			out := filepath.Join(root, "out-"+c.name)
			_, err := Run(context.Background(), base, out, Options{Adapters: []Source{{Dir: dir, Weight: 1}}})
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
			if _, serr := os.Stat(out); serr == nil {
				t.Error("output written")
			}
			t.Log(err)
		})
	}
}

// TestMergeCorruptBase: a base whose weights file is damaged is refused, naming the file.
func TestMergeCorruptBase(t *testing.T) {
	root := t.TempDir()
	base := filepath.Join(root, "base")
	if err := testmodel.Write(base, testmodel.Options{Seed: 2}); err != nil {
		t.Fatal(err)
	}
	adDir, _ := writePEFT(t, base, peftAdapter{cfg: peftConfig(nil), mods: layerMods([]int{0}, qv, 8, 2)}, 3)
	p := filepath.Join(base, "model.safetensors")
	st, _ := os.Stat(p)
	os.Truncate(p, st.Size()-64)
	_, err := Run(context.Background(), base, filepath.Join(root, "out"), Options{Adapters: []Source{{Dir: adDir, Weight: 1}}})
	if err == nil || !strings.Contains(err.Error(), "model.safetensors") {
		t.Fatalf("truncated base: %v", err)
	}
	t.Log(err)
}

// TestQLoRAOverQuantizedFolder: quantise a base as `lorakit quantize` does (odd shapes: last blocks partial,
// odd element counts), load it and run a forward, then merge a QLoRA adapter over the NF4 folder: dequantised
// bf16 by default, NF4 again with --requantize nf4; both load and verify.
func TestQLoRAOverQuantizedFolder(t *testing.T) {
	root := t.TempDir()
	src := filepath.Join(root, "src")
	// hidden 15, head_dim 6, intermediate 21: gate/up/down have 315 values (odd, 4 full blocks of 64 + 59).
	o := testmodel.Options{ModelType: "qwen3", DType: "BF16", Hidden: 15, Heads: 3, KVHeads: 1, HeadDim: 6, Intermediate: 21, Seed: 13}
	if err := testmodel.Write(src, o); err != nil {
		t.Fatal(err)
	}
	for _, fo := range []quant.FolderOptions{{Type: bnb.NF4, Double: true}, {Type: bnb.FP4, BlockSize: 32}, {Type: bnb.Int8}} {
		nf := filepath.Join(root, "q-"+string(fo.Type))
		if _, err := quant.QuantizeFolder(src, nf, fo); err != nil {
			t.Fatalf("%s: %v", fo.Type, err)
		}
		m, err := models.Load(nf, models.LoadOptions{Threads: 1})
		if err != nil {
			t.Fatalf("%s: load: %v", fo.Type, err)
		}
		logits, err := m.Net.Forward([]llama.Seq{{Tokens: []int{1, 2, 3, 4}, AllLogits: true}})
		m.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range logits[0][3] {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatalf("%s: non-finite logit", fo.Type)
			}
		}
		if fo.Type != bnb.NF4 {
			continue
		}
		adDir, _ := writePEFT(t, src, peftAdapter{cfg: peftConfig(map[string]any{"target_modules": "all-linear", "r": 4, "lora_alpha": 8}),
			mods: layerMods([]int{0, 1}, all7, 4, 2)}, 4)
		for _, rq := range []string{"", "nf4"} {
			out := filepath.Join(root, "merged-"+rq)
			res, err := Run(context.Background(), nf, out, Options{Adapters: []Source{{Dir: adDir, Weight: 1}}, Requantize: rq, Verify: true, Threads: 1})
			if err != nil {
				t.Fatalf("requantize %q: %v", rq, err)
			}
			if !res.Verify.OK || len(res.Warnings) == 0 {
				t.Errorf("requantize %q: %+v", rq, res)
			}
			mm, err := models.Load(out, models.LoadOptions{Threads: 1})
			if err != nil {
				t.Fatal(err)
			}
			mm.Close()
			t.Logf("requantize %q: warnings %q", rq, res.Warnings)
		}
	}
}

// TestMergeOutExisting: OUT is replaced only when it is a previous merge output; another model folder (say, the
// base of another run, given by mistake) is refused unless Force.
func TestMergeOutExisting(t *testing.T) {
	root := t.TempDir()
	base, other := filepath.Join(root, "base"), filepath.Join(root, "other")
	for _, d := range []string{base, other} {
		if err := testmodel.Write(d, testmodel.Options{Seed: 2}); err != nil {
			t.Fatal(err)
		}
	}
	adDir, _ := writePEFT(t, base, peftAdapter{cfg: peftConfig(nil), mods: layerMods([]int{0}, qv, 8, 2)}, 3)
	src := []Source{{Dir: adDir, Weight: 1}}
	_, err := Run(context.Background(), base, other, Options{Adapters: src})
	if err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("a model folder that is not a merge output was replaced: %v", err)
	}
	if !hasTensor(t, other, "lm_head.weight") {
		t.Fatal("other model damaged")
	}
	if _, err := Run(context.Background(), base, other, Options{Adapters: src, Force: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(context.Background(), base, other, Options{Adapters: src}); err != nil {
		t.Fatalf("previous merge output not replaced: %v", err)
	}
	if _, err := Run(context.Background(), base, base, Options{Adapters: src, Force: true}); err == nil {
		t.Fatal("--force replaced the base")
	}
	if _, err := Run(context.Background(), base, adDir, Options{Adapters: src, Force: true}); err == nil {
		t.Fatal("--force replaced the adapter")
	}
}

// TestMergeEmbeddingOnModifiedBaseLayer: when the embed_tokens.base_layer.weight PEFT saved differs from the
// base (the adapter was trained over other embedding values), the LoRA delta goes on top of the saved table, as
// PEFT would load it, with a warning; --verify applies the same to the unmerged model.
func TestMergeEmbeddingOnModifiedBaseLayer(t *testing.T) {
	root := t.TempDir()
	base := filepath.Join(root, "base")
	if err := testmodel.Write(base, testmodel.Options{Seed: 6, DType: "BF16"}); err != nil {
		t.Fatal(err)
	}
	sh := baseShape(t, base, "model.embed_tokens.weight")
	tbl := randVals(rand.New(rand.NewPCG(1, 2)), sh[0]*sh[1], 0.4)
	bl := tensorOf(lora.KeyPrefix+"model.embed_tokens.base_layer.weight", safetensors.F32, sh, tbl)
	adDir, fx := writePEFT(t, base, peftAdapter{cfg: peftConfig(map[string]any{"target_modules": []string{"embed_tokens"}}),
		mods: []mod{{name: "model.embed_tokens", r: 8, scale: 2, embed: true}}, extra: []safetensors.Tensor{bl}}, 3)
	out := filepath.Join(root, "out")
	res, err := Run(context.Background(), base, out, Options{Adapters: []Source{{Dir: adDir, Weight: 1}}, Verify: true, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Verify.OK || len(res.Warnings) == 0 || !strings.Contains(res.Warnings[0], "base layer") {
		t.Fatalf("%+v %+v", res, res.Verify)
	}
	ow, odt := readAll(t, out)
	closeTo(t, "model.embed_tokens.weight", ow["model.embed_tokens.weight"], expectDelta(tbl, fx.A["model.embed_tokens"], fx.B["model.embed_tokens"], 8, 2, true), odt["model.embed_tokens.weight"])
}
