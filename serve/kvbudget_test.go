package serve

import (
	"context"
	"fmt"
	"math/rand"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lorakit/lorakit/models/testmodel"
	"github.com/lorakit/lorakit/serve/backend"
	"github.com/lorakit/lorakit/serve/engine"
)

// TestKVBudgetSameOutputs: on the real model with two adapters, a KV budget too small for the batch (so that
// sequences are preempted and recomputed), with and without prefix caching, gives the greedy tokens of the run
// without a budget, and every block is back in the pool at the end.
func TestKVBudgetSameOutputs(t *testing.T) {
	f := newPrefixFixture(t, testmodel.Default())
	rng := rand.New(rand.NewSource(5))
	shared := make([]int, 64)
	for i := range shared {
		shared[i] = rng.Intn(300)
	}
	var runs []prefixRun
	for i := range 12 {
		p := slices.Clone(shared[:10+3*i])
		for range 5 {
			p = append(p, rng.Intn(300))
		}
		r := prefixRun{prompt: p}
		if a := i % 3; a < 2 {
			r.adapter, r.name = f.deltas[a], fmt.Sprint("a", a)
		}
		runs = append(runs, r)
	}
	const maxNew = 40
	want, _ := greedy(t, f.engine(t, 0, 256), runs, maxNew)
	const maxLen = 128 // the smallest budget: 8 blocks for 12 sequences of up to 93 positions
	for _, cache := range []int64{0, 1 << 30} {
		e, err := engine.New(engine.Config{Backend: f.be, NewDecoder: func([]int) engine.Decoder { return fakeDecoder{} },
			NewSampler: f.be.NewSampler, MaxModelLen: maxLen, PrefillChunk: 32, PrefixCache: cache,
			KVBlocks: (maxLen + engine.KVBlockSize - 1) / engine.KVBlockSize})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Shutdown(context.Background()) })
		got, _ := greedy(t, e, runs, maxNew)
		for i := range runs {
			if !slices.Equal(got[i], want[i]) {
				t.Errorf("prefix cache %d: request %d (adapter %q): with a KV budget %v, without %v", cache, i, runs[i].name, got[i], want[i])
			}
		}
		deadline := time.Now().Add(5 * time.Second)
		st := e.Stats()
		for st.KVBlocksUsed != 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
			st = e.Stats()
		}
		if st.KVBlocksUsed != 0 || st.Preemptions == 0 {
			t.Errorf("prefix cache %d: %d blocks in use after every request, %d preemptions (want 0 and some)", cache, st.KVBlocksUsed, st.Preemptions)
		}
	}
}

// pagedSpy is the real backend with its engine's KV pool kept for the test, the most rows of a step recorded,
// and one Forward call held until the test lets it go (gate).
type pagedSpy struct {
	*backend.Backend
	mu      sync.Mutex
	pool    engine.BlockPool
	gate    chan struct{}
	maxRows int
}

func (s *pagedSpy) KVPool(blocks int) (engine.BlockPool, error) {
	p, err := s.Backend.KVPool(blocks)
	s.mu.Lock()
	s.pool = p
	s.mu.Unlock()
	return p, err
}

func (s *pagedSpy) Forward(rows []engine.Row) ([][]float32, error) {
	s.mu.Lock()
	g := s.gate
	s.gate = nil
	s.maxRows = max(s.maxRows, len(rows))
	s.mu.Unlock()
	if g != nil {
		<-g
	}
	return s.Backend.Forward(rows)
}

// arm makes the next Forward wait for the returned channel's close and restarts the row count.
func (s *pagedSpy) arm() chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gate, s.maxRows = make(chan struct{}), 0
	return s.gate
}

// TestKVBudgetSharesPrefixBlocks: under a budget of 10 blocks, four requests sharing a cached 4-block prefix run
// together (4 shared blocks + one block each), which copies of the prefix (5 blocks each) could not; their
// greedy tokens equal the run without the cache. The pool never holds more than the budget's memory, and every
// block is free again at the end but the cached ones.
func TestKVBudgetSharesPrefixBlocks(t *testing.T) {
	f := newPrefixFixture(t, testmodel.Default())
	rng := rand.New(rand.NewSource(8))
	prefix := make([]int, 64)
	for i := range prefix {
		prefix[i] = rng.Intn(300)
	}
	warm := prefixRun{prompt: append(slices.Clone(prefix), 1, 2, 3, 4, 5), adapter: f.deltas[0], name: "warm"}
	var runs []prefixRun
	for i := range 4 {
		p := slices.Clone(prefix)
		for range 5 {
			p = append(p, rng.Intn(300))
		}
		runs = append(runs, prefixRun{prompt: p, adapter: f.deltas[0], name: fmt.Sprint("r", i)})
	}
	const maxNew, blocks = 8, 10
	want, _ := greedy(t, f.engine(t, 0, 256), runs, maxNew)
	spy := &pagedSpy{Backend: f.be}
	e, err := engine.New(engine.Config{Backend: spy, NewDecoder: func([]int) engine.Decoder { return fakeDecoder{} },
		NewSampler: f.be.NewSampler, MaxModelLen: 128, PrefillChunk: 256, PrefixCache: 1 << 30, KVBlocks: blocks})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Shutdown(context.Background()) })
	greedy(t, e, []prefixRun{warm}, 1) // the prefix's 4 blocks cached under adapter a0
	gate := spy.arm()
	done := make(chan [][]int)
	go func() {
		got, _ := greedy(t, e, runs, maxNew)
		done <- got
	}()
	waitUntil(t, func() bool { st := e.Stats(); return st.Waiting+st.Active == len(runs) })
	close(gate)
	got := <-done
	for i := range runs {
		if !slices.Equal(got[i], want[i]) {
			t.Errorf("request %d: with shared prefix blocks %v, without the cache %v", i, got[i], want[i])
		}
	}
	st := e.Stats()
	if spy.maxRows != len(runs) || st.Preemptions != 0 || st.PrefixHits < int64(len(runs)*64) {
		t.Errorf("%d rows at most in a step (want %d: all admitted together), %d preemptions, %d prefix hits",
			spy.maxRows, len(runs), st.Preemptions, st.PrefixHits)
	}
	mem, ok := spy.pool.(interface {
		Allocated() int64
		BlockBytes() int64
	})
	if !ok {
		t.Fatalf("pool %T does not report its memory", spy.pool)
	}
	if mem.Allocated() > blocks*mem.BlockBytes() {
		t.Errorf("the pool allocated %d bytes, more than the budget's %d blocks of %d", mem.Allocated(), blocks, mem.BlockBytes())
	}
	waitUntil(t, func() bool { return e.Stats().KVBlocksUsed == 0 })
	if used := spy.pool.Used(); used < 4 || used > blocks {
		t.Errorf("%d blocks held after every request: want the cached prefix's (4 or more) and no more than the budget", used)
	}
}
