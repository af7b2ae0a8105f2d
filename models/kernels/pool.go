package kernels

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// task is one parallel job: run processes the index range [lo, hi).
type task interface{ run(lo, hi int) }

// funcTask adapts a plain function to task.
type funcTask func(lo, hi int)

func (f funcTask) run(lo, hi int) { f(lo, hi) }

// Pool is a fixed set of worker goroutines that split index ranges between
// them. The calling goroutine takes the first share itself, so a Pool of
// Threads() == t keeps t-1 goroutines parked between calls. Calls never start
// goroutines; the kernels of this package allocate nothing per call.
//
// A Pool runs one For at a time: a For issued while another is in progress
// (from another goroutine, or nested inside fn) runs inline on its caller.
// A nil *Pool is valid and runs everything inline.
type Pool struct {
	threads int
	mu      sync.Mutex

	// current job: t, n and chunks are written under mu before the job word
	// is published, and read only by a thread that has claimed a chunk of it
	t      task
	n      int
	chunks int
	// job word: generation<<32 | chunks. Workers spin on the generation,
	// then park.
	word atomic.Uint64
	// shares[s]: generation<<32 | lo<<16 | hi, the chunks [lo, hi) of share
	// s not yet claimed. Thread s (the caller is 0, worker i is i+1) claims
	// its share from the front, in order, so that its weight stream stays
	// contiguous; a thread whose share is empty takes chunks from the back
	// of the others. Every claim is a CAS that also checks the generation,
	// so a worker that wakes late never touches a later job's state.
	shares []share
	done   atomic.Int64 // chunks of the current job completed
	wake   []chan struct{}
	asleep []atomic.Bool // worker i is parked (or about to park) on wake[i]

	// preallocated kernel jobs so that kernels do not allocate per call
	ext extTask
	mv  matVecTask
	mvs matVecsTask
	mm  matMulTask
	mms matMulsTask
	gb  gemmBTask

	// x reordered for the paired bf16 GEMV (guarded by mu), and per job of
	// a MatVecs batch
	xperm       []float32
	xps, xpbufs [][]float32
	// X reordered for the AVX2 bf16 tiles, per product of a MatMulsT batch (guarded by mu; matMulT uses xperm)
	xmm [maxMatMuls][]float32

	// Gemm's transposed operands, kept between calls (guarded by mu)
	scratchA, scratchB []float32
}

// NewPool starts threads-1 worker goroutines (threads <= 0 means
// runtime.NumCPU()). The workers live as long as the process; a Pool is meant
// to be created once per model.
func NewPool(threads int) *Pool {
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	p := &Pool{threads: threads, shares: make([]share, threads)}
	p.wake = make([]chan struct{}, threads-1)
	p.asleep = make([]atomic.Bool, threads-1)
	for i := range p.wake {
		p.wake[i] = make(chan struct{}, 1)
		go p.worker(i)
	}
	return p
}

// Threads reports the number of threads For splits work over (1 for a nil Pool).
func (p *Pool) Threads() int {
	if p == nil {
		return 1
	}
	return p.threads
}

// spinFor is how long an idle worker polls for the next job before parking.
// The decode loop issues a kernel every few microseconds; waking a parked
// goroutine costs tens of microseconds on a VM, so workers poll in between.
const spinFor = 300 * time.Microsecond

func (p *Pool) worker(i int) {
	var seen uint64 // generation 0 is never a job
	for {
		deadline := time.Time{}
		for spins := 0; p.word.Load()>>32 == seen; spins++ {
			if spins&1023 != 1023 {
				continue
			}
			now := time.Now()
			if deadline.IsZero() {
				deadline = now.Add(spinFor)
				continue
			}
			if now.Before(deadline) {
				runtime.Gosched()
				continue
			}
			// park: announce, re-check, then block until a job is posted
			p.asleep[i].Store(true)
			if p.word.Load()>>32 != seen && p.asleep[i].CompareAndSwap(true, false) {
				break
			}
			<-p.wake[i]
			break
		}
		seen = p.word.Load() >> 32
		p.work(seen, i+1)
	}
}

// share is one thread's part of a job (Pool.shares), alone in its cache line.
type share struct {
	_ [64]byte
	w atomic.Uint64
	_ [56]byte
}

// maxChunks bounds the chunks of one job (16 bits of the job word).
const maxChunks = 1<<16 - 1

// work runs chunks of job generation gen until none are left (or a later job
// has replaced it): share own from the front, then the other shares from the
// back.
func (p *Pool) work(gen uint64, own int) {
	n := int64(0)
	for k := range p.shares {
		s := &p.shares[(own+k)%len(p.shares)]
		for {
			w := s.w.Load()
			if w>>32 != gen {
				break
			}
			lo, hi := int(w>>16&0xffff), int(w&0xffff)
			if lo >= hi {
				break
			}
			c, nw := lo, w+1<<16
			if k > 0 {
				c, nw = hi-1, w-1
			}
			if !s.w.CompareAndSwap(w, nw) {
				continue
			}
			// chunk c is ours: the job cannot change until it is done
			p.runChunk(c)
			n++
		}
	}
	if n > 0 {
		p.done.Add(n)
	}
}

// runChunk runs chunk c of the current job.
func (p *Pool) runChunk(c int) {
	lo := c * p.n / p.chunks
	hi := (c + 1) * p.n / p.chunks
	if lo < hi {
		p.t.run(lo, hi)
	}
}

// For calls fn over disjoint sub-ranges covering [0, n), in parallel over the
// pool's threads, and returns when all are done. fn must be safe to call
// concurrently on disjoint ranges. With a nil pool, one thread, or n <= 1 it
// simply calls fn(0, n) (if n > 0).
func (p *Pool) For(n int, fn func(lo, hi int)) {
	if n <= 0 {
		return
	}
	p.run(n, p.Threads()*4, funcTask(fn))
}

// Task is a parallel job for Run: Run processes the index range [lo, hi), and must be safe to call
// concurrently on disjoint ranges.
type Task interface{ Run(lo, hi int) }

// extTask adapts a Task to the pool's job interface; the pool keeps one, so Run allocates nothing.
type extTask struct{ t Task }

func (e *extTask) run(lo, hi int) { e.t.Run(lo, hi) }

// Run is For for a Task value: a caller that keeps its job in a reused struct (instead of a new closure
// per call) runs it without allocating. It splits [0, n) into one contiguous share per thread, for jobs
// that stream memory (GEMVs): a share not yet claimed is still taken by whichever thread is free.
func (p *Pool) Run(n int, t Task) { p.runTask(n, 1, t) }

// RunBalanced is Run for compute-bound jobs (batched products whose weights come from the caches faster than
// they are multiplied): [0, n) in up to balanceChunks chunks per thread, each thread's share claimed from its
// front, so that a thread that finishes early (the other was slowed or descheduled) takes the last chunks of
// the others instead of waiting for them.
func (p *Pool) RunBalanced(n int, t Task) { p.runTask(n, balanceChunks, t) }

// balanceChunks is RunBalanced's chunks per thread.
const balanceChunks = 4

// runTask runs t over [0, n) in up to per chunks per thread.
func (p *Pool) runTask(n, per int, t Task) {
	if n <= 0 {
		return
	}
	if n == 1 || !p.acquire() {
		t.Run(0, n)
		return
	}
	p.ext.t = t
	p.runLocked(n, per*p.threads, &p.ext)
	p.ext.t = nil
	p.mu.Unlock()
}

// run splits [0, n) into at most maxChunks chunks and runs t over them in
// parallel, or inline when the pool is nil, single-threaded or busy.
func (p *Pool) run(n, maxChunks int, t task) {
	if n <= 0 {
		return
	}
	if n == 1 || maxChunks <= 1 || !p.acquire() {
		t.run(0, n)
		return
	}
	p.runLocked(n, maxChunks, t)
	p.mu.Unlock()
}

// acquire takes the pool for one parallel job. It reports false for a nil or
// single-threaded pool and when the pool is busy (the caller then runs inline).
func (p *Pool) acquire() bool {
	return p != nil && p.threads > 1 && p.mu.TryLock()
}

// runLocked runs t over [0, n) split into min(maxChunks, n) chunks claimed
// dynamically by the caller and the workers. p.mu must be held. The caller
// waits only for chunks that a worker has claimed and not finished: a worker
// that was descheduled before claiming anything is not waited for.
func (p *Pool) runLocked(n, chunks int, t task) {
	chunks = min(chunks, n, maxChunks)
	if chunks <= 1 {
		t.run(0, n)
		return
	}
	p.t, p.n, p.chunks = t, n, chunks
	p.done.Store(0)
	gen := p.word.Load()>>32 + 1
	if gen == 1<<32 {
		gen = 1
	}
	ns := len(p.shares)
	for i := range p.shares {
		lo, hi := uint64(i*chunks/ns), uint64((i+1)*chunks/ns)
		p.shares[i].w.Store(gen<<32 | lo<<16 | hi)
	}
	p.word.Store(gen<<32 | uint64(chunks))
	for i := range p.asleep {
		if p.asleep[i].CompareAndSwap(true, false) {
			p.wake[i] <- struct{}{}
		}
	}
	p.work(gen, 0)
	for spins := 0; p.done.Load() != int64(chunks); spins++ {
		if spins&255 == 255 {
			runtime.Gosched()
		}
	}
	p.t = nil
}
