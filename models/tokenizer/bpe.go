package tokenizer

import (
	"fmt"
	"strings"
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
	// metaSplit: SentencePiece-style pieces are cut (and cached per word) before each ▁ that follows a
	// character x other than ▁ for which no merge result contains "x▁": no merge can cross such a cut.
	metaSplit bool
	metaBad   map[rune]bool // the characters x that do occur before ▁ in merge results

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

const metaspace = "▁"

// setMetaSplit decides metaSplit and metaBad from the merge results.
func (m *bpe) setMetaSplit(results []string) {
	if _, ok := m.vocab[metaspace]; !ok || m.ignoreMerges || !m.plainAffixes {
		return
	}
	m.metaBad = make(map[rune]bool)
	for _, r := range results {
		for i := 1; i < len(r); i++ {
			if strings.HasPrefix(r[i:], metaspace) {
				if x, _ := utf8.DecodeLastRuneInString(r[:i]); x != '▁' {
					m.metaBad[x] = true
				}
			}
		}
	}
	m.metaSplit = len(m.metaBad) < 64
}

// tokenize appends the ids of one pre-token.
func (m *bpe) tokenize(p piece, dst []int) []int {
	if !m.metaSplit || p.byteLevel {
		return m.tokenizeWord(p, dst)
	}
	s := p.s
	for len(s) > 0 {
		cut := len(s)
		for i := 1; i < len(s); i++ {
			if s[i] == metaspace[0] && strings.HasPrefix(s[i:], metaspace) {
				if x, _ := utf8.DecodeLastRuneInString(s[:i]); x != '▁' && !m.metaBad[x] {
					cut = i
					break
				}
			}
		}
		dst = m.tokenizeWord(piece{s: s[:cut]}, dst)
		s = s[cut:]
	}
	return dst
}

// tokenizeWord appends the ids of one word, through the cache.
func (m *bpe) tokenizeWord(p piece, dst []int) []int {
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

// mergeHeap is tokenizers' Word::merge_all for long words: a min-heap of (rank, position) keys packed in a
// uint64 (rank high, position low), so ties go to the leftmost pair.
func (m *bpe) mergeHeap(syms []symbol) {
	type item struct {
		key   uint64
		newID int
	}
	q := make([]item, 0, len(syms))
	less := func(i, j int) bool { return q[i].key < q[j].key }
	up := func(j int) {
		for j > 0 {
			i := (j - 1) / 2
			if !less(j, i) {
				break
			}
			q[i], q[j] = q[j], q[i]
			j = i
		}
	}
	down := func(i int) {
		n := len(q)
		for {
			l := 2*i + 1
			if l >= n {
				return
			}
			j := l
			if r := l + 1; r < n && less(r, l) {
				j = r
			}
			if !less(j, i) {
				return
			}
			q[i], q[j] = q[j], q[i]
			i = j
		}
	}
	push := func(rank, pos, id int) {
		q = append(q, item{uint64(rank)<<32 | uint64(pos), id})
		up(len(q) - 1)
	}
	for i := 0; i+1 < len(syms); i++ {
		if r, id, ok := m.lookup(syms[i].id, syms[i+1].id); ok {
			q = append(q, item{uint64(r)<<32 | uint64(i), id})
		}
	}
	for i := len(q)/2 - 1; i >= 0; i-- {
		down(i)
	}
	for len(q) > 0 {
		top := q[0]
		last := len(q) - 1
		q[0] = q[last]
		q = q[:last]
		if last > 0 {
			down(0)
		}
		pos := int(uint32(top.key))
		if syms[pos].size == 0 || syms[pos].next < 0 {
			continue
		}
		nextPos := syms[pos].next
		right := syms[nextPos]
		if _, id, ok := m.lookup(syms[pos].id, right.id); !ok || id != top.newID {
			continue
		}
		syms[pos].id = top.newID
		syms[pos].size += right.size
		syms[pos].next = right.next
		syms[nextPos].size = 0
		if right.next >= 0 {
			syms[right.next].prev = pos
		}
		cur := syms[pos]
		if cur.prev >= 0 {
			if r, id, ok := m.lookup(syms[cur.prev].id, cur.id); ok {
				push(r, cur.prev, id)
			}
		}
		if cur.next >= 0 {
			if r, id, ok := m.lookup(cur.id, syms[cur.next].id); ok {
				push(r, pos, id)
			}
		}
	}
}
