package llama

import (
	"fmt"
	"slices"
	"strings"

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

// KVCache holds the rotated keys and the values of one sequence, per layer and key/value head, as rows of
// head_dim elements, one per position (head-major: each head's positions are contiguous, so attention reads
// one head's keys and values as plain [positions, head_dim] matrices). Storage grows on demand (doubling) up to
// the size given to NewCache, so a large maximum costs nothing until it is used.
type KVCache struct {
	// k, v (f32) or k16, v16 (bf16) are [layer*heads + head][pos*headDim + i]; the other pair is nil.
	k, v     [][]float32
	k16, v16 [][]uint16
	n        int // cached positions
	max      int
	room     int // positions allocated
	heads    int // key/value heads
	headDim  int
	dtype    KVDType
}

// NewCache returns an empty f32 cache for up to maxLen positions (maxLen <= 0: max_position_embeddings).
func (m *Model) NewCache(maxLen int) *KVCache { return m.NewCacheDType(maxLen, KVF32) }

// NewCacheDType is NewCache storing the keys and values as dt.
func (m *Model) NewCacheDType(maxLen int, dt KVDType) *KVCache {
	if maxLen <= 0 {
		maxLen = m.Config.MaxPositionEmbeddings
	}
	c := &KVCache{max: maxLen, heads: m.Config.NumKeyValueHeads, headDim: m.Config.HeadDim, dtype: dt}
	n := len(m.Layers) * c.heads
	if dt == KVBF16 {
		c.k16, c.v16 = make([][]uint16, n), make([][]uint16, n)
	} else {
		c.k, c.v = make([][]float32, n), make([][]float32, n)
	}
	return c
}

// Len is the number of cached positions, the position of the next token.
func (c *KVCache) Len() int { return c.n }

// Cap is the maximum number of positions.
func (c *KVCache) Cap() int { return c.max }

// DType is the element type the cache stores.
func (c *KVCache) DType() KVDType { return c.dtype }

// Reset empties the cache, keeping its storage.
func (c *KVCache) Reset() { c.n = 0 }

// Truncate drops every position at or after n (e.g. to reuse a shared prompt prefix).
func (c *KVCache) Truncate(n int) {
	if n >= 0 && n < c.n {
		c.n = n
	}
}

// slots is the number of (layer, head) rows of storage.
func (c *KVCache) slots() int { return max(len(c.k), len(c.k16)) }

// reserve makes room for n positions.
func (c *KVCache) reserve(n int) {
	if n <= c.room || c.slots() == 0 {
		return
	}
	room := min(max(n, 2*c.room, 16), c.max)
	D := c.headDim
	regrow(c.k, room*D, c.n*D)
	regrow(c.v, room*D, c.n*D)
	regrow(c.k16, room*D, c.n*D)
	regrow(c.v16, room*D, c.n*D)
	c.room = room
}

// regrow moves the first used elements of every slot of s into one new backing array of size elements per slot
// (one allocation for all layers and heads).
func regrow[T float32 | uint16](s [][]T, size, used int) {
	if len(s) == 0 {
		return
	}
	buf := make([]T, len(s)*size)
	for i := range s {
		part := buf[i*size : (i+1)*size : (i+1)*size]
		copy(part, s[i][:used])
		s[i] = part
	}
}

// put stores position pos of layer l from rows k and v of kv_heads·head_dim floats.
func (c *KVCache) put(l, pos int, k, v []float32) {
	D := c.headDim
	for h := range c.heads {
		i, src := l*c.heads+h, h*D
		if c.k16 != nil {
			kd, vd := c.k16[i][pos*D:(pos+1)*D], c.v16[i][pos*D:(pos+1)*D]
			for j := range kd {
				kd[j] = safetensors.F32ToBF16(k[src+j])
				vd[j] = safetensors.F32ToBF16(v[src+j])
			}
			continue
		}
		copy(c.k[i][pos*D:(pos+1)*D], k[src:src+D])
		copy(c.v[i][pos*D:(pos+1)*D], v[src:src+D])
	}
}

// KVRows is a copy of the keys and values of consecutive positions of one sequence, every layer: what a prefix
// cache keeps of a prompt block so that another sequence with the same prefix (and adapter) appends it instead
// of recomputing it.
type KVRows struct {
	k, v     [][]float32 // [layer*heads + head][pos*headDim + …], f32 caches
	k16, v16 [][]uint16  // the same, bf16 caches
	n        int
	heads    int
	headDim  int
	dtype    KVDType
}

// Len is the number of positions held.
func (r *KVRows) Len() int { return r.n }

// Bytes is the memory the rows hold.
func (r *KVRows) Bytes() int64 {
	return int64(2*max(len(r.k), len(r.k16))*r.n*r.headDim) * int64(r.dtype.Size())
}

// Rows copies the cached positions [from, to).
func (c *KVCache) Rows(from, to int) (*KVRows, error) {
	if from < 0 || from > to || to > c.n {
		return nil, fmt.Errorf("llama: KV rows [%d, %d) outside the %d cached positions", from, to, c.n)
	}
	D := c.headDim
	r := &KVRows{n: to - from, heads: c.heads, headDim: D, dtype: c.dtype}
	if c.k16 != nil {
		r.k16, r.v16 = make([][]uint16, len(c.k16)), make([][]uint16, len(c.v16))
		for i := range c.k16 {
			r.k16[i] = slices.Clone(c.k16[i][from*D : to*D])
			r.v16[i] = slices.Clone(c.v16[i][from*D : to*D])
		}
		return r, nil
	}
	r.k, r.v = make([][]float32, len(c.k)), make([][]float32, len(c.v))
	for i := range c.k {
		r.k[i] = slices.Clone(c.k[i][from*D : to*D])
		r.v[i] = slices.Clone(c.v[i][from*D : to*D])
	}
	return r, nil
}

// Append adds rows copied from caches of the same model and dtype after the cached positions, in order: they
// must be the keys and values the model would compute at these positions, as Rows of a sequence with the same
// tokens before them gives. Storage is grown once for all of them.
func (c *KVCache) Append(rows ...*KVRows) error {
	n := 0
	for _, r := range rows {
		if r.heads != c.heads || r.headDim != c.headDim || len(r.k) != len(c.k) || len(r.k16) != len(c.k16) ||
			r.dtype != c.dtype {
			return fmt.Errorf("llama: KV rows of %d %s slots × %d × %d do not fit a cache of %d %s slots × %d × %d",
				max(len(r.k), len(r.k16)), r.dtype, r.heads, r.headDim, c.slots(), c.dtype, c.heads, c.headDim)
		}
		n += r.n
	}
	if c.n+n > c.max {
		return fmt.Errorf("llama: %d KV rows after %d positions exceed the cache's %d", n, c.n, c.max)
	}
	// room for the rest of the prompt and what follows too: reserving exactly c.n+n would reallocate (and copy
	// every imported row again) at the very next Forward
	c.reserve(min(c.max, 2*(c.n+n)))
	D := c.headDim
	for _, r := range rows {
		for i := range c.k {
			copy(c.k[i][c.n*D:], r.k[i])
			copy(c.v[i][c.n*D:], r.v[i])
		}
		for i := range c.k16 {
			copy(c.k16[i][c.n*D:], r.k16[i])
			copy(c.v16[i][c.n*D:], r.v16[i])
		}
		c.n += r.n
	}
	return nil
}
