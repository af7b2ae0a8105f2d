package train

import (
	"bufio"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/internal/testenv"
	"github.com/lorakit/lorakit/models"
)

// generalText is general-stories.txt (plain lines, the text of the README's forgetting measurement) plus a
// JSONL line.
func generalText(t *testing.T) []byte {
	b, err := os.ReadFile(filepath.Join("testdata", "general-stories.txt"))
	if err != nil {
		t.Fatal(err)
	}
	return append(b, "{\"text\": \"The cat sat on the mat and looked at the fish in the bowl.\"}\n"...)
}

// TestGeneralEval: --general-eval measures the base's perplexity before training and the trained model's at every
// eval (metrics.jsonl, the result, the loss plot); eval --general gives the same numbers for the adapter through
// the inference forward pass; a malformed JSON line is refused naming the file and line.
func TestGeneralEval(t *testing.T) {
	model := filepath.Join(testenv.Testdata(t), "models", "stories260K")
	dir := t.TempDir()
	dataPath, general := filepath.Join(dir, "sums.jsonl"), filepath.Join(dir, "general.txt")
	writeSumTask(t, dataPath)
	if err := os.WriteFile(general, generalText(t), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Model, cfg.Data, cfg.Out, cfg.GeneralEval = model, dataPath, filepath.Join(dir, "out"), general
	cfg.LR, cfg.MaxSteps, cfg.EvalEvery, cfg.BatchSize, cfg.Threads = 1e-2, 4, 2, 8, 2
	res, err := Run(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.GeneralBasePPL == nil || res.GeneralPPL == nil || *res.GeneralPPL == *res.GeneralBasePPL {
		t.Fatalf("result: base %v, trained %v", res.GeneralBasePPL, res.GeneralPPL)
	}
	f, err := os.Open(filepath.Join(cfg.Out, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var evals []Metrics
	for sc := bufio.NewScanner(f); sc.Scan(); {
		var m Metrics
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		if m.GeneralPPL != nil {
			evals = append(evals, m)
		}
	}
	if len(evals) != 2 || evals[0].Step != 2 || evals[1].Step != 4 || *evals[1].GeneralBasePPL != *res.GeneralBasePPL || *evals[1].GeneralPPL != *res.GeneralPPL {
		t.Fatalf("metrics.jsonl evals: %+v", evals)
	}
	if svg, _ := os.ReadFile(filepath.Join(cfg.Out, "loss.svg")); !strings.Contains(string(svg), "general text loss") {
		t.Fatal("loss.svg has no general text series")
	}
	ev, err := Evaluate(context.Background(), EvalConfig{Model: model, Adapter: cfg.Out, General: general, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(*ev.GeneralBasePPL / *res.GeneralBasePPL - 1) > 1e-9 || math.Abs(*ev.GeneralPPL / *res.GeneralPPL - 1) > 1e-4 {
		t.Fatalf("eval --general: base %v, adapter %v; training measured %v, %v", *ev.GeneralBasePPL, *ev.GeneralPPL, *res.GeneralBasePPL, *res.GeneralPPL)
	}
	t.Logf("general perplexity: base %.4f, after 4 steps %.4f", *res.GeneralBasePPL, *res.GeneralPPL)
	bad := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(bad, []byte("a line\n{\"txt\": \"x\"}\n"), 0o644)
	m, err := models.Load(model, BaseOptions(1, false))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := LoadGeneralText(bad, m, 0); err == nil || !strings.Contains(err.Error(), "bad.jsonl:2") {
		t.Fatalf("malformed line: %v", err)
	}
}
