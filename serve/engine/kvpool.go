package engine

import (
	"fmt"
	"sync"
)

// KVBlockSize is the number of token positions in one block of the KV budget (vLLM's default block size, and
// the prefix cache's block).
const KVBlockSize = PrefixBlock

// kvPool is the KV cache budget (Config.KVBlocks): a count of fixed-size blocks shared by every running
// sequence. A sequence holds the blocks its cached positions (and the prompt it was admitted for) fill; the
// engine admits a request only when its prompt's blocks are free, and preempts the most recently admitted
// sequence (freeing its blocks, to be recomputed later) when a decoding sequence needs a block and none is
// free. Blocks come back when a sequence finishes, fails, is cancelled or is preempted. take and put run on
// the engine goroutine, put also from the sampling workers (finish), hence the mutex. With a PagedBackend the
// blocks themselves are the engine's BlockPool (bounded by the same count): this then only keeps the size and
// the preemption count, and Engine.grow takes real blocks.
type kvPool struct {
	mu          sync.Mutex
	total, free int
	preemptions int64
}

// blocksFor is the number of blocks n positions fill.
func blocksFor(n int) int { return (n + KVBlockSize - 1) / KVBlockSize }

// grow raises s's blocks to cover n positions if the pool has them; false leaves s as it was.
func (p *kvPool) grow(s *seq, n int) bool {
	need := blocksFor(n) - s.blocks
	if need <= 0 {
		return true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if need > p.free {
		return false
	}
	p.free -= need
	s.blocks += need
	return true
}

// release returns all of s's blocks.
func (p *kvPool) release(s *seq) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.free += s.blocks
	s.blocks = 0
	if p.free > p.total {
		panic(fmt.Sprintf("engine: KV pool holds %d free blocks of %d", p.free, p.total))
	}
}

func (p *kvPool) used() (used, total int, preemptions int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.total - p.free, p.total, p.preemptions
}
