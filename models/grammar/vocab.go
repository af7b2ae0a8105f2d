package grammar

import (
	"math"
	"math/bits"
	"slices"
	"sync"
)

// Vocab is a tokenizer's vocabulary as the bytes each token adds to the text, arranged as a trie for mask
// computation. Build one per tokenizer and share it; it is immutable.
type Vocab struct {
	toks [][]byte
	eos  []int
	// The trie in preorder: node i has byte tb[i] at depth td[i] (1 = first byte of a token); its subtree ends
	// before tnext[i]; the tokens ending at it are tids[tstart[i]:tstart[i+1]].
	tb     []byte
	td     []int32
	tnext  []int32
	tstart []int32
	tids   []int32
	maxLen int
}

// NewVocab builds a Vocab. tokens[id] is the exact byte string token id adds to the decoded text (after the
// first token: a SentencePiece "▁" is a space, a byte-fallback token its byte); a token with no bytes (special
// tokens) can never be generated under a constraint. eos are the end-of-sequence ids.
func NewVocab(tokens [][]byte, eos []int) *Vocab {
	v := &Vocab{toks: tokens, eos: append([]int(nil), eos...)}
	order := make([]int32, 0, len(tokens))
	for id, t := range tokens {
		if len(t) > 0 && !v.isEOS(id) {
			order = append(order, int32(id))
		}
	}
	slices.SortStableFunc(order, func(a, b int32) int { return slices.Compare(tokens[a], tokens[b]) })
	// Sorted token strings visit the trie in preorder: each token adds the nodes past its common prefix with
	// the previous one.
	var path []int32 // trie node index per depth on the current path
	var prev []byte
	for _, id := range order {
		t := tokens[id]
		common := 0
		for common < len(prev) && common < len(t) && prev[common] == t[common] {
			common++
		}
		path = path[:common]
		for d := common; d < len(t); d++ {
			v.tb = append(v.tb, t[d])
			v.td = append(v.td, int32(d+1))
			v.tstart = append(v.tstart, int32(len(v.tids)))
			path = append(path, int32(len(v.tb)-1))
		}
		v.tids = append(v.tids, id)
		prev = t
		v.maxLen = max(v.maxLen, len(t))
	}
	v.tstart = append(v.tstart, int32(len(v.tids)))
	// A token is listed at the node where it ends: the node list above appends ids as tokens complete, so the
	// ids of node i are those appended between the creation of node i and node i+1.
	v.tnext = make([]int32, len(v.tb))
	stack := []int32{}
	for i := range v.tb {
		for len(stack) > 0 && v.td[stack[len(stack)-1]] >= v.td[i] {
			v.tnext[stack[len(stack)-1]] = int32(i)
			stack = stack[:len(stack)-1]
		}
		stack = append(stack, int32(i))
	}
	for _, s := range stack {
		v.tnext[s] = int32(len(v.tb))
	}
	return v
}

// Size is the number of token ids.
func (v *Vocab) Size() int { return len(v.toks) }

func (v *Vocab) bytes(id int) []byte {
	if id < 0 || id >= len(v.toks) {
		return nil
	}
	return v.toks[id]
}

func (v *Vocab) isEOS(id int) bool {
	for _, e := range v.eos {
		if e == id {
			return true
		}
	}
	return false
}

// maskCache holds the masks of states already met, for one vocabulary, bounded in memory.
type maskCache struct {
	mu    sync.RWMutex
	m     map[int32][]uint64
	limit int
}

// maskCacheBytes bounds each grammar's cached masks per vocabulary.
const maskCacheBytes = 64 << 20

func (g *Grammar) cacheFor(v *Vocab) *maskCache {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.masks == nil {
		g.masks = map[*Vocab]*maskCache{}
	}
	c := g.masks[v]
	if c == nil {
		words := (len(v.toks) + 63) / 64
		c = &maskCache{m: map[int32][]uint64{}, limit: max(16, maskCacheBytes/(8*max(words, 1)))}
		g.masks[v] = c
	}
	return c
}

func (c *maskCache) get(s int32) []uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.m[s]
}

func (c *maskCache) put(s int32, mask []uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) < c.limit {
		c.m[s] = mask
	}
}

// Allowed returns the bit set (bit id%64 of word id/64) of the tokens that may come next, end-of-sequence ids
// included when the grammar is complete. The slice is shared: do not modify it.
func (m *Matcher) Allowed() []uint64 {
	if mask := m.cache.get(m.cur); mask != nil {
		return mask
	}
	mask := m.computeMask()
	m.cache.put(m.cur, mask)
	return mask
}

// computeMask walks the token trie against the current state, one transition per trie node, skipping the
// subtree below a byte the state rejects.
func (m *Matcher) computeMask() []uint64 {
	v, g := m.v, m.g
	mask := make([]uint64, (len(v.toks)+63)/64)
	state := make([]int32, v.maxLen+1) // state[d]: after the first d bytes of the current trie path
	g.dfa.mu.Lock()
	state[0] = m.cur
	for i := 0; i < len(v.tb); {
		d := v.td[i]
		next := g.move(state[d-1], v.tb[i])
		if next == deadState {
			i = int(v.tnext[i])
			continue
		}
		state[d] = next
		for _, id := range v.tids[v.tstart[i]:v.tstart[i+1]] {
			mask[id>>6] |= 1 << (id & 63)
		}
		i++
	}
	g.dfa.mu.Unlock()
	if m.CanEnd() {
		for _, id := range v.eos {
			if id >= 0 && id < len(v.toks) {
				mask[id>>6] |= 1 << (id & 63)
			}
		}
	}
	return mask
}

// Mask sets every logit of a token that may not come next to -Inf (ids past the vocabulary included) and
// reports how many tokens remain allowed.
func (m *Matcher) Mask(logits []float32) int {
	mask := m.Allowed()
	neg := float32(math.Inf(-1))
	n := 0
	for w := 0; w*64 < len(logits); w++ {
		var word uint64
		if w < len(mask) {
			word = mask[w]
		}
		n += bits.OnesCount64(word)
		base := w * 64
		end := min(base+64, len(logits))
		if word == math.MaxUint64 && end-base == 64 {
			continue
		}
		for i := base; i < end; i++ {
			if word&(1<<(i-base)) == 0 {
				logits[i] = neg
			}
		}
	}
	return n
}
