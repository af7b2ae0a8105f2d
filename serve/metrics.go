package serve

import (
	"fmt"
	"math"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
)

// histogram is a Prometheus histogram with fixed upper bounds.
type histogram struct {
	bounds []float64
	counts []uint64 // per bucket (not cumulative); last = +Inf
	sum    float64
	n      uint64
}

func newHistogram(bounds ...float64) *histogram {
	return &histogram{bounds: bounds, counts: make([]uint64, len(bounds)+1)}
}

func (h *histogram) observe(v float64) {
	i := sort.SearchFloat64s(h.bounds, v)
	h.counts[i]++
	h.sum += v
	h.n++
}

func (h *histogram) write(b *strings.Builder, name, help string) {
	fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name)
	var cum uint64
	for i, ub := range h.bounds {
		cum += h.counts[i]
		fmt.Fprintf(b, "%s_bucket{le=\"%s\"} %d\n", name, fmtFloat(ub), cum)
	}
	fmt.Fprintf(b, "%s_bucket{le=\"+Inf\"} %d\n%s_sum %s\n%s_count %d\n", name, h.n, name, fmtFloat(h.sum), name, h.n)
}

func fmtFloat(v float64) string {
	if math.IsInf(v, 1) {
		return "+Inf"
	}
	return fmt.Sprintf("%g", v)
}

type reqKey struct {
	path   string
	status int
}

// metrics implements engine.Observer and renders Prometheus text.
type metrics struct {
	mu                 sync.Mutex
	requests           map[reqKey]uint64
	finished           map[string]uint64
	promptTok, genTok  uint64
	steps              uint64
	batch, ttft, itl   *histogram
	stepTime           *histogram
	prefillTok, decTok uint64
}

func newMetrics() *metrics {
	lat := []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2.5, 5, 10, 20, 40}
	return &metrics{requests: map[reqKey]uint64{}, finished: map[string]uint64{},
		batch:    newHistogram(1, 2, 4, 8, 16, 32, 64, 128, 256),
		ttft:     newHistogram(lat...),
		itl:      newHistogram(lat...),
		stepTime: newHistogram(lat...)}
}

func (m *metrics) request(path string, status int) {
	if path == "" {
		path = "other"
	}
	m.mu.Lock()
	m.requests[reqKey{path, status}]++
	m.mu.Unlock()
}

// Step implements engine.Observer.
func (m *metrics) Step(rows, prefill, decode int, took time.Duration) {
	m.mu.Lock()
	m.steps++
	m.batch.observe(float64(rows))
	m.stepTime.observe(took.Seconds())
	m.prefillTok += uint64(prefill)
	m.decTok += uint64(decode)
	m.mu.Unlock()
}

// FirstToken implements engine.Observer.
func (m *metrics) FirstToken(d time.Duration) {
	m.mu.Lock()
	m.ttft.observe(d.Seconds())
	m.mu.Unlock()
}

// Token implements engine.Observer.
func (m *metrics) Token(d time.Duration) {
	m.mu.Lock()
	m.itl.observe(d.Seconds())
	m.mu.Unlock()
}

// Finished implements engine.Observer.
func (m *metrics) Finished(reason string, prompt, completion int) {
	m.mu.Lock()
	m.finished[reason]++
	m.promptTok += uint64(prompt)
	m.genTok += uint64(completion)
	m.mu.Unlock()
}

// handleMetrics is GET /metrics (Prometheus text format 0.0.4).
func (s *Server) handleMetrics(c echo.Context) error {
	st := s.eng.Stats()
	m := s.metrics
	var b strings.Builder
	m.mu.Lock()
	b.WriteString("# HELP lorakit_http_requests_total HTTP requests by route and status.\n# TYPE lorakit_http_requests_total counter\n")
	keys := make([]reqKey, 0, len(m.requests))
	for k := range m.requests {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].path != keys[j].path {
			return keys[i].path < keys[j].path
		}
		return keys[i].status < keys[j].status
	})
	for _, k := range keys {
		fmt.Fprintf(&b, "lorakit_http_requests_total{route=%q,status=\"%d\"} %d\n", k.path, k.status, m.requests[k])
	}
	b.WriteString("# HELP lorakit_generations_total Finished generations (choices) by finish reason.\n# TYPE lorakit_generations_total counter\n")
	reasons := make([]string, 0, len(m.finished))
	for r := range m.finished {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		fmt.Fprintf(&b, "lorakit_generations_total{finish_reason=%q} %d\n", r, m.finished[r])
	}
	fmt.Fprintf(&b, "# HELP lorakit_prompt_tokens_total Prompt tokens of finished generations.\n# TYPE lorakit_prompt_tokens_total counter\nlorakit_prompt_tokens_total %d\n", m.promptTok)
	fmt.Fprintf(&b, "# HELP lorakit_generation_tokens_total Generated tokens of finished generations.\n# TYPE lorakit_generation_tokens_total counter\nlorakit_generation_tokens_total %d\n", m.genTok)
	fmt.Fprintf(&b, "# HELP lorakit_prefill_tokens_total Prompt tokens run through the model.\n# TYPE lorakit_prefill_tokens_total counter\nlorakit_prefill_tokens_total %d\n", m.prefillTok)
	fmt.Fprintf(&b, "# HELP lorakit_decode_tokens_total Decode rows run through the model.\n# TYPE lorakit_decode_tokens_total counter\nlorakit_decode_tokens_total %d\n", m.decTok)
	fmt.Fprintf(&b, "# HELP lorakit_engine_steps_total Engine steps (Forward calls).\n# TYPE lorakit_engine_steps_total counter\nlorakit_engine_steps_total %d\n", m.steps)
	m.batch.write(&b, "lorakit_batch_size", "Sequences per engine step.")
	m.stepTime.write(&b, "lorakit_step_seconds", "Duration of one engine step (one Forward call).")
	m.ttft.write(&b, "lorakit_time_to_first_token_seconds", "Time from request arrival to its first generated token.")
	m.itl.write(&b, "lorakit_inter_token_latency_seconds", "Time between consecutive generated tokens of a request.")
	m.mu.Unlock()
	fmt.Fprintf(&b, "# HELP lorakit_queue_depth Requests waiting to be admitted.\n# TYPE lorakit_queue_depth gauge\nlorakit_queue_depth %d\n", st.Waiting)
	fmt.Fprintf(&b, "# HELP lorakit_running_requests Sequences being decoded.\n# TYPE lorakit_running_requests gauge\nlorakit_running_requests %d\n", st.Active)
	fmt.Fprintf(&b, "# HELP lorakit_loaded_adapters LoRA adapters in memory.\n# TYPE lorakit_loaded_adapters gauge\nlorakit_loaded_adapters %d\n", s.reg.Len())
	return c.Blob(http.StatusOK, "text/plain; version=0.0.4; charset=utf-8", []byte(b.String()))
}
