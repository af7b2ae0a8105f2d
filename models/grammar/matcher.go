package grammar

import (
	"encoding/binary"
	"slices"
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

// Matcher follows one generation through a grammar. Not safe for concurrent use; many Matchers may share a
// Grammar and a Vocab.
type Matcher struct {
	g     *Grammar
	v     *Vocab
	st    *stacks
	cur   []int32
	cache *maskCache
	// scratch for the trie walk
	arena []int32
	ends  []int
	key   []byte
	mask  []uint64
}

// NewMatcher starts a generation at the beginning of the grammar, for tokens of v.
func (g *Grammar) NewMatcher(v *Vocab) *Matcher {
	m := &Matcher{g: g, v: v, st: newStacks(), cache: g.cacheFor(v)}
	m.cur = g.closure(m.st, g.start, -1, nil, 0)
	slices.Sort(m.cur)
	return m
}

// AcceptBytes advances over b; it reports false (and leaves the state unchanged) when b cannot follow.
func (m *Matcher) AcceptBytes(b []byte) bool {
	cur := m.cur
	for _, c := range b {
		next := m.g.step(m.st, cur, c, nil)
		if len(next) == 0 {
			return false
		}
		cur = next
	}
	slices.Sort(cur)
	m.cur = cur
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

// CanEnd reports whether what was matched so far is complete.
func (m *Matcher) CanEnd() bool { return len(m.cur) > 0 && m.cur[0] == acceptID }

// Done reports whether the match is complete and nothing may follow (only end-of-sequence).
func (m *Matcher) Done() bool { return len(m.cur) == 1 && m.cur[0] == acceptID }

// stateKey is a canonical description of the current state, independent of the interning order, so that
// matchers of different requests share cached masks: each stack's nodes from the top down, sorted.
func (m *Matcher) stateKey() string {
	var parts [][]byte
	for _, id := range m.cur {
		var p []byte
		for x := id; x >= 0; x = m.st.of[x][1] {
			p = binary.LittleEndian.AppendUint32(p, uint32(m.st.of[x][0]))
		}
		parts = append(parts, binary.LittleEndian.AppendUint32(p, 0xffffffff))
	}
	slices.SortFunc(parts, func(a, b []byte) int { return slices.Compare(a, b) })
	key := m.key[:0]
	for _, p := range parts {
		key = append(key, p...)
	}
	m.key = key
	return string(key)
}
