package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/internal/testenv"
	"github.com/lorakit/lorakit/models/lora"
)

// TestBenchServe runs `bench --serve` against a stub OpenAI server that streams one token per event, and checks
// the counts, the latency fields and the outputs file.
func TestBenchServe(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Model     string `json:"model"`
			Prompt    []int  `json:"prompt"`
			MaxTokens int    `json:"max_tokens"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || r.URL.Path != "/v1/completions" || len(req.Prompt) != 3+5 {
			http.Error(w, fmt.Sprint("bad request ", err, req), http.StatusBadRequest)
			return
		}
		for i := range req.MaxTokens {
			fmt.Fprintf(w, "data: {\"choices\":[{\"text\":\"%s%d \"}]}\n\n", req.Model, i)
		}
		fmt.Fprintf(w, "data: {\"choices\":[],\"usage\":{\"completion_tokens\":%d}}\n\ndata: [DONE]\n\n", req.MaxTokens)
	}))
	defer srv.Close()
	outputs := filepath.Join(t.TempDir(), "out.json")
	out := run(t, "bench", "--serve", srv.URL, "--clients", "3", "--requests", "2", "--gen", "4", "--prompt", "5",
		"--shared-prefix", "3", "--models", "a,b", "--outputs", outputs, "--json")
	var res serveBenchResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if res.Requests != 6 || res.Failed != 0 || res.Tokens != 24 || res.TokS <= 0 || res.Models != 2 || res.TTFTp99 < res.TTFTp50 {
		t.Fatalf("result %+v", res)
	}
	var texts [][]string
	data, err := os.ReadFile(outputs)
	if err != nil || json.Unmarshal(data, &texts) != nil || len(texts) != 3 || texts[1][1] != "b0 b1 b2 b3 " {
		t.Fatalf("outputs %s (%v)", data, err)
	}
	root := newRootCmd()
	root.SetOut(&bytes.Buffer{})
	root.SetErr(&bytes.Buffer{})
	root.SetArgs([]string{"bench", "--serve", srv.URL, "--token-ids", "9"})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "--token-ids") {
		t.Fatalf("a bad --token-ids: %v", err)
	}
}

// TestBenchWriteAdapters writes random adapters for stories260K and loads them back.
func TestBenchWriteAdapters(t *testing.T) {
	model := filepath.Join(testenv.Testdata(t), "models", "stories260K")
	out := filepath.Join(t.TempDir(), "ads")
	run(t, "bench", "--write-adapters", "2", "--adapter-rank", "4", "--model", model, "--out", out)
	for _, name := range []string{"a0", "a1"} {
		a, err := lora.Load(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		if len(a.Modules) != 7*5 || a.Config.R != 4 {
			t.Fatalf("%s: %d modules, rank %d", name, len(a.Modules), a.Config.R)
		}
	}
	root := newRootCmd()
	root.SetOut(&bytes.Buffer{})
	root.SetErr(&bytes.Buffer{})
	root.SetArgs([]string{"bench", "--write-adapters", "1", "--model", model, "--out", out})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("writing over an existing folder: %v", err)
	}
}

// TestBenchBatchRatio: bench --batch times the batch and one sequence over the same steps and reports their
// ratio from the two step times it prints (not from the tg run, whose contexts are longer).
func TestBenchBatchRatio(t *testing.T) {
	model := filepath.Join(testenv.Testdata(t), "models", "stories260K")
	out := run(t, "bench", "--model", model, "--batch", "4", "--prompt", "8", "--gen", "16", "--reps", "2", "--threads", "1", "--no-mem", "--json")
	var res struct {
		Batch        int     `json:"batch"`
		BatchStepMS  float64 `json:"batch_step_ms"`
		Batch1StepMS float64 `json:"batch1_step_ms"`
		Ratio        float64 `json:"batch_step_ratio"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	step, step1, ratio := res.BatchStepMS, res.Batch1StepMS, res.Ratio
	if res.Batch != 4 || step <= 0 || step1 <= 0 || ratio <= 0 {
		t.Fatalf("batch %v, step %v ms, one sequence %v ms, ratio %v", res.Batch, step, step1, ratio)
	}
	// the times are rounded to the microsecond, the ratio to 0.01, computed before rounding
	if lo, hi := (step-5e-4)/(step1+5e-4), (step+5e-4)/max(step1-5e-4, 1e-9); ratio < lo-0.005 || ratio > hi+0.005 {
		t.Fatalf("ratio %v does not follow from %v / %v ms", ratio, step, step1)
	}
}
