package train

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lorakit/lorakit/models/lora"
)

// sharedDir returns $LORAKIT_SHARED/rel, skipping the test when the variable is unset.
func sharedDir(t *testing.T, rel string) string {
	t.Helper()
	root := os.Getenv("LORAKIT_SHARED")
	if root == "" {
		t.Skip("LORAKIT_SHARED not set")
	}
	p := filepath.Join(root, rel)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("shared data missing: %v", err)
	}
	return p
}

// writeSumTask writes the seed's style of SFT pairs: {"prompt":"请帮我计算1+1等于几。","response":"2"},
// with a reasoning_content variant on every third pair.
func writeSumTask(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	for a := 1; a <= 9; a++ {
		for b := 1; b <= 9; b++ {
			if (a*7+b*3)%2 == 1 {
				continue
			}
			rec := map[string]string{"prompt": fmt.Sprintf("请帮我计算%d+%d等于几。", a, b), "response": fmt.Sprint(a + b)}
			if (a+b)%3 == 0 {
				rec["reasoning_content"] = fmt.Sprintf("%d加%d等于%d", a, b, a+b)
			}
			j, _ := json.Marshal(rec)
			f.Write(append(j, '\n'))
			n++
		}
	}
	return n
}

// TestLearnSums trains a LoRA on stories260K: the training loss must fall and
// the exact match of greedy answers must rise.
func TestLearnSums(t *testing.T) {
	model := sharedDir(t, "models/stories260K")
	dir := t.TempDir()
	dataPath := filepath.Join(dir, "sums.jsonl")
	n := writeSumTask(t, dataPath)
	m, err := LoadModel(model, 2, false)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	ec := EvalConfig{Data: dataPath, MaxNewTokens: 24}
	before, err := EvaluateModel(ctx, m, nil, ec)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Model, cfg.Data, cfg.Out = model, dataPath, filepath.Join(dir, "out")
	cfg.Rank, cfg.Alpha, cfg.LR, cfg.BatchSize, cfg.MaxSteps, cfg.Threads = 16, 32, 1e-2, 8, 100, 2
	t0 := time.Now()
	res, err := Run(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ad, err := lora.Load(cfg.Out)
	if err != nil {
		t.Fatal(err)
	}
	after, err := EvaluateModel(ctx, m, ad, ec)
	if err != nil {
		t.Fatal(err)
	}
	var first Metrics
	b, _ := os.ReadFile(filepath.Join(cfg.Out, "metrics.jsonl"))
	json.Unmarshal(b[:indexByte(b, '\n')], &first)
	t.Logf("%d examples, %d steps in %.1fs: train loss %.3f → %.3f; eval loss %.3f → %.3f; exact match %.3f → %.3f",
		n, res.Steps, time.Since(t0).Seconds(), first.Loss, res.Loss, before.Loss, after.Loss, before.ExactMatch, after.ExactMatch)
	if !(after.Loss < before.Loss/3) {
		t.Errorf("loss did not fall enough: %.3f → %.3f", before.Loss, after.Loss)
	}
	if !(after.ExactMatch > before.ExactMatch) {
		t.Errorf("exact match did not rise: %.3f → %.3f", before.ExactMatch, after.ExactMatch)
	}
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return len(b)
}
