package llama

import (
	"encoding/json"
	"math"
	"path/filepath"
	"testing"

	"github.com/lorakit/lorakit/internal/testenv"
	"github.com/lorakit/lorakit/models/nn"
	"github.com/lorakit/lorakit/models/quant"
	"github.com/lorakit/lorakit/models/safetensors"
)

func loadDir(t testing.TB, dir string, threads int) *Model {
	t.Helper()
	return loadDirWith(t, dir, LoadOptions{Threads: threads})
}

// greedy feeds prompt, then n argmax tokens one at a time through an f32 cache.
func greedy(t testing.TB, m *Model, prompt []int, n int) []int {
	t.Helper()
	return greedyCache(t, m, m.NewCache(0), prompt, n)
}

// greedyCache is greedy through cache.
func greedyCache(t testing.TB, m *Model, cache *KVCache, prompt []int, n int) []int {
	t.Helper()
	logits, err := m.Forward([]Seq{{Tokens: prompt, Cache: cache}})
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for range n {
		next := argmax(logits[0][0])
		out = append(out, next)
		if logits, err = m.Forward([]Seq{{Tokens: []int{next}, Cache: cache}}); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func argmax(x []float32) int {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return best
}

func TestGoldenLogits(t *testing.T) {
	sh := testenv.Testdata(t)
	for _, tc := range []struct{ dir, golden string }{
		{"stories260K", "stories260K-logits.jsonl"},
		{"stories260K-bf16", "stories260K-bf16-logits.jsonl"},
	} {
		m := loadDir(t, filepath.Join(sh, "models", tc.dir), 2)
		testenv.EachLine(t, filepath.Join(sh, "golden", tc.golden), func(line []byte) {
			var g struct {
				Prompt    string    `json:"prompt"`
				PromptIDs []int     `json:"prompt_ids"`
				Logits    []float64 `json:"logits"`
			}
			if err := json.Unmarshal(line, &g); err != nil {
				t.Fatal(err)
			}
			out, err := m.Forward([]Seq{{Tokens: g.PromptIDs}})
			if err != nil {
				t.Fatal(err)
			}
			worst := 0.0
			for i, v := range out[0][0] {
				worst = math.Max(worst, math.Abs(float64(v)-g.Logits[i]))
			}
			if worst > 1e-4 {
				t.Errorf("%s %q: max abs logit diff %g > 1e-4", tc.dir, g.Prompt, worst)
			}
			t.Logf("%s %q: max abs diff %.2e", tc.dir, g.Prompt, worst)
		})
	}
}

func TestGoldenGreedy(t *testing.T) {
	sh := testenv.Testdata(t)
	f32 := loadDir(t, filepath.Join(sh, "models", "stories260K"), 2)
	bf16 := loadDir(t, filepath.Join(sh, "models", "stories260K-bf16"), 2)
	testenv.EachLine(t, filepath.Join(sh, "golden", "stories260K-greedy.jsonl"), func(line []byte) {
		var g struct {
			Prompt    string `json:"prompt"`
			PromptIDs []int  `json:"prompt_ids"`
			GreedyIDs []int  `json:"greedy_ids"`
		}
		if err := json.Unmarshal(line, &g); err != nil {
			t.Fatal(err)
		}
		if got := greedy(t, f32, g.PromptIDs, len(g.GreedyIDs)); !equalShape(got, g.GreedyIDs) {
			t.Errorf("f32 %q:\n got %v\nwant %v", g.Prompt, got, g.GreedyIDs)
		}
		got := greedy(t, bf16, g.PromptIDs, len(g.GreedyIDs))
		if g.Prompt == "Tom and his mom" { // documented close call: bf16 diverges at new token 2
			if !equalShape(got[:2], g.GreedyIDs[:2]) {
				t.Errorf("bf16 %q: first two tokens %v, want %v", g.Prompt, got[:2], g.GreedyIDs[:2])
			}
		} else if !equalShape(got, g.GreedyIDs) {
			t.Errorf("bf16 %q:\n got %v\nwant %v", g.Prompt, got, g.GreedyIDs)
		}
	})
}

func TestGoldenChatGreedy(t *testing.T) {
	sh := testenv.Testdata(t)
	m := loadDir(t, filepath.Join(sh, "models", "stories260K"), 1)
	testenv.EachLine(t, filepath.Join(sh, "golden", "stories260K-chat.jsonl"), func(line []byte) {
		var g struct {
			IDs       []int `json:"ids"`
			GreedyIDs []int `json:"greedy_ids"`
		}
		if err := json.Unmarshal(line, &g); err != nil {
			t.Fatal(err)
		}
		if got := greedy(t, m, g.IDs, len(g.GreedyIDs)); !equalShape(got, g.GreedyIDs) {
			t.Errorf("chat %v:\n got %v\nwant %v", g.IDs[:8], got, g.GreedyIDs)
		}
	})
}

// loadDirWith loads the checkpoint folder dir with opts.
func loadDirWith(t testing.TB, dir string, opts LoadOptions) *Model {
	t.Helper()
	cfg, err := LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := safetensors.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ck.Close() })
	m, err := Load(ck, cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestGoldenInt8Head states what the row-wise int8 LM head (--head int8, and auto for a 4-bit base) costs on
// stories260K: weights rounded to 1/127 of their row's absmax and, on the dot kernels, x to 1/127 of each
// 32-block's. Measured (AVX-512 and AVX2 alike): the largest logit difference from the golden float64 logits is
// 0.113/0.125/0.139 on the three prompts, 0.63–0.89% of the largest |logit| (16–18), where the f32 head is within
// 1e-4 (TestGoldenLogits); greedy decoding agrees with the goldens on 362 of their 512 tokens before each prompt's
// first difference (three of eight prompts all 64, "Tom and his mom" only 2: the close call bf16 also misses).
// The test fails if either gets worse: a difference over 1% of the largest |logit|, or fewer than 355 tokens.
func TestGoldenInt8Head(t *testing.T) {
	sh := testenv.Testdata(t)
	head, err := nn.HeadQuantizer("int8")
	if err != nil {
		t.Fatal(err)
	}
	m := loadDirWith(t, filepath.Join(sh, "models", "stories260K"), LoadOptions{Threads: 2, QuantizeHead: head})
	if q, ok := m.LMHead.(*nn.Quantized); !ok || q.Q.Type != quant.Int8 {
		t.Fatalf("LM head is %T, want the int8 copy", m.LMHead)
	}
	testenv.EachLine(t, filepath.Join(sh, "golden", "stories260K-logits.jsonl"), func(line []byte) {
		var g struct {
			Prompt    string    `json:"prompt"`
			PromptIDs []int     `json:"prompt_ids"`
			Logits    []float64 `json:"logits"`
		}
		if err := json.Unmarshal(line, &g); err != nil {
			t.Fatal(err)
		}
		out, err := m.Forward([]Seq{{Tokens: g.PromptIDs}})
		if err != nil {
			t.Fatal(err)
		}
		worst, scale := 0.0, 0.0
		for i, v := range out[0][0] {
			worst = math.Max(worst, math.Abs(float64(v)-g.Logits[i]))
			scale = math.Max(scale, math.Abs(g.Logits[i]))
		}
		if worst > 0.01*scale {
			t.Errorf("%q: max abs logit diff %.3g > 1%% of the largest |logit| %.3g", g.Prompt, worst, scale)
		}
		t.Logf("%q: max abs diff %.3g, %.2f%% of the largest |logit| %.3g", g.Prompt, worst, 100*worst/scale, scale)
	})
	agree, total := 0, 0
	testenv.EachLine(t, filepath.Join(sh, "golden", "stories260K-greedy.jsonl"), func(line []byte) {
		var g struct {
			Prompt    string `json:"prompt"`
			PromptIDs []int  `json:"prompt_ids"`
			GreedyIDs []int  `json:"greedy_ids"`
		}
		if err := json.Unmarshal(line, &g); err != nil {
			t.Fatal(err)
		}
		got := greedy(t, m, g.PromptIDs, len(g.GreedyIDs))
		n := 0
		for n < len(got) && got[n] == g.GreedyIDs[n] {
			n++
		}
		agree, total = agree+n, total+len(got)
		t.Logf("%q: %d of %d greedy tokens before the first difference", g.Prompt, n, len(got))
	})
	if agree < 355 {
		t.Errorf("greedy with the int8 head agrees on %d of %d golden tokens before each first difference, want >= 355", agree, total)
	}
}
