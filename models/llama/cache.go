package llama

import (
	"fmt"
	"strings"
	"sync"

	"github.com/lorakit/lorakit/models/safetensors"
)

// KVDType is the element type a KV cache stores its keys and values in.
type KVDType uint8

const (
	// KVF32 stores float32: the keys and values exactly as computed.
	KVF32 KVDType = iota
	// KVBF16 stores bfloat16 (rounded to nearest even): half the memory, and half the bytes attention reads per
	// cached position. Scores and the weighted sum of values are still computed in f32.
	KVBF16
)

// ParseKVDType reads a KV cache type: "f32" (or "float32") or "bf16" (or "bfloat16").
func ParseKVDType(s string) (KVDType, error) {
	switch strings.ToLower(s) {
	case "f32", "float32":
		return KVF32, nil
	case "bf16", "bfloat16":
		return KVBF16, nil
	}
	return 0, fmt.Errorf("KV cache dtype %q is not one of f32, bf16", s)
}

func (d KVDType) String() string {
	if d == KVBF16 {
		return "bf16"
	}
	return "f32"
}

// Size is the bytes of one stored element.
func (d KVDType) Size() int {
	if d == KVBF16 {
		return 2
	}
	return 4
}

// KVBlockSize is the number of positions one KV cache block holds (vLLM's default block size).
const KVBlockSize = 16

// blocksFor is the number of blocks n positions fill.
func blocksFor(n int) int { return (n + KVBlockSize - 1) / KVBlockSize }

// KVPool is paged KV cache memory: blocks of KVBlockSize positions, each holding the rotated keys and the values
// of those positions for every layer and key/value head, handed to caches (KVCache) by reference. A block is held
// by every cache whose block table names it and by every KVBlocks share of it (reference counts); it returns to
// the pool when the last holder lets go. Blocks full of a prompt prefix are shared between sequences without a
// copy: only positions at or after a cache's length are ever written, and a cache that writes into a shared block
// (after Truncate inside it) first takes its own copy of that block.
//
// Blocks live in arenas, each one allocation per key/value side in which every (layer, head) slot keeps its
// positions of consecutive blocks adjacent, so a run of consecutive block ids is one [positions, head_dim]
// matrix per slot (decode attention reads a cache run by run, in place; a blocked prefill gathers a span over
// several runs). The pool's methods may be called from several goroutines; a cache is used by one at a time.
type KVPool struct {
	mu             sync.Mutex
	slots          int // layers × key/value heads
	heads, headDim int
	maxLen         int // default cache size (max_position_embeddings)
	dtype          KVDType
	limit          int // most blocks; 0: no bound
	// private pools (one cache's, NewCacheDType) add arenas as large as every block before them (or as what one
	// Reserve asks for, up to the cache's size), so that a cache of n positions is log₂ n runs at most; shared
	// pools add arenas of at most arenaMax blocks. No pool ever moves a block.
	private   bool
	privateTo int // the private cache's size in blocks
	arenas    []*kvArena
	arenaOf   []int32 // block id → index in arenas
	refs      []int32 // holders of each block; 0: free
	nfree     int     // blocks allocated and free
}

// kvArena is the storage of the blocks first..first+n-1: slot i's positions of block id are
// k[i][(id-first)·KVBlockSize·headDim …] (k16 for bf16).
type kvArena struct {
	first    int
	k, v     [][]float32
	k16, v16 [][]uint16
}

// arenaMax is the most blocks one arena allocates at a time (1,024 positions).
const arenaMax = 64

// NewKVPool returns a pool of at most blocks KV blocks (0: no bound) of dtype dt for this model. Memory is
// allocated as blocks are first taken, at most arenaMax blocks at a time.
func (m *Model) NewKVPool(dt KVDType, blocks int) *KVPool {
	return &KVPool{slots: len(m.Layers) * m.Config.NumKeyValueHeads, heads: m.Config.NumKeyValueHeads,
		headDim: m.Config.HeadDim, maxLen: m.Config.MaxPositionEmbeddings, dtype: dt, limit: max(blocks, 0)}
}

// BlockBytes is the memory of one block: keys and values of KVBlockSize positions, every layer and head.
func (p *KVPool) BlockBytes() int64 {
	return int64(2*p.slots*KVBlockSize*p.headDim) * int64(p.dtype.Size())
}

// DType is the element type the pool's blocks store.
func (p *KVPool) DType() KVDType { return p.dtype }

// Free is the number of blocks that can still be taken: free ones and, under the bound, those not allocated
// yet (without a bound, the free ones already allocated).
func (p *KVPool) Free() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.limit > 0 {
		return p.nfree + p.limit - len(p.refs)
	}
	return p.nfree
}

// Used is the number of blocks some cache or share holds.
func (p *KVPool) Used() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.refs) - p.nfree
}

// Allocated is the memory of every block allocated so far (held or free).
func (p *KVPool) Allocated() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return int64(len(p.refs)) * p.BlockBytes()
}

// take returns a free block with one holder for the table entry after block prev (-1: none), allocating an
// arena when none is free (want: the blocks the caller is about to take, a private pool's arena holds them all);
// false when the pool is at its bound. So that a cache's blocks stay adjacent (read as one run), it takes the
// block after prev if that one is free, else the start of the longest free run if nothing before it in its
// arena is free, else the middle of that run, leaving the rest to the blocks before it to grow into. p.mu held.
func (p *KVPool) take(prev int32, want int) (int32, bool) {
	if next := int(prev) + 1; prev >= 0 && next < len(p.refs) && p.refs[next] == 0 && p.arenaOf[next] == p.arenaOf[prev] {
		p.refs[next] = 1
		p.nfree--
		return int32(next), true
	}
	if p.nfree == 0 {
		n := len(p.refs)
		nb := min(max(n, 4), arenaMax)
		if p.private {
			nb = max(min(max(n, 4), p.privateTo-n), want, 1)
		}
		if p.limit > 0 {
			nb = min(nb, p.limit-n)
		}
		if nb <= 0 {
			return 0, false
		}
		p.addArena(nb)
	}
	id := p.roomiest()
	p.refs[id] = 1
	p.nfree--
	return id, true
}

// roomiest is where take puts a block that cannot follow its predecessor: in the longest run of free blocks of
// one arena, its first block if the run starts its arena, else its middle. p.mu held, some block free.
func (p *KVPool) roomiest() int32 {
	best, bestLen, run := 0, 0, 0
	for id := range p.refs {
		if p.refs[id] != 0 || id > 0 && p.arenaOf[id] != p.arenaOf[id-1] {
			run = 0
		}
		if p.refs[id] == 0 {
			if run++; run > bestLen {
				best, bestLen = id-run+1, run
			}
		}
	}
	if best == p.arenas[p.arenaOf[best]].first {
		return int32(best)
	}
	return int32(best + bestLen/2)
}

// addArena allocates nb more blocks, free. p.mu held.
func (p *KVPool) addArena(nb int) {
	a := &kvArena{first: len(p.refs)}
	size := nb * KVBlockSize * p.headDim
	if p.dtype == KVBF16 {
		a.k16, a.v16 = splitSlots[uint16](p.slots, size), splitSlots[uint16](p.slots, size)
	} else {
		a.k, a.v = splitSlots[float32](p.slots, size), splitSlots[float32](p.slots, size)
	}
	idx := int32(len(p.arenas))
	p.arenas = append(p.arenas, a)
	p.nfree += nb
	for range nb {
		p.arenaOf = append(p.arenaOf, idx)
		p.refs = append(p.refs, 0)
	}
}

// splitSlots is n slices of size elements over one allocation.
func splitSlots[T float32 | uint16](n, size int) [][]T {
	buf := make([]T, n*size)
	s := make([][]T, n)
	for i := range s {
		s[i] = buf[i*size : (i+1)*size : (i+1)*size]
	}
	return s
}

// drop lets go of ids (their last holder returns them to the pool). p.mu held.
func (p *KVPool) drop(ids []int32) {
	for _, id := range ids {
		if p.refs[id] <= 0 {
			panic(fmt.Sprintf("llama: KV block %d released with %d holders", id, p.refs[id]))
		}
		if p.refs[id]--; p.refs[id] == 0 {
			p.nfree++
		}
	}
}

// at is the arena of block id and the offset of its first position in the arena's slots, in elements.
func (p *KVPool) at(id int32) (*kvArena, int) {
	a := p.arenas[p.arenaOf[id]]
	return a, (int(id) - a.first) * KVBlockSize * p.headDim
}

// copyBlock copies the first n positions of block src into block dst, every slot. p.mu held.
func (p *KVPool) copyBlock(dst, src int32, n int) {
	ad, od := p.at(dst)
	as, os := p.at(src)
	e := n * p.headDim
	for i := range p.slots {
		if p.dtype == KVBF16 {
			copy(ad.k16[i][od:od+e], as.k16[i][os:os+e])
			copy(ad.v16[i][od:od+e], as.v16[i][os:os+e])
			continue
		}
		copy(ad.k[i][od:od+e], as.k[i][os:os+e])
		copy(ad.v[i][od:od+e], as.v[i][os:os+e])
	}
}

// KVCache holds the rotated keys and the values of one sequence as a block table into a KVPool: position p is
// position p mod KVBlockSize of block table[p / KVBlockSize]. Blocks are taken as positions are added, so the
// cache holds exactly the blocks its positions (and what Reserve asked for) fill.
type KVCache struct {
	pool  *KVPool
	table []int32
	n     int // cached positions
	max   int
}

// NewCache returns an empty f32 cache for up to maxLen positions (maxLen <= 0: max_position_embeddings), with a
// pool of its own.
func (m *Model) NewCache(maxLen int) *KVCache { return m.NewCacheDType(maxLen, KVF32) }

// NewCacheDType is NewCache storing the keys and values as dt.
func (m *Model) NewCacheDType(maxLen int, dt KVDType) *KVCache {
	p := m.NewKVPool(dt, 0)
	c := p.NewCache(maxLen)
	p.private, p.privateTo = true, blocksFor(c.max)
	return c
}

// NewCache returns an empty cache for up to maxLen positions (maxLen <= 0: max_position_embeddings) whose
// blocks come from p.
func (p *KVPool) NewCache(maxLen int) *KVCache {
	if maxLen <= 0 {
		maxLen = p.maxLen
	}
	return &KVCache{pool: p, max: maxLen, table: make([]int32, 0, min(blocksFor(maxLen), arenaMax))}
}

// Len is the number of cached positions, the position of the next token.
func (c *KVCache) Len() int { return c.n }

// Cap is the maximum number of positions.
func (c *KVCache) Cap() int { return c.max }

// DType is the element type the cache stores.
func (c *KVCache) DType() KVDType { return c.pool.dtype }

// Blocks is the number of blocks the cache holds.
func (c *KVCache) Blocks() int { return len(c.table) }

// Bytes is the memory of the blocks the cache holds (shared ones included).
func (c *KVCache) Bytes() int64 { return int64(len(c.table)) * c.pool.BlockBytes() }

// Reset empties the cache and returns its blocks (Release).
func (c *KVCache) Reset() { c.Release() }

// Release returns every block of the cache to its pool (shared ones when their last holder lets go) and empties
// it; the cache may be used again.
func (c *KVCache) Release() {
	c.n = 0
	c.dropFrom(0)
}

// Truncate drops every position at or after n (e.g. to reuse a shared prompt prefix), returning the blocks past
// the one position n falls in.
func (c *KVCache) Truncate(n int) {
	if n >= 0 && n < c.n {
		c.n = n
		c.dropFrom(blocksFor(n))
	}
}

// dropFrom returns the blocks of the table from index b on.
func (c *KVCache) dropFrom(b int) {
	if b < len(c.table) {
		c.pool.mu.Lock()
		c.pool.drop(c.table[b:])
		c.pool.mu.Unlock()
		c.table = c.table[:b]
	}
}

// Reserve makes the cache hold the blocks n positions fill, and its own copy of the block its next position
// goes into if that block is shared. On error (the pool is at its bound) it holds what it held before.
func (c *KVCache) Reserve(n int) error {
	p := c.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	if b := c.n / KVBlockSize; c.n%KVBlockSize != 0 && b < len(c.table) && p.refs[c.table[b]] > 1 {
		prev := int32(-1)
		if b > 0 {
			prev = c.table[b-1]
		}
		id, ok := p.take(prev, 1)
		if !ok {
			return fmt.Errorf("llama: KV pool of %d blocks has none free for a copy of a shared block", p.limit)
		}
		p.copyBlock(id, c.table[b], c.n%KVBlockSize)
		p.drop(c.table[b : b+1])
		c.table[b] = id
	}
	had := len(c.table)
	for len(c.table) < blocksFor(n) {
		prev := int32(-1)
		if len(c.table) > 0 {
			prev = c.table[len(c.table)-1]
		}
		id, ok := p.take(prev, blocksFor(n)-len(c.table))
		if !ok {
			p.drop(c.table[had:])
			c.table = c.table[:had]
			return fmt.Errorf("llama: KV pool of %d blocks has %d free, %d positions need %d more",
				p.limit, p.nfree, n, blocksFor(n)-had)
		}
		c.table = append(c.table, id)
	}
	return nil
}

// put stores position pos of layer l from rows k and v of kv_heads·head_dim floats (its block is reserved).
func (c *KVCache) put(l, pos int, k, v []float32) {
	p := c.pool
	D := p.headDim
	a, off := p.at(c.table[pos/KVBlockSize])
	off += pos % KVBlockSize * D
	for h := range p.heads {
		i, src := l*p.heads+h, h*D
		if a.k16 != nil {
			kd, vd := a.k16[i][off:off+D], a.v16[i][off:off+D]
			for j := range kd {
				kd[j] = safetensors.F32ToBF16(k[src+j])
				vd[j] = safetensors.F32ToBF16(v[src+j])
			}
			continue
		}
		copy(a.k[i][off:off+D], k[src:src+D])
		copy(a.v[i][off:off+D], v[src:src+D])
	}
}

// span returns slot i's keys and values of positions [lo, hi) as [hi-lo, head_dim] matrices: in place when their
// blocks are consecutive in one arena, else gathered block by block into *bk and *bv (grown as needed).
// pick selects the arena's storage of the element type T.
func span[T float32 | uint16](c *KVCache, pick func(*kvArena) (k, v [][]T), i, lo, hi int, bk, bv *[]T) (k, v []T) {
	p, D := c.pool, c.pool.headDim
	b0, b1 := lo/KVBlockSize, (hi-1)/KVBlockSize
	first := p.arenaOf[c.table[b0]]
	inPlace := true
	for b := b0 + 1; b <= b1 && inPlace; b++ {
		inPlace = c.table[b] == c.table[b-1]+1 && p.arenaOf[c.table[b]] == first
	}
	if inPlace {
		a, off := p.at(c.table[b0])
		ak, av := pick(a)
		off += lo % KVBlockSize * D
		return ak[i][off : off+(hi-lo)*D], av[i][off : off+(hi-lo)*D]
	}
	n := (hi - lo) * D
	if cap(*bk) < n {
		*bk, *bv = make([]T, n, 2*n), make([]T, n, 2*n)
	}
	k, v = (*bk)[:n], (*bv)[:n]
	for b := b0; b <= b1; b++ {
		from, to := max(lo, b*KVBlockSize), min(hi, (b+1)*KVBlockSize)
		a, off := p.at(c.table[b])
		ak, av := pick(a)
		off += from % KVBlockSize * D
		copy(k[(from-lo)*D:(to-lo)*D], ak[i][off:off+(to-from)*D])
		copy(v[(from-lo)*D:(to-lo)*D], av[i][off:off+(to-from)*D])
	}
	return k, v
}

// kvRuns appends to k and v slot i's keys and values of positions [lo, hi), in place: one [positions, head_dim]
// matrix per stretch of the block table whose blocks are consecutive in one arena, in position order.
func kvRuns[T float32 | uint16](c *KVCache, pick func(*kvArena) (k, v [][]T), i, lo, hi int, k, v [][]T) ([][]T, [][]T) {
	p, D := c.pool, c.pool.headDim
	for b0, b1 := lo/KVBlockSize, (hi-1)/KVBlockSize; b0 <= b1; {
		b := b0 + 1
		for b <= b1 && c.table[b] == c.table[b-1]+1 && p.arenaOf[c.table[b]] == p.arenaOf[c.table[b0]] {
			b++
		}
		from, to := max(lo, b0*KVBlockSize), min(hi, b*KVBlockSize)
		a, off := p.at(c.table[b0])
		ak, av := pick(a)
		off += from % KVBlockSize * D
		k, v = append(k, ak[i][off:off+(to-from)*D]), append(v, av[i][off:off+(to-from)*D])
		b0 = b
	}
	return k, v
}

func pickF32(a *kvArena) (k, v [][]float32) { return a.k, a.v }
func pickBF16(a *kvArena) (k, v [][]uint16) { return a.k16, a.v16 }

// KVBlocks is a share of whole blocks of one cache's positions, every layer: what a prefix cache keeps of a
// prompt's blocks so that another sequence with the same prefix (and adapter) attaches them instead of
// recomputing them. It holds its blocks until Release.
type KVBlocks struct {
	pool *KVPool
	ids  []int32
}

// Len is the number of positions held.
func (r *KVBlocks) Len() int { return len(r.ids) * KVBlockSize }

// Bytes is the memory of the blocks held.
func (r *KVBlocks) Bytes() int64 { return int64(len(r.ids)) * r.pool.BlockBytes() }

// Shared reports whether some cache or other share holds one of the blocks too.
func (r *KVBlocks) Shared() bool {
	r.pool.mu.Lock()
	defer r.pool.mu.Unlock()
	for _, id := range r.ids {
		if r.pool.refs[id] > 1 {
			return true
		}
	}
	return false
}

// Release lets go of the blocks; later calls do nothing.
func (r *KVBlocks) Release() {
	r.pool.mu.Lock()
	defer r.pool.mu.Unlock()
	r.pool.drop(r.ids)
	r.ids = nil
}

// Share returns a share of the cached positions [from, to), which must be whole blocks.
func (c *KVCache) Share(from, to int) (*KVBlocks, error) {
	if from < 0 || from > to || to > c.n || from%KVBlockSize != 0 || to%KVBlockSize != 0 {
		return nil, fmt.Errorf("llama: KV positions [%d, %d) are not whole blocks of the %d cached positions", from, to, c.n)
	}
	ids := append([]int32(nil), c.table[from/KVBlockSize:to/KVBlockSize]...)
	c.pool.mu.Lock()
	defer c.pool.mu.Unlock()
	for _, id := range ids {
		c.pool.refs[id]++
	}
	return &KVBlocks{pool: c.pool, ids: ids}, nil
}

// Attach adds shared blocks of the same pool after the cached positions, in order, all or none: they must hold
// the keys and values the model would compute at these positions, as Share of a sequence with the same tokens
// before them gives. The cache's length must be a whole number of blocks; blocks it had reserved there are
// returned.
func (c *KVCache) Attach(shares ...*KVBlocks) error {
	n := 0
	for _, r := range shares {
		if r.pool != c.pool {
			return fmt.Errorf("llama: KV blocks of another pool (%s, %d slots × %d) cannot attach to this cache (%s, %d slots × %d)",
				r.pool.dtype, r.pool.slots, r.pool.headDim, c.pool.dtype, c.pool.slots, c.pool.headDim)
		}
		n += r.Len()
	}
	if c.n%KVBlockSize != 0 {
		return fmt.Errorf("llama: cannot attach KV blocks after %d positions (not a whole block)", c.n)
	}
	if c.n+n > c.max {
		return fmt.Errorf("llama: %d attached KV positions after %d exceed the cache's %d", n, c.n, c.max)
	}
	p := c.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range shares {
		for _, id := range r.ids {
			p.refs[id]++
			if b := c.n / KVBlockSize; b < len(c.table) {
				p.drop(c.table[b : b+1])
				c.table[b] = id
			} else {
				c.table = append(c.table, id)
			}
			c.n += KVBlockSize
		}
	}
	return nil
}
