package grammar

import (
	"fmt"
	"slices"
	"sync"
)

// maxNodes bounds a compiled grammar (enough for schemas with hundreds of properties and long patterns).
const maxNodes = 1 << 20

// builder collects rules before compilation.
type builder struct {
	rules []*expr
	names []string
}

// rule reserves a rule (so that it can be referenced before it is defined).
func (b *builder) rule(name string) int {
	b.rules = append(b.rules, nil)
	b.names = append(b.names, name)
	return len(b.rules) - 1
}

func (b *builder) define(r int, e *expr) { b.rules[r] = e }

// node is one NFA node. A node consumes a byte through its ranges, moves without input through eps, or calls a
// rule (pushing ret as the return node). end marks the end of its rule.
type node struct {
	edges []edge
	eps   []int32
	call  int32 // rule start node, or -1
	ret   int32
	end   bool
}

type edge struct {
	lo, hi byte
	to     int32
}

// item is a node with byte edges reachable from another node without input: reaching it pushes push (outermost
// first) onto the stack.
type item struct {
	push []int32
	node int32
}

// Grammar is a compiled grammar. It is immutable except for its mask caches, and safe for concurrent use.
type Grammar struct {
	nodes []node
	items [][]item // per node: the byte nodes reachable without input
	ends  []bool   // per node: the end of its rule is reachable without input
	start int32    // root rule's start node

	dfa dfa

	mu    sync.Mutex
	masks map[*Vocab]*maskCache
}

// compile builds the NFA of every rule and the closures; root is the rule generation starts in.
func (b *builder) compile(root int) (*Grammar, error) {
	total := 0
	for i, r := range b.rules {
		if r == nil {
			return nil, fmt.Errorf("grammar: rule %s is not defined", b.names[i])
		}
		total += r.size()
	}
	if total > maxNodes {
		return nil, &Error{Keyword: "grammar", Msg: fmt.Sprintf("the constraint compiles to about %d automaton states, more than the %d allowed; simplify it (fewer or shorter alternatives, smaller bounds)", total, maxNodes)}
	}
	c := &compiler{starts: make([]int32, len(b.rules)), finals: make([]int32, len(b.rules))}
	for i := range b.rules {
		c.starts[i] = c.newNode()
		c.finals[i] = c.newNode()
		c.nodes[c.finals[i]].end = true
	}
	for i, r := range b.rules {
		c.expr(r, c.starts[i], c.finals[i])
	}
	for i := range c.nodes {
		if n := &c.nodes[i]; n.call >= 0 {
			n.call = c.starts[n.call] // rule index → start node
		}
	}
	g := &Grammar{nodes: c.nodes, start: c.starts[root]}
	if err := g.closures(c.starts, b.names); err != nil {
		return nil, err
	}
	return g, nil
}

type compiler struct {
	nodes          []node
	starts, finals []int32
}

func (c *compiler) newNode() int32 {
	c.nodes = append(c.nodes, node{call: -1})
	return int32(len(c.nodes) - 1)
}

func (c *compiler) eps(from, to int32) { c.nodes[from].eps = append(c.nodes[from].eps, to) }

// expr wires e between in and out (Thompson's construction, a fresh node between the parts).
func (c *compiler) expr(e *expr, in, out int32) {
	switch e.op {
	case opEmpty:
		c.eps(in, out)
	case opBytes:
		for _, r := range e.ranges {
			c.nodes[in].edges = append(c.nodes[in].edges, edge{r.lo, r.hi, out})
		}
	case opSeq:
		cur := in
		for i, s := range e.subs {
			next := out
			if i < len(e.subs)-1 {
				next = c.newNode()
			}
			c.expr(s, cur, next)
			cur = next
		}
	case opAlt:
		for _, s := range e.subs {
			a, z := c.newNode(), c.newNode()
			c.eps(in, a)
			c.expr(s, a, z)
			c.eps(z, out)
		}
	case opRep:
		cur := in
		for range e.min {
			next := c.newNode()
			c.expr(e.subs[0], cur, next)
			cur = next
		}
		if e.max < 0 {
			loop := c.newNode()
			c.eps(cur, loop)
			body := c.newNode()
			c.eps(loop, body)
			c.expr(e.subs[0], body, loop)
			c.eps(loop, out)
			return
		}
		for range e.max - e.min {
			next := c.newNode()
			c.eps(cur, out)
			c.expr(e.subs[0], cur, next)
			cur = next
		}
		c.eps(cur, out)
	case opRef:
		n := c.newNode()
		c.eps(in, n)
		c.nodes[n].call = int32(e.rule) // mapped to the start node once all rules exist
		c.nodes[n].ret = out
	}
}

// closures computes, for every node, the byte nodes reachable without input (with the calls that reach them)
// and whether its rule's end is reachable; rules that match the empty string are found first.
func (g *Grammar) closures(starts []int32, names []string) error {
	n := len(g.nodes)
	nullable := map[int32]bool{} // by start node
	// ends(n) given the current nullable set, by a search over eps and nullable calls.
	reachEnd := func(from int32) bool {
		seen := map[int32]bool{from: true}
		stack := []int32{from}
		for len(stack) > 0 {
			x := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			nd := &g.nodes[x]
			if nd.end {
				return true
			}
			next := nd.eps
			if nd.call >= 0 && nullable[nd.call] {
				next = append(next[:len(next):len(next)], nd.ret)
			}
			for _, y := range next {
				if !seen[y] {
					seen[y] = true
					stack = append(stack, y)
				}
			}
		}
		return false
	}
	for changed := true; changed; {
		changed = false
		for _, s := range starts {
			if !nullable[s] && reachEnd(s) {
				nullable[s] = true
				changed = true
			}
		}
	}
	g.ends = make([]bool, n)
	for i := range g.nodes {
		g.ends[i] = reachEnd(int32(i))
	}
	g.items = make([][]item, n)
	state := make([]uint8, n) // 0 new, 1 in progress, 2 done
	ruleName := map[int32]string{}
	for i, s := range starts {
		ruleName[s] = names[i]
	}
	var visit func(x int32) error
	visit = func(x int32) error {
		switch state[x] {
		case 2:
			return nil
		case 1:
			return nil // an eps cycle: its items are gathered by the node that started it
		}
		state[x] = 1
		var out []item
		seen := map[int32]bool{}
		stack := []int32{x}
		seen[x] = true
		for len(stack) > 0 {
			y := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			nd := &g.nodes[y]
			if len(nd.edges) > 0 {
				out = appendItem(out, item{node: y})
			}
			next := nd.eps
			if nd.call >= 0 {
				if state[nd.call] == 1 {
					return &Error{Keyword: "grammar", Msg: fmt.Sprintf("rule %s refers to itself before consuming any input (left recursion, e.g. a $ref cycle through anyOf)", ruleName[nd.call])}
				}
				if err := visit(nd.call); err != nil {
					return err
				}
				for _, it := range g.items[nd.call] {
					push := append([]int32{nd.ret}, it.push...)
					out = appendItem(out, item{push: push, node: it.node})
				}
				if nullable[nd.call] {
					next = append(next[:len(next):len(next)], nd.ret)
				}
			}
			for _, z := range next {
				if !seen[z] {
					seen[z] = true
					stack = append(stack, z)
				}
			}
		}
		g.items[x] = out
		state[x] = 2
		return nil
	}
	for _, s := range starts {
		if err := visit(s); err != nil {
			return err
		}
	}
	for i := range g.nodes {
		if err := visit(int32(i)); err != nil {
			return err
		}
	}
	return nil
}

func appendItem(out []item, it item) []item {
	for _, o := range out {
		if o.node == it.node && slices.Equal(o.push, it.push) {
			return out
		}
	}
	return append(out, it)
}
