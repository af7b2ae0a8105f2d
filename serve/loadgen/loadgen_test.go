package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"
)

// fakeServer streams max_tokens events of one token each, in either protocol, the text naming the request's
// model and first prompt id, and checks the request body loadgen sends.
func fakeServer(t *testing.T) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Prompt    []int  `json:"prompt"`
			Model     string `json:"model"`
			MaxTokens int    `json:"max_tokens"`
			NPredict  int    `json:"n_predict"`
			IgnoreEOS bool   `json:"ignore_eos"`
			Stream    bool   `json:"stream"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || !req.Stream || !req.IgnoreEOS || len(req.Prompt) == 0 {
			http.Error(w, fmt.Sprintf("bad request %+v %v", req, err), http.StatusBadRequest)
			return
		}
		if req.Model == "bad" {
			http.Error(w, `{"error":{"message":"no such model"}}`, http.StatusNotFound)
			return
		}
		n := max(req.MaxTokens, req.NPredict)
		for i := range n {
			time.Sleep(time.Millisecond)
			var ev any
			if r.URL.Path == "/completion" {
				ev = map[string]any{"content": fmt.Sprintf("%d.", req.Prompt[0]), "stop": false}
			} else {
				ev = map[string]any{"choices": []any{map[string]any{"text": fmt.Sprintf("%s%d.", req.Model, i)}}}
			}
			b, _ := json.Marshal(ev)
			fmt.Fprintf(w, "data: %s\n\n", b)
		}
		if r.URL.Path == "/completion" {
			fmt.Fprintf(w, "data: {\"content\":\"\",\"stop\":true,\"tokens_predicted\":%d}\n\n", n)
		} else {
			fmt.Fprintf(w, "data: {\"choices\":[],\"usage\":{\"completion_tokens\":%d}}\n\ndata: [DONE]\n\n", n)
		}
	}))
}

func TestRun(t *testing.T) {
	srv := fakeServer(t)
	defer srv.Close()
	for _, api := range []API{OpenAI, LlamaCpp} {
		cfg := Config{URL: srv.URL, API: api, Clients: 3, Requests: 2, MaxTokens: 5, Models: []string{"x", "y"},
			PromptTokens: 4, SharedPrefix: []int{7, 7}, MinID: 10, MaxID: 20}
		res, err := Run(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if res.Requests != 6 || res.Failed != 0 || res.Tokens != 30 || len(res.TTFT) != 6 || len(res.ITL) != 6*4 {
			t.Fatalf("%s: %+v", api, res)
		}
		if res.TokensPerSec() <= 0 || Percentile(res.ITL, 50) <= 0 || Percentile(res.TTFT, 99) < Percentile(res.TTFT, 50) {
			t.Fatalf("%s: rates %v, ITL p50 %v, TTFT p50 %v p99 %v", api, res.TokensPerSec(), Percentile(res.ITL, 50), Percentile(res.TTFT, 50), Percentile(res.TTFT, 99))
		}
		if api == OpenAI && res.Outputs[1][0] != "y0.y1.y2.y3.y4." {
			t.Fatalf("client 1 (model y) wrote %q", res.Outputs[1][0])
		}
	}
	res, err := Run(context.Background(), Config{URL: srv.URL, API: OpenAI, Clients: 1, Requests: 1, MaxTokens: 2, Models: []string{"bad"}, PromptTokens: 1, MaxID: 5})
	if err != nil || res.Failed != 1 || res.FirstError == "" {
		t.Fatalf("a refused request: %+v, %v", res, err)
	}
	if _, err := Run(context.Background(), Config{URL: srv.URL, API: "grpc", Clients: 1, Requests: 1, MaxTokens: 1, PromptTokens: 1}); err == nil {
		t.Fatal("an unknown API was accepted")
	}
}

func TestPrompt(t *testing.T) {
	cfg := Config{PromptTokens: 8, SharedPrefix: []int{1, 2, 3}, MinID: 100, MaxID: 200}
	a, b := cfg.Prompt(0, 0), cfg.Prompt(1, 0)
	if len(a) != 11 || !slices.Equal(a[:3], []int{1, 2, 3}) || slices.Equal(a, b) || !slices.Equal(a, cfg.Prompt(0, 0)) {
		t.Fatalf("prompts %v %v", a, b)
	}
	for _, id := range a[3:] {
		if id < 100 || id >= 200 {
			t.Fatalf("id %d outside [100, 200)", id)
		}
	}
	if p := Percentile([]time.Duration{3, 1, 2, 4}, 50); p != 2 {
		t.Fatalf("p50 of 1..4 = %v", p)
	}
}
