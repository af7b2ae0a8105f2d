package llama

import (
	"math"
	"path/filepath"
	"slices"
	"testing"

	"github.com/lorakit/lorakit/internal/testenv"
	"github.com/lorakit/lorakit/models/nn"
	"github.com/lorakit/lorakit/models/quant"
	"github.com/lorakit/lorakit/models/safetensors"
	"github.com/lorakit/lorakit/models/sample"
)

// openModel loads the checkpoint folder dir with opts; closeFn (nil on error) releases its mapping.
func openModel(dir string, opts LoadOptions) (m *Model, closeFn func() error, err error) {
	cfg, err := LoadConfig(dir)
	if err != nil {
		return nil, nil, err
	}
	ck, err := safetensors.OpenCheckpoint(dir)
	if err != nil {
		return nil, nil, err
	}
	if m, err = Load(ck, cfg, opts); err != nil {
		ck.Close()
		return nil, nil, err
	}
	return m, ck.Close, nil
}

// loadDirWith is openModel failing t on error, the mapping released when t ends.
func loadDirWith(t testing.TB, dir string, opts LoadOptions) *Model {
	t.Helper()
	m, closeFn, err := openModel(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeFn() })
	return m
}

func loadDir(t testing.TB, dir string, threads int) *Model {
	t.Helper()
	return loadDirWith(t, dir, LoadOptions{Threads: threads})
}

// logitsGolden is a line of golden/stories260K*-logits.jsonl: a prompt and the float64 logits of its last position.
type logitsGolden struct {
	Prompt    string    `json:"prompt"`
	PromptIDs []int     `json:"prompt_ids"`
	Logits    []float64 `json:"logits"`
}

// greedyGolden is a line of golden/stories260K-greedy.jsonl: a prompt and the tokens greedy decoding adds.
type greedyGolden struct {
	Prompt    string `json:"prompt"`
	PromptIDs []int  `json:"prompt_ids"`
	GreedyIDs []int  `json:"greedy_ids"`
}

// goldens reads a golden JSONL file of the test data.
func goldens[T any](t testing.TB, name string) []T {
	t.Helper()
	return testenv.ReadJSONL[T](t, filepath.Join(testenv.Testdata(t), "golden", name))
}

// lastLogitsDiff runs prompt and returns the largest |logit − want| of its last position, and the largest |want|.
func lastLogitsDiff(t testing.TB, m *Model, prompt []int, want []float64) (worst, scale float64) {
	t.Helper()
	out, err := m.Forward([]Seq{{Tokens: prompt}})
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range out[0][0] {
		worst = math.Max(worst, math.Abs(float64(v)-want[i]))
		scale = math.Max(scale, math.Abs(want[i]))
	}
	return worst, scale
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
		next := sample.Argmax(logits[0][0])
		out = append(out, next)
		if logits, err = m.Forward([]Seq{{Tokens: []int{next}, Cache: cache}}); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestGoldenLogits(t *testing.T) {
	sh := testenv.Testdata(t)
	for _, tc := range []struct{ dir, golden string }{
		{"stories260K", "stories260K-logits.jsonl"},
		{"stories260K-bf16", "stories260K-bf16-logits.jsonl"},
	} {
		m := loadDir(t, filepath.Join(sh, "models", tc.dir), 2)
		for _, g := range goldens[logitsGolden](t, tc.golden) {
			worst, _ := lastLogitsDiff(t, m, g.PromptIDs, g.Logits)
			if worst > 1e-4 {
				t.Errorf("%s %q: max abs logit diff %g > 1e-4", tc.dir, g.Prompt, worst)
			}
			t.Logf("%s %q: max abs diff %.2e", tc.dir, g.Prompt, worst)
		}
	}
}

func TestGoldenGreedy(t *testing.T) {
	sh := testenv.Testdata(t)
	f32 := loadDir(t, filepath.Join(sh, "models", "stories260K"), 2)
	bf16 := loadDir(t, filepath.Join(sh, "models", "stories260K-bf16"), 2)
	for _, g := range goldens[greedyGolden](t, "stories260K-greedy.jsonl") {
		if got := greedy(t, f32, g.PromptIDs, len(g.GreedyIDs)); !slices.Equal(got, g.GreedyIDs) {
			t.Errorf("f32 %q:\n got %v\nwant %v", g.Prompt, got, g.GreedyIDs)
		}
		got := greedy(t, bf16, g.PromptIDs, len(g.GreedyIDs))
		if g.Prompt == "Tom and his mom" { // documented close call: bf16 diverges at new token 2
			if !slices.Equal(got[:2], g.GreedyIDs[:2]) {
				t.Errorf("bf16 %q: first two tokens %v, want %v", g.Prompt, got[:2], g.GreedyIDs[:2])
			}
		} else if !slices.Equal(got, g.GreedyIDs) {
			t.Errorf("bf16 %q:\n got %v\nwant %v", g.Prompt, got, g.GreedyIDs)
		}
	}
}

func TestGoldenChatGreedy(t *testing.T) {
	sh := testenv.Testdata(t)
	m := loadDir(t, filepath.Join(sh, "models", "stories260K"), 1)
	for _, g := range goldens[struct {
		IDs       []int `json:"ids"`
		GreedyIDs []int `json:"greedy_ids"`
	}](t, "stories260K-chat.jsonl") {
		if got := greedy(t, m, g.IDs, len(g.GreedyIDs)); !slices.Equal(got, g.GreedyIDs) {
			t.Errorf("chat %v:\n got %v\nwant %v", g.IDs[:8], got, g.GreedyIDs)
		}
	}
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
	for _, g := range goldens[logitsGolden](t, "stories260K-logits.jsonl") {
		worst, scale := lastLogitsDiff(t, m, g.PromptIDs, g.Logits)
		if worst > 0.01*scale {
			t.Errorf("%q: max abs logit diff %.3g > 1%% of the largest |logit| %.3g", g.Prompt, worst, scale)
		}
		t.Logf("%q: max abs diff %.3g, %.2f%% of the largest |logit| %.3g", g.Prompt, worst, 100*worst/scale, scale)
	}
	agree, total := 0, 0
	for _, g := range goldens[greedyGolden](t, "stories260K-greedy.jsonl") {
		got := greedy(t, m, g.PromptIDs, len(g.GreedyIDs))
		n := 0
		for n < len(got) && got[n] == g.GreedyIDs[n] {
			n++
		}
		agree, total = agree+n, total+len(got)
		t.Logf("%q: %d of %d greedy tokens before the first difference", g.Prompt, n, len(got))
	}
	if agree < 355 {
		t.Errorf("greedy with the int8 head agrees on %d of %d golden tokens before each first difference, want >= 355", agree, total)
	}
}
