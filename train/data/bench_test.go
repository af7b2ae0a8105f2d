package data

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/lorakit/lorakit/internal/testenv"
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/safetensors"
)

// BenchmarkScoreStories scores 200 lines of $LORAKIT_BENCH_FILE with stories260K.
func BenchmarkScoreStories(b *testing.B) {
	shared, in := testenv.Shared(), os.Getenv("LORAKIT_BENCH_FILE")
	if shared == "" || in == "" {
		b.Skip("LORAKIT_SHARED / LORAKIT_BENCH_FILE not set")
	}
	dir := filepath.Join(shared, "models", "stories260K")
	tok, tpl := loadTokTpl(&testing.T{}, dir)
	ck, _ := safetensors.OpenCheckpoint(dir)
	cfg, _ := llama.LoadConfig(dir)
	net, err := llama.Load(ck, cfg, llama.LoadOptions{Threads: 1})
	if err != nil {
		b.Fatal(err)
	}
	bos, _ := tok.BOS()
	for i := 0; i < b.N; i++ {
		out := filepath.Join(b.TempDir(), "o.jsonl")
		if _, err := ScoreFile(in, out, ScoreOptions{Tok: tok, Tpl: tpl, BOS: bos, HasBOS: true, Scorer: &ModelScorer{Net: net}, Workers: 1}); err != nil {
			b.Fatal(err)
		}
	}
}
