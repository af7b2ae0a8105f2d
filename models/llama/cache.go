package llama

import (
	"fmt"
	"slices"
)

// KVCache holds the rotated keys and the values of one sequence, per layer, as rows of
// num_key_value_heads·head_dim floats. Storage grows on demand (doubling) up to the size given to NewCache, so
// a large maximum costs nothing until it is used.
type KVCache struct {
	k, v  [][]float32 // [layer][pos*kvDim + head*headDim + i]
	n     int         // cached positions
	max   int
	kvDim int
}

// NewCache returns an empty cache for up to maxLen positions (maxLen <= 0: max_position_embeddings).
func (m *Model) NewCache(maxLen int) *KVCache {
	if maxLen <= 0 {
		maxLen = m.Config.MaxPositionEmbeddings
	}
	c := &KVCache{max: maxLen, kvDim: m.Config.KVDim()}
	c.k = make([][]float32, len(m.Layers))
	c.v = make([][]float32, len(m.Layers))
	return c
}

// Len is the number of cached positions, the position of the next token.
func (c *KVCache) Len() int { return c.n }

// Cap is the maximum number of positions.
func (c *KVCache) Cap() int { return c.max }

// Reset empties the cache, keeping its storage.
func (c *KVCache) Reset() { c.n = 0 }

// Truncate drops every position at or after n (e.g. to reuse a shared prompt prefix).
func (c *KVCache) Truncate(n int) {
	if n >= 0 && n < c.n {
		c.n = n
	}
}

// reserve makes room for n positions.
func (c *KVCache) reserve(n int) {
	need := n * c.kvDim
	if len(c.k) == 0 || len(c.k[0]) >= need {
		return
	}
	size := max(need, 2*len(c.k[0]), 16*c.kvDim)
	size = min(size, c.max*c.kvDim)
	for l := range c.k {
		k := make([]float32, size)
		copy(k, c.k[l][:c.n*c.kvDim])
		c.k[l] = k
		v := make([]float32, size)
		copy(v, c.v[l][:c.n*c.kvDim])
		c.v[l] = v
	}
}

// KVRows is a copy of the keys and values of consecutive positions of one sequence, every layer: what a prefix
// cache keeps of a prompt block so that another sequence with the same prefix (and adapter) appends it instead
// of recomputing it.
type KVRows struct {
	k, v  [][]float32 // [layer][pos*kvDim + …]
	n     int
	kvDim int
}

// Len is the number of positions held.
func (r *KVRows) Len() int { return r.n }

// Bytes is the memory the rows hold.
func (r *KVRows) Bytes() int64 { return int64(2*len(r.k)*r.n*r.kvDim) * 4 }

// Rows copies the cached positions [from, to).
func (c *KVCache) Rows(from, to int) (*KVRows, error) {
	if from < 0 || from > to || to > c.n {
		return nil, fmt.Errorf("llama: KV rows [%d, %d) outside the %d cached positions", from, to, c.n)
	}
	r := &KVRows{k: make([][]float32, len(c.k)), v: make([][]float32, len(c.v)), n: to - from, kvDim: c.kvDim}
	for l := range c.k {
		r.k[l] = slices.Clone(c.k[l][from*c.kvDim : to*c.kvDim])
		r.v[l] = slices.Clone(c.v[l][from*c.kvDim : to*c.kvDim])
	}
	return r, nil
}

// Append adds rows copied from caches of the same model after the cached positions, in order: they must be the
// keys and values the model would compute at these positions, as Rows of a sequence with the same tokens before
// them gives. Storage is grown once for all of them.
func (c *KVCache) Append(rows ...*KVRows) error {
	n := 0
	for _, r := range rows {
		if r.kvDim != c.kvDim || len(r.k) != len(c.k) {
			return fmt.Errorf("llama: KV rows of %d layers × %d do not fit a cache of %d × %d", len(r.k), r.kvDim, len(c.k), c.kvDim)
		}
		n += r.n
	}
	if c.n+n > c.max {
		return fmt.Errorf("llama: %d KV rows after %d positions exceed the cache's %d", n, c.n, c.max)
	}
	// room for the rest of the prompt and what follows too: reserving exactly c.n+n would reallocate (and copy
	// every imported row again) at the very next Forward
	c.reserve(min(c.max, 2*(c.n+n)))
	for _, r := range rows {
		for l := range c.k {
			copy(c.k[l][c.n*c.kvDim:], r.k[l])
			copy(c.v[l][c.n*c.kvDim:], r.v[l])
		}
		c.n += r.n
	}
	return nil
}
