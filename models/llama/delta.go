package llama

import (
	"reflect"
	"slices"

	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/nn"
)

// Delta adds per-row LoRA contributions. Forward calls it after every base linear, for each row of a sequence
// that uses it: y[out] += s·B·(A·x[in]). module is like "model.layers.3.self_attn.q_proj" (or "lm_head").
type Delta interface {
	Apply(module string, y, x []float32, in, out int)
}

// RowsDelta is an optional extension of Delta: ApplyRows adds the contribution to rows rows at once (x [rows,in],
// y [rows,out]), using p for its products (p may be busy, then its For runs inline). Forward gathers the rows of
// every sequence that shares one Delta value and calls ApplyRows once per module, for different Delta values
// concurrently; without it, Forward calls Apply once per row, sequentially.
type RowsDelta interface {
	ApplyRows(p *kernels.Pool, module string, y, x []float32, rows, in, out int)
}

// deltaGroup is the rows of the sequences that share one RowsDelta (or of one sequence with a plain Delta).
type deltaGroup struct {
	d        Delta
	rd       RowsDelta // d as a RowsDelta, or nil
	off, n   int       // rows perm[off : off+n]
	first    int       // perm[off] when the rows are contiguous in the batch, else -1 (gathered into gx/gy)
	parallel bool      // runs beside other groups over the pool (small RowsDelta groups)
}

// linear runs a base linear over all T rows at once, then adds the adapters' deltas.
func (m *Model) linear(lin nn.Linear, module string, y, x []float32, T int) {
	lin.Forward(m.Pool, y, x, T)
	if len(m.s.groups) == 0 {
		return
	}
	s := &m.s
	s.dModule, s.dy, s.dx, s.dIn, s.dOut = module, y, x, lin.In(), lin.Out()
	parallel := 0
	for g := range s.groups {
		if s.groups[g].parallel {
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

// bigGroup is the number of rows from which an adapter's delta gets the whole pool for its own products rather
// than running beside other adapters' deltas.
const bigGroup = 32

// groupDeltas groups the batch's rows by adapter: the sequences sharing one RowsDelta value form one group (its
// rows go through A and B together), a plain Delta gets a group per sequence.
func (m *Model) groupDeltas(batch []Seq) {
	s := &m.s
	s.groups, s.perm = s.groups[:0], s.perm[:0]
	r0 := 0
	for i, sq := range batch {
		r := r0
		r0 += len(sq.Tokens)
		if sq.Adapter == nil {
			continue
		}
		rd, _ := sq.Adapter.(RowsDelta)
		shared := rd != nil && reflect.TypeOf(sq.Adapter).Comparable()
		if shared && slices.ContainsFunc(batch[:i], func(p Seq) bool { return p.Adapter == sq.Adapter }) {
			continue // already in an earlier sequence's group
		}
		g := deltaGroup{d: sq.Adapter, rd: rd, off: len(s.perm), first: r}
		for j := i; j < len(batch); j++ {
			if j == i || shared && batch[j].Adapter == sq.Adapter {
				for k := range batch[j].Tokens {
					s.perm = append(s.perm, r+k)
				}
			}
			r += len(batch[j].Tokens)
		}
		g.n = len(s.perm) - g.off
		for k, row := range s.perm[g.off:] {
			if row != g.first+k {
				g.first = -1
				break
			}
		}
		s.groups = append(s.groups, g)
	}
	small := 0
	for _, g := range s.groups {
		if g.rd != nil && g.n < bigGroup {
			small++
		}
	}
	for i := range s.groups {
		g := &s.groups[i]
		g.parallel = small > 1 && g.rd != nil && g.n < bigGroup
	}
}

// deltaRange applies the parallel groups in [lo, hi).
func (m *Model) deltaRange(lo, hi int) {
	for g := lo; g < hi; g++ {
		if m.s.groups[g].parallel {
			m.applyGroup(g)
		}
	}
}

// applyGroup adds group g's delta for the current linear (s.dModule) to s.dy.
func (m *Model) applyGroup(g int) {
	s := &m.s
	G := &s.groups[g]
	module, y, x, in, out := s.dModule, s.dy, s.dx, s.dIn, s.dOut
	rows := s.perm[G.off : G.off+G.n]
	switch {
	case G.rd == nil: // a plain Delta: one row at a time
		for _, r := range rows {
			G.d.Apply(module, y[r*out:(r+1)*out], x[r*in:(r+1)*in], in, out)
		}
	case G.first >= 0:
		r := G.first
		G.rd.ApplyRows(m.Pool, module, y[r*out:(r+G.n)*out], x[r*in:(r+G.n)*in], G.n, in, out)
	default: // gather the rows, apply, scatter-add
		gx, gy := s.gx[G.off*in:(G.off+G.n)*in], s.gy[G.off*out:(G.off+G.n)*out]
		for k, r := range rows {
			copy(gx[k*in:(k+1)*in], x[r*in:(r+1)*in])
		}
		clear(gy)
		G.rd.ApplyRows(m.Pool, module, gy, gx, G.n, in, out)
		for k, r := range rows {
			kernels.Axpy(1, gy[k*out:(k+1)*out], y[r*out:(r+1)*out])
		}
	}
}
