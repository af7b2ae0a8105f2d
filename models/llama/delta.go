package llama

import (
	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/nn"
)

// Delta is an adapter's contribution to the base linears: ApplyRows adds it to rows rows at once (x [rows,in],
// y [rows,out]) for module ("model.layers.3.self_attn.q_proj", or "lm_head"), using p for its products (p may
// be busy, then its For runs inline); a module it does not touch is a no-op. *lora.Adapter and *lora.Packed
// implement it.
//
// Forward groups the sequences of a batch that share one Delta, comparing them with ==, so an implementation
// must be a comparable type (a pointer, as every one in lorakit is).
type Delta interface {
	ApplyRows(p *kernels.Pool, module string, y, x []float32, rows, in, out int)
}

// RowGroup is the rows of one Forward step that share an adapter: rows [Start, Start+N) of the stacked batch.
// Forward orders the sequences so that each adapter's rows are one contiguous group and applies the groups of
// every linear in one place (applyDeltas), which is where a kernel doing all groups of a module at once
// (Punica's SGMV) takes the step's []RowGroup.
type RowGroup struct {
	Start, N int
	Adapter  Delta
}

// bigGroup is the number of rows from which an adapter's delta gets the whole pool for its own products rather
// than running beside other adapters' deltas.
const bigGroup = 32

// orderByAdapter returns the batch reordered, stably by first appearance, so that the sequences sharing an
// adapter are adjacent; s.order[k] is the caller's index of the k-th sequence, and s.groups holds the rows of
// each adapter (sequences without one form no group). The returned slice is scratch, valid until the next call.
func (m *Model) orderByAdapter(batch []Seq) []Seq {
	s := &m.s
	s.order, s.seqs, s.groups = s.order[:0], s.seqs[:0], s.groups[:0]
	s.taken = append(s.taken[:0], make([]bool, len(batch))...)
	row := 0
	for i := range batch {
		if s.taken[i] {
			continue
		}
		d, start := batch[i].Adapter, row
		for j := i; j < len(batch); j++ {
			if !s.taken[j] && batch[j].Adapter == d {
				s.taken[j] = true
				s.order = append(s.order, j)
				s.seqs = append(s.seqs, batch[j])
				row += len(batch[j].Tokens)
			}
		}
		if d != nil {
			s.groups = append(s.groups, RowGroup{Start: start, N: row - start, Adapter: d})
		}
	}
	small := 0
	for _, g := range s.groups {
		if g.N < bigGroup {
			small++
		}
	}
	s.parallel = s.parallel[:0]
	for _, g := range s.groups {
		s.parallel = append(s.parallel, small > 1 && g.N < bigGroup) // small groups run beside each other
	}
	return s.seqs
}

// linear runs a base linear over all T rows at once, then adds the adapters' deltas.
func (m *Model) linear(lin nn.Linear, module string, y, x []float32, T int) {
	lin.Forward(m.Pool, y, x, T)
	if len(m.s.groups) > 0 {
		m.applyDeltas(module, y, x, lin.In(), lin.Out())
	}
}

// applyDeltas adds every group's delta for module to y [T, out] from x [T, in]: large groups one after another,
// each with the whole pool, and small ones beside each other over the pool.
func (m *Model) applyDeltas(module string, y, x []float32, in, out int) {
	s := &m.s
	s.dModule, s.dy, s.dx, s.dIn, s.dOut = module, y, x, in, out
	parallel := 0
	for g := range s.groups {
		if s.parallel[g] {
			parallel++
		} else {
			m.applyGroup(g)
		}
	}
	if parallel > 0 {
		m.Pool.For(len(s.groups), m.deltaFn)
	}
	s.dy, s.dx = nil, nil
}

// deltaRange applies the parallel groups in [lo, hi).
func (m *Model) deltaRange(lo, hi int) {
	for g := lo; g < hi; g++ {
		if m.s.parallel[g] {
			m.applyGroup(g)
		}
	}
}

// applyGroup adds group g's delta for the current linear (s.dModule) to its rows of s.dy.
func (m *Model) applyGroup(g int) {
	s := &m.s
	G := s.groups[g]
	in, out, r0, r1 := s.dIn, s.dOut, G.Start, G.Start+G.N
	G.Adapter.ApplyRows(m.Pool, s.dModule, s.dy[r0*out:r1*out], s.dx[r0*in:r1*in], G.N, in, out)
}
