package llama

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/internal/testenv"
	"github.com/lorakit/lorakit/models/testmodel"
)

// writeStoriesClassifier writes stories260K with a random score head of the given labels, saved as
// transformers saves a LlamaForSequenceClassification, pad_token_id 0 (<unk>).
func writeStoriesClassifier(t *testing.T, labels ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "cls")
	src := filepath.Join(testenv.Testdata(t), "models", "stories260K")
	if err := testmodel.WriteClassifier(dir, src, testmodel.ClassifierOptions{Labels: labels, PadTokenID: 0, Seed: 5, Std: 0.2}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestClassifyMatchesReference checks the score head against a float64 forward pass read where transformers
// reads it (the rightmost token that is not pad_token_id), for sequences of different lengths batched together,
// with trailing and inner padding, and that batching does not change a score.
func TestClassifyMatchesReference(t *testing.T) {
	dir := writeStoriesClassifier(t, "low", "mid", "high")
	m := loadDir(t, dir, 2)
	if !m.Config.Classifier() || m.LMHead != nil || m.Score == nil || m.Score.Rows != 3 || m.Config.PadTokenID != 0 {
		t.Fatalf("loaded as classifier %v, lm_head %v, score %v, pad %d", m.Config.Classifier(), m.LMHead != nil, m.Score != nil, m.Config.PadTokenID)
	}
	long := []int{1}
	for i := range 40 { // long enough for the blocked (GEMM) prefill path
		long = append(long, 3+(i*37)%500)
	}
	seqs := [][]int{
		{1, 300, 41, 7},
		long,
		{1, 99, 0, 0, 0},     // right-padded: read at 99
		{1, 0, 250, 0},       // an inner pad does not end the sequence: read at 250
		{0, 0, 17, 200, 310}, // left-padded: read at the last token
		{1},
		{0, 0}, // all padding: transformers reads position 0
	}
	got, err := m.Classify(seqs)
	if err != nil {
		t.Fatal(err)
	}
	w := tensorF32(t, dir, "score.weight")
	worst := 0.0
	for i, s := range seqs {
		pos := 0 // argmax over positions of position·(token != pad)
		for p, tok := range s {
			if tok != 0 {
				pos = p
			}
		}
		hs, err := testmodel.RefHidden(dir, refConfig(m.Config), s)
		if err != nil {
			t.Fatal(err)
		}
		want := testmodel.RefMatVec(w, hs[pos])
		for j := range want {
			worst = math.Max(worst, math.Abs(float64(got[i][j])-want[j]))
		}
		one, err := m.Classify(seqs[i : i+1])
		if err != nil {
			t.Fatal(err)
		}
		for j := range want {
			if d := math.Abs(float64(one[0][j] - got[i][j])); d > 1e-6 {
				t.Errorf("sequence %d label %d: alone %g, in the batch %g", i, j, one[0][j], got[i][j])
			}
		}
	}
	t.Logf("max abs diff vs float64 reference: %.2e", worst)
	if worst > 1e-5 {
		t.Fatalf("max abs diff vs float64 reference %g > 1e-5", worst)
	}
	if _, err := m.Forward([]Seq{{Tokens: []int{1, 2}}}); err == nil || !strings.Contains(err.Error(), "no LM head") {
		t.Errorf("Forward on a classifier: err = %v", err)
	}
}

// TestLoadRefusesStrayScoreHead: a score.weight in a folder whose config says causal LM, or a score.bias,
// is an error that names the tensor, never silently ignored.
func TestLoadRefusesStrayScoreHead(t *testing.T) {
	dir := writeStoriesClassifier(t, "LABEL_0")
	path := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["architectures"], cfg["tie_word_embeddings"] = []string{"LlamaForCausalLM"}, true
	b, _ = json.Marshal(cfg)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = loadErr(dir)
	if err == nil || !strings.Contains(err.Error(), "score.weight") || !strings.Contains(err.Error(), "LlamaForSequenceClassification") {
		t.Fatalf("causal LM config with score.weight: err = %v", err)
	}
}

func TestReadPosition(t *testing.T) {
	for _, tc := range []struct {
		seq       []int
		pad, want int
	}{{[]int{5, 6, 7}, -1, 2}, {[]int{5, 6, 7}, 7, 1}, {[]int{7, 7}, 7, 0}, {[]int{5, 7, 6, 7, 7}, 7, 2}, {[]int{4}, 4, 0}} {
		if got := ReadPosition(tc.seq, tc.pad); got != tc.want {
			t.Errorf("ReadPosition(%v, %d) = %d, want %d", tc.seq, tc.pad, got, tc.want)
		}
	}
}
