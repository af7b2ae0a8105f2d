package serve

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/testmodel"
	"github.com/lorakit/lorakit/serve/backend"
)

// TestLoadClientTimesEveryToken checks BenchmarkServeLoad's client on the benchmark's model (two layers) and
// requests: every generated token must arrive as its own content delta, so each request gives one TTFT and
// tokens-1 inter-token gaps.
func TestLoadClientTimesEveryToken(t *testing.T) {
	dir := t.TempDir()
	if err := testmodel.Write(filepath.Join(dir, "model"), loadModel(2)); err != nil {
		t.Fatal(err)
	}
	m, err := models.Load(filepath.Join(dir, "model"), models.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	bias, err := visibleBias(m)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{Model: backend.FromModel(m), ModelName: "base", MaxBatch: 4})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer func() {
		ts.Close()
		_ = srv.Shutdown(context.Background())
	}()
	const clients, reqs, tokens = 3, 2, 16
	res := runLoad(ts.URL, clients, reqs, tokens, func(int) string { return "base" }, bias)
	if res.ok != clients*reqs || res.failed != 0 {
		t.Fatalf("%d ok, %d failed (first failure: %s)", res.ok, res.failed, res.firstErr)
	}
	if res.tokens != clients*reqs*tokens || len(res.ttft) != clients*reqs || len(res.itl) != clients*reqs*(tokens-1) {
		t.Fatalf("%d tokens, %d TTFTs, %d gaps; want %d, %d, %d", res.tokens, len(res.ttft), len(res.itl),
			clients*reqs*tokens, clients*reqs, clients*reqs*(tokens-1))
	}
	for _, v := range res.ttft {
		if v <= 0 {
			t.Fatalf("TTFT %v ms", res.ttft)
		}
	}
}

// lorakit's own model is a serve.Model.
var _ Model = (*backend.Backend)(nil)
