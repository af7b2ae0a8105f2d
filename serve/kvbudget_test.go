package serve

import (
	"context"
	"fmt"
	"math/rand"
	"slices"
	"testing"
	"time"

	"github.com/lorakit/lorakit/models/testmodel"
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
