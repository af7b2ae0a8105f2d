package tokenizer

import (
	"container/heap"
	"fmt"
	"sync"
	"unicode/utf8"
)

// bpe is tokenizers' BPE model.
type bpe struct {
	vocab        map[string]int
	merges       map[uint64]uint64 // (left<<32 | right) -> (rank<<32 | merged id)
	unkID        int               // -1 when there is no unk_token
	fuseUnk      bool
	byteFallback bool
	ignoreMerges bool
	contPrefix   string
	eowSuffix    string
	byteIDs      [256]int // id of the byte-level character of each byte, -1 if missing
	fallbackIDs  [256]int // id of "<0xNN>", -1 if missing
	plainAffixes bool     // no continuing_subword_prefix / end_of_word_suffix

	mu    sync.Mutex
	cache map[string][]int
}

const (
	cacheMaxEntries = 1 << 16
	cacheMaxWordLen = 256
)

func pairKey(a, b int) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

func (m *bpe) init() {
	m.plainAffixes = m.contPrefix == "" && m.eowSuffix == ""
	for b := 0; b < 256; b++ {
		m.byteIDs[b], m.fallbackIDs[b] = -1, -1
		if id, ok := m.vocab[byteToStr[b]]; ok {
			m.byteIDs[b] = id
		}
		if id, ok := m.vocab[fmt.Sprintf("<0x%02X>", b)]; ok {
			m.fallbackIDs[b] = id
		}
	}
	m.cache = make(map[string][]int)
}

// tokenize appends the ids of one pre-token.
func (m *bpe) tokenize(p piece, dst []int) []int {
	cacheable := len(p.s) < cacheMaxWordLen
	if cacheable {
		m.mu.Lock()
		ids, ok := m.cache[p.s]
		m.mu.Unlock()
		if ok {
			return append(dst, ids...)
		}
	}
	start := len(dst)
	dst = m.tokenizeUncached(p, dst)
	if cacheable {
		ids := append([]int(nil), dst[start:]...)
		m.mu.Lock()
		if len(m.cache) >= cacheMaxEntries {
			clear(m.cache)
		}
		m.cache[p.s] = ids
		m.mu.Unlock()
	}
	return dst
}

// symbol is one part of a word during merging.
type symbol struct {
	id         int
	prev, next int // indices, -1 at the ends
	size       int // byte length in the (mapped) word; 0 once merged away
}

func (m *bpe) tokenizeUncached(p piece, dst []int) []int {
	var buf [64]symbol
	syms := buf[:0]
	if p.byteLevel && m.plainAffixes {
		if m.ignoreMerges {
			if id, ok := m.vocab[byteLevelEncode(p.s)]; ok {
				return append(dst, id)
			}
		}
		for i := 0; i < len(p.s); i++ {
			id := m.byteIDs[p.s[i]]
			if id < 0 {
				syms = syms[:0]
				break
			}
			syms = append(syms, symbol{id: id, size: 1})
		}
		if len(syms) != len(p.s) {
			p = materialize(p)
			syms = m.initialSymbols(p.s, syms)
		}
	} else {
		p = materialize(p)
		if m.ignoreMerges {
			if id, ok := m.vocab[p.s]; ok {
				return append(dst, id)
			}
		}
		syms = m.initialSymbols(p.s, syms)
	}
	n := len(syms)
	for i := range syms {
		syms[i].prev, syms[i].next = i-1, i+1
	}
	if n > 0 {
		syms[n-1].next = -1
	}
	if n <= 48 {
		m.mergeSmall(syms)
	} else {
		m.mergeHeap(syms)
	}
	for i := range syms {
		if syms[i].size > 0 {
			dst = append(dst, syms[i].id)
		}
	}
	return dst
}

// initialSymbols splits a word into characters as tokenizers' merge_word does: vocabulary characters (with the
// subword prefix / end-of-word suffix), else byte-fallback tokens, else unk (fused when fuse_unk).
func (m *bpe) initialSymbols(w string, syms []symbol) []symbol {
	unkPending, unkSize := false, 0
	for i := 0; i < len(w); {
		_, sz := utf8.DecodeRuneInString(w[i:])
		s := w[i : i+sz]
		isFirst, isLast := i == 0, i+sz == len(w)
		key := s
		if !m.plainAffixes {
			if !isFirst {
				key = m.contPrefix + key
			}
			if isLast {
				key += m.eowSuffix
			}
		}
		i += sz
		if id, ok := m.vocab[key]; ok {
			if unkPending {
				syms = append(syms, symbol{id: m.unkID, size: unkSize})
				unkPending = false
			}
			syms = append(syms, symbol{id: id, size: sz})
			continue
		}
		if m.byteFallback {
			all := true
			for k := 0; k < len(key); k++ {
				if m.fallbackIDs[key[k]] < 0 {
					all = false
					break
				}
			}
			if all {
				for k := 0; k < len(key); k++ {
					syms = append(syms, symbol{id: m.fallbackIDs[key[k]], size: 1})
				}
				continue
			}
		}
		if m.unkID < 0 {
			continue // tokenizers would fail; lorakit drops the character
		}
		if unkPending {
			if m.fuseUnk {
				unkSize += sz
				continue
			}
			syms = append(syms, symbol{id: m.unkID, size: unkSize})
		}
		unkPending, unkSize = true, sz
	}
	if unkPending {
		syms = append(syms, symbol{id: m.unkID, size: unkSize})
	}
	return syms
}

func (m *bpe) lookup(a, b int) (rank, id int, ok bool) {
	v, ok := m.merges[pairKey(a, b)]
	if !ok {
		return 0, 0, false
	}
	return int(v >> 32), int(uint32(v)), true
}

// mergeSmall repeatedly merges the lowest-ranked adjacent pair (leftmost on ties), keeping each symbol's
// rank with its right neighbour. Equivalent to tokenizers' priority-queue loop.
func (m *bpe) mergeSmall(syms []symbol) {
	const none = int(^uint(0) >> 1)
	var rbuf [48]int
	var ibuf [48]int
	ranks, newIDs := rbuf[:len(syms)], ibuf[:len(syms)]
	for i := range syms {
		ranks[i] = none
		if syms[i].next >= 0 {
			if r, id, ok := m.lookup(syms[i].id, syms[syms[i].next].id); ok {
				ranks[i], newIDs[i] = r, id
			}
		}
	}
	for {
		best := -1
		for i := 0; i >= 0 && i < len(syms); i = syms[i].next {
			if ranks[i] != none && (best < 0 || ranks[i] < ranks[best]) {
				best = i
			}
		}
		if best < 0 {
			return
		}
		right := syms[best].next
		syms[best].id = newIDs[best]
		syms[best].size += syms[right].size
		syms[right].size = 0
		syms[best].next = syms[right].next
		if syms[right].next >= 0 {
			syms[syms[right].next].prev = best
		}
		ranks[best] = none
		if nx := syms[best].next; nx >= 0 {
			if r, id, ok := m.lookup(syms[best].id, syms[nx].id); ok {
				ranks[best], newIDs[best] = r, id
			}
		}
		if pv := syms[best].prev; pv >= 0 {
			ranks[pv] = none
			if r, id, ok := m.lookup(syms[pv].id, syms[best].id); ok {
				ranks[pv], newIDs[pv] = r, id
			}
		}
	}
}

type mergeItem struct{ rank, pos, newID int }
type mergeQueue []mergeItem

func (q mergeQueue) Len() int { return len(q) }
func (q mergeQueue) Less(i, j int) bool {
	if q[i].rank != q[j].rank {
		return q[i].rank < q[j].rank
	}
	return q[i].pos < q[j].pos
}
func (q mergeQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *mergeQueue) Push(x any)   { *q = append(*q, x.(mergeItem)) }
func (q *mergeQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// mergeHeap is tokenizers' Word::merge_all for long words.
func (m *bpe) mergeHeap(syms []symbol) {
	q := make(mergeQueue, 0, len(syms))
	for i := 0; i+1 < len(syms); i++ {
		if r, id, ok := m.lookup(syms[i].id, syms[i+1].id); ok {
			q = append(q, mergeItem{r, i, id})
		}
	}
	heap.Init(&q)
	for q.Len() > 0 {
		top := heap.Pop(&q).(mergeItem)
		if syms[top.pos].size == 0 || syms[top.pos].next < 0 {
			continue
		}
		nextPos := syms[top.pos].next
		right := syms[nextPos]
		if _, id, ok := m.lookup(syms[top.pos].id, right.id); !ok || id != top.newID {
			continue
		}
		syms[top.pos].id = top.newID
		syms[top.pos].size += right.size
		syms[top.pos].next = right.next
		syms[nextPos].size = 0
		if right.next >= 0 {
			syms[right.next].prev = top.pos
		}
		cur := syms[top.pos]
		if cur.prev >= 0 {
			if r, id, ok := m.lookup(syms[cur.prev].id, cur.id); ok {
				heap.Push(&q, mergeItem{r, cur.prev, id})
			}
		}
		if cur.next >= 0 {
			if r, id, ok := m.lookup(cur.id, syms[cur.next].id); ok {
				heap.Push(&q, mergeItem{r, top.pos, id})
			}
		}
	}
}
