package train

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/safetensors"
	"github.com/lorakit/lorakit/models/testmodel"
)

func writeSums(t *testing.T, path string, n int, reasoning bool) {
	t.Helper()
	var b bytes.Buffer
	for i := 0; i < n; i++ {
		a, c := i%7+1, (i*3)%5+1
		rec := map[string]string{"prompt": fmt.Sprintf("请帮我计算%d+%d等于几。", a, c), "response": fmt.Sprint(a + c)}
		if reasoning && i%2 == 1 {
			rec["reasoning_content"] = fmt.Sprintf("%d加%d等于%d", a, c, a+c)
		}
		j, _ := json.Marshal(rec)
		b.Write(append(j, '\n'))
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func tinyRun(t *testing.T, dir string, mut func(*Config)) (*Result, error) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Model = filepath.Join(dir, "model")
	cfg.Data = filepath.Join(dir, "data.jsonl")
	cfg.Out = filepath.Join(dir, "out")
	cfg.Rank, cfg.Alpha, cfg.LR, cfg.BatchSize, cfg.GradAccum, cfg.MaxSteps = 4, 8, 1e-2, 2, 2, 6
	cfg.Threads = 2
	if mut != nil {
		mut(&cfg)
	}
	return Run(context.Background(), cfg, nil)
}

func setupTiny(t *testing.T) string {
	dir := t.TempDir()
	if err := testmodel.Write(filepath.Join(dir, "model"), testmodel.Default()); err != nil {
		t.Fatal(err)
	}
	writeSums(t, filepath.Join(dir, "data.jsonl"), 24, true)
	return dir
}

func readBytes(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRunLoRAOutputsDeterminismResume(t *testing.T) {
	dir := setupTiny(t)
	res, err := tinyRun(t, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	for _, f := range []string{"adapter_config.json", "adapter_model.safetensors", "training_args.json", "metrics.jsonl", "loss.svg"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Fatalf("missing output %s", f)
		}
	}
	ad, err := lora.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(ad.Modules) != 2*7 || ad.Config.R != 4 {
		t.Fatalf("adapter has %d modules, r=%d", len(ad.Modules), ad.Config.R)
	}
	if res.Steps != 6 {
		t.Fatalf("steps %d", res.Steps)
	}
	first := readBytes(t, filepath.Join(out, "adapter_model.safetensors"))

	// Same seed, data and threads: bit-identical adapter.
	dir2 := filepath.Join(dir, "again")
	if _, err := tinyRun(t, dir, func(c *Config) { c.Out = dir2 }); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, readBytes(t, filepath.Join(dir2, "adapter_model.safetensors"))) {
		t.Fatal("same seed gave a different adapter")
	}

	// Interrupted at step 3 (checkpoint), resumed: bit-identical to the uninterrupted run.
	dir3 := filepath.Join(dir, "resumed")
	if _, err := tinyRun(t, dir, func(c *Config) { c.Out = dir3; c.MaxSteps = 6; c.SaveEvery = 3 }); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir3, "adapter_model.safetensors"))
	os.RemoveAll(filepath.Join(dir3, "checkpoint-6"))
	if _, err := tinyRun(t, dir, func(c *Config) { c.Out = dir3; c.Resume = dir3 }); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, readBytes(t, filepath.Join(dir3, "adapter_model.safetensors"))) {
		t.Fatal("resumed run differs from the uninterrupted one")
	}
	var lines int
	for _, l := range bytes.Split(readBytes(t, filepath.Join(dir3, "metrics.jsonl")), []byte("\n")) {
		if len(l) > 0 {
			lines++
		}
	}
	if lines != 6 {
		t.Fatalf("metrics.jsonl has %d lines after resume, want 6", lines)
	}
}

// TestRunCancelledBeforeStart: a run stopped while it loads the model and data (Ctrl-C right after starting)
// has nothing to keep: it returns ErrInterrupted and writes nothing. (A run stopped mid-training saves a
// checkpoint: TestSignalTrain in cmd/lorakit drives that through the binary.)
func TestRunCancelledBeforeStart(t *testing.T) {
	dir := setupTiny(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	cfg := DefaultConfig()
	cfg.Model, cfg.Data, cfg.Out = filepath.Join(dir, "model"), filepath.Join(dir, "data.jsonl"), filepath.Join(dir, "out")
	cfg.MaxSteps, cfg.Rank = 3, 2
	res, err := Run(ctx, cfg, nil)
	if !errors.Is(err, ErrInterrupted) || res != nil {
		t.Fatalf("want ErrInterrupted and no result, got %v %v", res, err)
	}
	if _, err := os.Stat(cfg.Out); !os.IsNotExist(err) {
		t.Fatalf("the output folder was created: %v", err)
	}
}

func TestRunFullAndQLoRA(t *testing.T) {
	dir := setupTiny(t)
	res, err := tinyRun(t, dir, func(c *Config) { c.Method = "full"; c.LR = 1e-3 })
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	cfg, err := llama.LoadConfig(out)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := safetensors.OpenCheckpoint(out)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	if _, err := llama.Load(ck, cfg, llama.LoadOptions{Threads: 1}); err != nil {
		t.Fatal(err)
	}
	_ = res
	if _, err := tinyRun(t, dir, func(c *Config) { c.Method = "qlora"; c.Out = filepath.Join(dir, "q") }); err != nil {
		t.Fatal(err)
	}
}

func TestInitAdapterAndValidation(t *testing.T) {
	dir := setupTiny(t)
	if _, err := tinyRun(t, dir, func(c *Config) { c.MaxSteps = 2 }); err != nil {
		t.Fatal(err)
	}
	first := filepath.Join(dir, "out")
	// Zero steps' worth of change is impossible to see, so check that training continues from the adapter:
	// its loss at step 1 is below a fresh run's step-1 loss.
	res, err := tinyRun(t, dir, func(c *Config) { c.Out = filepath.Join(dir, "cont"); c.InitAdapter = first; c.MaxSteps = 1 })
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := tinyRun(t, dir, func(c *Config) { c.Out = filepath.Join(dir, "fresh"); c.MaxSteps = 1 })
	if err != nil {
		t.Fatal(err)
	}
	if !(res.Loss < fresh.Loss) {
		t.Fatalf("init-adapter run starts at loss %g, fresh run %g", res.Loss, fresh.Loss)
	}
	if _, err := tinyRun(t, dir, func(c *Config) { c.Out = filepath.Join(dir, "bad"); c.InitAdapter = first; c.Rank = 8 }); err == nil {
		t.Fatal("rank mismatch with --init-adapter accepted")
	}
	bad := DefaultConfig()
	bad.Method, bad.Rank, bad.LR, bad.Scheduler = "dora", 0, -1, "step"
	if err := bad.Validate(); err == nil {
		t.Fatal("invalid config accepted")
	}
}

func TestLoadDataMasksAndBadLines(t *testing.T) {
	dir := setupTiny(t)
	m, err := models.Load(filepath.Join(dir, "model"), BaseOptions(1, false))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	p := filepath.Join(dir, "mixed.jsonl")
	os.WriteFile(p, []byte(`{"prompt":"hi","response":"there"}
not json
{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"},{"role":"assistant","content":"d"}]}
{"instruction":"say","input":"x","output":"y"}
`), 0o644)
	var bad []error
	d, err := LoadData(p, m, 512, false, false, func(e error) { bad = append(bad, e) })
	if err != nil {
		t.Fatal(err)
	}
	if d.Stats.Kept != 3 || d.Stats.Bad != 1 || len(bad) != 1 {
		t.Fatalf("stats %+v, reported %v", d.Stats, bad)
	}
	withPrompt, err := LoadData(p, m, 512, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if withPrompt.Stats.Targets <= d.Stats.Targets {
		t.Fatalf("--train-on-prompt targets %d, without %d", withPrompt.Stats.Targets, d.Stats.Targets)
	}
	if _, err := LoadData(p, m, 512, false, true, nil); err == nil {
		t.Fatal("--strict accepted a bad line")
	}
	// Truncation that leaves no response token drops the example and counts it.
	short, err := LoadData(p, m, 4, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if short.Stats.Dropped == 0 {
		t.Fatalf("nothing dropped at max-seq-len 4: %+v", short.Stats)
	}
}

func TestLRSchedules(t *testing.T) {
	near := func(a, b float64) bool { return a-b < 1e-12 && b-a < 1e-12 }
	if !near(LRAt("cosine", 1, 0, 10, 2), 0.5) || !near(LRAt("cosine", 1, 1, 10, 2), 1) || !near(LRAt("cosine", 1, 2, 10, 2), 1) {
		t.Fatal("warmup")
	}
	if !near(LRAt("cosine", 1, 6, 10, 2), 0.5) || !near(LRAt("linear", 1, 6, 10, 2), 0.5) || !near(LRAt("constant", 1, 9, 10, 2), 1) {
		t.Fatal("decay")
	}
}
