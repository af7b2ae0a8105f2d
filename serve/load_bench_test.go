package serve

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/testmodel"
	"github.com/lorakit/lorakit/serve/backend"
)

// BenchmarkServeLoad is the serving load test (not a unit test): 32 concurrent streaming chat clients on a random
// model of the SmolLM2-135M shape (with an untied head, see visibleBias), spread over 8 rank-16 adapters (with a
// 9th adapter loaded and unloaded in a loop during the run), versus the same load on the base alone. Run:
//
//	go test ./serve -run XXX -bench ServeLoad -benchtime 1x -timeout 30m
//
// Knobs: LORAKIT_BENCH_CLIENTS (32), LORAKIT_BENCH_REQS per client (2), LORAKIT_BENCH_TOKENS (32),
// LORAKIT_BENCH_LAYERS (30), LORAKIT_BENCH_ROUNDS of base+mixed (1), LORAKIT_BENCH_CHURN=0 (no load/unload).
func BenchmarkServeLoad(b *testing.B) {
	env := func(k string, def int) int {
		if v, err := strconv.Atoi(os.Getenv(k)); err == nil && v > 0 {
			return v
		}
		return def
	}
	clients, reqs, tokens := env("LORAKIT_BENCH_CLIENTS", 32), env("LORAKIT_BENCH_REQS", 2), env("LORAKIT_BENCH_TOKENS", 32)
	dir := b.TempDir()
	if err := testmodel.Write(filepath.Join(dir, "model"), loadModel(env("LORAKIT_BENCH_LAYERS", 30))); err != nil {
		b.Fatal(err)
	}
	m, err := models.Load(filepath.Join(dir, "model"), models.LoadOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	bias, err := visibleBias(m)
	if err != nil {
		b.Fatal(err)
	}
	adapters := map[string]string{}
	for i := 0; i < 9; i++ {
		p := filepath.Join(dir, "adapters", fmt.Sprintf("a%d", i))
		writeRandomAdapter16(b, m, p, int64(i))
		if i < 8 {
			adapters[fmt.Sprintf("a%d", i)] = p
		}
	}
	b.ResetTimer()
	var modes []bool
	for r := 0; r < env("LORAKIT_BENCH_ROUNDS", 1); r++ {
		modes = append(modes, false, true)
	}
	for _, mixed := range modes {
		runtime.GC()
		g0 := runtime.NumGoroutine()
		var ms0 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		srv, err := New(Config{Model: backend.FromModel(m), ModelName: "base", Adapters: adapters, MaxBatch: clients,
			AdapterDir: filepath.Join(dir, "adapters")})
		if err != nil {
			b.Fatal(err)
		}
		ts := httptest.NewServer(srv.Handler())
		stopChurn := make(chan struct{})
		var churn sync.WaitGroup
		var churnOps atomic.Int64
		if mixed && os.Getenv("LORAKIT_BENCH_CHURN") != "0" {
			churn.Add(1)
			go func() { // load and unload a 9th adapter (and drive one request on it) during the run
				defer churn.Done()
				for {
					select {
					case <-stopChurn:
						return
					default:
					}
					body := fmt.Sprintf(`{"lora_name":"churn","lora_path":%q}`, filepath.Join(dir, "adapters", "a8"))
					if r, err := http.Post(ts.URL+"/v1/load_lora_adapter", "application/json", strings.NewReader(body)); err == nil {
						r.Body.Close()
					}
					time.Sleep(200 * time.Millisecond)
					if r, err := http.Post(ts.URL+"/v1/unload_lora_adapter", "application/json", strings.NewReader(`{"lora_name":"churn"}`)); err == nil {
						r.Body.Close()
					}
					churnOps.Add(1)
					time.Sleep(100 * time.Millisecond)
				}
			}()
		}
		cpu0 := cpuSeconds()
		res := runLoad(ts.URL, clients, reqs, tokens, func(i int) string {
			if mixed {
				return fmt.Sprintf("a%d", i%8)
			}
			return "base"
		}, bias)
		cpu := cpuSeconds() - cpu0
		close(stopChurn)
		churn.Wait()
		ts.Close()
		_ = srv.Shutdown(context.Background())
		time.Sleep(200 * time.Millisecond)
		runtime.GC()
		var ms1 runtime.MemStats
		runtime.ReadMemStats(&ms1)
		mode := "base-only"
		if mixed {
			mode = "8-adapters"
		}
		b.Logf("%s: %d clients × %d req × %d tok: %d ok, %d failed, %.1f s, aggregate %.1f tok/s (process CPU %.1f ms/token), TTFT p50 %.1f ms p99 %.1f ms, ITL p50 %.1f ms p99 %.1f ms (%d gaps); load/unload cycles %d; goroutines %d→%d, heap %.0f→%.0f MB",
			mode, clients, reqs, tokens, res.ok, res.failed, res.wall.Seconds(), float64(res.tokens)/res.wall.Seconds(),
			1000*cpu/float64(max(res.tokens, 1)),
			pct(res.ttft, 50), pct(res.ttft, 99), pct(res.itl, 50), pct(res.itl, 99), len(res.itl), churnOps.Load(),
			g0, runtime.NumGoroutine(), float64(ms0.HeapAlloc)/1e6, float64(ms1.HeapAlloc)/1e6)
		if res.firstErr != "" {
			b.Logf("first failure: %s", res.firstErr)
		}
		b.ReportMetric(float64(res.tokens)/res.wall.Seconds(), mode+"-tok/s")
	}
}

// loadModel is the benchmark's random model: the SmolLM2-135M shape with an untied head (see visibleBias).
func loadModel(layers int) testmodel.Options {
	return testmodel.Options{ModelType: "llama", Hidden: 576, Intermediate: 1536, Layers: layers, Heads: 9, KVHeads: 3,
		Vocab: 49152, MaxPositions: 2048, Tied: false, DType: "BF16", Seed: 1, Std: 0.02}
}

type loadResult struct {
	ok, failed int
	tokens     int
	wall       time.Duration
	ttft, itl  []float64 // ms: request start to first content delta; gaps between successive content deltas
	firstErr   string
}

func pct(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	i := int(p / 100 * float64(len(s)-1))
	return s[i]
}

// visibleBias is a logit_bias (JSON) that makes a random test model write visible text, one streamed delta per
// token. Left alone, a random model with tied embeddings (std 1, against 0.02 for the layers) repeats its last
// token with a logit of about hidden_size, beyond any bias, and a chat prompt ends in "\n": it streams only
// newlines, which the chat stream holds back (leading whitespace may still precede a <think>) and sends as one
// delta at the end, so TTFT is the whole request and ITL has no samples. With an untied head (std 0.02) the
// logits are below 1 and this bias picks the text.
func visibleBias(m *models.Model) (string, error) {
	ids := m.Tok.Encode(" the sea", false)
	if len(ids) == 0 {
		return "", fmt.Errorf("visible bias: %q encodes to no tokens", " the sea")
	}
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = fmt.Sprintf(`"%d":100`, id)
	}
	return "{" + strings.Join(parts, ",") + "}", nil
}

// runLoad drives clients concurrent streaming chat clients, reqs requests each, of tokens tokens (ignore_eos),
// with logitBias (a JSON object) on every request.
func runLoad(url string, clients, reqs, tokens int, model func(int) string, logitBias string) loadResult {
	var mu sync.Mutex
	var res loadResult
	var wg sync.WaitGroup
	fail := func(msg string) {
		mu.Lock()
		defer mu.Unlock()
		res.failed++
		if res.firstErr == "" {
			res.firstErr = msg
		}
	}
	t0 := time.Now()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for r := 0; r < reqs; r++ {
				body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"Client %d request %d: write a short story about the sea and a lighthouse keeper."}],"max_tokens":%d,"temperature":0.8,"seed":%d,"ignore_eos":true,"logit_bias":%s,"stream":true,"stream_options":{"include_usage":true}}`,
					model(c), c, r, tokens, c*100+r, logitBias)
				start := time.Now()
				resp, err := http.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(body))
				if err != nil {
					fail(err.Error())
					continue
				}
				if resp.StatusCode != http.StatusOK {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					fail(fmt.Sprintf("%d %s", resp.StatusCode, b))
					continue
				}
				st, err := readStream(resp.Body, start)
				resp.Body.Close()
				if err != nil {
					fail(err.Error())
					continue
				}
				mu.Lock()
				res.ok++
				res.tokens += st.tokens
				res.ttft = append(res.ttft, st.ttft)
				res.itl = append(res.itl, st.itl...)
				mu.Unlock()
			}
		}(c)
	}
	wg.Wait()
	res.wall = time.Since(t0)
	return res
}

// streamTimes are the timings of one streamed chat completion, in ms.
type streamTimes struct {
	ttft   float64   // request start to the first content delta
	itl    []float64 // between each content delta and the one before it
	tokens int       // completion tokens of the usage chunk
}

// readStream reads a chat completion SSE stream to its [DONE], timing each non-empty content delta as its line
// arrives (the role chunk's empty content is not a delta).
func readStream(r io.Reader, start time.Time) (streamTimes, error) {
	var st streamTimes
	var last time.Time
	deltas := 0
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		p, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if p == "[DONE]" {
			if st.tokens == 0 || deltas == 0 {
				return st, fmt.Errorf("stream: %d usage tokens, %d content deltas", st.tokens, deltas)
			}
			return st, nil
		}
		var ch struct {
			Choices []struct {
				Delta struct {
					Content *string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
			Usage *struct {
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal([]byte(p), &ch); err != nil {
			return st, fmt.Errorf("stream: chunk %q: %w", p, err)
		}
		if ch.Usage != nil {
			st.tokens = ch.Usage.CompletionTokens
		}
		if len(ch.Choices) == 0 || ch.Choices[0].Delta.Content == nil || *ch.Choices[0].Delta.Content == "" {
			continue
		}
		now := time.Now()
		if deltas == 0 {
			st.ttft = ms(now.Sub(start))
		} else {
			st.itl = append(st.itl, ms(now.Sub(last)))
		}
		last = now
		deltas++
	}
	return st, fmt.Errorf("stream ended before [DONE] after %d content deltas: %v", deltas, sc.Err())
}

func ms(d time.Duration) float64 { return d.Seconds() * 1000 }

// cpuSeconds is the process's user+system CPU time: a throughput measure that survives a shared, loaded machine.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}
