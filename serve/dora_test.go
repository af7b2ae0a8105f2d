package serve

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/internal/testenv"
	"github.com/lorakit/lorakit/merge"
	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/testmodel"
	"github.com/lorakit/lorakit/serve/backend"
)

// TestServeDoRAUnmerged serves a PEFT-format DoRA adapter (written by testmodel.PEFTDoRA) unmerged over the real
// stories260K base and checks that its greedy completion equals the one of the merged model served alone, and
// differs from the base's: the per-row DoRA scale computed at load time is the merge.
func TestServeDoRAUnmerged(t *testing.T) {
	base := filepath.Join(testenv.Testdata(t), "models", "stories260K")
	dir := filepath.Join(t.TempDir(), "dora")
	if _, err := testmodel.PEFTDoRA(dir, base, 11, []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}); err != nil {
		t.Fatal(err)
	}
	merged := filepath.Join(t.TempDir(), "merged")
	if _, err := merge.Run(context.Background(), base, merged, merge.Options{Adapters: []merge.Source{{Dir: dir, Weight: 1}}, Threads: 1}); err != nil {
		t.Fatal(err)
	}
	complete := func(folder, model string, adapters map[string]string) string {
		m, err := models.Load(folder, models.LoadOptions{Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		s, err := New(Config{Model: backend.FromModel(m), ModelName: "stories", Adapters: adapters})
		if err != nil {
			t.Fatal(err)
		}
		ts := httptest.NewServer(s.Handler())
		defer ts.Close()
		body := `{"model":"` + model + `","prompt":"Lily wanted to","max_tokens":40,"temperature":0,"ignore_eos":true}`
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
			t.Fatalf("%s: %s: %v", model, b, err)
		}
		return out.Choices[0].Text
	}
	unmerged := complete(base, "dora", map[string]string{"dora": dir})
	mergedText := complete(merged, "stories", nil)
	plain := complete(base, "stories", nil)
	t.Logf("DoRA unmerged: %q\nmerged: %q\nbase: %q", unmerged, mergedText, plain)
	if unmerged != mergedText || unmerged == plain || len(unmerged) < 40 {
		t.Fatalf("DoRA served unmerged %q, merged %q, base %q", unmerged, mergedText, plain)
	}
}
