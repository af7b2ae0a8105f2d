package serve

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/internal/testenv"
	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/serve/backend"
)

// TestStoriesGreedyCompletion serves the real stories260K model (SentencePiece tokenizer) and checks that a greedy
// /v1/completions answer is the golden continuation, leading space included.
func TestStoriesGreedyCompletion(t *testing.T) {
	sh := testenv.Testdata(t)
	m, err := models.Load(filepath.Join(sh, "models", "stories260K"), models.LoadOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	s, err := New(Config{Model: backend.FromModel(m), ModelName: "stories"})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	// From golden/stories260K-greedy.jsonl: the greedy continuation of "Lily wanted to" starts with a space.
	const want = " go on a walk. She saw a big box with a big box. She wanted to see what was inside."
	body := `{"model":"stories","prompt":"Lily wanted to","max_tokens":16,"temperature":0}`
	resp, err := http.Post(ts.URL+"/v1/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out struct {
		Choices []struct {
			Text string `json:"text"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(b, &out); err != nil || len(out.Choices) != 1 {
		t.Fatalf("%s: %v", b, err)
	}
	if !strings.HasPrefix(want, out.Choices[0].Text) || len(out.Choices[0].Text) < 30 {
		t.Fatalf("text %q, want a prefix of %q", out.Choices[0].Text, want)
	}
}
