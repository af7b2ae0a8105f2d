package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/models/testmodel"
)

// hfCacheFrom copies the files of folder src into cache as huggingface_hub stores repo: blobs named by their
// hash, relative links from snapshots/COMMIT, refs/main.
func hfCacheFrom(t *testing.T, cache, repo, src string) {
	t.Helper()
	rd := filepath.Join(cache, "models--"+strings.ReplaceAll(repo, "/", "--"))
	commit := strings.Repeat("c", 40)
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		etag := hex.EncodeToString(sum[:])
		os.MkdirAll(filepath.Join(rd, "blobs"), 0o755)
		os.MkdirAll(filepath.Join(rd, "snapshots", commit), 0o755)
		if err := os.WriteFile(filepath.Join(rd, "blobs", etag), b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..", "..", "blobs", etag), filepath.Join(rd, "snapshots", commit, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Join(rd, "refs"), 0o755)
	if err := os.WriteFile(filepath.Join(rd, "refs", "main"), []byte(commit), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestHubIDsOffline: with the network off (HF_HUB_OFFLINE=1, an endpoint nobody answers), --model ORG/NAME reads
// a huggingface_hub cache for generate and train, and the trained adapter records the hub id as its base and in
// its model card; a hub id missing from the cache is a clear error.
func TestHubIDsOffline(t *testing.T) {
	dir := t.TempDir()
	cache := filepath.Join(dir, "hf", "hub")
	src := filepath.Join(dir, "src")
	if err := testmodel.Write(src, testmodel.Default()); err != nil {
		t.Fatal(err)
	}
	hfCacheFrom(t, cache, "acme/tiny", src)
	t.Setenv("HF_HOME", filepath.Join(dir, "hf"))
	t.Setenv("HF_HUB_CACHE", "")
	t.Setenv("HF_ENDPOINT", "http://127.0.0.1:1")
	t.Setenv("HF_HUB_OFFLINE", "1")

	out := run(t, "generate", "--model", "acme/tiny", "--prompt", "hi", "--max-tokens", "3", "--temperature", "0", "--json")
	if !strings.Contains(out, `"finish_reason"`) {
		t.Fatalf("generate: %s", out)
	}
	var lines []string
	for i := 0; i < 8; i++ {
		lines = append(lines, fmt.Sprintf(`{"prompt":"%d+1","response":"%d"}`, i, i+1))
	}
	data := filepath.Join(dir, "data.jsonl")
	os.WriteFile(data, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	adapter := filepath.Join(dir, "tiny-lora")
	run(t, "train", "--model", "acme/tiny", "--data", data, "--out", adapter, "--rank", "2", "--alpha", "4",
		"--max-steps", "1", "--batch-size", "2", "--threads", "1")
	var cfg struct {
		Base string `json:"base_model_name_or_path"`
	}
	b, _ := os.ReadFile(filepath.Join(adapter, "adapter_config.json"))
	if err := json.Unmarshal(b, &cfg); err != nil || cfg.Base != "acme/tiny" {
		t.Fatalf("base_model_name_or_path %q (%v), want the hub id acme/tiny", cfg.Base, err)
	}
	card, err := os.ReadFile(filepath.Join(adapter, "README.md"))
	if err != nil || !strings.HasPrefix(string(card), "---\nbase_model: acme/tiny\nlibrary_name: peft\n") ||
		!strings.Contains(string(card), "| rank (r) | 2 |") {
		t.Fatalf("model card: %v\n%s", err, card)
	}
	run(t, "generate", "--model", "acme/tiny", "--adapter", adapter, "--prompt", "1+1", "--max-tokens", "2")

	root := newRootCmd()
	root.SetOut(new(strings.Builder))
	root.SetErr(new(strings.Builder))
	root.SetArgs([]string{"generate", "--model", "acme/missing", "--prompt", "x"})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "HF_HUB_OFFLINE") {
		t.Fatalf("a missing hub id offline: %v", err)
	}
	// Cached ids need no network even when downloads are allowed.
	t.Setenv("HF_HUB_OFFLINE", "")
	run(t, "tokenize", "--model", "acme/tiny", "hello")
}
