package serve

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/lorakit/lorakit/internal/testenv"
	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/grammar"
	"github.com/lorakit/lorakit/models/testmodel"
	"github.com/lorakit/lorakit/models/tokenizer"
	"github.com/lorakit/lorakit/serve/backend"
	"github.com/lorakit/lorakit/serve/engine"
)

// benchSchema has nested objects, enums, bounded integers, arrays and free strings; minItems keeps a
// generation going past the token budget.
const benchSchema = `{"type":"object","properties":{"items":{"type":"array","minItems":50,"items":{"type":"object",
"properties":{"name":{"type":"string","maxLength":40},"kind":{"enum":["book","film","song","game"]},
"year":{"type":"integer","minimum":1900,"maximum":2030},"tags":{"type":"array","items":{"type":"string","maxLength":12},"maxItems":4},
"meta":{"type":"object","properties":{"rating":{"type":"number"},"ok":{"type":"boolean"}},"required":["rating","ok"]}},
"required":["name","kind","year","tags","meta"],"additionalProperties":false}}},"required":["items"],"additionalProperties":false}`

// BenchmarkStructuredDecode compares single-stream decode speed with and without a JSON Schema constraint on
// the SmolLM2-135M shape (30 layers, bf16, random weights) with a 49,152-token byte-level vocabulary (the
// first 49,152 tokens of Llama 3's, from the shared tokenizers; SmolLM2's own is not there). "cold" compiles
// the grammar afresh for each generation (every mask computed by walking the vocabulary trie); "warm" reuses
// one grammar, as the server does for a repeated schema (masks of states met before are cached):
//
//	LORAKIT_SHARED=/work/shared go test ./serve -run XXX -bench StructuredDecode -benchtime 5x
func BenchmarkStructuredDecode(b *testing.B) {
	sh := testenv.Shared()
	if sh == "" {
		b.Skip("LORAKIT_SHARED not set")
	}
	const vocabSize, gen = 49152, 128
	tok, err := tokenizer.Load(filepath.Join(sh, "tokenizers", "llama3"))
	if err != nil {
		b.Fatal(err)
	}
	toks := append([][]byte(nil), tok.TokenBytes()[:vocabSize]...)
	eos := vocabSize - 1
	toks[eos] = nil
	vocab := grammar.NewVocab(toks, []int{eos})

	dir := b.TempDir()
	o := testmodel.Options{ModelType: "llama", Hidden: 576, Intermediate: 1536, Layers: 30, Heads: 9, KVHeads: 3,
		Vocab: vocabSize, MaxPositions: 2048, Tied: true, DType: "BF16", Seed: 1, Std: 0.02}
	if err := testmodel.Write(filepath.Join(dir, "model"), o); err != nil {
		b.Fatal(err)
	}
	m, err := models.Load(filepath.Join(dir, "model"), models.LoadOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	be := backend.FromModel(m)
	eng, err := engine.New(engine.Config{Backend: be, NewDecoder: be.NewDecoder, NewSampler: be.NewSampler,
		EOS: []int{eos}, MaxModelLen: 2048, MaxBatch: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer eng.Shutdown(context.Background())
	warm, err := grammar.JSONSchema([]byte(benchSchema))
	if err != nil {
		b.Fatal(err)
	}
	run := func(b *testing.B, c engine.Constraint, seed int64) int {
		req := &engine.Request{Prompt: []int{1, 2, 3, 4}, MaxTokens: gen, IgnoreEOS: c == nil, Constraint: c,
			Sampling: engine.SamplingParams{Temperature: 1, Seed: seed}}
		st, err := eng.Submit(context.Background(), req)
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for {
			ev, err := st.Recv(context.Background())
			if errors.Is(err, io.EOF) {
				return n
			}
			if err != nil {
				b.Fatal(err)
			}
			if ev.Finish != "" {
				if ev.Err != nil {
					b.Fatal(ev.Err)
				}
				n = ev.CompletionTokens
			}
		}
	}
	// The modes alternate within each round so that a shared machine's load falls on all of them alike; process
	// CPU time per token is reported beside wall-clock speed because it is steadier under load.
	modes := []string{"unconstrained", "cold", "warm"}
	tokens := make([]int, len(modes))
	wall := make([]time.Duration, len(modes))
	cpu := make([]float64, len(modes))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k, mode := range modes {
			var c engine.Constraint
			switch mode {
			case "cold":
				g, err := grammar.JSONSchema([]byte(benchSchema))
				if err != nil {
					b.Fatal(err)
				}
				c = g.NewMatcher(vocab)
			case "warm":
				c = warm.NewMatcher(vocab)
			}
			t0, c0 := time.Now(), cpuSeconds()
			tokens[k] += run(b, c, int64(i))
			wall[k] += time.Since(t0)
			cpu[k] += cpuSeconds() - c0
		}
	}
	for k, mode := range modes {
		b.ReportMetric(float64(tokens[k])/wall[k].Seconds(), mode+"_tok/s")
		b.ReportMetric(cpu[k]/float64(tokens[k])*1e3, mode+"_cpu-ms/tok")
	}
	b.ReportMetric(wall[0].Seconds()/float64(tokens[0])/(wall[2].Seconds()/float64(tokens[2])), "warm/unconstrained")
	b.ReportMetric(wall[0].Seconds()/float64(tokens[0])/(wall[1].Seconds()/float64(tokens[1])), "cold/unconstrained")
}
