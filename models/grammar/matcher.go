package grammar

import (
	"encoding/binary"
	"slices"
	"sync"
)

// acceptID in a state set marks that the root rule has been matched completely.
const acceptID = -1

// stacks interns call stacks: id → (node, parent id), parent -1 at the root. A state is a sorted set of ids of
// stacks whose top is a node with byte edges (plus acceptID).
type stacks struct {
	of  [][2]int32
	ids map[[2]int32]int32
}

func newStacks() *stacks { return &stacks{ids: map[[2]int32]int32{}} }

func (s *stacks) intern(node, parent int32) int32 {
	k := [2]int32{node, parent}
	if id, ok := s.ids[k]; ok {
		return id
	}
	id := int32(len(s.of))
	s.of = append(s.of, k)
	s.ids[k] = id
	return id
}

// closure appends to out the stacks reached from node (with parent below it) without input; out[base:] is the
// set being built (duplicates are not added).
func (g *Grammar) closure(st *stacks, node, parent int32, out []int32, base int) []int32 {
	for _, it := range g.items[node] {
		p := parent
		for _, r := range it.push {
			p = st.intern(r, p)
		}
		out = addID(out, base, st.intern(it.node, p))
	}
	if g.ends[node] {
		if parent < 0 {
			return addID(out, base, acceptID)
		}
		up := st.of[parent]
		out = g.closure(st, up[0], up[1], out, base)
	}
	return out
}

func addID(out []int32, base int, id int32) []int32 {
	for _, x := range out[base:] {
		if x == id {
			return out
		}
	}
	return append(out, id)
}

// step appends to out the state after byte c from state in.
func (g *Grammar) step(st *stacks, in []int32, c byte, out []int32) []int32 {
	base := len(out)
	for _, id := range in {
		if id < 0 {
			continue
		}
		top := st.of[id]
		for _, e := range g.nodes[top[0]].edges {
			if e.lo <= c && c <= e.hi {
				out = g.closure(st, e.to, top[1], out, base)
			}
		}
	}
	return out
}

// dfa is the grammar's automaton made deterministic lazily, shared by every Matcher of the grammar: a state is
// an interned set of stacks, and its transitions are computed the first time a byte is tried from it. A mask
// walk of the vocabulary trie then costs one table lookup per trie node once the states around are known.
type dfa struct {
	mu    sync.Mutex
	st    *stacks
	sets  [][]int32        // state → sorted stack ids (acceptID first when present)
	ids   map[string]int32 // set key → state
	trans [][]int32        // state → 256 next states (noState unknown, deadState none), nil until walked
	key   []byte
	next  []int32
}

const (
	noState   = -2
	deadState = -1
	// maxTables bounds the states whose transition tables are kept (1 KiB each); past it transitions are
	// computed each time, which only costs speed.
	maxTables = 1 << 13
)

// stateOf interns a set of stacks (sorted here) as a state.
func (d *dfa) stateOf(set []int32) int32 {
	slices.Sort(set)
	d.key = d.key[:0]
	for _, id := range set {
		d.key = binary.LittleEndian.AppendUint32(d.key, uint32(id))
	}
	if s, ok := d.ids[string(d.key)]; ok {
		return s
	}
	s := int32(len(d.sets))
	d.sets = append(d.sets, slices.Clone(set))
	d.ids[string(d.key)] = s
	d.trans = append(d.trans, nil)
	return s
}

// move is the state after byte c from state s (deadState when c cannot follow). Call with d.mu held.
func (g *Grammar) move(s int32, c byte) int32 {
	d := &g.dfa
	if t := d.trans[s]; t != nil && t[c] != noState {
		return t[c]
	}
	d.next = g.step(d.st, d.sets[s], c, d.next[:0])
	next := int32(deadState)
	if len(d.next) > 0 {
		next = d.stateOf(d.next)
	}
	t := d.trans[s]
	if t == nil && s < maxTables {
		t = make([]int32, 256)
		for i := range t {
			t[i] = noState
		}
		d.trans[s] = t
	}
	if t != nil {
		t[c] = next
	}
	return next
}

// Matcher follows one generation through a grammar. Not safe for concurrent use; many Matchers may share a
// Grammar and a Vocab.
type Matcher struct {
	g     *Grammar
	v     *Vocab
	cur   int32 // dfa state
	cache *maskCache
}

// NewMatcher starts a generation at the beginning of the grammar, for tokens of v.
func (g *Grammar) NewMatcher(v *Vocab) *Matcher {
	g.dfa.mu.Lock()
	defer g.dfa.mu.Unlock()
	if g.dfa.st == nil {
		g.dfa.st, g.dfa.ids = newStacks(), map[string]int32{}
		g.dfa.stateOf(g.closure(g.dfa.st, g.start, -1, nil, 0)) // state 0
	}
	return &Matcher{g: g, v: v, cur: 0, cache: g.cacheFor(v)}
}

// AcceptBytes advances over b; it reports false (and leaves the state unchanged) when b cannot follow.
func (m *Matcher) AcceptBytes(b []byte) bool {
	m.g.dfa.mu.Lock()
	defer m.g.dfa.mu.Unlock()
	s := m.cur
	for _, c := range b {
		if s = m.g.move(s, c); s == deadState {
			return false
		}
	}
	m.cur = s
	return true
}

// AcceptToken advances over token id; false when the token may not follow (the state is then unchanged). An
// end-of-sequence token is accepted only when the grammar is complete.
func (m *Matcher) AcceptToken(id int) bool {
	if m.v.isEOS(id) {
		return m.CanEnd()
	}
	b := m.v.bytes(id)
	if len(b) == 0 {
		return false
	}
	return m.AcceptBytes(b)
}

func (m *Matcher) set() []int32 {
	m.g.dfa.mu.Lock()
	defer m.g.dfa.mu.Unlock()
	return m.g.dfa.sets[m.cur]
}

// CanEnd reports whether what was matched so far is complete.
func (m *Matcher) CanEnd() bool {
	set := m.set()
	return len(set) > 0 && set[0] == acceptID
}

// Done reports whether the match is complete and nothing may follow (only end-of-sequence).
func (m *Matcher) Done() bool {
	set := m.set()
	return len(set) == 1 && set[0] == acceptID
}

// States is how many automaton states the grammar's matchers have reached so far (it grows as generations meet
// new states; a server drops a grammar that grew too large and compiles it afresh).
func (g *Grammar) States() int {
	g.dfa.mu.Lock()
	defer g.dfa.mu.Unlock()
	return len(g.dfa.sets)
}
