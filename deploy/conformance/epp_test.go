package conformance

import (
	"context"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	eppmetrics "sigs.k8s.io/gateway-api-inference-extension/pkg/epp/backend/metrics"
	fwkdl "sigs.k8s.io/gateway-api-inference-extension/pkg/epp/framework/interface/datalayer"

	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/testmodel"
	"github.com/lorakit/lorakit/serve"
	"github.com/lorakit/lorakit/serve/backend"
	"github.com/lorakit/lorakit/serve/engine"
)

// gated holds every Forward call until the test lets one through, so requests stay running and waiting.
type gated struct {
	*backend.Backend
	gate chan struct{}
}

func (g gated) Forward(rows []engine.Row) ([][]float32, error) {
	<-g.gate
	return g.Backend.Forward(rows)
}

func writeAdapter(t *testing.T, m *models.Model, dir string, seed int64) {
	t.Helper()
	cfg := lora.NewConfig(2, 4, []string{"q_proj", "v_proj"})
	a := lora.New(cfg)
	rng := rand.New(rand.NewSource(seed))
	for _, mod := range m.Net.Modules() {
		if !cfg.Targets(mod) {
			continue
		}
		l, _ := m.Net.Linear(mod)
		p := cfg.NewPair(mod, l.In(), l.Out())
		for i := range p.A {
			p.A[i] = float32(rng.NormFloat64() * 0.1)
		}
		for i := range p.B {
			p.B[i] = float32(rng.NormFloat64() * 0.1)
		}
		a.Modules[mod] = p
	}
	if err := a.Save(dir); err != nil {
		t.Fatal(err)
	}
}

// TestEndpointPickerReadsLorakit: the inference gateway's endpoint picker (its own PodMetricsClient, the code
// that turns a model server's /metrics into scheduling state) reads a lorakit server and sees queue, running
// requests, KV usage and the running and waiting adapters change as requests start and finish.
func TestEndpointPickerReadsLorakit(t *testing.T) {
	dir := t.TempDir()
	if err := testmodel.Write(filepath.Join(dir, "model"), testmodel.Default()); err != nil {
		t.Fatal(err)
	}
	m, err := models.Load(filepath.Join(dir, "model"), models.LoadOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	writeAdapter(t, m, filepath.Join(dir, "sql"), 1)
	writeAdapter(t, m, filepath.Join(dir, "chat"), 2)
	g := gated{Backend: backend.FromModel(m), gate: make(chan struct{})}
	srv, err := serve.New(serve.Config{Model: g, ModelName: "base", MaxBatch: 1, MaxLoadedAdapters: 4,
		Adapters: map[string]string{"sql": filepath.Join(dir, "sql"), "chat": filepath.Join(dir, "chat")}})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	defer srv.Shutdown(context.Background())

	client, err := eppmetrics.NewPodMetricsClientImpl(logr.Discard(), eppmetrics.Config{
		ModelServerMetricsScheme: "http", ModelServerMetricsPath: "/metrics",
		TotalQueuedRequestsMetric: "vllm:num_requests_waiting", TotalRunningRequestsMetric: "vllm:num_requests_running",
		KVCacheUsagePercentageMetric: "vllm:kv_cache_usage_perc", LoRAInfoMetric: "vllm:lora_requests_info",
		CacheInfoMetric: "vllm:cache_config_info",
	})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(ts.URL)
	ep := &fwkdl.EndpointMetadata{PodName: "lorakit-0", Address: u.Hostname(), Port: u.Port(), MetricsHost: u.Host}
	state := fwkdl.NewMetrics()
	scrape := func() *eppmetrics.MetricsState {
		t.Helper()
		st, err := client.FetchMetrics(context.Background(), ep, state)
		if err != nil {
			t.Fatalf("the endpoint picker could not read lorakit's /metrics: %v", err)
		}
		return st
	}

	idle := scrape()
	if idle.WaitingQueueSize != 0 || idle.RunningRequestsSize != 0 || len(idle.ActiveModels) != 0 {
		t.Fatalf("idle server: %+v", idle)
	}
	if idle.CacheBlockSize != 16 || idle.CacheNumBlocks <= 0 { // the prefix scorer's block size, from cache_config_info
		t.Fatalf("cache config: block size %d, %d blocks", idle.CacheBlockSize, idle.CacheNumBlocks)
	}
	done := make(chan struct{}, 2)
	for _, model := range []string{"sql", "chat"} {
		go func() {
			body := `{"model":"` + model + `","prompt":"hello","max_tokens":3,"temperature":0,"ignore_eos":true}`
			resp, err := http.Post(ts.URL+"/v1/completions", "application/json", strings.NewReader(body))
			if err == nil {
				resp.Body.Close()
			}
			done <- struct{}{}
		}()
		want := map[string]int{"sql": 1, "chat": 2}[model]
		waitFor(t, func() bool { st := scrape(); return st.RunningRequestsSize+st.WaitingQueueSize == want })
	}
	busy := scrape()
	if busy.RunningRequestsSize != 1 || busy.WaitingQueueSize != 1 || busy.KVCacheUsagePercent <= 0 {
		t.Fatalf("busy server: running %d waiting %d kv %v", busy.RunningRequestsSize, busy.WaitingQueueSize, busy.KVCacheUsagePercent)
	}
	if !keys(busy.ActiveModels, "sql") || !keys(busy.WaitingModels, "chat") || busy.MaxActiveModels != 1 {
		t.Fatalf("adapters: active %v waiting %v max %d, want sql / chat / 1", busy.ActiveModels, busy.WaitingModels, busy.MaxActiveModels)
	}
	// Let Forward calls through one at a time until sql has finished: chat runs, nothing waits.
	for i := 0; ; i++ {
		st := scrape()
		if keys(st.ActiveModels, "chat") && len(st.WaitingModels) == 0 && st.WaitingQueueSize == 0 {
			break
		}
		if i == 10 {
			t.Fatalf("sql did not make way for chat: %+v", st)
		}
		g.gate <- struct{}{}
		time.Sleep(20 * time.Millisecond)
	}
	close(g.gate)
	<-done
	<-done
	waitFor(t, func() bool {
		st := scrape()
		return st.RunningRequestsSize == 0 && len(st.ActiveModels) == 0
	})
}

func keys(m map[string]int, want ...string) bool {
	var got []string
	for k := range m {
		got = append(got, k)
	}
	slices.Sort(got)
	slices.Sort(want)
	return slices.Equal(got, want)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not reached in 10 s")
}
