package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/internal/testenv"
)

// run executes lorakit with args and returns its standard output.
func run(t *testing.T, args ...string) string {
	t.Helper()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		t.Fatalf("lorakit %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String()
}

func readJSONL(t *testing.T, path string) []map[string]json.RawMessage {
	t.Helper()
	return testenv.ReadJSONL[map[string]json.RawMessage](t, path)
}

// TestGenerateGreedyGolden runs the stories260K greedy goldens through `lorakit generate --json`, as an outside
// checker would.
func TestGenerateGreedyGolden(t *testing.T) {
	sh := testenv.Testdata(t)
	model := filepath.Join(sh, "models", "stories260K")
	for i, row := range readJSONL(t, filepath.Join(sh, "golden", "stories260K-greedy.jsonl")) {
		if i >= 3 {
			break
		}
		var prompt string
		var promptIDs, want []int
		json.Unmarshal(row["prompt"], &prompt)
		json.Unmarshal(row["prompt_ids"], &promptIDs)
		json.Unmarshal(row["greedy_ids"], &want)
		out := run(t, "generate", "--model", model, "--prompt", prompt, "--max-tokens", "64", "--temperature", "0", "--json")
		var got struct {
			PromptIDs    []int  `json:"prompt_ids"`
			IDs          []int  `json:"ids"`
			Text         string `json:"text"`
			FinishReason string `json:"finish_reason"`
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("%q: %v\n%s", prompt, err, out)
		}
		if !slices.Equal(got.PromptIDs, promptIDs) || !slices.Equal(got.IDs, want) {
			t.Errorf("%q: prompt ids %v ids %v, want %v %v", prompt, got.PromptIDs, got.IDs, promptIDs, want)
		}
		var text string
		json.Unmarshal(row["greedy_text"], &text)
		if got.Text != text || got.FinishReason != "length" {
			t.Errorf("%q: text %q (%s), want %q (length)", prompt, got.Text, got.FinishReason, text)
		}
	}
}

// TestTokenizeGolden checks `lorakit tokenize --no-special` against the stories260K tokenizer goldens.
func TestTokenizeGolden(t *testing.T) {
	sh := testenv.Testdata(t)
	dir := filepath.Join(sh, "models", "stories260K")
	for _, row := range readJSONL(t, filepath.Join(sh, "golden", "stories260K-tokenizer.jsonl"))[:10] {
		var text string
		var want []int
		json.Unmarshal(row["text"], &text)
		json.Unmarshal(row["ids"], &want)
		var got []int
		out := run(t, "tokenize", "--tokenizer", dir, "--no-special", text)
		if err := json.Unmarshal([]byte(out), &got); err != nil || !slices.Equal(got, want) {
			t.Errorf("%q: got %s, want %v (%v)", text, out, want, err)
		}
	}
}

// TestDemo runs the README's first command end to end (it trains for real, so it takes a minute or two).
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("demo trains two adapters; skipped with -short")
	}
	out := run(t, "demo", "--json", "--keep", t.TempDir())
	var s demoSummary
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(s.Tasks) != len(demoTasks()) {
		t.Errorf("%d task results, want one per demo task (%d): %+v", len(s.Tasks), len(demoTasks()), s.Tasks)
	}
	for _, task := range s.Tasks {
		if task.ExactAfter <= task.ExactBefore || task.ExactAfter < 0.5 {
			t.Errorf("task %s: exact match %.2f → %.2f: did not learn", task.Name, task.ExactBefore, task.ExactAfter)
		}
	}
	if s.Merge == nil || !s.Merge.OK {
		t.Errorf("merge verify: %+v", s.Merge)
	}
	// The adapter learned 99% of the sums; the served answer must at least be a number.
	if c := s.Serve["sum"].Content; c == "" || strings.Trim(c, "0123456789") != "" {
		t.Errorf("served answer of the sum adapter: %+v", s.Serve["sum"])
	}
}
