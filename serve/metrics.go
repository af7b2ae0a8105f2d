package serve

import (
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lorakit/lorakit/serve/adapterstore"
	"github.com/lorakit/lorakit/serve/engine"
)

// metrics is the server's Prometheus registry. It implements engine.Observer and engine.RegistryObserver: the
// engine and the adapter registry report what they do, and a collector reads their state at scrape time. Series
// named vllm:* follow vLLM's names and meanings, which the Gateway API Inference Extension's endpoint picker reads
// (its model-server protocol); the lorakit_* series are lorakit's own.
type metrics struct {
	reg  *prometheus.Registry
	base string // served base model name: the model label of requests without an adapter

	requests              *prometheus.CounterVec // route, status
	finished              *prometheus.CounterVec // finish_reason
	promptTok, genTok     prometheus.Counter
	prefillTok, decTok    prometheus.Counter
	steps                 prometheus.Counter
	batch, stepTime       prometheus.Histogram
	ttft, itl             prometheus.Histogram
	queueTime, e2e        *prometheus.HistogramVec // model_name
	modelReqs             *prometheus.CounterVec   // model
	modelPrompt, modelGen *prometheus.CounterVec   // model
	adapterLoads          *prometheus.CounterVec   // result
	adapterEvicts         prometheus.Counter
	adapterLoadTime       prometheus.Histogram
}

// latencyBuckets are lorakit's per-token latency bounds (seconds); requestBuckets are vLLM's request-latency
// bounds, used for queue time and end-to-end latency as vLLM does.
var (
	latencyBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2.5, 5, 10, 20, 40}
	requestBuckets = []float64{0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680}
)

// newMetrics registers every series; state reads the engine and adapter registry at each scrape.
func newMetrics(base string, state func() scrapeState) *metrics {
	m := &metrics{reg: prometheus.NewRegistry(), base: base}
	f := factory{m.reg}
	m.requests = f.counterVec("lorakit_http_requests_total", "HTTP requests by route and status.", "route", "status")
	m.finished = f.counterVec("lorakit_generations_total", "Finished generations (choices) by finish reason.", "finish_reason")
	m.promptTok = f.counter("lorakit_prompt_tokens_total", "Prompt tokens of finished generations.")
	m.genTok = f.counter("lorakit_generation_tokens_total", "Generated tokens of finished generations.")
	m.prefillTok = f.counter("lorakit_prefill_tokens_total", "Prompt tokens run through the model.")
	m.decTok = f.counter("lorakit_decode_tokens_total", "Decode rows run through the model.")
	m.steps = f.counter("lorakit_engine_steps_total", "Engine steps (Forward calls).")
	m.batch = f.histogram("lorakit_batch_size", "Sequences per engine step.", []float64{1, 2, 4, 8, 16, 32, 64, 128, 256})
	m.stepTime = f.histogram("lorakit_step_seconds", "Duration of one engine step (one Forward call).", latencyBuckets)
	m.ttft = f.histogram("lorakit_time_to_first_token_seconds", "Time from request arrival to its first generated token.", latencyBuckets)
	m.itl = f.histogram("lorakit_inter_token_latency_seconds", "Time between consecutive generated tokens of a request.", latencyBuckets)
	m.queueTime = f.histogramVec("vllm:request_queue_time_seconds", "Time a request spent waiting before its first engine step.", requestBuckets, "model_name")
	m.e2e = f.histogramVec("vllm:e2e_request_latency_seconds", "Time from request arrival to its last token.", requestBuckets, "model_name")
	m.modelReqs = f.counterVec("lorakit_adapter_requests_total", "Finished generations by requested model (an adapter name, or the base model's served name).", "model")
	m.modelPrompt = f.counterVec("lorakit_adapter_prompt_tokens_total", "Prompt tokens of finished generations by requested model.", "model")
	m.modelGen = f.counterVec("lorakit_adapter_generation_tokens_total", "Generated tokens of finished generations by requested model.", "model")
	m.adapterLoads = f.counterVec("lorakit_adapter_loads_total", "Adapter loads (startup, load API and first use from --adapter-dir) by result (ok, error).", "result")
	m.adapterEvicts = f.counter("lorakit_adapter_evictions_total", "Idle adapters evicted to stay within --max-loaded-adapters.")
	m.adapterLoadTime = f.histogram("lorakit_adapter_load_seconds", "Time to read and check one adapter.", []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60})
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&stateCollector{base: base, state: state})
	return m
}

// factory registers series on one registry.
type factory struct{ reg *prometheus.Registry }

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	f.reg.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(c)
	return c
}

func (f factory) histogram(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
	f.reg.MustRegister(h)
	return h
}

func (f factory) histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
	f.reg.MustRegister(h)
	return h
}

func (m *metrics) request(path string, status int) {
	if path == "" {
		path = "other"
	}
	m.requests.WithLabelValues(path, strconv.Itoa(status)).Inc()
}

// Step implements engine.Observer.
func (m *metrics) Step(rows, prefill, decode int, took time.Duration) {
	m.steps.Inc()
	m.batch.Observe(float64(rows))
	m.stepTime.Observe(took.Seconds())
	m.prefillTok.Add(float64(prefill))
	m.decTok.Add(float64(decode))
}

// FirstToken implements engine.Observer.
func (m *metrics) FirstToken(d time.Duration) { m.ttft.Observe(d.Seconds()) }

// Token implements engine.Observer.
func (m *metrics) Token(d time.Duration) { m.itl.Observe(d.Seconds()) }

// Finished implements engine.Observer.
func (m *metrics) Finished(f engine.Finished) {
	m.finished.WithLabelValues(f.Reason).Inc()
	m.promptTok.Add(float64(f.PromptTokens))
	m.genTok.Add(float64(f.CompletionTokens))
	model := f.Adapter
	if model == "" {
		model = m.base
	}
	m.modelReqs.WithLabelValues(model).Inc()
	m.modelPrompt.WithLabelValues(model).Add(float64(f.PromptTokens))
	m.modelGen.WithLabelValues(model).Add(float64(f.CompletionTokens))
	if f.Ran {
		m.queueTime.WithLabelValues(m.base).Observe(f.Queued.Seconds())
		m.e2e.WithLabelValues(m.base).Observe(f.Total.Seconds())
	}
}

// AdapterLoaded implements engine.RegistryObserver.
func (m *metrics) AdapterLoaded(_ string, took time.Duration, err error) {
	if err != nil {
		m.adapterLoads.WithLabelValues("error").Inc()
		return
	}
	m.adapterLoads.WithLabelValues("ok").Inc()
	m.adapterLoadTime.Observe(took.Seconds())
}

// AdapterEvicted implements engine.RegistryObserver.
func (m *metrics) AdapterEvicted(string) { m.adapterEvicts.Inc() }

// scrapeState is what the gauges show, read once per scrape so they agree with each other.
type scrapeState struct {
	engine.Stats
	Loaded  []string // adapters in memory, sorted
	MaxLoRA int
	Cache   *adapterstore.Stats // the object-storage adapter cache, when there is one
}

// stateCollector turns a scrapeState into gauges at scrape time.
type stateCollector struct {
	base  string
	state func() scrapeState
}

var (
	descQueueDepth = prometheus.NewDesc("lorakit_queue_depth", "Requests waiting to be admitted.", nil, nil)
	descRunning    = prometheus.NewDesc("lorakit_running_requests", "Sequences being decoded.", nil, nil)
	descLoaded     = prometheus.NewDesc("lorakit_loaded_adapters", "LoRA adapters in memory.", nil, nil)
	descAdapter    = prometheus.NewDesc("lorakit_adapter_loaded", "1 for each LoRA adapter in memory.", []string{"adapter"}, nil)
	descWaiting    = prometheus.NewDesc("vllm:num_requests_waiting", "Requests waiting to be admitted to the batch.", []string{"model_name"}, nil)
	descRunningV   = prometheus.NewDesc("vllm:num_requests_running", "Requests in the running batch.", []string{"model_name"}, nil)
	descKV         = prometheus.NewDesc("vllm:kv_cache_usage_perc", "KV-cache usage (1 = full): blocks in use over the --kv-cache-memory pool; without one, token positions reserved by running sequences over max batch × max model length.", []string{"model_name"}, nil)
	descPreempt    = prometheus.NewDesc("vllm:num_preemptions_total", "Sequences preempted (to be recomputed): because the KV cache budget had no free block, or to let a request with nothing running into a full batch (lorakit_fair_preemptions_total counts these too); vLLM counts every preemption here.", []string{"model_name"}, nil)
	descYields     = prometheus.NewDesc("lorakit_fair_preemptions_total", "Sequences preempted (to be recomputed) to let a request with nothing running into a full batch, from a request (n > 1) holding more than its fair share.", nil, nil)
	descPrefixQ    = prometheus.NewDesc("vllm:prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache.", []string{"model_name"}, nil)
	descPrefixHit  = prometheus.NewDesc("vllm:prefix_cache_hits_total", "Prompt tokens whose KV the prefix cache supplied.", []string{"model_name"}, nil)
	descCacheBytes = prometheus.NewDesc("lorakit_adapter_cache_bytes", "Bytes of adapters in the local object-storage cache.", nil, nil)
	descCacheN     = prometheus.NewDesc("lorakit_adapter_cache_adapters", "Adapter versions in the local object-storage cache.", nil, nil)
	descCacheDL    = prometheus.NewDesc("lorakit_adapter_cache_downloads_total", "Adapters downloaded from object storage into the cache.", nil, nil)
	descCacheHits  = prometheus.NewDesc("lorakit_adapter_cache_hits_total", "Adapter fetches served from the cache without a download.", nil, nil)
	descCacheFail  = prometheus.NewDesc("lorakit_adapter_cache_failed_downloads_total", "Downloads refused (cut, wrong size or checksum, missing adapter_config.json) or failed.", nil, nil)
	descCacheEvict = prometheus.NewDesc("lorakit_adapter_cache_evictions_total", "Adapters removed from the cache to stay within --adapter-cache-size.", nil, nil)
	descCacheInfo  = prometheus.NewDesc("vllm:cache_config_info", "The KV cache's layout (value 1, the labels carry it, as vLLM's info gauge): positions per block and blocks in all (the --kv-cache-memory pool, or without one the blocks max batch × max model length take).",
		[]string{"block_size", "num_gpu_blocks"}, nil)
	descLoRAInfo = prometheus.NewDesc("vllm:lora_requests_info", "Adapters of running and waiting requests (comma-separated labels); the value is the time of this reading (Unix seconds), as vLLM sets it.",
		[]string{"running_lora_adapters", "waiting_lora_adapters", "max_lora"}, nil)
)

// Describe implements prometheus.Collector.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQueueDepth, descRunning, descLoaded, descAdapter, descWaiting, descRunningV, descKV, descPreempt, descYields, descLoRAInfo, descPrefixQ, descPrefixHit,
		descCacheInfo, descCacheBytes, descCacheN, descCacheDL, descCacheHits, descCacheFail, descCacheEvict} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.state()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descQueueDepth, float64(st.Waiting))
	gauge(descRunning, float64(st.Active))
	gauge(descLoaded, float64(len(st.Loaded)))
	for _, a := range st.Loaded {
		gauge(descAdapter, 1, a)
	}
	gauge(descWaiting, float64(st.Waiting), c.base)
	gauge(descRunningV, float64(st.Active), c.base)
	gauge(descKV, st.KVUsage(), c.base)
	ch <- prometheus.MustNewConstMetric(descPreempt, prometheus.CounterValue, float64(st.Preemptions+st.Yields), c.base)
	ch <- prometheus.MustNewConstMetric(descYields, prometheus.CounterValue, float64(st.Yields))
	ch <- prometheus.MustNewConstMetric(descPrefixQ, prometheus.CounterValue, float64(st.PrefixQueries), c.base)
	ch <- prometheus.MustNewConstMetric(descPrefixHit, prometheus.CounterValue, float64(st.PrefixHits), c.base)
	// the endpoint picker's prefix scorer reads block_size (and num_gpu_blocks) from these labels
	gauge(descCacheInfo, 1, strconv.Itoa(engine.KVBlockSize), strconv.Itoa(cacheBlocks(st.Stats)))
	if cs := st.Cache; cs != nil {
		counter := func(d *prometheus.Desc, v uint64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
		}
		gauge(descCacheBytes, float64(cs.Bytes))
		gauge(descCacheN, float64(cs.Adapters))
		counter(descCacheDL, cs.Downloads)
		counter(descCacheHits, cs.Hits)
		counter(descCacheFail, cs.Failed)
		counter(descCacheEvict, cs.Evicts)
	}
	// vLLM joins with "," and the endpoint picker splits on "," without trimming: no spaces.
	gauge(descLoRAInfo, float64(time.Now().UnixNano())/1e9,
		strings.Join(st.RunningAdapters, ","), strings.Join(st.WaitingAdapters, ","), strconv.Itoa(st.MaxLoRA))
}

// cacheBlocks is the number of KV blocks the engine can hold: its budget, or without one the blocks of the most
// positions it ever reserves at once.
func cacheBlocks(st engine.Stats) int {
	if st.KVBlocks > 0 {
		return st.KVBlocks
	}
	return (st.KVCapacity + engine.KVBlockSize - 1) / engine.KVBlockSize
}

// handleMetrics is GET /metrics, in the exposition format the scraper asks for (text 0.0.4 by default).
func (s *Server) handleMetrics(c echo.Context) error {
	promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}).ServeHTTP(c.Response(), c.Request())
	return nil
}

// scrape reads the engine and the registry for the gauges.
func (s *Server) scrape() scrapeState {
	st := scrapeState{Stats: s.eng.Stats(), MaxLoRA: s.eng.MaxBatch()}
	if n := s.reg.MaxLoaded(); n > 0 {
		st.MaxLoRA = min(st.MaxLoRA, n)
	}
	for _, a := range s.reg.List() {
		st.Loaded = append(st.Loaded, a.Name)
	}
	if s.cfg.AdapterStore != nil {
		cs := s.cfg.AdapterStore.Stats()
		st.Cache = &cs
	}
	return st
}
