package serve

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lorakit/lorakit/internal/testenv"
	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/serve/backend"
)

// BenchmarkServeSoak is the soak test of issue 14 (not a unit test): 64 streaming clients over 8 adapters of
// stories260K served from --adapter-dir with at most 6 loaded (evictions), a churn loop unloading and reloading
// adapters through the API, 1 request in 8 disconnecting mid-stream, and n of 1 to 3. It fails on any 5xx, any
// stream of a client that stayed which lacks a finish for every choice or [DONE], and on goroutines, open files
// or RSS that grow between the first sample after warm-up and the last. Run:
//
//	go test ./serve -run XXX -bench ServeSoak -benchtime 1x -timeout 30m     # LORAKIT_SOAK=10m (default)
func BenchmarkServeSoak(b *testing.B) {
	dur := 10 * time.Minute
	if d, err := time.ParseDuration(os.Getenv("LORAKIT_SOAK")); err == nil && d > 0 {
		dur = d
	}
	m, err := models.Load(filepath.Join(testenv.Testdata(b), "models", "stories260K"), models.LoadOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	dir := b.TempDir()
	names := make([]string, 8)
	for i := range names {
		names[i] = fmt.Sprintf("s%d", i)
		writeRandomAdapterR(b, m, filepath.Join(dir, names[i]), int64(i), 4, 0.02)
	}
	srv, err := New(Config{Model: backend.FromModel(m), ModelName: "base", AdapterDir: dir, MaxLoadedAdapters: 6,
		MaxBatch: 16, MaxQueue: 512, WriteTimeout: 10 * time.Second, ShutdownTimeout: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Start(ctx, ln) }()
	url := "http://" + ln.Addr().String()
	b.ResetTimer()

	var st soakStats
	end := time.Now().Add(dur)
	var wg sync.WaitGroup
	for c := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(c)))
			for time.Now().Before(end) {
				st.request(url, rng, names)
			}
		}()
	}
	wg.Add(1)
	go func() { // churn: unload an adapter, then load it again through the API
		defer wg.Done()
		rng := rand.New(rand.NewSource(99))
		for time.Now().Before(end) {
			n := names[rng.Intn(len(names))]
			st.post(url+"/v1/unload_lora_adapter", `{"lora_name":"`+n+`"}`)
			time.Sleep(100 * time.Millisecond)
			st.post(url+"/v1/load_lora_adapter", fmt.Sprintf(`{"lora_name":%q,"lora_path":%q}`, n, filepath.Join(dir, n)))
			time.Sleep(400 * time.Millisecond)
		}
	}()
	var samples []soakSample
	sample := func() {
		runtime.GC()
		samples = append(samples, soakSample{t: time.Since(end.Add(-dur)), goroutines: runtime.NumGoroutine(), fds: openFiles(), rss: rss()})
	}
	sample()
	tick := time.NewTicker(max(dur/20, time.Second))
	for time.Now().Before(end) {
		<-tick.C
		sample()
	}
	tick.Stop()
	wg.Wait()
	http.DefaultClient.CloseIdleConnections()
	time.Sleep(200 * time.Millisecond)
	sample()
	b.StopTimer()
	stop()
	if err := <-served; err != nil {
		b.Errorf("shutdown: %v", err)
	}

	b.Logf("%d requests in %v: %d completed streams, %d deliberate disconnects, %d 4xx (adapter churn), %d 5xx, %d incomplete streams, %d churn calls failed",
		st.requests.Load(), dur, st.complete.Load(), st.disconnects.Load(), st.client4xx.Load(), st.server5xx.Load(), st.incomplete.Load(), st.churnFailed.Load())
	b.Logf("%8s %10s %6s %8s", "time", "goroutines", "fds", "RSS MB")
	for _, s := range samples {
		b.Logf("%8s %10d %6d %8d", s.t.Round(time.Second), s.goroutines, s.fds, s.rss>>20)
	}
	if n := st.server5xx.Load(); n > 0 {
		b.Errorf("%d 5xx replies (first: %s)", n, st.firstErr())
	}
	if n := st.incomplete.Load(); n > 0 {
		b.Errorf("%d incomplete streams (first: %s)", n, st.firstErr())
	}
	if len(samples) >= 4 {
		warm, last := samples[1], samples[len(samples)-1]
		if last.goroutines > warm.goroutines+16 || last.fds > warm.fds+16 || last.rss > warm.rss+warm.rss/4+(16<<20) {
			b.Errorf("not flat: after warm-up %+v, at the end %+v", warm, last)
		}
	}
	b.ReportMetric(float64(st.complete.Load())/dur.Seconds(), "streams/s")
}

type soakSample struct {
	t               time.Duration
	goroutines, fds int
	rss             int64
}

func openFiles() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	return len(ents)
}

type soakStats struct {
	requests, complete, disconnects, client4xx, server5xx, incomplete, churnFailed atomic.Int64
	mu                                                                             sync.Mutex
	first                                                                          string
}

func (s *soakStats) fail(what string) {
	s.mu.Lock()
	if s.first == "" {
		s.first = what
	}
	s.mu.Unlock()
}

func (s *soakStats) firstErr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first
}

func (s *soakStats) post(url, body string) {
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		s.churnFailed.Add(1)
		return
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode >= 500 {
		s.server5xx.Add(1)
		s.fail(fmt.Sprintf("%s: %d %s", url, resp.StatusCode, b))
	} else if resp.StatusCode != 200 {
		s.churnFailed.Add(1)
	}
}

// request runs one streamed chat or completions request and checks how it ends.
func (s *soakStats) request(url string, rng *rand.Rand, names []string) {
	s.requests.Add(1)
	model := "base"
	if rng.Intn(9) > 0 {
		model = names[rng.Intn(len(names))]
	}
	n := 1 + rng.Intn(3)
	tokens := 8 + rng.Intn(56)
	path, body := "/v1/completions", fmt.Sprintf(`{"model":%q,"prompt":"Once upon a time","n":%d,"max_tokens":%d,"stream":true}`, model, n, tokens)
	if rng.Intn(2) == 0 {
		path, body = "/v1/chat/completions", fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"Tell me a story"}],"n":%d,"max_tokens":%d,"stream":true}`, model, n, tokens)
	}
	leave := rng.Intn(8) == 0
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", url+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.incomplete.Add(1)
		s.fail(err.Error())
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 500 {
			s.server5xx.Add(1)
			s.fail(fmt.Sprintf("%d %s", resp.StatusCode, b))
		} else {
			s.client4xx.Add(1) // the adapter was unloaded by the churn loop just then
		}
		return
	}
	sc := bufio.NewScanner(resp.Body)
	finished := map[float64]bool{}
	done, events := false, 0
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		events++
		if leave && events == 3 {
			s.disconnects.Add(1)
			return // cancel: the client goes away mid-stream
		}
		if line == "[DONE]" {
			done = true
			continue
		}
		var ev struct {
			Choices []struct {
				Index        float64 `json:"index"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Error any `json:"error"`
		}
		if json.Unmarshal([]byte(line), &ev) != nil || ev.Error != nil {
			s.incomplete.Add(1)
			s.fail(line)
			return
		}
		for _, c := range ev.Choices {
			if c.FinishReason != nil {
				finished[c.Index] = true
			}
		}
	}
	if !done || len(finished) != n {
		s.incomplete.Add(1)
		s.fail(fmt.Sprintf("%s: [DONE] %v, %d of %d choices finished", path, done, len(finished), n))
		return
	}
	s.complete.Add(1)
}
