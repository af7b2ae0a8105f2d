package train

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lorakit/lorakit/internal/testenv"
	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/lora"
)

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
	model := filepath.Join(testenv.Testdata(t), "models", "stories260K")
	dir := t.TempDir()
	dataPath := filepath.Join(dir, "sums.jsonl")
	n := writeSumTask(t, dataPath)
	m, err := models.Load(model, BaseOptions(2, false))
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

// emSetting is one method's settings for the side-by-side exact-match run:
// found on stories260K (41 sum pairs, batch 8, cosine, 30 warmup steps).
// LoRA needs a ~3× higher lr than full FT here; at 5e-3 (or rsLoRA's 4× scale
// at 2e-3) LoRA diverges to ~0.25 exact match. QLoRA is scored on the NF4 base it
// was trained against: on the f32 base the same adapter drops to ~0.8.
type emSetting struct {
	method string
	lr     float64
	steps  int
}

var emSettings = []emSetting{{"lora", 3e-3, 600}, {"qlora", 3e-3, 600}, {"full", 1e-3, 600}}

// TestMethodsExactMatch is the side-by-side run of issue 4 (not a unit test: set
// LORAKIT_TRAIN_EM=1 and LORAKIT_SHARED; ~3 min on 2 cores): LoRA, QLoRA and full
// fine-tuning of stories260K on 41 synthetic sums in the seed's style must each
// reach ≥ 95% exact match on the training pairs. It prints steps, wall and CPU
// time, tokens/s, loss and exact match side by side. (Peak RSS per method needs
// one process per method: `lorakit train` under /usr/bin/time -v.)
func TestMethodsExactMatch(t *testing.T) {
	if os.Getenv("LORAKIT_TRAIN_EM") == "" {
		t.Skip("LORAKIT_TRAIN_EM not set")
	}
	model := filepath.Join(testenv.Testdata(t), "models", "stories260K")
	dir := t.TempDir()
	sums := filepath.Join(dir, "sums.jsonl")
	g, err := os.Create(sums)
	if err != nil {
		t.Fatal(err)
	}
	for a := 1; a <= 9; a++ {
		for b := 1; b <= 9; b++ {
			if (a*7+b*3)%2 == 0 {
				j, _ := json.Marshal(map[string]string{"prompt": fmt.Sprintf("请帮我计算%d+%d等于几。", a, b), "response": fmt.Sprint(a + b)})
				g.Write(append(j, '\n'))
			}
		}
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	table := "method  lr      steps  wall_s  cpu_s  tok/s  train_loss  eval_loss  exact_match\n"
	for _, s := range emSettings {
		cfg := DefaultConfig()
		cfg.Model, cfg.Data, cfg.Out = model, sums, filepath.Join(dir, s.method)
		cfg.Method, cfg.Rank, cfg.Alpha, cfg.BatchSize, cfg.Threads = s.method, 16, 32, 8, 2
		cfg.LR, cfg.MaxSteps, cfg.WarmupSteps = s.lr, s.steps, 30
		t0, c0 := time.Now(), cpuSeconds()
		res, err := Run(context.Background(), cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		wall, cpu := time.Since(t0).Seconds(), cpuSeconds()-c0
		ec := EvalConfig{Model: model, Adapter: cfg.Out, Data: sums, Threads: 2}
		switch s.method {
		case "full":
			ec.Model, ec.Adapter = cfg.Out, ""
		case "qlora":
			ec.Quant = "nf4"
		}
		ev, err := Evaluate(context.Background(), ec)
		if err != nil {
			t.Fatal(err)
		}
		table += fmt.Sprintf("%-6s  %-6g  %5d  %6.1f  %5.1f  %5.0f  %10.3f  %9.3f  %11.3f\n",
			s.method, s.lr, res.Steps, wall, cpu, res.TokensPerSec, res.Loss, ev.Loss, ev.ExactMatch)
		if ev.ExactMatch < 0.95 {
			t.Errorf("%s: exact match %.3f < 0.95", s.method, ev.ExactMatch)
		}
	}
	t.Logf("stories260K, 41 sums, batch 8, rank 16 alpha 32, cosine, warmup 30, 2 threads:\n%s", table)
}
