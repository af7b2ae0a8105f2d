package engine

import (
	"container/list"
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"sync"
	"sync/atomic"
)

// KVBlocks is implemented by a Backend whose states can share key/value blocks. Prefix caching keeps a share of
// the whole prompt blocks of a sequence that prefilled them and attaches it to a new sequence with the same
// prefix and adapter, which then prefills only the rest.
type KVBlocks interface {
	// ExportKV shares the state's positions [from, to) (whole blocks).
	ExportKV(s State, from, to int) (KV, error)
	// ImportKV appends blocks ExportKV gave, in order, after the state's positions; all or none.
	ImportKV(s State, kvs []KV) error
}

// KV is a share of some positions' keys and values (KVBlocks), held until Release.
type KV interface {
	Bytes() int64
	// Shared reports whether a state (or another share) holds its blocks too: releasing it would free nothing.
	Shared() bool
	Release()
}

// PrefixBlock is the number of prompt tokens a prefix-cache block holds (vLLM's default block size).
const PrefixBlock = 16

// blockKey is a block's chained hash: SHA-256 of the parent block's key, the adapter's identity and the block's
// tokens, as vLLM's automatic prefix caching hashes blocks; equal keys mean an equal prefix under one adapter.
type blockKey [sha256.Size]byte

// prefixEntry is one cached block. It keeps what its key was made of, so a lookup checks the chain exactly and a
// hash collision can never serve the wrong rows.
type prefixEntry struct {
	key, parent blockKey
	adapter     Delta
	tokens      []int
	kv          KV
	elem        *list.Element
}

// prefixCache holds KV rows of prompt blocks keyed by chained block hash, LRU-evicted under a byte bound. Only
// the engine goroutine calls its methods but release (also called from the sampling workers); the counters are
// read by Stats from any goroutine.
type prefixCache struct {
	mu       sync.Mutex // release runs from finish, which sampling workers call
	kv       KVBlocks
	limit    int64
	bytes    int64
	blocks   map[blockKey]*prefixEntry
	lru      *list.List // front: most recently used
	adapters map[Delta]*adapterID
	nextID   uint64
	// queries and hits count prompt tokens looked up and found (vllm:prefix_cache_queries / _hits).
	queries, hits atomic.Int64
}

// adapterID numbers an adapter for hashing while some cached block or running sequence uses it (both hold the
// Delta, so its identity cannot pass to another adapter meanwhile, and a reloaded adapter gets a new number).
type adapterID struct {
	id   uint64
	refs int
}

func newPrefixCache(kv KVBlocks, limit int64) *prefixCache {
	return &prefixCache{kv: kv, limit: limit, blocks: map[blockKey]*prefixEntry{}, lru: list.New(),
		adapters: map[Delta]*adapterID{}}
}

// keys returns the chained keys of the whole blocks of prompt under adapter, which it holds until release. An
// adapter not yet numbered gets a fresh number, which no cached block uses.
func (c *prefixCache) keys(adapter Delta, prompt []int) []blockKey {
	c.mu.Lock()
	id := c.hold(adapter)
	c.mu.Unlock()
	out := make([]blockKey, 0, len(prompt)/PrefixBlock)
	var parent blockKey
	buf := make([]byte, 0, len(parent)+8+8*PrefixBlock)
	for b := 0; (b+1)*PrefixBlock <= len(prompt); b++ {
		buf = append(buf[:0], parent[:]...)
		buf = binary.LittleEndian.AppendUint64(buf, id)
		for _, t := range prompt[b*PrefixBlock : (b+1)*PrefixBlock] {
			buf = binary.LittleEndian.AppendUint64(buf, uint64(t))
		}
		parent = sha256.Sum256(buf)
		out = append(out, parent)
	}
	return out
}

// hold returns adapter's number for hashing (0 for the base model) and counts one more user of it.
func (c *prefixCache) hold(adapter Delta) uint64 {
	if adapter == nil {
		return 0
	}
	a, ok := c.adapters[adapter]
	if !ok {
		c.nextID++
		a = &adapterID{id: c.nextID}
		c.adapters[adapter] = a
	}
	a.refs++
	return a.id
}

// release drops one user of adapter's number, and the number with the last.
func (c *prefixCache) release(adapter Delta) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.drop(adapter)
}

// drop is release with c.mu held.
func (c *prefixCache) drop(adapter Delta) {
	if a, ok := c.adapters[adapter]; ok {
		if a.refs--; a.refs <= 0 {
			delete(c.adapters, adapter)
		}
	}
}

// lookup extends state, which holds the first `from` positions of prompt (whole blocks found by an earlier
// lookup, or none), with the rest of the longest cached chain of prompt's blocks, leaving at least the last
// prompt token to prefill so that the first logits are computed, and returns the positions state then holds.
func (c *prefixCache) lookup(state State, adapter Delta, prompt []int, keys []blockKey, from int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var parent blockKey
	var chain []*prefixEntry
	for b, k := range keys {
		if (b+1)*PrefixBlock >= len(prompt) {
			break // the last token is always prefilled
		}
		e, ok := c.blocks[k]
		if !ok || e.parent != parent || e.adapter != adapter || !slices.Equal(e.tokens, prompt[b*PrefixBlock:(b+1)*PrefixBlock]) {
			break
		}
		chain = append(chain, e)
		parent = k
	}
	have := from / PrefixBlock
	if len(chain) <= have {
		return from // nothing more cached
	}
	kvs := make([]KV, 0, len(chain)-have)
	for _, e := range chain[have:] {
		kvs = append(kvs, e.kv)
	}
	if c.kv.ImportKV(state, kvs) != nil {
		return from // the state refuses the blocks: prefill them instead
	}
	for _, e := range chain {
		c.lru.MoveToFront(e.elem)
	}
	return len(chain) * PrefixBlock
}

// store caches the whole prompt blocks of state in [from, to) positions (multiples of PrefixBlock) that are not
// cached yet, and evicts the least recently used blocks over the bound.
func (c *prefixCache) store(state State, adapter Delta, prompt []int, keys []blockKey, from, to int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for b := from / PrefixBlock; b < to/PrefixBlock && b < len(keys); b++ {
		k := keys[b]
		if e, ok := c.blocks[k]; ok {
			c.lru.MoveToFront(e.elem)
			continue
		}
		kv, err := c.kv.ExportKV(state, b*PrefixBlock, (b+1)*PrefixBlock)
		if err != nil {
			return
		}
		e := &prefixEntry{key: k, adapter: adapter, tokens: slices.Clone(prompt[b*PrefixBlock : (b+1)*PrefixBlock]), kv: kv}
		if b > 0 {
			e.parent = keys[b-1]
		}
		e.elem = c.lru.PushFront(e)
		c.blocks[k] = e
		c.bytes += kv.Bytes()
		c.hold(adapter) // the sequence storing holds it: the number stays the one keys used
	}
	for c.bytes > c.limit && c.evictIdle() {
	}
}

// trim evicts the least recently used blocks no running sequence holds while the cache is over its bound (after
// a sequence let go of blocks that store could not evict).
func (c *prefixCache) trim() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.bytes > c.limit && c.evictIdle() {
	}
}

// size is the memory of the cached blocks.
func (c *prefixCache) size() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}

// evictIdle drops the least recently used block that no running sequence holds (dropping one a sequence holds
// would free no memory) and reports whether there was one. c.mu held.
func (c *prefixCache) evictIdle() bool {
	for el := c.lru.Back(); el != nil; el = el.Prev() {
		if e := el.Value.(*prefixEntry); !e.kv.Shared() {
			c.evict(e)
			return true
		}
	}
	return false
}

// reclaim is evictIdle for the engine, which frees KV blocks for a sequence.
func (c *prefixCache) reclaim() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.evictIdle()
}

// idle is the number of cached blocks no running sequence holds: blocks in use that reclaim can free.
func (c *prefixCache) idle() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for el := c.lru.Front(); el != nil; el = el.Next() {
		if !el.Value.(*prefixEntry).kv.Shared() {
			n++
		}
	}
	return n
}

// evict drops one block (and the adapter's number once no block uses it). c.mu held.
func (c *prefixCache) evict(e *prefixEntry) {
	c.lru.Remove(e.elem)
	delete(c.blocks, e.key)
	c.bytes -= e.kv.Bytes()
	e.kv.Release()
	c.drop(e.adapter)
}
