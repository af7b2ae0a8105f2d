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
	if raceEnabled {
		t.Skip("a 100-step training run is too slow under -race (the loop is covered by the tiny-model tests)")
	}
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

// TestMethodsExactMatch is the side-by-side run of issue 4 (not a unit test: set
// LORAKIT_TRAIN_EM=1 and LORAKIT_SHARED): LoRA, QLoRA and full fine-tuning of
// stories260K on two synthetic tasks, with steps, wall time, tokens/s and the
// exact match on the training pairs. (Peak RSS per method needs one process per
// method: `lorakit train` under /usr/bin/time.)
func TestMethodsExactMatch(t *testing.T) {
	if os.Getenv("LORAKIT_TRAIN_EM") == "" {
		t.Skip("LORAKIT_TRAIN_EM not set")
	}
	model := sharedDir(t, "models/stories260K")
	dir := t.TempDir()
	copyTask := filepath.Join(dir, "copy.jsonl")
	f, _ := os.Create(copyTask)
	for _, w := range []string{"ball", "cat", "dog", "tree", "sun", "moon", "car", "bird", "fish", "cake", "hat", "box",
		"bed", "cup", "toy", "red", "blue", "green", "big", "small", "happy", "sad", "fast", "slow", "park", "house",
		"door", "boat", "book", "girl", "boy", "mom", "dad", "friend", "flower", "apple", "milk", "rain", "snow", "star", "duck"} {
		j, _ := json.Marshal(map[string]string{"prompt": "Say the word " + w + ".", "response": w})
		f.Write(append(j, '\n'))
	}
	f.Close()
	sums := filepath.Join(dir, "sums.jsonl")
	g, _ := os.Create(sums)
	for a := 1; a <= 9; a++ {
		for b := 1; b <= 9; b++ {
			if (a*7+b*3)%2 == 0 {
				j, _ := json.Marshal(map[string]string{"prompt": fmt.Sprintf("请帮我计算%d+%d等于几。", a, b), "response": fmt.Sprint(a + b)})
				g.Write(append(j, '\n'))
			}
		}
	}
	g.Close()
	for _, task := range []struct {
		name, path string
		steps      int
	}{{"copy", copyTask, 150}, {"sums", sums, 300}} {
		for _, method := range []string{"lora", "qlora", "full"} {
			cfg := DefaultConfig()
			cfg.Model, cfg.Data, cfg.Out = model, task.path, filepath.Join(dir, task.name+"-"+method)
			cfg.Method, cfg.Rank, cfg.Alpha, cfg.BatchSize, cfg.MaxSteps, cfg.Threads = method, 16, 32, 8, task.steps, 2
			cfg.LR = 3e-3
			if method == "full" {
				cfg.LR = 1e-3
			}
			t0 := time.Now()
			res, err := Run(context.Background(), cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			ec := EvalConfig{Model: model, Adapter: cfg.Out, Data: task.path, Threads: 2}
			if method == "full" {
				ec.Model, ec.Adapter = cfg.Out, ""
			}
			ev, err := Evaluate(context.Background(), ec)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s %-5s: %d steps, %.1fs, %.0f tok/s, train loss %.3f, eval loss %.3f, exact match %.3f",
				task.name, method, res.Steps, time.Since(t0).Seconds(), res.TokensPerSec, res.Loss, ev.Loss, ev.ExactMatch)
		}
	}
}
