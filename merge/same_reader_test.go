package merge

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/safetensors"
	"github.com/lorakit/lorakit/models/testmodel"
)

// TestOneAdapterReader feeds the same PEFT folders to `merge` (Run) and to what generate, eval, data score and
// serve call (models.Model.LoadAdapter → lora.LoadUnmerged): both read them with lora.Load, so a folder is
// accepted or refused by both with the same error; what only a merge can apply is merged, and refused by the
// unmerged path with an error that says to merge; what both accept computes the same logits both ways.
func TestOneAdapterReader(t *testing.T) {
	q0 := "model.layers.0.self_attn.q_proj"
	baseLayer := func(base, name string, scale float32) safetensors.Tensor {
		ck, err := safetensors.OpenCheckpoint(base)
		if err != nil {
			t.Fatal(err)
		}
		defer ck.Close()
		v, err := ck.Float32s(name)
		if err != nil {
			t.Fatal(err)
		}
		info, _, _ := ck.Info(name)
		for i := range v {
			v[i] *= scale
		}
		key := lora.KeyPrefix + strings.TrimSuffix(name, ".weight") + ".base_layer.weight"
		if strings.HasPrefix(name, "model.embed") && strings.Contains(key, "lm_head") {
			key = lora.KeyPrefix + "lm_head.base_layer.weight"
		}
		return tensorOf(key, info.DType, info.Shape, v)
	}
	full := func(base, name string) safetensors.Tensor {
		sh := baseShape(t, base, name)
		n := 1
		for _, d := range sh {
			n *= d
		}
		return tensorOf(lora.KeyPrefix+name, safetensors.F32, sh, make([]float32, n))
	}
	type tc struct {
		name  string
		base  testmodel.Options
		ad    func(base string) peftAdapter
		edit  func(dir string)
		merge []string // error substrings from merge; nil: merged
		run   []string // error substrings from the unmerged path; nil: applied
	}
	bothRefuse := func(w ...string) ([]string, []string) { return w, w }
	needsMerge := func(w ...string) []string { return append(w, "lorakit merge") }
	llamaF32 := testmodel.Options{ModelType: "llama", DType: "F32", Seed: 3}
	cases := []tc{
		{name: "plain", base: llamaF32, ad: func(string) peftAdapter {
			return peftAdapter{cfg: peftConfig(nil), mods: layerMods([]int{0, 1}, qv, 8, 2)}
		}},
		{name: "adapter-name-in-keys", base: llamaF32, ad: func(string) peftAdapter {
			ms := layerMods([]int{0, 1}, qv, 8, 2)
			for i := range ms {
				ms[i].adName = "default"
			}
			return peftAdapter{cfg: peftConfig(nil), mods: ms, dtype: safetensors.BF16}
		}},
		{name: "rank-alpha-patterns-rslora", base: llamaF32, ad: func(string) peftAdapter {
			cfg := peftConfig(map[string]any{"use_rslora": true, "rank_pattern": map[string]any{"q_proj": 4}, "alpha_pattern": map[string]any{`model\.layers\.1\..*`: 3}})
			return peftAdapter{cfg: cfg, mods: []mod{{name: q0, r: 4}, {name: "model.layers.1.self_attn.q_proj", r: 4}, {name: "model.layers.1.self_attn.v_proj", r: 8}}}
		}},
		{name: "lm_head-lora-with-its-saved-base-layer", base: llamaF32, ad: func(base string) peftAdapter {
			// PEFT (save_embedding_layers "auto") saves lm_head.base_layer.weight when lm_head is a target.
			return peftAdapter{cfg: peftConfig(map[string]any{"target_modules": []string{"q_proj", "lm_head"}}),
				mods:  append(layerMods([]int{0}, []string{"self_attn.q_proj"}, 8, 2), mod{name: "lm_head", r: 8}),
				extra: []safetensors.Tensor{baseLayer(base, "lm_head.weight", 1)}}
		}},
		{name: "tied-lm_head-lora-with-its-saved-base-layer", base: testmodel.Options{ModelType: "qwen3", DType: "BF16", Tied: true, Seed: 4}, ad: func(base string) peftAdapter {
			bl := baseLayer(base, "model.embed_tokens.weight", 1)
			bl.Name = lora.KeyPrefix + "lm_head.base_layer.weight"
			return peftAdapter{cfg: peftConfig(map[string]any{"target_modules": []string{"lm_head"}}), mods: []mod{{name: "lm_head", r: 8}}, extra: []safetensors.Tensor{bl}}
		}},
		{name: "tied-lm_head-lora-over-a-changed-base-layer", base: testmodel.Options{ModelType: "llama", DType: "F32", Tied: true, Seed: 6}, ad: func(base string) peftAdapter {
			bl := baseLayer(base, "model.embed_tokens.weight", 1.25)
			bl.Name = lora.KeyPrefix + "lm_head.base_layer.weight"
			return peftAdapter{cfg: peftConfig(map[string]any{"target_modules": []string{"lm_head"}}), mods: []mod{{name: "lm_head", r: 8}}, extra: []safetensors.Tensor{bl}}
		}, run: needsMerge("lm_head.base_layer.weight", "differs")},
		{name: "changed-base-layer", base: llamaF32, ad: func(base string) peftAdapter {
			return peftAdapter{cfg: peftConfig(map[string]any{"target_modules": []string{"lm_head"}}), mods: []mod{{name: "lm_head", r: 8}},
				extra: []safetensors.Tensor{baseLayer(base, "lm_head.weight", 1.5)}}
		}, run: needsMerge("lm_head.base_layer.weight", "differs")},
		{name: "embedding-lora", base: llamaF32, ad: func(string) peftAdapter {
			return peftAdapter{cfg: peftConfig(map[string]any{"target_modules": []string{"embed_tokens", "q_proj"}}),
				mods: append(layerMods([]int{0}, []string{"self_attn.q_proj"}, 8, 2), mod{name: "model.embed_tokens", r: 8, embed: true, adName: "default"})}
		}, run: needsMerge("model.embed_tokens.lora_embedding_A", "embedding")},
		{name: "modules_to_save", base: llamaF32, ad: func(base string) peftAdapter {
			mts := full(base, "lm_head.weight")
			mts.Name = lora.KeyPrefix + "lm_head.modules_to_save.default.weight"
			return peftAdapter{cfg: peftConfig(map[string]any{"modules_to_save": []string{"lm_head"}}), mods: layerMods([]int{0}, qv, 8, 2), extra: []safetensors.Tensor{mts}}
		}, run: needsMerge("modules_to_save", "lm_head.weight")},
		{name: "bias-all", base: testmodel.Options{ModelType: "qwen2", DType: "F32", Seed: 5}, ad: func(base string) peftAdapter {
			return peftAdapter{cfg: peftConfig(map[string]any{"bias": "all"}), mods: layerMods([]int{0}, qv, 8, 2),
				extra: []safetensors.Tensor{full(base, "model.layers.0.self_attn.k_proj.bias")}}
		}, run: needsMerge("model.layers.0.self_attn.k_proj.bias")},
	}
	for _, c := range []struct {
		name string
		ad   peftAdapter
		edit func(string)
		want []string
	}{
		{name: "dora", ad: peftAdapter{cfg: peftConfig(map[string]any{"use_dora": true}), mods: layerMods([]int{0}, qv, 8, 2)}, want: []string{"adapter_config.json", "use_dora"}},
		{name: "lora_B-bias", ad: peftAdapter{cfg: peftConfig(nil), mods: layerMods([]int{0}, qv, 8, 2),
			extra: []safetensors.Tensor{tensorOf(lora.KeyPrefix+q0+".lora_B.bias", "", []int{32}, make([]float32, 32))}}, want: []string{lora.WeightsName, q0 + ".lora_B.bias"}},
		{name: "two-adapters", ad: peftAdapter{cfg: peftConfig(nil), mods: []mod{{name: q0, r: 8, adName: "default"}, {name: "model.layers.1.self_attn.q_proj", r: 8, adName: "other"}}},
			want: []string{lora.WeightsName, "several adapters", "default, other"}},
		{name: "unknown-key", ad: peftAdapter{cfg: peftConfig(nil), mods: layerMods([]int{0}, qv, 8, 2),
			extra: []safetensors.Tensor{tensorOf(lora.KeyPrefix+"model.norm.weight", "", []int{32}, make([]float32, 32))}}, want: []string{lora.WeightsName, "model.norm.weight", "unknown key"}},
		{name: "rank-vs-config", ad: peftAdapter{cfg: peftConfig(map[string]any{"r": 16}), mods: layerMods([]int{0}, qv, 8, 2)}, want: []string{"rank mismatch", q0 + ".lora_A.weight"}},
		{name: "bin-only", ad: peftAdapter{cfg: peftConfig(nil), mods: layerMods([]int{0}, qv, 8, 2)}, edit: func(dir string) {
			os.Rename(filepath.Join(dir, lora.WeightsName), filepath.Join(dir, "adapter_model.bin"))
		}, want: []string{"adapter_model.bin", "convert"}},
		{name: "module-not-in-base", ad: peftAdapter{cfg: peftConfig(nil), mods: layerMods([]int{0}, qv, 8, 2),
			extra: []safetensors.Tensor{tensorOf(lora.KeyPrefix+"model.layers.9.self_attn.q_proj.lora_A.weight", "", []int{8, 32}, make([]float32, 256)),
				tensorOf(lora.KeyPrefix+"model.layers.9.self_attn.q_proj.lora_B.weight", "", []int{32, 8}, make([]float32, 256))}},
			want: []string{"model.layers.9.self_attn.q_proj.lora_A.weight", "another model"}},
	} {
		m, r := bothRefuse(c.want...)
		ad := c.ad
		cases = append(cases, tc{name: c.name, base: llamaF32, ad: func(string) peftAdapter { return ad }, edit: c.edit, merge: m, run: r})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			base := filepath.Join(root, "base")
			if err := testmodel.Write(base, c.base); err != nil {
				t.Fatal(err)
			}
			adDir, _ := writePEFT(t, base, c.ad(base), 1)
			if c.edit != nil {
				c.edit(adDir)
			}
			out := filepath.Join(root, "out")
			_, mergeErr := Run(context.Background(), base, out, Options{Adapters: []Source{{Dir: adDir, Weight: 1}}, Verify: true, Threads: 1})
			m, err := models.Load(base, models.LoadOptions{Threads: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			a, runErr := m.LoadAdapter(adDir)
			check := func(what string, err error, want []string) {
				t.Helper()
				if want == nil {
					if err != nil {
						t.Fatalf("%s refused: %v", what, err)
					}
					return
				}
				if err == nil {
					t.Fatalf("%s accepted", what)
				}
				for _, w := range want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("%s error does not mention %q:\n%v", what, w, err)
					}
				}
				t.Logf("%s: %v", what, err)
			}
			check("merge", mergeErr, c.merge)
			check("unmerged", runErr, c.run)
			if c.merge != nil && c.run != nil {
				// A folder lora.Load refuses is refused by both with lora.Load's own error.
				if _, loadErr := lora.Load(adDir); loadErr != nil {
					if !strings.Contains(mergeErr.Error(), loadErr.Error()) || !strings.Contains(runErr.Error(), loadErr.Error()) {
						t.Errorf("the two paths report lora.Load's error differently:\nload:  %v\nmerge: %v\nrun:   %v", loadErr, mergeErr, runErr)
					}
				}
			}
			if mergeErr != nil || runErr != nil {
				return
			}
			// Both applied it: base+adapter at inference computes what the merged folder computes.
			mm, err := models.Load(out, models.LoadOptions{Threads: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer mm.Close()
			toks := []int{1, 5, 9, 13, 2}
			got, err := m.Net.Forward([]llama.Seq{{Tokens: toks, Adapter: a, AllLogits: true}})
			if err != nil {
				t.Fatal(err)
			}
			want, err := mm.Net.Forward([]llama.Seq{{Tokens: toks, AllLogits: true}})
			if err != nil {
				t.Fatal(err)
			}
			plain, _ := m.Net.Forward([]llama.Seq{{Tokens: toks, AllLogits: true}})
			var diff, effect float64
			for i := range got[0] {
				for j := range got[0][i] {
					diff = math.Max(diff, math.Abs(float64(got[0][i][j]-want[0][i][j])))
					effect = math.Max(effect, math.Abs(float64(got[0][i][j]-plain[0][i][j])))
				}
			}
			if effect < 1e-3 || diff > effect/20 {
				t.Fatalf("unmerged vs merged logits differ by %.3g; the adapter moves them by %.3g", diff, effect)
			}
		})
	}
}
