package engine

import (
	"context"
	"errors"
	"math"
	"sync"
	"testing"
	"time"
)

// TestShortRequestIsNotStarvedByLargeN: two requests of n 16 fill a batch of 8 with long generations; a
// 4-token request submitted after them finishes within a few steps (an extra row for a request with nothing
// running), not after the long ones (about 2 x 16 x 200 / 8 = 800 steps in arrival order).
func TestShortRequestIsNotStarvedByLargeN(t *testing.T) {
	b := &fakeBackend{gate: make(chan struct{})}
	e := newTestEngine(t, b, func(c *Config) { c.MaxBatch, c.MaxQueue = 8, 64 })
	ctx := context.Background()
	for _, g := range []*int{new(int), new(int)} {
		for range 16 {
			if _, err := e.Submit(ctx, &Request{Group: g, Prompt: ids("long"), MaxTokens: 200}); err != nil {
				t.Fatal(err)
			}
		}
	}
	b.gate <- struct{}{} // a step runs: the batch is full
	short, err := e.Submit(ctx, &Request{Group: new(int), Prompt: ids("short"), MaxTokens: 4})
	if err != nil {
		t.Fatal(err)
	}
	// A gate send returns once the previous step has finished, so the count is exact to one step (and does not
	// depend on when a reading goroutine gets the CPU).
	for steps := 1; steps <= 100; steps++ {
		select {
		case b.gate <- struct{}{}:
		case <-time.After(5 * time.Second):
			t.Fatal("stuck")
		}
		short.mu.Lock()
		done := short.done
		short.mu.Unlock()
		if done {
			if steps > 8 {
				t.Fatalf("the short request took %d steps", steps)
			}
			if text, ev := collect(t, short); ev.Finish != FinishLength || len(text) != 4 {
				t.Fatalf("%q %+v", text, ev)
			}
			return
		}
	}
	t.Fatal("the short request still runs after 100 steps")
}

// TestManyRequestsNotStarvedByLargeN: one request of n 16 fills a batch of 4 with long generations; six short
// requests submitted after it all finish within a few steps (the first on the extra row, the next ones in place
// of the long request's rows beyond its fair share), not after the long ones (about 100 steps), and the long
// request's preempted choices, recomputed, give the same text as the others.
func TestManyRequestsNotStarvedByLargeN(t *testing.T) {
	b := &fakeBackend{gate: make(chan struct{})}
	e := newTestEngine(t, b, func(c *Config) { c.MaxBatch, c.MaxQueue = 4, 64 })
	ctx := context.Background()
	long := new(int)
	var choices []*Stream
	for range 16 {
		st, err := e.Submit(ctx, &Request{Group: long, Prompt: ids("long"), MaxTokens: 100})
		if err != nil {
			t.Fatal(err)
		}
		choices = append(choices, st)
	}
	b.gate <- struct{}{} // a step runs: the batch is full
	var shorts []*Stream
	for range 6 {
		st, err := e.Submit(ctx, &Request{Prompt: ids("short"), MaxTokens: 4})
		if err != nil {
			t.Fatal(err)
		}
		shorts = append(shorts, st)
	}
	done := func(sts []*Stream) bool {
		for _, st := range sts {
			st.mu.Lock()
			d := st.done
			st.mu.Unlock()
			if !d {
				return false
			}
		}
		return true
	}
	steps := 0
	for ; !done(shorts); steps++ {
		if steps > 200 {
			t.Fatal("the short requests still run after 200 steps")
		}
		select {
		case b.gate <- struct{}{}:
		case <-time.After(5 * time.Second):
			t.Fatal("stuck")
		}
	}
	if steps > 20 {
		t.Fatalf("the six short requests took %d steps", steps)
	}
	if y := e.Stats().Yields; y == 0 {
		t.Fatal("no row yielded")
	}
	for _, st := range shorts {
		if text, ev := collect(t, st); ev.Finish != FinishLength || len(text) != 4 {
			t.Fatalf("short: %q %+v", text, ev)
		}
	}
	stop, fed := make(chan struct{}), make(chan struct{})
	go func() { // steps until the test ends (before the cleanup closes the gate)
		defer close(fed)
		for {
			select {
			case b.gate <- struct{}{}:
			case <-stop:
				return
			}
		}
	}()
	defer func() { close(stop); <-fed }()
	want := ""
	for i, st := range choices {
		text, ev := collect(t, st)
		if ev.Finish != FinishLength || len(text) != 100 || (i > 0 && text != want) {
			t.Fatalf("choice %d: %q %+v, want the 100 tokens %q", i, text, ev, want)
		}
		want = text
	}
	t.Logf("six short requests done in %d steps, %d rows yielded", steps, e.Stats().Yields)
}

// TestFreedSlotsAreShared: with one request holding the batch, slots that free up are shared with a second
// request's choices (in arrival order the first request's waiting choices would take them all).
func TestFreedSlotsAreShared(t *testing.T) {
	b := &fakeBackend{gate: make(chan struct{})}
	rec := &recBackend{fakeBackend: b}
	e := newTestEngine(t, b, func(c *Config) { c.Backend, c.MaxBatch, c.MaxQueue = rec, 4, 64 })
	ctx := context.Background()
	a, bg := new(int), new(int)
	var first []*Stream
	for i := range 8 {
		st, err := e.Submit(ctx, &Request{Group: a, Prompt: ids("a"), MaxTokens: 2 + 100*(i/4)})
		if err != nil {
			t.Fatal(err)
		}
		first = append(first, st)
	}
	b.gate <- struct{}{}
	for range 8 {
		if _, err := e.Submit(ctx, &Request{Group: bg, Prompt: ids("bb"), MaxTokens: 100}); err != nil {
			t.Fatal(err)
		}
	}
	// The first four of a end after two tokens: their slots are shared between a's waiting choices and b.
	for range 4 {
		b.gate <- struct{}{}
	}
	rec.mu.Lock()
	rows := map[int]int{}
	for _, first := range rec.firsts[len(rec.firsts)-1] {
		rows[first]++
	}
	rec.mu.Unlock()
	if rows['a'] != 2 || rows['b'] < 2 {
		t.Fatalf("rows per request after a's first choices ended: a %d, b %d (want 2 and at least 2)", rows['a'], rows['b'])
	}
	_ = first
}

// recBackend records, per Forward call, each row's first prompt token (read on the engine goroutine, which owns
// the states).
type recBackend struct {
	*fakeBackend
	mu     sync.Mutex
	firsts [][]int
}

func (b *recBackend) Forward(rows []Row) ([][]float32, error) {
	out, err := b.fakeBackend.Forward(rows)
	f := make([]int, len(rows))
	for i, r := range rows {
		f[i] = r.State.(*fakeState).toks[0]
	}
	b.mu.Lock()
	b.firsts = append(b.firsts, f)
	b.mu.Unlock()
	return out, err
}

// nanBackend returns NaN logits for rows with a fakeDelta of shift -1 (a corrupt adapter).
type nanBackend struct{ *fakeBackend }

func (b nanBackend) Forward(rows []Row) ([][]float32, error) {
	out, err := b.fakeBackend.Forward(rows)
	for i, r := range rows {
		if d, ok := r.Adapter.(fakeDelta); ok && d.shift == -1 && err == nil {
			out[i][3] = float32(math.NaN())
		}
	}
	return out, err
}

func TestNonFiniteLogitsEndTheRequestWithAnError(t *testing.T) {
	fb := &fakeBackend{}
	e := newTestEngine(t, fb, func(c *Config) { c.Backend = nanBackend{fb} })
	ctx := context.Background()
	bad, err := e.Submit(ctx, &Request{Prompt: ids("x"), MaxTokens: 5, Adapter: fakeDelta{shift: -1}, Logprobs: true})
	if err != nil {
		t.Fatal(err)
	}
	good, err := e.Submit(ctx, &Request{Prompt: ids("x"), MaxTokens: 5})
	if err != nil {
		t.Fatal(err)
	}
	if text, ev := collect(t, bad); ev.Finish != FinishError || !errors.Is(ev.Err, ErrNonFinite) || text != "" {
		t.Fatalf("NaN logits: %q, %+v", text, ev)
	}
	if text, ev := collect(t, good); ev.Finish != FinishLength || len(text) != 5 {
		t.Fatalf("the other request: %q, %+v", text, ev)
	}
}
