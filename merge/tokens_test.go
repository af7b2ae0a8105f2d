package merge

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/safetensors"
)

// TestMergeTrainableTokens: trained token rows replace the embedding rows (and an untied head's rows) in the
// merged folder, a tied base stays tied (its head follows the embedding, as in PEFT), and the merged model's
// logits equal base+adapter's (Verify, on token sequences that include the trained ids).
func TestMergeTrainableTokens(t *testing.T) {
	for _, tied := range []bool{true, false} {
		t.Run(map[bool]string{true: "tied", false: "untied"}[tied], func(t *testing.T) {
			root := t.TempDir()
			base := filepath.Join(root, "base")
			writeBase(t, base, baseOpts{seed: 5, tied: tied})
			ad := makeAdapter(t, 6, 2, 4, []string{"q_proj"}, false)
			ids := []int{3, 17}
			row := func(s float32) []float32 {
				v := make([]float32, 2*tH)
				for i := range v {
					v[i] = s * float32(i%5-2)
				}
				return v
			}
			ad.Config.TrainableTokens = lora.NewTokenIndices(ids, !tied)
			ad.Tokens = map[string]*lora.TokenRows{lora.EmbedModule: {IDs: ids, Values: row(0.3), Dim: tH}}
			if !tied {
				ad.Tokens[lora.HeadModule] = &lora.TokenRows{IDs: ids, Values: row(-0.7), Dim: tH}
			}
			dir := filepath.Join(root, "ad")
			if err := ad.Save(dir); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(root, "out")
			res, err := Run(context.Background(), base, out, Options{Adapters: []Source{{Dir: dir, Weight: 1}}, Verify: true, Threads: 1})
			if err != nil {
				t.Fatal(err)
			}
			if !res.Verify.OK {
				t.Fatalf("verify: %+v", res.Verify)
			}
			ck, err := safetensors.OpenCheckpoint(out)
			if err != nil {
				t.Fatal(err)
			}
			defer ck.Close()
			check := func(name string, want []float32) {
				w, err := ck.Float32s(name)
				if err != nil {
					t.Fatal(err)
				}
				for k, id := range ids {
					if !slices.Equal(w[id*tH:(id+1)*tH], want[k*tH:(k+1)*tH]) {
						t.Fatalf("%s row %d: %v, want %v", name, id, w[id*tH:(id+1)*tH], want[k*tH:(k+1)*tH])
					}
				}
			}
			check("model.embed_tokens.weight", row(0.3))
			_, _, hasHead := ck.Info("lm_head.weight")
			if tied {
				if hasHead {
					t.Fatal("a tied base was untied for trained token rows")
				}
			} else {
				check("lm_head.weight", row(-0.7))
			}
			t.Logf("verify: max diff %.3g, adapter effect %.3g", res.Verify.MaxAbsDiff, res.Verify.AdapterEffect)
		})
	}
}
