package serve

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/lorakit/lorakit/serve/engine"
)

// scrapeFamilies reads /metrics with Prometheus' own text parser.
func scrapeFamilies(t *testing.T, e *testEnv) map[string]*dto.MetricFamily {
	t.Helper()
	st, b := e.get(t, "/metrics")
	if st != 200 {
		t.Fatalf("/metrics: %d %s", st, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, b)
	}
	return fams
}

// value is the value of the series of name whose labels include want (counter, gauge, or histogram count).
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("no series %s", name)
	}
	for _, m := range f.GetMetric() {
		if !hasLabels(m, want) {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	t.Fatalf("no series %s%v", name, want)
	return 0
}

func hasLabels(m *dto.Metric, want []string) bool {
	for i := 0; i+1 < len(want); i += 2 {
		ok := false
		for _, l := range m.GetLabel() {
			ok = ok || (l.GetName() == want[i] && l.GetValue() == want[i+1])
		}
		if !ok {
			return false
		}
	}
	return true
}

// loraInfo is the one vllm:lora_requests_info series: running, waiting, max_lora.
func loraInfo(t *testing.T, fams map[string]*dto.MetricFamily) (running, waiting, maxLoRA string) {
	t.Helper()
	f := fams["vllm:lora_requests_info"]
	if f == nil || len(f.GetMetric()) != 1 || f.GetType() != dto.MetricType_GAUGE {
		t.Fatalf("vllm:lora_requests_info: want one gauge series, got %v", f)
	}
	m := f.GetMetric()[0]
	if m.GetGauge().GetValue() < 1.7e9 {
		t.Fatalf("vllm:lora_requests_info value %v is not a Unix time", m.GetGauge().GetValue())
	}
	for _, l := range m.GetLabel() {
		switch l.GetName() {
		case "running_lora_adapters":
			running = l.GetValue()
		case "waiting_lora_adapters":
			waiting = l.GetValue()
		case "max_lora":
			maxLoRA = l.GetValue()
		}
	}
	return
}

// TestRoutingMetrics: the series the inference gateway's endpoint picker reads follow requests as they wait, run
// and finish; per-adapter counters, load and eviction counts and the latency histograms are published.
func TestRoutingMetrics(t *testing.T) {
	e := newEnv(t, func(c *Config, fm *fakeModel) {
		fm.block = make(chan struct{})
		c.MaxBatch, c.MaxLoadedAdapters = 1, 2
	})
	done := make(chan struct{}, 2)
	for _, m := range []string{"hello", "lazy"} {
		go func() {
			e.post(t, "/v1/chat/completions", chatBody(m, "x", `"max_tokens":3`))
			done <- struct{}{}
		}()
		waitUntil(t, func() bool {
			s := e.srv.eng.Stats()
			return s.Active+s.Waiting == map[string]int{"hello": 1, "lazy": 2}[m]
		})
	}
	fams := scrapeFamilies(t, e)
	if r, w, ml := loraInfo(t, fams); r != "hello" || w != "lazy" || ml != "1" {
		t.Fatalf("lora_requests_info running=%q waiting=%q max_lora=%q, want hello, lazy, 1", r, w, ml)
	}
	if v := value(t, fams, "vllm:num_requests_waiting", "model_name", "base"); v != 1 {
		t.Fatalf("waiting %v", v)
	}
	if v := value(t, fams, "vllm:num_requests_running", "model_name", "base"); v != 1 {
		t.Fatalf("running %v", v)
	}
	if v := value(t, fams, "vllm:kv_cache_usage_perc", "model_name", "base"); v <= 0 || v > 1 {
		t.Fatalf("kv usage %v", v)
	}
	blocks := fmt.Sprint((e.srv.eng.Stats().KVCapacity + engine.KVBlockSize - 1) / engine.KVBlockSize)
	if v := value(t, fams, "vllm:cache_config_info", "block_size", fmt.Sprint(engine.KVBlockSize), "num_gpu_blocks", blocks); v != 1 {
		t.Fatalf("cache_config_info %v, want 1 with block_size %d, num_gpu_blocks %s", v, engine.KVBlockSize, blocks)
	}
	if v := value(t, fams, "lorakit_adapter_loaded", "adapter", "lazy"); v != 1 {
		t.Fatalf("lazy not listed as loaded: %v", v)
	}
	e.feed(1 << 20)
	<-done
	<-done
	waitUntil(t, func() bool { s := e.srv.eng.Stats(); return s.Active == 0 && s.Waiting == 0 })
	fams = scrapeFamilies(t, e)
	if r, w, _ := loraInfo(t, fams); r != "" || w != "" {
		t.Fatalf("idle server reports running=%q waiting=%q", r, w)
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"lorakit_adapter_requests_total", []string{"model", "hello"}, 1},
		{"lorakit_adapter_requests_total", []string{"model", "lazy"}, 1},
		{"lorakit_adapter_generation_tokens_total", []string{"model", "hello"}, 3},
		{"lorakit_adapter_loads_total", []string{"result", "ok"}, 3},
		{"lorakit_adapter_load_seconds", nil, 3},
		{"lorakit_adapter_evictions_total", nil, 1}, // lazy, idle again beyond --max-loaded-adapters 2
		{"vllm:request_queue_time_seconds", []string{"model_name", "base"}, 2},
		{"vllm:e2e_request_latency_seconds", []string{"model_name", "base"}, 2},
		{"lorakit_loaded_adapters", nil, 2},
	} {
		if v := value(t, fams, c.name, c.labels...); v != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, v, c.want)
		}
	}
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if fams[name] == nil {
			t.Errorf("no %s (Go runtime and process collectors)", name)
		}
	}
}

// TestPromtoolCheckMetrics runs Prometheus' own linter over the page (Debian's prometheus package; .ci/install
// installs it). Its only complaints may be the ':' in vLLM's names, which vLLM's own page triggers too.
func TestPromtoolCheckMetrics(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (Debian package prometheus); skipping the lint of /metrics")
	}
	e := newEnv(t, nil)
	e.post(t, "/v1/chat/completions", chatBody("hello", "x", `"max_tokens":2`))
	_, page := e.get(t, "/metrics")
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(page)
	out, err := cmd.CombinedOutput()
	var other []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line != "" && !strings.Contains(line, `metric names should not contain ':'`) {
			other = append(other, line)
		}
	}
	if len(other) > 0 || (err != nil && len(out) == 0) {
		t.Fatalf("promtool check metrics: %v\n%s", err, strings.Join(other, "\n"))
	}
	if !strings.Contains(string(out), "vllm:lora_requests_info") {
		t.Logf("promtool printed no ':' lint (an older promtool?):\n%s", out)
	}
}

// TestPreemptionsCountFairShare: vllm:num_preemptions_total counts every preemption, the fair-share ones
// (also in lorakit_fair_preemptions_total) with those for lack of KV blocks, as vLLM counts all of them there.
func TestPreemptionsCountFairShare(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	st := scrapeState{}
	st.Preemptions, st.Yields = 2, 3
	reg.MustRegister(&stateCollector{base: "m", state: func() scrapeState { return st }})
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			if m.Counter != nil {
				got[f.GetName()] = m.GetCounter().GetValue()
			}
		}
	}
	if got["vllm:num_preemptions_total"] != 5 || got["lorakit_fair_preemptions_total"] != 3 {
		t.Errorf("preemptions %v, fair %v; want 5 and 3", got["vllm:num_preemptions_total"], got["lorakit_fair_preemptions_total"])
	}
}

// TestCacheBlocks: cache_config_info's num_gpu_blocks is the KV budget when there is one, else the blocks of the
// engine's largest reservation.
func TestCacheBlocks(t *testing.T) {
	if n := cacheBlocks(engine.Stats{KVBlocks: 40, KVCapacity: 4096}); n != 40 {
		t.Fatalf("with a budget of 40 blocks: %d", n)
	}
	if n := cacheBlocks(engine.Stats{KVCapacity: 8*256 + 1}); n != 8*256/engine.KVBlockSize+1 {
		t.Fatalf("without a budget, %d positions: %d blocks", 8*256+1, n)
	}
}
