package llama

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
