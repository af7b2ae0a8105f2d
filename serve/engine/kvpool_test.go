package engine

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// runAll submits every prompt at once (each with its own max tokens) and returns the texts.
func runAll(t *testing.T, e *Engine, prompts []string, maxNew []int) []string {
	t.Helper()
	out := make([]string, len(prompts))
	var wg sync.WaitGroup
	for i, p := range prompts {
		s, err := e.Submit(context.Background(), &Request{Prompt: ids(p), MaxTokens: maxNew[i], Adapter: fakeDelta{shift: i % 3}})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			text, fin := collect(t, s)
			if fin.Finish != FinishLength || fin.CompletionTokens != maxNew[i] {
				t.Errorf("request %d: %+v", i, fin)
			}
			out[i] = text
		}()
	}
	wg.Wait()
	return out
}

// feed lets b's Forward calls through, one per every, until the returned stop is called (which waits, so that
// the test's cleanup may close the gate).
func feed(b *fakeBackend, every time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case b.gate <- struct{}{}:
				time.Sleep(every)
			case <-done:
				return
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// waitIdle waits until the engine runs and holds nothing.
func waitIdle(t *testing.T, e *Engine) Stats {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := e.Stats()
		if (st.Active == 0 && st.Waiting == 0 && st.KVBlocksUsed == 0) || time.Now().After(deadline) {
			return st
		}
		time.Sleep(time.Millisecond)
	}
}

// TestKVBudgetPreemption: with a budget too small for every running sequence, sequences are preempted and
// recomputed, and each output equals the sequential reference (and the run without a budget); the pool is
// full again at the end.
func TestKVBudgetPreemption(t *testing.T) {
	var prompts []string
	var maxNew []int
	for i := range 9 {
		prompts = append(prompts, fmt.Sprintf("prompt number %d says hello", i))
		maxNew = append(maxNew, 20+7*i)
	}
	want := make([]string, len(prompts))
	for i, p := range prompts {
		want[i] = fakeGenerate(ids(p), fakeDelta{shift: i % 3}, maxNew[i])
	}
	for _, blocks := range []int{0, 8, 13, 40} {
		e := newTestEngine(t, &fakeBackend{}, func(c *Config) { c.MaxModelLen = 128; c.KVBlocks = blocks; c.PrefillChunk = 16 })
		got := runAll(t, e, prompts, maxNew)
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%d blocks: request %d wrote %q, want %q", blocks, i, got[i], want[i])
			}
		}
		st := waitIdle(t, e)
		if st.KVBlocksUsed != 0 || st.KVBlocks != blocks {
			t.Fatalf("%d blocks: %d in use after every request (pool %d)", blocks, st.KVBlocksUsed, st.KVBlocks)
		}
		if blocks == 8 && st.Preemptions == 0 {
			t.Fatalf("8 blocks for 9 sequences of up to %d positions: no preemption", 26+20+7*8)
		}
		if blocks == 0 && st.Preemptions != 0 {
			t.Fatalf("no budget, %d preemptions", st.Preemptions)
		}
		t.Logf("%d blocks: %d preemptions", blocks, st.Preemptions)
	}
}

// TestKVBudgetAdmission: a request whose prompt's blocks are not free waits, and runs once they are; Stats
// reports the blocks in use as the KV usage.
func TestKVBudgetAdmission(t *testing.T) {
	b := &fakeBackend{gate: make(chan struct{})}
	e := newTestEngine(t, b, func(c *Config) { c.MaxModelLen = 64; c.KVBlocks = 5 })
	long := make([]byte, 40) // 3 blocks with its first token
	for i := range long {
		long[i] = 'x'
	}
	s1, err := e.Submit(context.Background(), &Request{Prompt: ids(string(long)), MaxTokens: 4})
	if err != nil {
		t.Fatal(err)
	}
	b.gate <- struct{}{} // the first step runs: s1 admitted with 3 blocks
	s2, err := e.Submit(context.Background(), &Request{Prompt: ids(string(long)), MaxTokens: 4})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := e.Stats()
		if st.Waiting == 1 && st.Active == 1 && st.KVBlocksUsed == 3 {
			if u := st.KVUsage(); u != 3.0/5 {
				t.Fatalf("KV usage %g, want %g", u, 3.0/5)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("second request not held back: %+v", st)
		}
		b.gate <- struct{}{}
	}
	defer feed(b, 0)()
	for _, s := range []*Stream{s1, s2} {
		if _, fin := collect(t, s); fin.Finish != FinishLength {
			t.Fatalf("final event %+v", fin)
		}
	}
}

// TestKVBudgetCancelReturnsBlocks: cancelled running and waiting requests and a shutdown with requests still
// running all give their blocks back.
func TestKVBudgetCancelReturnsBlocks(t *testing.T) {
	b := &fakeBackend{gate: make(chan struct{})}
	e := newTestEngine(t, b, func(c *Config) { c.MaxModelLen = 256; c.KVBlocks = 20 })
	defer feed(b, time.Millisecond)() // one step per millisecond: the requests still run when cancelled
	var cancels []context.CancelFunc
	var streams []*Stream
	for i := range 8 {
		ctx, cancel := context.WithCancel(context.Background())
		s, err := e.Submit(ctx, &Request{Prompt: ids(fmt.Sprintf("request %d with a prompt of some length", i)), MaxTokens: 200})
		if err != nil {
			t.Fatal(err)
		}
		cancels, streams = append(cancels, cancel), append(streams, s)
	}
	time.Sleep(20 * time.Millisecond)
	for i, c := range cancels {
		c()
		if _, fin := collect(t, streams[i]); fin.Finish != FinishCancel {
			t.Fatalf("request %d: %+v", i, fin)
		}
	}
	if st := waitIdle(t, e); st.KVBlocksUsed != 0 {
		t.Fatalf("%d blocks in use after cancelling everything: %+v", st.KVBlocksUsed, st)
	}
	// shutdown with requests running: they are cut and their blocks come back
	b2 := &fakeBackend{}
	e2 := newTestEngine(t, b2, func(c *Config) { c.MaxModelLen = 256; c.KVBlocks = 20 })
	for i := range 4 {
		if _, err := e2.Submit(context.Background(), &Request{Prompt: ids(fmt.Sprintf("long %d", i)), MaxTokens: 250}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(10 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	_ = e2.Shutdown(ctx)
	if st := e2.Stats(); st.KVBlocksUsed != 0 {
		t.Fatalf("%d blocks in use after shutdown", st.KVBlocksUsed)
	}
}

func TestKVBudgetTooSmall(t *testing.T) {
	_, err := New(Config{Backend: &fakeBackend{}, NewDecoder: func([]int) Decoder { return byteDecoder{} },
		NewSampler: func(SamplingParams) Sampler { return greedy{} }, MaxModelLen: 100, KVBlocks: 6})
	if err == nil {
		t.Fatal("a budget below one full-context sequence was accepted")
	}
}
