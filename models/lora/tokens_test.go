package lora

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/models/safetensors"
)

// writePEFTTokens writes an adapter folder the way PEFT saves a LoraConfig with trainable_token_indices: the
// config field as given, one q_proj pair, and each module's rows under "<module>.token_adapter.trainable_tokens_delta".
func writePEFTTokens(t *testing.T, dir, indices string, rows map[string][]float32, n, dim int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := `{"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 1, "lora_alpha": 2, "target_modules": ["q_proj"],
"trainable_token_indices": ` + indices + `, "use_dora": false, "bias": "none"}`
	if err := os.WriteFile(filepath.Join(dir, ConfigName), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	ts := []safetensors.Tensor{
		safetensors.F32Tensor(KeyPrefix+"model.layers.0.self_attn.q_proj.lora_A.weight", []int{1, dim}, make([]float32, dim)),
		safetensors.F32Tensor(KeyPrefix+"model.layers.0.self_attn.q_proj.lora_B.weight", []int{dim, 1}, make([]float32, dim)),
	}
	for m, v := range rows {
		b, err := safetensors.Encode(safetensors.BF16, v)
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, safetensors.Tensor{Name: KeyPrefix + m + ".token_adapter.trainable_tokens_delta", DType: safetensors.BF16, Shape: []int{n, dim}, Data: b})
	}
	if err := safetensors.Write(filepath.Join(dir, WeightsName), ts, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
}

// TestTrainableTokensPEFTRoundTrip: PEFT-written trainable-token rows load (list form: the embedding; object
// form: embedding and untied head), save back with PEFT's keys and config field, and load again equal; the
// unmerged path replaces the embedding rows and the head logits (the embedding's rows with a tied head).
func TestTrainableTokensPEFTRoundTrip(t *testing.T) {
	const dim = 4
	emb := []float32{1, 2, 3, 4, -1, -2, -3, -4} // bf16-exact
	head := []float32{0.5, 0, 0, 0, 0, 0.25, 0, 0}
	for _, tc := range []struct {
		name, indices string
		rows          map[string][]float32
		tied          bool
	}{
		{"list-tied", `[2, 5]`, map[string][]float32{EmbedModule: emb}, true},
		{"dict-untied", `{"embed_tokens": [2, 5], "lm_head": [2, 5]}`, map[string][]float32{EmbedModule: emb, HeadModule: head}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "peft")
			writePEFTTokens(t, dir, tc.indices, tc.rows, 2, dim)
			a, err := LoadUnmerged(dir, Base{Vocab: 8, Dim: dim, TiedHead: tc.tied,
				Linear: func(string) (int, int, bool) { return dim, dim, true }})
			if err != nil {
				t.Fatal(err)
			}
			for m, v := range tc.rows {
				if got := a.Tokens[m]; got == nil || !reflect.DeepEqual(got.IDs, []int{2, 5}) || !reflect.DeepEqual(got.Values, v) || got.Dim != dim {
					t.Fatalf("%s: loaded %+v", m, got)
				}
			}
			// unmerged application
			x := make([]float32, dim)
			if !a.EmbedRow(5, x) || !reflect.DeepEqual(x, emb[dim:]) || a.EmbedRow(3, x) {
				t.Fatalf("EmbedRow: %v", x)
			}
			hidden := []float32{1, 1, 1, 1}
			logits := make([]float32, 8)
			a.ApplyRows(nil, HeadModule, logits, hidden, 1, dim, 8)
			want := map[bool][2]float32{true: {10, -10}, false: {0.5, 0.25}}[tc.tied]
			if logits[2] != want[0] || logits[5] != want[1] || logits[3] != 0 {
				t.Fatalf("head logits %v, want %v at 2 and 5", logits, want)
			}
			// save and load again: PEFT's keys and field
			out := filepath.Join(t.TempDir(), "again")
			if err := a.Save(out); err != nil {
				t.Fatal(err)
			}
			f, err := safetensors.Open(filepath.Join(out, WeightsName))
			if err != nil {
				t.Fatal(err)
			}
			names := strings.Join(f.Names(), " ")
			f.Close()
			for m := range tc.rows {
				if !strings.Contains(names, KeyPrefix+m+".token_adapter.trainable_tokens_delta") {
					t.Errorf("saved keys %s lack %s's rows", names, m)
				}
			}
			var cfg map[string]any
			b, _ := os.ReadFile(filepath.Join(out, ConfigName))
			if err := json.Unmarshal(b, &cfg); err != nil {
				t.Fatal(err)
			}
			var in any
			json.Unmarshal([]byte(tc.indices), &in)
			if !reflect.DeepEqual(cfg["trainable_token_indices"], in) {
				t.Fatalf("trainable_token_indices written as %v, want %v", cfg["trainable_token_indices"], in)
			}
			c, err := Load(out)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c.Tokens, a.Tokens) {
				t.Fatalf("round trip: %+v vs %+v", c.Tokens, a.Tokens)
			}
			// PEFT with save_embedding_layers also saves the wrapped table as "…token_adapter.base_layer.weight":
			// it is the base layer of model.embed_tokens.weight.
			f, err = safetensors.Open(filepath.Join(dir, WeightsName))
			if err != nil {
				t.Fatal(err)
			}
			var ts []safetensors.Tensor
			for _, n := range f.Names() {
				info, _ := f.Info(n)
				raw, _ := f.Bytes(n)
				ts = append(ts, safetensors.Tensor{Name: n, DType: info.DType, Shape: info.Shape, Data: append([]byte(nil), raw...)})
			}
			f.Close()
			ts = append(ts, safetensors.F32Tensor(KeyPrefix+EmbedModule+".token_adapter.base_layer.weight", []int{8, dim}, make([]float32, 8*dim)))
			if err := safetensors.Write(filepath.Join(dir, WeightsName), ts, nil); err != nil {
				t.Fatal(err)
			}
			d, err := Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := d.BaseLayers["model.embed_tokens.weight"]; !ok || len(d.BaseLayers) != 1 {
				t.Fatalf("token_adapter.base_layer read as %v", slices.Collect(maps.Keys(d.BaseLayers)))
			}
		})
	}
}

// TestTrainableTokensRefused: rows without indices, indices without rows, a wrong row count, ids outside the
// base's vocabulary and head rows for a tied base are refused, naming the tensor or field.
func TestTrainableTokensRefused(t *testing.T) {
	const dim = 4
	rows := make([]float32, 2*dim)
	for _, tc := range []struct {
		name, indices string
		rows          map[string][]float32
		n, vocab      int
		tied          bool
		want          string
	}{
		{"no-indices", `null`, map[string][]float32{EmbedModule: rows}, 2, 8, true, "gives that module no ids"},
		{"no-rows", `[1, 2]`, nil, 2, 8, true, "have no"},
		{"count", `[1, 2, 3]`, map[string][]float32{EmbedModule: rows}, 2, 8, true, "one row per id"},
		{"vocab", `[1, 9]`, map[string][]float32{EmbedModule: rows}, 2, 8, true, "outside the vocabulary"},
		{"tied-head", `{"embed_tokens": [1, 2], "lm_head": [1, 2]}`, map[string][]float32{EmbedModule: rows, HeadModule: rows}, 2, 8, true, "ties lm_head"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "peft")
			writePEFTTokens(t, dir, tc.indices, tc.rows, tc.n, dim)
			_, err := LoadUnmerged(dir, Base{Vocab: tc.vocab, Dim: dim, TiedHead: tc.tied,
				Linear: func(string) (int, int, bool) { return dim, dim, true }})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}
