package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lorakit/lorakit/models/sample"
)

// fakeDelta shifts the fake model's next token.
type fakeDelta struct{ shift int }

func (fakeDelta) Apply(string, []float32, []float32, int, int) {}

type fakeState struct{ toks []int }

func (s *fakeState) Len() int { return len(s.toks) }

// fakeBackend: vocab 257 (bytes + EOS 256); the next token is 'a' + (sum of cached tokens + shift) % 26, or EOS
// once the cache holds eosAt tokens (0 = never).
type fakeBackend struct {
	mu       sync.Mutex
	calls    [][]Row
	gate     chan struct{} // if set, each Forward waits for a value
	hold     chan struct{} // if set, Forward waits until it is closed
	eosAt    int
	failNext bool
	poison   int         // a row whose first token is poison fails Forward (0 = off)
	logits   [][]float32 // reused by every Forward, as Backend allows (the real backend does)
}

const fakeEOS = 256

func (b *fakeBackend) NewState(int) State { return &fakeState{} }
func (b *fakeBackend) VocabSize() int     { return 257 }
func (b *fakeBackend) Logprobs(logits []float32, id, top int) TokenLogprob {
	lp, tops := sample.Logprobs(logits, id, top)
	t := TokenLogprob{ID: id, Logprob: lp}
	for _, x := range tops {
		t.Top = append(t.Top, TopLogprob{ID: x.ID, Logprob: x.Logprob})
	}
	return t
}
func (b *fakeBackend) Forward(rows []Row) ([][]float32, error) {
	if b.gate != nil {
		<-b.gate
	}
	if b.hold != nil {
		<-b.hold
	}
	b.mu.Lock()
	cp := make([]Row, len(rows))
	copy(cp, rows)
	b.calls = append(b.calls, cp)
	fail := b.failNext
	b.failNext = false
	b.mu.Unlock()
	if fail {
		return nil, errors.New("boom")
	}
	for _, r := range rows {
		if b.poison != 0 && len(r.Tokens) > 0 && r.Tokens[0] == b.poison {
			return nil, errors.New("poisoned row")
		}
	}
	for len(b.logits) < len(rows) {
		b.logits = append(b.logits, make([]float32, 257))
	}
	out := make([][]float32, len(rows))
	for i, r := range rows {
		st := r.State.(*fakeState)
		st.toks = append(st.toks, r.Tokens...)
		out[i] = b.logits[i]
		clear(out[i])
		out[i][fakeNext(st.toks, r.Adapter, b.eosAt)] = 10
	}
	return out, nil
}

func fakeNext(toks []int, d Delta, eosAt int) int {
	if eosAt > 0 && len(toks) >= eosAt {
		return fakeEOS
	}
	sum := 0
	for _, t := range toks {
		sum += t
	}
	if f, ok := d.(fakeDelta); ok {
		sum += f.shift
	}
	return 'a' + sum%26
}

// fakeGenerate is the sequential reference.
func fakeGenerate(prompt []int, d Delta, n int) string {
	toks := append([]int(nil), prompt...)
	var out []byte
	for i := 0; i < n; i++ {
		t := fakeNext(toks, d, 0)
		out = append(out, byte(t))
		toks = append(toks, t)
	}
	return string(out)
}

type byteDecoder struct{}

func (byteDecoder) Add(id int) string {
	if id >= 256 {
		return ""
	}
	return string([]byte{byte(id)})
}
func (byteDecoder) Flush() string { return "" }

type greedy struct{}

func (greedy) Sample(l []float32, _ []int) int {
	best := 0
	for i, v := range l {
		if v > l[best] {
			best = i
		}
	}
	return best
}

func newTestEngine(t *testing.T, b *fakeBackend, mod func(*Config)) *Engine {
	t.Helper()
	cfg := Config{Backend: b, NewDecoder: func([]int) Decoder { return byteDecoder{} },
		NewSampler: func(SamplingParams) Sampler { return greedy{} }, EOS: []int{fakeEOS}, MaxModelLen: 4096}
	if mod != nil {
		mod(&cfg)
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if b.gate != nil {
			close(b.gate)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.Shutdown(ctx)
	})
	return e
}

func collect(t *testing.T, s *Stream) (string, Event) {
	t.Helper()
	var sb strings.Builder
	var last Event
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		ev, err := s.Recv(ctx)
		if err == io.EOF {
			return sb.String(), last
		}
		if err != nil {
			t.Fatal(err)
		}
		sb.WriteString(ev.Text)
		if ev.Finish != "" {
			last = ev
		}
	}
}

func ids(s string) []int {
	out := make([]int, len(s))
	for i := range s {
		out[i] = int(s[i])
	}
	return out
}

func TestGenerateMatchesSequential(t *testing.T) {
	b := &fakeBackend{}
	e := newTestEngine(t, b, nil)
	released := 0
	s, err := e.Submit(context.Background(), &Request{Prompt: ids("hello"), MaxTokens: 12, Release: func() { released++ }})
	if err != nil {
		t.Fatal(err)
	}
	text, fin := collect(t, s)
	if want := fakeGenerate(ids("hello"), nil, 12); text != want {
		t.Fatalf("got %q want %q", text, want)
	}
	if fin.Finish != FinishLength || fin.PromptTokens != 5 || fin.CompletionTokens != 12 {
		t.Fatalf("final event %+v", fin)
	}
	if released != 1 {
		t.Fatalf("release called %d times", released)
	}
}

func TestMixedAdaptersBatched(t *testing.T) {
	b := &fakeBackend{hold: make(chan struct{})}
	e := newTestEngine(t, b, func(c *Config) { c.MaxBatch = 8; c.PrefillChunk = 7 })
	var wg, submitted sync.WaitGroup
	submitted.Add(40)
	go func() { submitted.Wait(); close(b.hold) }()
	errs := make(chan error, 40)
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			var d Delta
			if i%4 != 0 {
				d = fakeDelta{shift: i % 4}
			}
			prompt := ids(strings.Repeat(fmt.Sprint(i), 1+i%5))
			s, err := e.Submit(context.Background(), &Request{Prompt: prompt, MaxTokens: 20, Adapter: d})
			submitted.Done()
			if err != nil {
				errs <- err
				return
			}
			var sb strings.Builder
			for {
				ev, err := s.Recv(context.Background())
				if err == io.EOF {
					break
				}
				sb.WriteString(ev.Text)
			}
			if want := fakeGenerate(prompt, d, 20); sb.String() != want {
				errs <- fmt.Errorf("request %d: got %q want %q", i, sb.String(), want)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	mixed := false
	for _, call := range b.calls {
		if len(call) > 8+8/4 { // MaxBatch, and MaxBatch/4 rows for requests with nothing running
			t.Fatalf("batch of %d rows exceeds MaxBatch", len(call))
		}
		prefill := 0
		seen := map[Delta]bool{}
		for _, r := range call {
			if len(r.Tokens) > 1 {
				prefill += len(r.Tokens)
			}
			seen[r.Adapter] = true
		}
		if prefill > 7 {
			t.Fatalf("prefill tokens %d exceed the chunk budget", prefill)
		}
		if len(seen) > 1 {
			mixed = true
		}
	}
	if !mixed {
		t.Fatal("no Forward call mixed adapters")
	}
}

func TestChunkedPrefillDoesNotStallDecode(t *testing.T) {
	b := &fakeBackend{hold: make(chan struct{})}
	e := newTestEngine(t, b, func(c *Config) { c.PrefillChunk = 16 })
	s1, _ := e.Submit(context.Background(), &Request{Prompt: ids("a"), MaxTokens: 40})
	s2, _ := e.Submit(context.Background(), &Request{Prompt: ids(strings.Repeat("x", 200)), MaxTokens: 2})
	close(b.hold)
	t1, _ := collect(t, s1)
	t2, _ := collect(t, s2)
	if t1 != fakeGenerate(ids("a"), nil, 40) || t2 != fakeGenerate(ids(strings.Repeat("x", 200)), nil, 2) {
		t.Fatal("wrong output")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	both := 0
	for _, call := range b.calls {
		if len(call) == 2 && len(call[0].Tokens) == 1 && len(call[1].Tokens) == 16 {
			both++
		}
	}
	if both < 5 {
		t.Fatalf("decode and prefill chunks shared only %d steps", both)
	}
}

func TestStopStrings(t *testing.T) {
	want := fakeGenerate(ids("hello"), nil, 30)
	stop := want[10:13]
	cut := strings.Index(want, stop)
	b := &fakeBackend{}
	e := newTestEngine(t, b, nil)
	s, _ := e.Submit(context.Background(), &Request{Prompt: ids("hello"), MaxTokens: 30, Stop: []string{"zzzzzz", stop}})
	var pieces []string
	var fin Event
	for {
		ev, err := s.Recv(context.Background())
		if err == io.EOF {
			break
		}
		pieces = append(pieces, ev.Text)
		if ev.Finish != "" {
			fin = ev
		}
	}
	got := strings.Join(pieces, "")
	if got != want[:cut] || fin.Finish != FinishStop {
		t.Fatalf("got %q (%s) want %q", got, fin.Finish, want[:cut])
	}
	for _, p := range pieces {
		if strings.Contains(p, stop[:1]) && strings.Contains(want[:cut], p) == false {
			t.Fatalf("piece %q leaks part of the stop string", p)
		}
	}
}

func TestEOSAndLogprobs(t *testing.T) {
	b := &fakeBackend{eosAt: 8}
	e := newTestEngine(t, b, nil)
	s, _ := e.Submit(context.Background(), &Request{Prompt: ids("abc"), MaxTokens: 100, Logprobs: true, TopLogprobs: 3})
	var toks []TokenLogprob
	var fin Event
	for {
		ev, err := s.Recv(context.Background())
		if err == io.EOF {
			break
		}
		toks = append(toks, ev.Tokens...)
		if ev.Finish != "" {
			fin = ev
		}
	}
	if fin.Finish != FinishStop || fin.CompletionTokens != 6 {
		t.Fatalf("final %+v", fin)
	}
	if len(toks) != 6 || toks[5].ID != fakeEOS || len(toks[0].Top) != 3 || toks[0].Top[0].ID != toks[0].ID {
		t.Fatalf("logprobs %+v", toks)
	}
	if toks[0].Logprob > 0 || toks[0].Logprob < -0.05 {
		t.Fatalf("logprob %v", toks[0].Logprob)
	}
}

func TestLimits(t *testing.T) {
	b := &fakeBackend{gate: make(chan struct{})}
	e := newTestEngine(t, b, func(c *Config) { c.MaxBatch = 1; c.MaxQueue = 1; c.MaxModelLen = 32 })
	if _, err := e.Submit(context.Background(), &Request{Prompt: ids(strings.Repeat("x", 30)), MaxTokens: 5}); !errors.Is(err, ErrContextTooLong) {
		t.Fatalf("want context error, got %v", err)
	}
	if _, err := e.Submit(context.Background(), &Request{Prompt: nil}); !errors.Is(err, ErrEmptyPrompt) {
		t.Fatalf("want empty prompt error, got %v", err)
	}
	s1, err := e.Submit(context.Background(), &Request{Prompt: ids("a"), MaxTokens: 3})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return e.Stats().Active == 1 })
	if _, err := e.Submit(context.Background(), &Request{Prompt: ids("b"), MaxTokens: 3}); err != nil {
		t.Fatal(err)
	}
	released := false
	if _, err := e.Submit(context.Background(), &Request{Prompt: ids("c"), MaxTokens: 3, Release: func() { released = true }}); !errors.Is(err, ErrQueueFull) || !released {
		t.Fatalf("want queue full + release, got %v %v", err, released)
	}
	s1.Cancel()
	b.gate <- struct{}{}
	_, fin := collect(t, s1)
	if fin.Finish != FinishCancel && fin.Finish != FinishLength {
		t.Fatalf("final %+v", fin)
	}
}

func TestCancelFreesSlotAndContext(t *testing.T) {
	b := &fakeBackend{}
	e := newTestEngine(t, b, func(c *Config) { c.MaxBatch = 1 })
	ctx, cancel := context.WithCancel(context.Background())
	rel := make(chan struct{})
	s, _ := e.Submit(ctx, &Request{Prompt: ids("a"), Release: func() { close(rel) }})
	ev, err := s.Recv(context.Background())
	if err != nil || ev.Text == "" {
		t.Fatal(ev, err)
	}
	cancel()
	select {
	case <-rel:
	case <-time.After(5 * time.Second):
		t.Fatal("slot not released after cancel")
	}
	waitFor(t, func() bool { return e.Stats().Active == 0 })
	s2, _ := e.Submit(context.Background(), &Request{Prompt: ids("q"), MaxTokens: 3})
	if text, _ := collect(t, s2); text != fakeGenerate(ids("q"), nil, 3) {
		t.Fatal(text)
	}
}

func TestForwardErrorFailsOnlyThatStep(t *testing.T) {
	b := &fakeBackend{failNext: true}
	e := newTestEngine(t, b, nil)
	s, _ := e.Submit(context.Background(), &Request{Prompt: ids("a"), MaxTokens: 3})
	_, fin := collect(t, s)
	if fin.Finish != FinishError || fin.Err == nil {
		t.Fatalf("final %+v", fin)
	}
	s2, _ := e.Submit(context.Background(), &Request{Prompt: ids("a"), MaxTokens: 3})
	if text, _ := collect(t, s2); text != fakeGenerate(ids("a"), nil, 3) {
		t.Fatal(text)
	}
}

func TestShutdownDrains(t *testing.T) {
	b := &fakeBackend{}
	e := newTestEngine(t, b, nil)
	s, _ := e.Submit(context.Background(), &Request{Prompt: ids("a"), MaxTokens: 50})
	done := make(chan error)
	go func() { done <- e.Shutdown(context.Background()) }()
	text, fin := collect(t, s)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if fin.Finish != FinishLength || len(text) != 50 {
		t.Fatalf("drain cut the request: %q %+v", text, fin)
	}
	if _, err := e.Submit(context.Background(), &Request{Prompt: ids("a")}); !errors.Is(err, ErrShuttingDown) {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestBadRowFailsAlone(t *testing.T) {
	b := &fakeBackend{poison: '!', hold: make(chan struct{})}
	e := newTestEngine(t, b, nil)
	good, _ := e.Submit(context.Background(), &Request{Prompt: ids("ok"), MaxTokens: 5})
	bad, _ := e.Submit(context.Background(), &Request{Prompt: ids("!x"), MaxTokens: 5})
	other, _ := e.Submit(context.Background(), &Request{Prompt: ids("hey"), MaxTokens: 5}) // run alone after good: must not overwrite its logits
	close(b.hold)
	if _, fin := collect(t, bad); fin.Finish != FinishError {
		t.Fatalf("bad row: %+v", fin)
	}
	for _, g := range []struct {
		s      *Stream
		prompt string
	}{{good, "ok"}, {other, "hey"}} {
		if text, fin := collect(t, g.s); text != fakeGenerate(ids(g.prompt), nil, 5) || fin.Finish != FinishLength {
			t.Fatalf("good row %q hurt by the bad one: %q %+v", g.prompt, text, fin)
		}
	}
}

// A chat prompt ends at the template's end of turn, as generate --chat and eval do; a plain prompt does not.
func TestChatStopsAtTurnEnd(t *testing.T) {
	run := func(e *Engine, req *Request) (string, Event) {
		s, err := e.Submit(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		var text strings.Builder
		for {
			ev, err := s.Recv(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			text.WriteString(ev.Text)
			if ev.Finish != "" {
				return text.String(), ev
			}
		}
	}
	plain, _ := run(newTestEngine(t, &fakeBackend{}, nil), &Request{Prompt: ids("abc"), MaxTokens: 6})
	if len(plain) != 6 {
		t.Fatalf("plain text %q", plain)
	}
	turn := int(plain[2])
	e := newTestEngine(t, &fakeBackend{}, func(c *Config) { c.TurnEnd.IDs = []int{turn} })
	if got, _ := run(e, &Request{Prompt: ids("abc"), MaxTokens: 6}); got != plain {
		t.Fatalf("plain prompt with a turn end: %q, want %q", got, plain)
	}
	for _, ignore := range []bool{false, true} {
		got, fin := run(e, &Request{Prompt: ids("abc"), MaxTokens: 6, Chat: true, IgnoreEOS: ignore})
		if got != plain[:2] || fin.Finish != FinishStop || fin.CompletionTokens != 3 {
			t.Fatalf("chat (ignore_eos %v): %q %+v, want %q stop after 3 tokens", ignore, got, fin, plain[:2])
		}
	}
}

// literalConstraint allows exactly the bytes of want, then only EOS (or nothing at all when dead).
type literalConstraint struct {
	want string
	pos  int
	dead bool
}

func (c *literalConstraint) Mask(logits []float32) int {
	if c.dead {
		for i := range logits {
			logits[i] = float32(math.Inf(-1))
		}
		return 0
	}
	for i := range logits {
		if c.pos >= len(c.want) || i != int(c.want[c.pos]) {
			logits[i] = float32(math.Inf(-1))
		}
	}
	return 1
}

func (c *literalConstraint) AcceptToken(id int) bool {
	if c.pos < len(c.want) && id == int(c.want[c.pos]) {
		c.pos++
		return true
	}
	return false
}

func (c *literalConstraint) Done() bool { return c.pos == len(c.want) }

func TestConstraintMasksAndEnds(t *testing.T) {
	e := newTestEngine(t, &fakeBackend{}, nil)
	// the fake model would write letters forever (IgnoreEOS too): the constraint writes "{}" and ends with stop
	st, err := e.Submit(context.Background(), &Request{Prompt: ids("hi"), MaxTokens: 50, IgnoreEOS: true,
		Logprobs: true, Constraint: &literalConstraint{want: `{"a":1}`}})
	if err != nil {
		t.Fatal(err)
	}
	text, last := collect(t, st)
	if text != `{"a":1}` || last.Finish != FinishStop || last.CompletionTokens != 7 {
		t.Fatalf("text %q finish %q tokens %d", text, last.Finish, last.CompletionTokens)
	}
	// a constraint that allows nothing fails the request, not the engine
	st, err = e.Submit(context.Background(), &Request{Prompt: ids("hi"), MaxTokens: 5, Constraint: &literalConstraint{dead: true}})
	if err != nil {
		t.Fatal(err)
	}
	if _, last = collect(t, st); last.Finish != FinishError || last.Err == nil {
		t.Fatalf("dead constraint: %+v", last)
	}
}
