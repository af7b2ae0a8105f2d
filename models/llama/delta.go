package llama

import (
	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/lora"
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

// TokenEmbedder is a Delta that also replaces rows of the input embedding (trained special tokens, PEFT's
// trainable_token_indices): EmbedRow writes token id's row into dst and reports whether it has one. Forward looks
// up the tokens of a sequence through its adapter when the adapter implements it; the LM head's replaced rows
// arrive through ApplyRows("lm_head"), which overwrites their logits.
type TokenEmbedder interface {
	EmbedRow(id int, dst []float32) bool
}

// RowGroup is the rows of one Forward step that share an adapter: rows [Start, Start+N) of the stacked batch.
// Forward orders the sequences so that each adapter's rows are one contiguous group and applies the groups of
// every linear in one place (applyDeltas).
type RowGroup struct {
	Start, N int
	Adapter  Delta
}

// Factored is a Delta that hands out its factors per module (*lora.Packed): applyDeltas then runs every such
// group of a linear as one batched LoRA call (lora.Batch, the SGMV of Punica and S-LoRA) instead of one
// ApplyRows per group.
type Factored interface {
	Delta
	Module(module string) *lora.Factors // nil: the module is not adapted
}

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
	return s.seqs
}

// linear runs a base linear over all T rows at once, then adds the adapters' deltas.
func (m *Model) linear(lin nn.Linear, module string, y, x []float32, T int) {
	lin.Forward(m.Pool, y, x, T)
	if len(m.s.groups) > 0 {
		m.applyDeltas(module, y, x, lin.In(), lin.Out())
	}
}

// linearsShared is linear for layer modules that all take x (q, k and v; gate and up): their base products run
// as one where they can share x's quantisation or one pool pass (nn.ForwardShared), then the modules' deltas
// are added, the batched ones of all the modules in one pool job (lora.Batch.ApplyShared).
func (m *Model) linearsShared(lins []nn.Linear, modules []string, ys [][]float32, x []float32, T int) {
	nn.ForwardShared(m.Pool, &m.s.jobs, ys, lins, x, T)
	if len(m.s.groups) == 0 {
		return
	}
	s := &m.s
	s.segs, s.targets = s.segs[:0], s.targets[:0]
	for i, lin := range lins {
		s.segs = m.deltaSegs(s.segs, modules[i], ys[i], x, lin.In(), lin.Out())
		s.targets = append(s.targets, lora.Target{Y: ys[i], Out: lin.Out()})
		s.ends = append(s.ends[:i], len(s.segs))
	}
	start := 0
	for i := range s.targets {
		s.targets[i].Segs = s.segs[start:s.ends[i]]
		start = s.ends[i]
	}
	if len(s.segs) > 0 {
		s.lb.ApplyShared(m.Pool, x, lins[0].In(), s.targets)
	}
	clear(s.segs) // do not keep adapters alive after the call
	clear(s.targets)
}

// applyDeltas adds every group's delta for module to y [T, out] from x [T, in]: the groups of Factored
// adapters in one batched call over the pool, any other Delta through its ApplyRows.
func (m *Model) applyDeltas(module string, y, x []float32, in, out int) {
	s := &m.s
	s.segs = m.deltaSegs(s.segs[:0], module, y, x, in, out)
	if len(s.segs) > 0 {
		s.lb.Apply(m.Pool, y, x, in, out, s.segs)
		clear(s.segs) // do not keep adapters alive after the call
	}
}

// deltaSegs appends to segs the segments of module's Factored groups and adds the delta of every other group
// (through its ApplyRows) to y [T, out] from x [T, in].
func (m *Model) deltaSegs(segs []lora.Segment, module string, y, x []float32, in, out int) []lora.Segment {
	for _, g := range m.s.groups {
		r0, r1 := g.Start, g.Start+g.N
		if f, ok := g.Adapter.(Factored); ok {
			segs = append(segs, lora.Segment{Start: r0, N: g.N, F: f.Module(module)})
			continue
		}
		g.Adapter.ApplyRows(m.Pool, module, y[r0*out:r1*out], x[r0*in:r1*in], g.N, in, out)
	}
	return segs
}
