package serve

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/safetensors"
	"github.com/lorakit/lorakit/models/testmodel"
	"github.com/lorakit/lorakit/serve/backend"
)

// TestMergeOnlyAdapterIsA400: an adapter the serving path cannot apply to a shared base (LoRA on the embedding,
// modules_to_save) is refused with a 400 that says to merge it, whether hot-loaded or lazily loaded from
// --adapter-dir, at startup an error, and the server keeps serving the base and the other adapters.
func TestMergeOnlyAdapterIsA400(t *testing.T) {
	dir := t.TempDir()
	if err := testmodel.Write(filepath.Join(dir, "model"), testmodel.Default()); err != nil {
		t.Fatal(err)
	}
	m, err := models.Load(filepath.Join(dir, "model"), models.LoadOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	lib := filepath.Join(dir, "lib")
	writeRandomAdapter(t, m, filepath.Join(lib, "good"), 3)
	cfg := lora.NewConfig(4, 8, []string{"embed_tokens"})
	emb := lora.New(cfg)
	V, H := m.Config.VocabSize, m.Config.HiddenSize
	emb.Embed = map[string]*lora.Pair{"model.embed_tokens": {A: make([]float32, 4*V), B: make([]float32, H*4), R: 4, In: V, Out: H, Alpha: 8, Scale: 2}}
	if err := emb.Save(filepath.Join(lib, "embed")); err != nil {
		t.Fatal(err)
	}
	mts := lora.New(lora.Config{PeftType: "LORA", R: 4, Alpha: 8, ModulesToSave: []string{"lm_head"}})
	mts.Saved["lm_head.weight"] = safetensors.F32Tensor("lm_head.weight", []int{V, H}, make([]float32, V*H))
	if err := mts.Save(filepath.Join(lib, "mts")); err != nil {
		t.Fatal(err)
	}

	if _, err := New(Config{Model: backend.FromModel(m), ModelName: "tiny", Adapters: map[string]string{"embed": filepath.Join(lib, "embed")}}); err == nil {
		t.Fatal("startup with an embedding-LoRA adapter accepted")
	} else {
		t.Log(err)
	}
	srv, err := New(Config{Model: backend.FromModel(m), ModelName: "tiny", AdapterDir: lib, MaxBatch: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	e := &testEnv{srv: srv, ts: newTS(t, srv)}
	for _, c := range []struct{ name, want string }{{"embed", "model.embed_tokens.lora_embedding_A"}, {"mts", "modules_to_save"}} {
		st, b := e.post(t, "/v1/load_lora_adapter", fmt.Sprintf(`{"lora_name":"hot-%s","lora_path":%q}`, c.name, filepath.Join(lib, c.name)))
		wantError(t, st, b, 400, c.want)
		wantError(t, st, b, 400, "lorakit merge")
		st, b = e.post(t, "/v1/chat/completions", chatBody(c.name, "hi", `"max_tokens":2`))
		wantError(t, st, b, 400, "lorakit merge")
	}
	for _, model := range []string{"tiny", "good"} {
		if st, b := e.post(t, "/v1/chat/completions", chatBody(model, "hi", `"max_tokens":2`)); st != 200 {
			t.Fatalf("%s after refused adapters: %d %s", model, st, b)
		}
	}
}
