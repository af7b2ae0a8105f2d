package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"

	"runtime"
	"slices"
	"sort"

	"sync"
	"time"

	"github.com/lorakit/lorakit/models/stop"
)

// Config configures an Engine.
type Config struct {
	Backend    Backend
	NewDecoder func(prompt []int) Decoder
	NewSampler func(SamplingParams) Sampler
	EOS        []int
	// TurnEnd ends the turn of a Chat request (models.Model.TurnEnd).
	TurnEnd stop.Turn
	// MaxBatch is the most sequences decoded together (default 16), plus up to MaxBatch/4 (at least one) for
	// requests that have nothing running yet, so a short request is not stuck behind long ones (see admit);
	// MaxQueue the most waiting (default 256).
	MaxBatch, MaxQueue int
	// MaxModelLen is the context window (prompt + completion).
	MaxModelLen int
	// PrefillChunk is the prompt-token budget per step shared by all prefilling sequences (default 256), so a long
	// prompt never stalls the decoding ones for more than one chunk.
	PrefillChunk int
	// PrefixCache is the most bytes of prompt-block KV kept for reuse by later requests with the same prefix and
	// adapter (prefix caching; needs a Backend implementing KVBlocks, whose blocks are shared by reference when it
	// is a PagedBackend); 0 turns it off.
	PrefixCache int64
	// KVBlocks is the KV cache budget, in blocks of KVBlockSize positions shared by every running sequence
	// (kvPool): admission waits for a prompt's blocks, and a decoding sequence that needs a block when none is
	// free preempts the most recently admitted one, which is recomputed from its prompt and the tokens it had
	// generated when blocks free up (vLLM's recompute preemption; greedy outputs are unchanged). With a
	// PagedBackend it bounds the pool the blocks are taken from. 0: no budget, each running sequence may hold its
	// prompt + max tokens.
	KVBlocks int
	// Observer receives metrics; may be nil.
	Observer Observer
}

// Observer is told what the engine does (for /metrics). FirstToken, Token and Finished may be called from several
// goroutines at once.
type Observer interface {
	Step(batchRows, prefillTokens, decodeTokens int, took time.Duration)
	FirstToken(ttft time.Duration)
	Token(itl time.Duration)
	Finished(Finished)
}

// Finished describes a request the engine is done with.
type Finished struct {
	Reason                         string
	Adapter                        string // Request.AdapterName
	PromptTokens, CompletionTokens int
	// Ran is false for a request that ended (cancelled, shut down) while still waiting; Queued is then zero.
	Ran bool
	// Queued is the time from Submit to the step that admitted it; Total from Submit to the end.
	Queued, Total time.Duration
}

// Stats is a snapshot of the engine's load.
type Stats struct {
	Waiting, Active int
	// WaitingAdapters and RunningAdapters are the distinct adapter names (Request.AdapterName, the base model
	// left out) of the waiting and the running requests, sorted.
	WaitingAdapters, RunningAdapters []string
	// KVReserved is the number of token positions the running sequences' KV caches are sized for (each holds
	// prompt + max new tokens); KVCapacity is MaxBatch × MaxModelLen, the most the engine ever reserves at once.
	// With a KV budget (Config.KVBlocks) they are the blocks in use and the pool's size, in positions.
	KVReserved, KVCapacity int
	// KVBlocksUsed and KVBlocks are the budget's blocks in use and in all (0 without a budget); Preemptions
	// counts the sequences preempted for lack of blocks.
	KVBlocksUsed, KVBlocks int
	Preemptions            int64
	// Yields counts the rows preempted (to be recomputed) to make room for a request with nothing running, from
	// a request holding more than its fair share of the batch.
	Yields int64
	// PrefixQueries and PrefixHits count the prompt tokens looked up in the prefix cache and those found there
	// (vLLM's prefix_cache_queries and prefix_cache_hits); both stay 0 with the cache off.
	PrefixQueries, PrefixHits int64
	// PrefixCacheBytes is the KV memory of the blocks the prefix cache holds (some may be held by running
	// sequences too); at most Config.PrefixCache once no running sequence holds a cached block.
	PrefixCacheBytes int64
}

// KVUsage is KVReserved / KVCapacity, in [0, 1].
func (s Stats) KVUsage() float64 {
	if s.KVCapacity <= 0 {
		return 0
	}
	return float64(s.KVReserved) / float64(s.KVCapacity)
}

// Engine runs continuous batching on one goroutine.
type Engine struct {
	cfg  Config
	mu   sync.Mutex
	cond *sync.Cond
	wait []*seq
	// active is owned by the loop; nActive mirrors its length for Stats.
	active   []*seq
	nActive  int
	running  map[string]int // adapter name → running sequences (mirrors active, like nActive)
	kvRes    int            // Σ prompt + max new tokens over active (mirrors active)
	stopping bool           // no new requests
	closed   bool           // loop must exit
	exited   chan struct{}
	idle     chan struct{} // closed and replaced when the engine becomes idle while stopping
	prefix   *prefixCache  // nil: prefix caching off
	kv       *kvPool       // nil: no KV budget
	pool     BlockPool     // the states' KV blocks (a PagedBackend's); nil: the Backend's own states
	yields   int64         // rows preempted to make room for another request (yieldRow); under mu
}

type seq struct {
	req      *Request
	ctx      context.Context
	stream   *Stream
	state    State
	pos      int // prompt tokens already in the cache
	chunk    int // prompt tokens fed this step
	gen      []int
	hist     []int // prompt + generated, for the sampler's penalties
	last     int
	maxNew   int
	dec      Decoder
	smp      Sampler
	stop     *stop.Seq
	promptLP []TokenLogprob // prompt logprobs not yet sent
	start    time.Time
	admitted time.Time // zero until the loop takes it from the queue
	lastTok  time.Time
	released bool
	// keys are the prompt's chained block keys while prefix caching is on; the blocks before stored are cached.
	keys   []blockKey
	stored int
	// feed is what is prefilled into a fresh state: the prompt, or after a preemption the prompt and every token
	// generated so far (recompute).
	feed   []int
	blocks int  // KV budget blocks held (counted here when the Backend is not paged)
	begun  bool // its state has been set up for (re)computing feed: sampler, decoder, prefix reuse
}

// New starts an engine.
func New(cfg Config) (*Engine, error) {
	if cfg.Backend == nil || cfg.NewDecoder == nil || cfg.NewSampler == nil {
		return nil, errors.New("engine: Backend, NewDecoder and NewSampler are required")
	}
	if cfg.MaxModelLen <= 0 {
		return nil, fmt.Errorf("engine: MaxModelLen must be positive, got %d", cfg.MaxModelLen)
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 16
	}
	if cfg.MaxQueue <= 0 {
		cfg.MaxQueue = 256
	}
	if cfg.PrefillChunk <= 0 {
		cfg.PrefillChunk = 256
	}
	e := &Engine{cfg: cfg, running: map[string]int{}, exited: make(chan struct{}), idle: make(chan struct{})}
	if kv, ok := cfg.Backend.(KVBlocks); ok && cfg.PrefixCache > 0 {
		e.prefix = newPrefixCache(kv, cfg.PrefixCache)
	}
	if cfg.KVBlocks > 0 {
		if need := blocksFor(cfg.MaxModelLen); cfg.KVBlocks < need {
			return nil, fmt.Errorf("engine: a KV budget of %d blocks of %d positions cannot hold one sequence of the %d-token context window (%d blocks)",
				cfg.KVBlocks, KVBlockSize, cfg.MaxModelLen, need)
		}
		e.kv = &kvPool{total: cfg.KVBlocks, free: cfg.KVBlocks}
	}
	if pb, ok := cfg.Backend.(PagedBackend); ok {
		var err error
		if e.pool, err = pb.KVPool(cfg.KVBlocks); err != nil {
			return nil, fmt.Errorf("engine: KV pool: %w", err)
		}
	}
	e.cond = sync.NewCond(&e.mu)
	go e.loop()
	return e, nil
}

// MaxBatch is the most sequences decoded together.
func (e *Engine) MaxBatch() int { return e.cfg.MaxBatch }

// Stats reports queue depth, running sequences, their adapters and the KV reservation.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := Stats{Waiting: len(e.wait), Active: e.nActive, KVReserved: e.kvRes, KVCapacity: e.cfg.MaxBatch * e.cfg.MaxModelLen,
		Yields: e.yields}
	if e.prefix != nil {
		st.PrefixQueries, st.PrefixHits = e.prefix.queries.Load(), e.prefix.hits.Load()
		st.PrefixCacheBytes = e.prefix.size()
	}
	if e.kv != nil {
		st.KVBlocksUsed, st.KVBlocks, st.Preemptions = e.kv.used()
		if e.pool != nil {
			st.KVBlocksUsed = e.pool.Used()
			if e.prefix != nil {
				st.KVBlocksUsed -= e.prefix.idle() // cached blocks no sequence holds are free to take
			}
		}
		st.KVReserved, st.KVCapacity = st.KVBlocksUsed*KVBlockSize, st.KVBlocks*KVBlockSize
	}
	for n := range e.running {
		st.RunningAdapters = append(st.RunningAdapters, n)
	}
	sort.Strings(st.RunningAdapters)
	seen := map[string]bool{}
	for _, s := range e.wait {
		if n := s.req.AdapterName; n != "" && !seen[n] {
			seen[n] = true
			st.WaitingAdapters = append(st.WaitingAdapters, n)
		}
	}
	sort.Strings(st.WaitingAdapters)
	return st
}

// publishActive mirrors e.active into nActive, running and kvRes for Stats. Called on the loop goroutine with e.mu
// held.
func (e *Engine) publishActive() {
	e.nActive = len(e.active)
	clear(e.running)
	e.kvRes = 0
	for _, s := range e.active {
		if n := s.req.AdapterName; n != "" {
			e.running[n]++
		}
		e.kvRes += len(s.req.Prompt) + s.maxNew
	}
}

// Submit queues a request. ctx ending (client gone) cancels it. On error, req.Release has been called.
func (e *Engine) Submit(ctx context.Context, req *Request) (*Stream, error) {
	s := &seq{req: req, ctx: ctx, stream: newStream(), feed: req.Prompt}
	fail := func(err error) (*Stream, error) {
		if req.Release != nil {
			req.Release()
		}
		return nil, err
	}
	n := len(req.Prompt)
	if n == 0 {
		return fail(ErrEmptyPrompt)
	}
	s.maxNew = req.MaxTokens
	if s.maxNew <= 0 {
		s.maxNew = e.cfg.MaxModelLen - n
		if s.maxNew <= 0 {
			return fail(&ContextError{MaxLen: e.cfg.MaxModelLen, Prompt: n, Completion: 1})
		}
	} else if s.maxNew > e.cfg.MaxModelLen-n { // not n+maxNew: max_tokens may be 2⁶³−1

		return fail(&ContextError{MaxLen: e.cfg.MaxModelLen, Prompt: n, Completion: s.maxNew})
	}
	vocab := e.cfg.Backend.VocabSize()
	for _, id := range req.Prompt {
		if id < 0 || id >= vocab {
			return fail(fmt.Errorf("engine: prompt token id %d out of range [0, %d)", id, vocab))
		}
	}
	e.mu.Lock()
	if e.stopping {
		e.mu.Unlock()
		return fail(ErrShuttingDown)
	}
	if len(e.wait) >= e.cfg.MaxQueue {
		e.mu.Unlock()
		return fail(ErrQueueFull)
	}
	s.start = time.Now()
	e.wait = append(e.wait, s)
	e.cond.Signal()
	e.mu.Unlock()
	return s.stream, nil
}

// Shutdown stops accepting requests and waits until every queued and running request has finished or ctx ends;
// then it cancels what is left and stops the loop.
func (e *Engine) Shutdown(ctx context.Context) error {
	e.mu.Lock()
	e.stopping = true
	e.cond.Broadcast()
	e.mu.Unlock()
	var err error
	for {
		e.mu.Lock()
		busy := len(e.wait) > 0 || e.nActive > 0
		idle := e.idle
		e.mu.Unlock()
		if !busy {
			break
		}
		select {
		case <-idle:
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err != nil {
			break
		}
	}
	e.mu.Lock()
	e.closed = true
	e.cond.Broadcast()
	e.mu.Unlock()
	<-e.exited
	return err
}

func (e *Engine) loop() {
	defer close(e.exited)
	for {
		e.mu.Lock()
		for !e.closed && len(e.wait) == 0 && len(e.active) == 0 {
			if e.stopping {
				close(e.idle)
				e.idle = make(chan struct{})
			}
			e.cond.Wait()
		}
		if e.closed {
			rest := append(e.wait, e.active...)
			e.wait, e.active = nil, nil
			e.publishActive()
			e.mu.Unlock()
			for _, s := range rest {
				e.finish(s, FinishCancel, ErrShuttingDown)
			}
			return
		}
		var gone []*seq
		if len(e.wait) > 0 {
			keep := e.wait[:0]
			for _, s := range e.wait {
				if s.stream.cancelled.Load() || s.ctx.Err() != nil {
					gone = append(gone, s)
				} else {
					keep = append(keep, s)
				}
			}
			for i := len(keep); i < len(e.wait); i++ {
				e.wait[i] = nil
			}
			e.wait = keep
		}
		now := time.Now()
		e.admit(now)
		e.publishActive()
		e.mu.Unlock()
		for _, s := range gone {
			e.finish(s, FinishCancel, ErrCancelled)
		}
		if len(e.active) > 0 {
			e.step()
		}
	}
}

// admit moves waiting sequences into the batch, fairly between requests (Request.Group): each free slot goes to
// the waiting request with the fewest sequences running, the oldest among equals; a request with nothing
// running may join a full batch as one of MaxBatch/4 (at least one) extra rows, and once those are taken it
// joins in place of a row of the request holding the most rows beyond its fair share (yieldRow), so that no
// request waits behind a long n > 1 request that fills the batch. e.mu held.
func (e *Engine) admit(now time.Time) {
	if len(e.wait) == 0 {
		return
	}
	running := make(map[any]int, len(e.active))
	for _, s := range e.active {
		running[s.group()]++
	}
	extra := max(1, e.cfg.MaxBatch/4)
	for len(e.wait) > 0 {
		best := 0
		for i, s := range e.wait {
			if running[s.group()] < running[e.wait[best].group()] {
				best = i
			}
		}
		s := e.wait[best]
		g := s.group()
		if len(e.active) >= e.cfg.MaxBatch && (running[g] > 0 || len(e.active) >= e.cfg.MaxBatch+extra) {
			if running[g] > 0 || !e.yieldRow(running) {
				return // the batch is full, and best (fewest running) has rows in it already
			}
			continue // a row made room for best, which is looked up again (the yielded row waits first)
		}
		if e.kv != nil && !e.admitBlocks(s) {
			return // its prompt's blocks (and the first generated token's) are not free yet
		}
		e.wait = slices.Delete(e.wait, best, best+1)
		s.admitted = now
		e.active = append(e.active, s)
		running[g]++
	}
}

// yieldRow preempts the most recently admitted row of the request (group) running the most rows, if that is
// more than its fair share of the batch (MaxBatch over the requests running or waiting, at least one): the row
// is recomputed when it is admitted again (preempt), so its output is unchanged. It reports whether a row was
// preempted; running is updated. e.mu held.
func (e *Engine) yieldRow(running map[any]int) bool {
	most := 0
	groups := map[any]bool{}
	for g, n := range running {
		if n > 0 {
			groups[g] = true
			most = max(most, n)
		}
	}
	for _, s := range e.wait {
		groups[s.group()] = true
	}
	if most <= max(1, e.cfg.MaxBatch/len(groups)) {
		return false
	}
	for i := len(e.active) - 1; i >= 0; i-- {
		if s := e.active[i]; running[s.group()] == most {
			e.active = slices.Delete(e.active, i, i+1)
			running[s.group()]--
			e.wait = slices.Insert(e.wait, 0, e.reset(s))
			e.yields++
			return true
		}
	}
	return false
}

// group is the key s is scheduled fairly under: its request's Group, or s alone.
func (s *seq) group() any {
	if s.req.Group != nil {
		return s.req.Group
	}
	return s
}

// finite reports whether logits hold no NaN or +Inf (−Inf is a masked token).
//
// It runs once per row and step over the whole vocabulary while the model waits, so the common case is one
// branch-free pass: a float's exponent bits are all ones (NaN or ±Inf) exactly when adding 1 to the lowest
// exponent bit of its magnitude carries into bit 31; only when some value does so are they checked one by one.
func finite(logits []float32) bool {
	var a, b, c, d uint32
	i := 0
	for ; i+4 <= len(logits); i += 4 {
		v := logits[i : i+4 : i+4]
		a |= math.Float32bits(v[0])&0x7fffffff + 0x00800000
		b |= math.Float32bits(v[1])&0x7fffffff + 0x00800000
		c |= math.Float32bits(v[2])&0x7fffffff + 0x00800000
		d |= math.Float32bits(v[3])&0x7fffffff + 0x00800000
	}
	for _, v := range logits[i:] {
		a |= math.Float32bits(v)&0x7fffffff + 0x00800000
	}
	if (a|b|c|d)&0x80000000 == 0 {
		return true
	}
	for _, v := range logits {
		if v != v || v > math.MaxFloat32 {
			return false
		}
	}
	return true
}

// step drops cancelled sequences, runs one Forward over every active sequence and samples.
//
// complexity: one engine step in order (drop cancelled, forward, sample, stop, stream); each branch is one sequence's state change.
func (e *Engine) step() {
	live := e.active[:0]
	for _, s := range e.active {
		if s.stream.cancelled.Load() || s.ctx.Err() != nil {
			e.finish(s, FinishCancel, ErrCancelled)
			continue
		}
		live = append(live, s)
	}
	for i := len(live); i < len(e.active); i++ {
		e.active[i] = nil
	}
	e.active = live
	if e.kv != nil {
		live = e.reserveBlocks(live)
		e.active = live
	}
	if len(live) == 0 {
		e.setActive()
		return
	}
	budget := e.cfg.PrefillChunk
	rows := make([]Row, 0, len(live))
	seqs := make([]*seq, 0, len(live))
	prefill, decode := 0, 0
	for _, s := range live {
		var toks []int
		if s.pos < len(s.feed) {
			if budget == 0 {
				continue
			}
			if !s.begun {
				s.begun = true
				if s.state == nil {
					s.state = e.newState(s)
				}
				if s.smp == nil { // not a recompute after preemption, which keeps them
					s.dec = e.cfg.NewDecoder(s.req.Prompt)
					s.smp = e.cfg.NewSampler(s.req.Sampling)
					s.stop = e.rule(s).Start()
					s.hist = make([]int, len(s.req.Prompt), len(s.req.Prompt)+min(s.maxNew, 4096))
					copy(s.hist, s.req.Prompt)
				}
				e.reusePrefix(s, true)
			}
			n := min(len(s.feed)-s.pos, budget)
			budget -= n
			toks = s.feed[s.pos : s.pos+n]
			s.chunk = n
			prefill += n
		} else {
			toks = []int{s.last}
			s.chunk = 0
			decode++
		}
		rows = append(rows, Row{Tokens: toks, State: s.state, Adapter: s.req.Adapter,
			AllLogits: s.chunk > 0 && s.req.PromptLogprobs && len(s.gen) == 0})
		seqs = append(seqs, s)
	}
	t0 := time.Now()
	logits, err := e.forward(rows)
	took := time.Since(t0)
	if e.cfg.Observer != nil {
		e.cfg.Observer.Step(len(rows), prefill, decode, took)
	}
	if err == nil && len(logits) != len(rows) {
		err = fmt.Errorf("engine: backend returned %d logit rows for %d sequences", len(logits), len(rows))
	}
	if err != nil && len(rows) > 1 {
		// One bad sequence must not fail the batch: the backend left every cache untouched, so run the rows one
		// by one and fail only those that fail alone.
		logits = make([][]float32, len(rows))
		for i := range rows {
			l, rerr := e.forward(rows[i : i+1])
			if rerr == nil && len(l) != 1 {
				rerr = fmt.Errorf("engine: backend returned %d logit rows for 1 sequence", len(l))
			}
			if rerr != nil {
				e.finish(seqs[i], FinishError, rerr)
				continue
			}
			logits[i] = slices.Clone(l[0]) // the next row's Forward may reuse l's memory
		}
		err = nil
	}
	if err != nil {
		for _, s := range seqs {
			e.finish(s, FinishError, err)
		}
		e.removeFinished()
		return
	}
	now := time.Now()
	ready := make([]int, 0, len(seqs))
	for i, s := range seqs {
		if s.released {
			continue // failed alone above
		}
		if rows[i].AllLogits {
			logits[i] = e.promptLogprobs(s, logits[i])
		}
		if s.chunk > 0 {
			s.pos += s.chunk
			e.storePrefix(s)
			if s.pos < len(s.feed) {
				continue // more prompt to prefill
			}
		}
		ready = append(ready, i)
	}
	// Sampling and detokenising are per sequence: spread them over the CPUs while the model is idle.
	workers := min(runtime.GOMAXPROCS(0), len(ready)/4+1)
	if workers <= 1 {
		for _, i := range ready {
			e.advance(seqs[i], logits[i], now)
		}
	} else {
		var wg sync.WaitGroup
		per := (len(ready) + workers - 1) / workers
		for lo := 0; lo < len(ready); lo += per {
			part := ready[lo:min(lo+per, len(ready))]
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, i := range part {
					e.advance(seqs[i], logits[i], now)
				}
			}()
		}
		wg.Wait()
	}
	e.removeFinished()
}

// reserveBlocks gives every decoding sequence of live the KV block its next token needs, preempting the most
// recently admitted sequences (the end of live) while none is free, and returns live without them. Prefilling
// sequences hold their prompt's blocks since admission.
func (e *Engine) reserveBlocks(live []*seq) []*seq {
	for i := 0; i < len(live); i++ {
		s := live[i]
		if s.state == nil || s.pos < len(s.feed) {
			continue
		}
		for !e.grow(s, s.state.Len()+1) {
			victim := live[len(live)-1]
			live[len(live)-1] = nil
			live = live[:len(live)-1]
			e.preempt(victim)
			if victim == s {
				i--
				break
			}
		}
	}
	return live
}

// newState is a fresh state for s: from the engine's pool of KV blocks when the Backend is paged.
func (e *Engine) newState(s *seq) State {
	n := len(s.req.Prompt) + s.maxNew
	if e.pool != nil {
		return e.pool.NewState(n)
	}
	return e.cfg.Backend.NewState(n)
}

// grow makes s hold the KV budget's blocks for n positions, and reports whether they were free. With a paged
// Backend these are real blocks of the pool (s's state is created for them), taken after evicting cached prefix
// blocks that no sequence holds while too few are free; otherwise the budget only counts them.
func (e *Engine) grow(s *seq, n int) bool {
	if e.pool == nil {
		return e.kv.grow(s, n)
	}
	if s.state == nil {
		s.state = e.newState(s)
	}
	ps, ok := s.state.(PagedState)
	if !ok {
		return false
	}
	need := blocksFor(n) - ps.Blocks()
	for need > 0 && e.pool.Free() < need && e.prefix != nil && e.prefix.reclaim() {
	}
	return ps.Reserve(n) == nil
}

// admitBlocks takes the KV budget's blocks for s's prompt (feed) and its first generated token. With a paged
// Backend, s's state is created first and given the cached blocks of its prompt's prefix, shared, so that only
// the rest is taken from the pool (reusePrefix adds blocks cached meanwhile when s starts). On failure s is left
// as it was in the queue.
func (e *Engine) admitBlocks(s *seq) bool {
	if e.pool != nil && s.state == nil {
		s.state = e.newState(s)
		e.reusePrefix(s, false)
	}
	if e.grow(s, len(s.feed)+1) {
		return true
	}
	e.reset(s)
	return false
}

// dropState returns s's state and its KV blocks (counted or held), and evicts cached prefix blocks over the
// cache's bound that s held (a cache over its bound keeps blocks that running sequences hold, freeing nothing).
func (e *Engine) dropState(s *seq) {
	if ps, ok := s.state.(PagedState); ok && e.pool != nil {
		ps.Release()
	}
	if s.state != nil && e.prefix != nil {
		e.prefix.trim()
	}
	if e.kv != nil {
		e.kv.release(s)
	}
	s.state, s.begun = nil, false
}

// preempt frees s's state and blocks and queues it first, to be recomputed from its prompt and the tokens it
// has generated (its sampler, stop rule and detokeniser carry on). Prompt logprobs not yet sent are dropped and
// computed again; once sent (with the first token), the recompute does not ask for them.
func (e *Engine) preempt(s *seq) {
	e.kv.mu.Lock()
	e.kv.preemptions++
	e.kv.mu.Unlock()
	e.reset(s)
	e.mu.Lock()
	e.wait = slices.Insert(e.wait, 0, s)
	e.mu.Unlock()
}

// reset frees s's state, blocks and prefix-cache hold so that it starts over from its prompt and the tokens it
// has generated (preempt), and returns s.
func (e *Engine) reset(s *seq) *seq {
	e.dropState(s)
	if s.keys != nil {
		e.prefix.release(s.req.Adapter)
		s.keys = nil
	}
	s.pos, s.chunk, s.stored = 0, 0, 0
	s.feed = append(slices.Clone(s.req.Prompt), s.gen...)
	if len(s.gen) == 0 {
		s.promptLP = nil
	}
	return s
}

// reusePrefix starts s's fresh state (or extends what an earlier call gave it) with the cached KV of its
// prompt's longest cached block chain under its adapter, so that only the rest is prefilled; start counts the
// prompt as looked up and what was found (the call when s starts prefilling). A request asking for prompt
// logprobs needs every prompt position's logits: it computes them all (and still caches its blocks).
func (e *Engine) reusePrefix(s *seq, start bool) {
	if e.prefix == nil || (s.req.Adapter != nil && !reflect.TypeOf(s.req.Adapter).Comparable()) {
		return // an adapter that cannot be a map key has no identity to key blocks by
	}
	if s.keys == nil {
		s.keys = e.prefix.keys(s.req.Adapter, s.req.Prompt)
	}
	if !s.req.PromptLogprobs {
		s.pos = e.prefix.lookup(s.state, s.req.Adapter, s.req.Prompt, s.keys, s.pos)
	}
	s.stored = s.pos
	if start {
		e.prefix.queries.Add(int64(len(s.req.Prompt)))
		e.prefix.hits.Add(int64(s.pos))
	}
}

// storePrefix caches the prompt blocks s has prefilled since the last call.
func (e *Engine) storePrefix(s *seq) {
	if s.keys == nil {
		return
	}
	e.prefix.store(s.state, s.req.Adapter, s.req.Prompt, s.keys, s.stored, s.pos)
	s.stored = s.pos / PrefixBlock * PrefixBlock
}

// forward calls the backend, turning a panic in model code into an error so one bad request cannot kill the server.
func (e *Engine) forward(rows []Row) (logits [][]float32, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("engine: forward panicked: %v", r)
		}
	}()
	return e.cfg.Backend.Forward(rows)
}

func (e *Engine) setActive() {
	e.mu.Lock()
	e.publishActive()
	e.mu.Unlock()
}

func (e *Engine) removeFinished() {
	live := e.active[:0]
	for _, s := range e.active {
		if !s.released {
			live = append(live, s)
		}
	}
	for i := len(live); i < len(e.active); i++ {
		e.active[i] = nil
	}
	e.active = live
	e.setActive()
}

// advance samples the next token for s from logits and emits text.
func (e *Engine) advance(s *seq, logits []float32, now time.Time) {
	if !finite(logits) { // a corrupt adapter or an overflow: end the request with an error, not a silent cut
		e.finish(s, FinishError, ErrNonFinite)
		return
	}
	for id, b := range s.req.LogitBias {
		if id >= 0 && id < len(logits) {
			logits[id] += b
		}
	}
	var orig []float32
	if s.req.Logprobs {
		// log-probabilities of the model distribution, before the sampler reshapes it
		orig = append([]float32(nil), logits...)
	}
	if c := s.req.Constraint; c != nil && c.Mask(logits) == 0 {
		e.finish(s, FinishError, errors.New("engine: the output constraint allows no token here"))
		return
	}
	var id int
	if err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("engine: sampler panicked: %v", r)
			}
		}()
		id = s.smp.Sample(logits, s.hist)
		if id < 0 || id >= len(logits) {
			return fmt.Errorf("engine: sampler returned token %d outside the vocabulary", id)
		}
		if c := s.req.Constraint; c != nil && !slices.Contains(e.cfg.EOS, id) && !c.AcceptToken(id) {
			return fmt.Errorf("engine: sampled token %d is outside the output constraint", id)
		}
		return nil
	}(); err != nil {
		e.finish(s, FinishError, err)
		return
	}
	if len(s.gen) == 0 {
		if e.cfg.Observer != nil {
			e.cfg.Observer.FirstToken(now.Sub(s.start))
		}
	} else if e.cfg.Observer != nil {
		e.cfg.Observer.Token(now.Sub(s.lastTok))
	}
	s.lastTok = now
	s.gen = append(s.gen, id)
	s.hist = append(s.hist, id)
	s.last = id
	var toks []TokenLogprob
	if orig != nil {
		toks = []TokenLogprob{e.cfg.Backend.Logprobs(orig, id, s.req.TopLogprobs)}
	}
	text, reason := s.stop.Next(id, s.dec)
	if c := s.req.Constraint; c != nil && reason != stop.Stop && c.Done() {
		// Only end-of-sequence may follow: end now rather than spend a step on it.
		if reason == "" {
			var rest string
			rest, _ = s.stop.End(s.dec)
			text += rest
		}
		reason = stop.Stop
	}
	if reason != "" {
		s.stream.push(s.event(text, toks), false)
		e.finish(s, reason, nil)
		return
	}
	if text != "" || toks != nil || s.promptLP != nil {
		s.stream.push(s.event(text, toks), false)
	}
}

// rule is when s ends: the model's EOS ids (even with ignore_eos under an output constraint), the turn end for a
// chat prompt, the request's stop strings and its budget (max_tokens, or what the context window leaves).
func (e *Engine) rule(s *seq) stop.Rule {
	r := stop.Rule{EOS: e.cfg.EOS, IgnoreEOS: s.req.IgnoreEOS && s.req.Constraint == nil, Strings: s.req.Stop,
		MaxTokens: s.maxNew}
	if s.req.Chat {
		r.TurnEnd = e.cfg.TurnEnd
	}
	return r
}

// event is the next event of s, carrying the prompt logprobs the first time.
func (s *seq) event(text string, toks []TokenLogprob) Event {
	ev := Event{Text: text, Tokens: toks, Prompt: s.promptLP}
	s.promptLP = nil
	return ev
}

// promptLogprobs records the log probability of each prompt token the chunk's logits predict and returns the
// last position's logits. A backend that gave only the last position leaves the prompt without them.
func (e *Engine) promptLogprobs(s *seq, logits []float32) []float32 {
	v := e.cfg.Backend.VocabSize()
	n := len(logits) / max(v, 1)
	if n != s.chunk || n*v != len(logits) {
		return logits[max(len(logits)-v, 0):]
	}
	for j := range n {
		p := s.pos + j // position p's logits predict prompt token p+1
		if p+1 >= len(s.req.Prompt) {
			break
		}
		s.promptLP = append(s.promptLP, e.cfg.Backend.Logprobs(logits[j*v:(j+1)*v], s.req.Prompt[p+1], s.req.TopLogprobs))
	}
	return logits[(n-1)*v:]
}

// finish ends s: final event, observer, release. Idempotent.
func (e *Engine) finish(s *seq, reason string, err error) {
	if s.released {
		return
	}
	s.released = true
	e.dropState(s)
	if s.keys != nil {
		e.prefix.release(s.req.Adapter)
		s.keys = nil
	}
	s.dec, s.smp, s.hist, s.stop = nil, nil, nil, nil
	if s.req.Release != nil {
		s.req.Release() // before the last event, so a reader that saw the end sees the reference dropped
	}
	if e.cfg.Observer != nil {
		f := Finished{Reason: reason, Adapter: s.req.AdapterName, PromptTokens: len(s.req.Prompt),
			CompletionTokens: len(s.gen), Ran: !s.admitted.IsZero(), Total: time.Since(s.start)}
		if f.Ran {
			f.Queued = s.admitted.Sub(s.start)
		}
		e.cfg.Observer.Finished(f)
	}
	s.stream.push(Event{Finish: reason, Err: err, PromptTokens: len(s.req.Prompt), CompletionTokens: len(s.gen)}, true)
}
