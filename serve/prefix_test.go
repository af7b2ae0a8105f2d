package serve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/testmodel"
	"github.com/lorakit/lorakit/serve/backend"
	"github.com/lorakit/lorakit/serve/engine"
)

// prefixFixture is a tiny random model with two random adapters, served by the real backend.
type prefixFixture struct {
	be     *backend.Backend
	paths  []string
	deltas []engine.Delta
}

func newPrefixFixture(t testing.TB, o testmodel.Options) *prefixFixture {
	t.Helper()
	dir := t.TempDir()
	if err := testmodel.Write(filepath.Join(dir, "model"), o); err != nil {
		t.Fatal(err)
	}
	m, err := models.Load(filepath.Join(dir, "model"), models.LoadOptions{Threads: 1, NoTokenizer: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	f := &prefixFixture{be: backend.FromModel(m)}
	for i := range 2 {
		p := filepath.Join(dir, fmt.Sprintf("a%d", i))
		writeRandomAdapter(t, m, p, int64(11+i))
		d, err := f.be.LoadAdapter(p)
		if err != nil {
			t.Fatal(err)
		}
		f.paths, f.deltas = append(f.paths, p), append(f.deltas, d)
	}
	return f
}

// engine starts an engine over the fixture's backend; cache 0 turns prefix caching off.
func (f *prefixFixture) engine(t testing.TB, cache int64, chunk int) *engine.Engine {
	t.Helper()
	e, err := engine.New(engine.Config{Backend: f.be, NewDecoder: func([]int) engine.Decoder { return fakeDecoder{} },
		NewSampler: f.be.NewSampler, MaxModelLen: f.be.ContextLen(), PrefillChunk: chunk, PrefixCache: cache})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Shutdown(context.Background()) })
	return e
}

// prefixRun is one greedy request.
type prefixRun struct {
	prompt  []int
	adapter engine.Delta
	name    string
}

// greedy runs the requests at once and returns each one's generated token ids (and its time to first event).
func greedy(t testing.TB, e *engine.Engine, runs []prefixRun, maxNew int) ([][]int, []time.Duration) {
	t.Helper()
	out := make([][]int, len(runs))
	ttft := make([]time.Duration, len(runs))
	errs := make([]error, len(runs))
	var wg sync.WaitGroup
	for i, r := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			st, err := e.Submit(context.Background(), &engine.Request{Prompt: r.prompt, MaxTokens: maxNew, Adapter: r.adapter,
				AdapterName: r.name, Logprobs: true, IgnoreEOS: true})
			if err != nil {
				errs[i] = err
				return
			}
			for {
				ev, err := st.Recv(context.Background())
				if errors.Is(err, io.EOF) {
					return
				}
				if err != nil || ev.Err != nil {
					errs[i] = errors.Join(err, ev.Err)
					return
				}
				if ttft[i] == 0 {
					ttft[i] = time.Since(t0)
				}
				for _, tk := range ev.Tokens {
					out[i] = append(out[i], tk.ID)
				}
				if ev.Finish != "" {
					return
				}
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	return out, ttft
}

// TestPrefixCacheSameOutputs: greedy outputs with the prefix cache on equal those with it off, for requests sharing
// a prefix under the base and two adapters, prompts ending just before, on and after block boundaries, prefilled
// in chunks that do not align with the blocks, run cold and then again with the cache warm.
func TestPrefixCacheSameOutputs(t *testing.T) {
	f := newPrefixFixture(t, testmodel.Default())
	rng := rand.New(rand.NewSource(3))
	base := make([]int, 70)
	for i := range base {
		base[i] = rng.Intn(300)
	}
	var runs []prefixRun
	for _, n := range []int{1, 15, 16, 17, 31, 32, 33, 48, 49, 65} {
		for a := -1; a < 2; a++ {
			r := prefixRun{prompt: base[:n]}
			if a >= 0 {
				r.adapter, r.name = f.deltas[a], fmt.Sprint("a", a)
			}
			runs = append(runs, r)
			if n > 17 { // the same prefix with a different last block
				q := slices.Clone(base[:n])
				q[n-2] = (q[n-2] + 1) % 300
				runs = append(runs, prefixRun{prompt: q, adapter: r.adapter, name: r.name})
			}
		}
	}
	want, _ := greedy(t, f.engine(t, 0, 256), runs, 6)
	on := f.engine(t, 1<<30, 7)
	for pass := range 2 {
		got, _ := greedy(t, on, runs, 6)
		for i := range runs {
			if !slices.Equal(got[i], want[i]) {
				t.Errorf("pass %d, prompt of %d tokens, adapter %q: cache on %v, off %v", pass, len(runs[i].prompt), runs[i].name, got[i], want[i])
			}
		}
	}
	st := on.Stats()
	if st.PrefixHits == 0 || st.PrefixQueries <= st.PrefixHits {
		t.Errorf("prefix cache: %d hit of %d queried tokens; want some hits, not all", st.PrefixHits, st.PrefixQueries)
	}
}

// TestPrefixCacheKeyedByAdapter: a prompt cached under one adapter is never served to another (nor to the same
// adapter loaded again, a new identity): the second adapter's request hits nothing and equals a cold run; the
// first adapter's repeat hits its blocks.
func TestPrefixCacheKeyedByAdapter(t *testing.T) {
	f := newPrefixFixture(t, testmodel.Default())
	prompt := make([]int, 40)
	for i := range prompt {
		prompt[i] = (7*i + 3) % 300
	}
	a0 := prefixRun{prompt: prompt, adapter: f.deltas[0], name: "a0"}
	a1 := prefixRun{prompt: prompt, adapter: f.deltas[1], name: "a1"}
	cold, _ := greedy(t, f.engine(t, 0, 256), []prefixRun{a0, a1}, 8)
	if slices.Equal(cold[0], cold[1]) {
		t.Fatal("the adapters generate the same tokens; the test would prove nothing")
	}
	e := f.engine(t, 1<<30, 256)
	hits := func() int64 { return e.Stats().PrefixHits }
	greedy(t, e, []prefixRun{a0}, 8)
	if h := hits(); h != 0 {
		t.Fatalf("a cold cache hit %d tokens", h)
	}
	got, _ := greedy(t, e, []prefixRun{a1}, 8)
	if h := hits(); h != 0 {
		t.Errorf("adapter a1 hit %d tokens that adapter a0 cached", h)
	}
	if !slices.Equal(got[0], cold[1]) {
		t.Errorf("a1 after a0: %v, cold %v", got[0], cold[1])
	}
	again, err := f.be.LoadAdapter(f.paths[0])
	if err != nil {
		t.Fatal(err)
	}
	greedy(t, e, []prefixRun{{prompt: prompt, adapter: again, name: "a0"}}, 8)
	if h := hits(); h != 0 {
		t.Errorf("a reloaded a0 hit %d tokens of the earlier load", h)
	}
	got, _ = greedy(t, e, []prefixRun{a0}, 8)
	if h := hits(); h != 32 {
		t.Errorf("a0 again hit %d tokens, want its 2 whole blocks before the last token (32)", h)
	}
	if !slices.Equal(got[0], cold[0]) {
		t.Errorf("a0 from the cache: %v, cold %v", got[0], cold[0])
	}
}

// TestPrefixCacheEvictsLRU: under a bound of two blocks a second prompt's blocks evict the first's, which then
// hits nothing, and outputs stay the same.
func TestPrefixCacheEvictsLRU(t *testing.T) {
	f := newPrefixFixture(t, testmodel.Default())
	o := testmodel.Default()
	kvDim := o.KVHeads * (o.Hidden / o.Heads)
	block := int64(2*o.Layers*engine.PrefixBlock*kvDim) * 4
	p, q := make([]int, 33), make([]int, 33)
	for i := range p {
		p[i], q[i] = i+1, i+100
	}
	cold, _ := greedy(t, f.engine(t, 0, 256), []prefixRun{{prompt: p}}, 5)
	e := f.engine(t, 2*block, 256)
	hits := func() int64 { return e.Stats().PrefixHits }
	greedy(t, e, []prefixRun{{prompt: p}}, 5)
	greedy(t, e, []prefixRun{{prompt: p}}, 5)
	if h := hits(); h != 32 {
		t.Fatalf("repeat within the bound hit %d tokens, want 32", h)
	}
	greedy(t, e, []prefixRun{{prompt: q}}, 5)
	got, _ := greedy(t, e, []prefixRun{{prompt: p}}, 5)
	if h := hits(); h != 32 {
		t.Errorf("after eviction the first prompt hit %d more tokens", h-32)
	}
	if !slices.Equal(got[0], cold[0]) {
		t.Errorf("after eviction: %v, cold %v", got[0], cold[0])
	}
}

// TestPrefixCacheBoundAfterRelease: two prompts prefilled together store four blocks under a bound of two,
// over the bound while their sequences hold them (evicting them would free nothing); once the sequences finish,
// the cache is back within its bound.
func TestPrefixCacheBoundAfterRelease(t *testing.T) {
	f := newPrefixFixture(t, testmodel.Default())
	o := testmodel.Default()
	block := int64(2*o.Layers*engine.PrefixBlock*o.KVHeads*(o.Hidden/o.Heads)) * 4
	p, q := make([]int, 33), make([]int, 33)
	for i := range p {
		p[i], q[i] = i+1, i+100
	}
	spy := &pagedSpy{Backend: f.be}
	e, err := engine.New(engine.Config{Backend: spy, NewDecoder: func([]int) engine.Decoder { return fakeDecoder{} },
		NewSampler: f.be.NewSampler, MaxModelLen: 128, PrefillChunk: 256, PrefixCache: 2 * block})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Shutdown(context.Background()) })
	gate := spy.arm() // the first step waits until both requests are in: the second stores while the first runs
	done := make(chan struct{})
	go func() {
		greedy(t, e, []prefixRun{{prompt: p}, {prompt: q}}, 5)
		close(done)
	}()
	waitUntil(t, func() bool { st := e.Stats(); return st.Waiting+st.Active == 2 })
	close(gate)
	<-done
	if b := e.Stats().PrefixCacheBytes; b > 2*block {
		t.Fatalf("the prefix cache holds %d bytes (%d blocks) after its sequences finished, bound %d", b, b/block, 2*block)
	}
}

// BenchmarkPrefixCacheTTFT: 32 requests sharing a 1,000-token system prompt (each with its own 16-token question)
// submitted at once to an engine over a small random model, time to first token p50 with the prefix cache off
// and on. Reports ttft-p50-off-ms, ttft-p50-on-ms and their ratio (off/on).
//
//	go test ./serve -run X -bench PrefixCacheTTFT -benchtime 1x
func BenchmarkPrefixCacheTTFT(b *testing.B) {
	o := testmodel.Options{Hidden: 256, Intermediate: 768, Layers: 4, Heads: 8, KVHeads: 4, Vocab: 2000, MaxPositions: 2048, Seed: 5}
	f := newPrefixFixture(b, o)
	rng := rand.New(rand.NewSource(9))
	system := make([]int, 1000)
	for i := range system {
		system[i] = rng.Intn(o.Vocab)
	}
	runs := make([]prefixRun, 32)
	for i := range runs {
		runs[i].prompt = slices.Clone(system)
		for range 16 {
			runs[i].prompt = append(runs[i].prompt, rng.Intn(o.Vocab))
		}
	}
	p50 := func(d []time.Duration) time.Duration {
		s := slices.Clone(d)
		slices.Sort(s)
		return s[len(s)/2]
	}
	for range b.N {
		want, off := greedy(b, f.engine(b, 0, 256), runs, 4)
		got, on := greedy(b, f.engine(b, 1<<30, 256), runs, 4)
		for i := range want {
			if !slices.Equal(got[i], want[i]) {
				b.Fatalf("request %d: cache on %v, off %v", i, got[i], want[i])
			}
		}
		so, sn := slices.Clone(off), slices.Clone(on)
		slices.Sort(so)
		slices.Sort(sn)
		b.Logf("off %v\non %v", so, sn)
		b.ReportMetric(float64(p50(off).Microseconds())/1e3, "ttft-p50-off-ms")
		b.ReportMetric(float64(p50(on).Microseconds())/1e3, "ttft-p50-on-ms")
		b.ReportMetric(float64(p50(off))/float64(p50(on)), "ratio")
	}
}

// TestPrefixCacheMetrics: /metrics publishes the prompt tokens looked up and found: a repeated chat request finds
// its whole blocks, and the same request gets the same answer.
func TestPrefixCacheMetrics(t *testing.T) {
	dir := t.TempDir()
	if err := testmodel.Write(filepath.Join(dir, "model"), testmodel.Default()); err != nil {
		t.Fatal(err)
	}
	m, err := models.Load(filepath.Join(dir, "model"), models.LoadOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	srv, err := New(Config{Model: backend.FromModel(m), ModelName: "tiny", PrefixCache: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	e := &testEnv{srv: srv, ts: newTS(t, srv)}
	body := chatBody("tiny", "a question long enough to fill a few prefix blocks of sixteen tokens", `"temperature":0,"max_tokens":5`)
	var answers []string
	for range 2 {
		st, b := e.postNoT(body)
		if st != 200 {
			t.Fatalf("%d %s", st, b)
		}
		answers = append(answers, decodeMap(b)["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)["content"].(string))
	}
	if answers[0] != answers[1] {
		t.Errorf("answers differ: %q, %q", answers[0], answers[1])
	}
	fams := scrapeFamilies(t, e)
	q := value(t, fams, "vllm:prefix_cache_queries_total", "model_name", "tiny")
	h := value(t, fams, "vllm:prefix_cache_hits_total", "model_name", "tiny")
	if h <= 0 || h >= q || int(h)%engine.PrefixBlock != 0 || h < q/2-engine.PrefixBlock {
		t.Errorf("prefix cache: %g hit of %g queried tokens; want the second request's whole blocks", h, q)
	}
}
