package merge

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/lorakit/lorakit/internal/testenv"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/safetensors"
)

// storiesModel returns the repository's copy of models/<name> (stories260K or stories260K-bf16).
func storiesModel(t *testing.T, name string) string {
	t.Helper()
	return filepath.Join(testenv.Testdata(t), "models", name)
}

// storiesAdapter is a PEFT-style adapter for stories260K on all seven projections with rank/alpha patterns.
func storiesAdapter(t *testing.T, base string) *lora.Adapter {
	bm, closeB := loadModel(t, base)
	defer closeB()
	ad := randomAdapter(bm, 77, 8, 16)
	cfg := ad.Config
	cfg.RankPattern = map[string]float64{"down_proj": 4}
	cfg.AlphaPattern = map[string]float64{`layers\.[0-2]\.self_attn\..*`: 8}
	cfg.UseRSLoRA = true
	ad2 := lora.New(cfg)
	for m, p := range ad.Modules {
		q := cfg.NewPair(m, p.In, p.Out)
		copy(q.A, p.A)
		copy(q.B, p.B)
		for i := range q.B {
			q.B[i] *= 0.5
		}
		ad2.Modules[m] = q
	}
	return ad2
}

// TestMergeStories260K merges an adapter into the real stories260K checkpoints (f32 and bf16) of testdata/
// and compares forward(merged) with forward(base + adapter). With LORAKIT_MERGE_BENCH_DIR set it also leaves the
// adapter in $LORAKIT_MERGE_BENCH_DIR/stories-adapter, for checking `lorakit merge` with an independent
// implementation (merge/scripts/torch_check.py).
func TestMergeStories260K(t *testing.T) {
	for _, name := range []string{"stories260K", "stories260K-bf16"} {
		base := storiesModel(t, name)
		ad := storiesAdapter(t, base)
		if keep := os.Getenv("LORAKIT_MERGE_BENCH_DIR"); keep != "" && name == "stories260K" {
			if err := ad.Save(filepath.Join(keep, "stories-adapter")); err != nil {
				t.Fatal(err)
			}
		}
		dir := saveAdapter(t, ad) // through PEFT files, as a user would
		loaded, err := lora.Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		if p := loaded.Modules["model.layers.1.mlp.down_proj"]; p.R != 4 {
			t.Fatalf("rank_pattern: r=%d", p.R)
		}
		out := filepath.Join(t.TempDir(), "merged")
		res, err := Run(context.Background(), base, out, Options{Adapters: []Source{{Dir: dir, Weight: 1}}, Verify: true, Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		bm, closeB := loadModel(t, base)
		plain, adapted := logits(t, bm, nil), logits(t, bm, loaded)
		closeB()
		mm, closeM := loadModel(t, out)
		d := maxDiff(adapted, logits(t, mm, nil))
		closeM()
		bound := 1e-5 * max(1, res.Verify.MaxAbsLogit) // f32: 1e-5 relative to the largest logit
		if name == "stories260K-bf16" {
			bound = BoundFor(safetensors.BF16, res.Verify.MaxAbsLogit)
		}
		t.Logf("%s: adapter effect %.3g, merged vs base+adapter %.3g (bound %.3g), max |logit| %.3g", name, maxDiff(plain, adapted), d, bound, res.Verify.MaxAbsLogit)
		if maxDiff(plain, adapted) < 0.1 || d > bound {
			t.Fatalf("%s: adapter effect %g, merged vs base+adapter %g (bound %g)", name, maxDiff(plain, adapted), d, bound)
		}
	}
}
