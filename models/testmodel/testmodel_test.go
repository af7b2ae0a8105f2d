package testmodel_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/safetensors"
	"github.com/lorakit/lorakit/models/testmodel"
)

func TestWriteVariants(t *testing.T) {
	for _, o := range []testmodel.Options{
		testmodel.Default(),
		{ModelType: "qwen3", HeadDim: 16, Tied: true, DType: "BF16"},
		{ModelType: "qwen2", Shards: 2, DType: "F16"},
		{ModelType: "mistral", Llama3RopeScaling: true},
	} {
		dir := t.TempDir()
		if err := testmodel.Write(dir, o); err != nil {
			t.Fatal(err)
		}
		cfg, err := llama.LoadConfig(dir)
		if err != nil {
			t.Fatal(err)
		}
		ck, err := safetensors.OpenCheckpoint(dir)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := llama.Load(ck, cfg, llama.LoadOptions{Threads: 1}); err != nil {
			t.Fatal(err)
		}
		ck.Close()
		var tj struct {
			Model struct {
				Vocab  map[string]int `json:"vocab"`
				Merges []string       `json:"merges"`
			} `json:"model"`
			Added []struct {
				ID      int    `json:"id"`
				Content string `json:"content"`
			} `json:"added_tokens"`
		}
		b, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &tj); err != nil {
			t.Fatal(err)
		}
		if len(tj.Model.Merges) == 0 || len(tj.Added) != len(testmodel.Specials) || len(tj.Model.Vocab) > cfg.VocabSize {
			t.Fatalf("tokenizer: %d merges, %d added, %d vocab", len(tj.Model.Merges), len(tj.Added), len(tj.Model.Vocab))
		}
		if id := testmodel.SpecialID(o, "<|im_end|>"); id != cfg.EOSTokenIDs[0] || tj.Added[3].ID != id {
			t.Fatalf("eos id %d vs config %v", id, cfg.EOSTokenIDs)
		}
		for _, f := range []string{"generation_config.json", "tokenizer_config.json"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := testmodel.Write(t.TempDir(), testmodel.Options{ModelType: "gemma"}); err == nil {
		t.Fatal("unknown model type accepted")
	}
}
