package llama

import (
	"fmt"

	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/nn"
)

// Seq is one sequence of a Forward batch.
type Seq struct {
	Tokens    []int    // new tokens, appended after the Cache.Len() tokens already in the cache
	Cache     *KVCache // nil: a throwaway cache (no history)
	Adapter   Delta    // nil: the base model
	AllLogits bool     // logits at every new position, not just the last
}

// scratch holds the activations of one Forward call; it only grows, so steady-state decoding does not allocate
// except for the returned logits (and not those with ForwardInto).
type scratch struct {
	x, xn, q, k, v, att, tmp, gate, up, hn []float32
	rope                                   []float32 // per row, its position's RoPE cosines and sines (RoPEAngles)
	scores                                 [][]float32
	rowSeq, rowPos, outRows                []int
	batch                                  []Seq // the current call's batch, for attentionRange
	layer                                  int
	silu                                   int       // the gate elements siluJob computes (mlpBlock's rows)
	kept                                   []int     // the rows the last layer's o_proj and MLP run over (keepOutRows)
	short                                  []int     // rows attended one by one (see blockedMin)
	blockS                                 []float32 // scores of a block of rows (attentionBlocked)
	blockQ, blockO                         []float32 // its queries and outputs per head (bf16 caches)
	// Per worker of attentionRange: the runs of a cache's keys and values it reads in place (kvRuns), and
	// the keys and values gathered when a sliding window starts off the kernels' 4-key tiles (KVCache.span).
	runs   []kvRunBuf[float32]
	runs16 []kvRunBuf[uint16]
	// Keys and values gathered from a cache's blocks when a span is not adjacent in memory, per key/value
	// head of a block of attentionBlocked.
	bk, bv     [][]float32
	bk16, bv16 [][]uint16
	ab         blockJob // the block attentionHeads works on

	// Adapter deltas (see orderByAdapter and applyDeltas): the batch ordered so that each adapter's rows are
	// one group.
	seqs    []Seq  // the batch in that order
	order   []int  // order[k]: the caller's index of seqs[k]
	taken   []bool // orderByAdapter's marks
	groups  []RowGroup
	segs    []lora.Segment      // the Factored groups of the current linear(s)
	targets []lora.Target       // linearsShared's modules, their segments slices of segs
	ends    []int               // targets[i]'s segments end at segs[ends[i]]
	jobs    []kernels.MatVecJob // nn.ForwardShared's batch
	lb      lora.Batch
}

// grow returns b resized to n, reallocating (with doubling, so a growing context is amortised) when too small.
func grow(b []float32, n int) []float32 {
	if cap(b) < n {
		return make([]float32, n, max(n, 2*cap(b)))
	}
	return b[:n]
}

func growInt(b []int, n int) []int {
	if cap(b) < n {
		return make([]int, n)
	}
	return b[:n]
}

// Forward appends each sequence's tokens to its cache (positions continue from Cache.Len()) and returns, per
// sequence, logits [len(Tokens)][vocab] if AllLogits, else [1][vocab] for the last position. Every base linear
// runs once over the stacked rows of all sequences; each row then adds its own adapter's delta. On error no cache
// is modified.
func (m *Model) Forward(batch []Seq) ([][][]float32, error) {
	return m.ForwardInto(nil, batch)
}

// Logits is a caller's buffer for the logits ForwardInto returns, reused from call to call so that a decode
// loop does not allocate [rows × vocab] every step. The zero value is ready to use.
type Logits struct{ buf []float32 }

// ForwardInto is Forward with the logits written into dst (nil: a new slice, as Forward): they are valid until
// the next call with the same dst. A caller that keeps logits across steps uses Forward or copies them.
func (m *Model) ForwardInto(dst *Logits, batch []Seq) ([][][]float32, error) {
	if m.LMHead == nil {
		return nil, fmt.Errorf("llama: forward: %v has no LM head (a sequence classifier: use Hidden or Classify)", m.Config.Architectures)
	}
	return m.run(batch, func(batch []Seq, R int) [][][]float32 { return m.logits(dst, batch, R) })
}

// Hidden is Forward without the LM head: per sequence, the final-norm hidden states [len(Tokens)][H] if
// AllLogits, else [1][H] for the last position (what transformers returns as last_hidden_state, and what a
// classification head or an embedding pools).
func (m *Model) Hidden(batch []Seq) ([][][]float32, error) {
	return m.run(batch, m.hidden)
}

// run is the decoder over a batch, with out turning the final rows into the per-sequence results.
func (m *Model) run(batch []Seq, out func(batch []Seq, R int) [][][]float32) ([][][]float32, error) {
	if len(batch) == 0 {
		return [][][]float32{}, nil
	}
	batch, T, R, err := m.checkBatch(batch)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s := &m.s
	batch = m.orderByAdapter(batch) // from here on, in adapter order; out is put back in the caller's order
	for i := range batch {
		if err := batch[i].Cache.Reserve(batch[i].Cache.n + len(batch[i].Tokens)); err != nil {
			return nil, fmt.Errorf("llama: forward: sequence %d: %w", s.order[i], err)
		}
	}
	maxCtx := m.embedRows(batch, T, R)
	for l := range m.Layers {
		rows := m.attentionBlock(batch, l, T, maxCtx, l == len(m.Layers)-1 && R < T)
		m.mlpBlock(l, rows)
	}
	for i := range batch {
		batch[i].Cache.n += len(batch[i].Tokens)
	}
	s.batch = nil
	clear(s.groups) // do not keep adapters alive after the call
	s.groups = s.groups[:0]
	m.finalNorm(R)
	res := out(batch, R)
	clear(s.seqs) // do not keep adapters or caches alive after the call
	return res, nil
}

// checkBatch validates every sequence (tokens in the vocabulary, a cache of this model with room, no cache
// shared) and gives those without a cache a throwaway one, in a copy of batch so that the caller's slice is not
// touched. T is the number of new tokens, R the number of rows whose logits are returned.
func (m *Model) checkBatch(batch []Seq) (_ []Seq, T, R int, _ error) {
	c := m.Config
	for i := range batch {
		if batch[i].Cache == nil { // nil caches are replaced; do not touch the caller's slice
			batch = append([]Seq(nil), batch...)
			break
		}
	}
	for i := range batch {
		sq := &batch[i]
		if len(sq.Tokens) == 0 {
			return nil, 0, 0, fmt.Errorf("llama: forward: sequence %d has no tokens", i)
		}
		for j, t := range sq.Tokens {
			if t < 0 || t >= c.VocabSize {
				return nil, 0, 0, fmt.Errorf("llama: forward: sequence %d token %d: id %d is outside the vocabulary [0, %d)", i, j, t, c.VocabSize)
			}
		}
		if sq.Cache == nil {
			sq.Cache = m.NewCache(len(sq.Tokens))
		}
		kc := sq.Cache
		if kc.pool.slots != len(m.Layers)*c.NumKeyValueHeads || kc.pool.heads != c.NumKeyValueHeads || kc.pool.headDim != c.HeadDim {
			return nil, 0, 0, fmt.Errorf("llama: forward: sequence %d: cache belongs to a different model", i)
		}
		for j := range i {
			if batch[j].Cache == kc {
				return nil, 0, 0, fmt.Errorf("llama: forward: sequences %d and %d share a cache", j, i)
			}
		}
		if kc.n+len(sq.Tokens) > kc.max {
			return nil, 0, 0, fmt.Errorf("llama: forward: sequence %d: %d cached + %d new tokens exceed the cache size %d", i, kc.n, len(sq.Tokens), kc.max)
		}
		T += len(sq.Tokens)
		if sq.AllLogits {
			R += len(sq.Tokens)
		} else {
			R++
		}
	}
	return batch, T, R, nil
}

// embedRows sizes the scratch for T rows (R of them returned), stacks the sequences' new tokens as rows of
// embeddings with their sequence and position, and picks the rows attended one by one. It returns the longest
// context of the batch.
func (m *Model) embedRows(batch []Seq, T, R int) (maxCtx int) {
	c, s := m.Config, &m.s
	H, Q, KV, I := c.HiddenSize, c.QDim(), c.KVDim(), c.IntermediateSize
	s.x, s.xn, s.tmp = grow(s.x, T*H), grow(s.xn, T*H), grow(s.tmp, T*H)
	s.q, s.att = grow(s.q, T*Q), grow(s.att, T*Q)
	s.k, s.v = grow(s.k, T*KV), grow(s.v, T*KV)
	s.gate, s.up = grow(s.gate, T*I), grow(s.up, T*I)
	s.rowSeq, s.rowPos, s.outRows = growInt(s.rowSeq, T), growInt(s.rowPos, T), growInt(s.outRows, R)
	s.rope = grow(s.rope, T*c.HeadDim)
	r, o := 0, 0
	for i, sq := range batch {
		te, _ := sq.Adapter.(TokenEmbedder)
		for j, t := range sq.Tokens {
			s.rowSeq[r], s.rowPos[r] = i, sq.Cache.n+j
			kernels.RoPEAngles(s.rope[r*c.HeadDim:(r+1)*c.HeadDim], s.rowPos[r], m.invFreq) // once for every layer
			if te == nil || !te.EmbedRow(t, s.x[r*H:(r+1)*H]) {
				m.EmbedTokens.Row(t, s.x[r*H:(r+1)*H])
			}
			if sq.AllLogits || j == len(sq.Tokens)-1 {
				s.outRows[o] = r
				o++
			}
			r++
		}
		maxCtx = max(maxCtx, sq.Cache.n+len(sq.Tokens))
	}
	// Sequences with many new tokens (prefill) use blocked matrix-multiply attention; the other rows go one by one.
	s.short = s.short[:0]
	r = 0
	for _, sq := range batch {
		if len(sq.Tokens) < blockedMin {
			for j := range sq.Tokens {
				s.short = append(s.short, r+j)
			}
		}
		r += len(sq.Tokens)
	}
	nw := m.Pool.Threads()
	if len(s.scores) != nw {
		s.scores = make([][]float32, nw)
		s.runs, s.runs16 = make([]kvRunBuf[float32], nw), make([]kvRunBuf[uint16], nw)
	}
	if nkv := c.NumKeyValueHeads; len(s.bk) != nkv {
		s.bk, s.bv, s.bk16, s.bv16 = make([][]float32, nkv), make([][]float32, nkv), make([][]uint16, nkv), make([][]uint16, nkv)
	}
	for w := range s.scores {
		s.scores[w] = grow(s.scores[w], maxCtx*c.NumAttentionHeads/c.NumKeyValueHeads)
	}
	return maxCtx
}

// attentionBlock is layer l's x += o_proj(attention(rope(q_proj(n)), rope(k_proj(n)), v_proj(n))),
// n = rmsnorm(x), over the T rows; the new keys and values go into each sequence's cache. With keep (the last
// layer, when fewer rows are returned than computed: a prompt's positions before its last), the rows returned
// (outRows) are moved to the front of x and the attention output before o_proj, which then runs over them
// alone, as does the MLP after it: no other row's output is used. outRows and the adapter groups then count
// those rows only. It returns the rows o_proj ran over.
func (m *Model) attentionBlock(batch []Seq, l, T, maxCtx int, keep bool) int {
	c, s, L, names := m.Config, &m.s, m.Layers[l], &m.names[l]
	H := c.HiddenSize
	eps := float32(c.RMSNormEps)
	rmsNormRows(s.xn, s.x, L.InputLayernorm, eps, T, H)
	m.linearsShared([]nn.Linear{L.QProj, L.KProj, L.VProj}, names[0:3], [][]float32{s.q, s.k, s.v}, s.xn, T)
	if c.QKNorm { // qwen3: RMSNorm over each head of q and k, before RoPE
		rmsNormRows(s.q, s.q, L.QNorm, eps, T*c.NumAttentionHeads, c.HeadDim)
		rmsNormRows(s.k, s.k, L.KNorm, eps, T*c.NumKeyValueHeads, c.HeadDim)
	}
	s.batch, s.layer = batch, l
	if T < ropeParallelMin {
		m.ropeRows(0, T)
	} else {
		m.Pool.For(T, m.ropeFn)
	}
	if len(s.short)*c.NumAttentionHeads*maxCtx*c.HeadDim < 1<<15 {
		m.attnFn(0, len(s.scores)) // too little work to be worth waking the pool
	} else {
		m.Pool.For(len(s.scores), m.attnFn)
	}
	r := 0
	for _, sq := range batch {
		if len(sq.Tokens) >= blockedMin {
			m.attentionBlocked(sq, r, l)
		}
		r += len(sq.Tokens)
	}
	if keep {
		T = m.keepOutRows(T)
	}
	m.linear(L.OProj, names[3], s.tmp[:T*H], s.att[:T*c.QDim()], T)
	kernels.Axpy(1, s.tmp[:T*H], s.x[:T*H])
	return T
}

// keepOutRows moves the rows returned (outRows, in increasing order) to the front of x and att, renumbers
// outRows and the adapter groups to match, and returns the number of rows kept. A lone returned row (one
// sequence's prompt) keeps a neighbour of its T rows beside it: the f32 and bf16 products sum one row (the
// matrix-vector kernel) in another order than two or more (the tiles), and a sequence's logits must not depend on
// whether it ran alone or in a batch (train/data's TestScoreJudges).
func (m *Model) keepOutRows(T int) int {
	s := &m.s
	H, Q := m.Config.HiddenSize, m.Config.QDim()
	s.kept = append(s.kept[:0], s.outRows...)
	if len(s.kept) == 1 && T > 1 {
		if r := s.kept[0]; r > 0 {
			s.kept = append(s.kept[:0], r-1, r)
		} else {
			s.kept = append(s.kept, r+1)
		}
	}
	for o, r := range s.kept {
		if o != r {
			copy(s.x[o*H:(o+1)*H], s.x[r*H:(r+1)*H])
			copy(s.att[o*Q:(o+1)*Q], s.att[r*Q:(r+1)*Q])
		}
	}
	o := 0
	for i := range s.groups {
		g := &s.groups[i]
		for o < len(s.kept) && s.kept[o] < g.Start {
			o++
		}
		start := o
		for o < len(s.kept) && s.kept[o] < g.Start+g.N {
			o++
		}
		g.Start, g.N = start, o-start
	}
	for i, o := 0, 0; i < len(s.outRows); i++ {
		for s.kept[o] != s.outRows[i] {
			o++
		}
		s.outRows[i] = o
	}
	return len(s.kept)
}

// ropeParallelMin is the number of rows from which ropeRows is spread over the pool (a decode step of many
// sequences: each row's rotations and its bf16 rounding into the cache are independent).
const ropeParallelMin = 8

// ropeRows rotates the queries and keys of rows [lo, hi) of the current layer (s.layer) by their positions and
// stores their keys and values in their sequences' caches.
func (m *Model) ropeRows(lo, hi int) {
	c, s := m.Config, &m.s
	Q, KV := c.QDim(), c.KVDim()
	D := c.HeadDim
	for r := lo; r < hi; r++ {
		kernels.RoPERotate(s.q[r*Q:(r+1)*Q], D, s.rope[r*D:(r+1)*D])
		kernels.RoPERotate(s.k[r*KV:(r+1)*KV], D, s.rope[r*D:(r+1)*D])
		s.batch[s.rowSeq[r]].Cache.put(s.layer, s.rowPos[r], s.k[r*KV:(r+1)*KV], s.v[r*KV:(r+1)*KV])
	}
}

// mlpBlock is layer l's x += down_proj(silu(gate_proj(n)) · up_proj(n)), n = rmsnorm(x), over the T rows.
func (m *Model) mlpBlock(l, T int) {
	c, s, L, names := m.Config, &m.s, m.Layers[l], &m.names[l]
	H, I := c.HiddenSize, c.IntermediateSize
	x, xn, tmp, gate, up := s.x[:T*H], s.xn[:T*H], s.tmp[:T*H], s.gate[:T*I], s.up[:T*I]
	rmsNormRows(xn, x, L.PostAttentionLayernorm, float32(c.RMSNormEps), T, H)
	m.linearsShared([]nn.Linear{L.GateProj, L.UpProj}, names[4:6], [][]float32{gate, up}, xn, T)
	if n := len(gate); n < siluParallelMin {
		kernels.SiLUMul(gate, gate, up)
	} else {
		s.silu = n
		m.Pool.Run((n+siluChunk-1)/siluChunk, (*siluJob)(m))
	}
	m.linear(L.DownProj, names[6], tmp, gate, T)
	kernels.Axpy(1, tmp, x)
}

// siluParallelMin is the number of gate elements from which mlpBlock spreads silu(gate)·up over the pool (a
// decode step of 16 rows of the SmolLM2 shape has 24,576: ~50 µs alone, while the other thread would wait).
const siluParallelMin = 1 << 13

// siluChunk is the elements of one chunk of siluJob: a multiple of 8, though kernels.SiLUMul gives an element the
// same value wherever it falls in the slice.
const siluChunk = 1 << 11

// siluJob is the pool job of mlpBlock's gate = silu(gate)·up.
type siluJob Model

// Run computes chunks [lo, hi) of siluChunk elements.
func (j *siluJob) Run(lo, hi int) {
	s := &j.s
	a, b := lo*siluChunk, min(hi*siluChunk, s.silu)
	kernels.SiLUMul(s.gate[a:b], s.gate[a:b], s.up[a:b])
}

// finalNorm applies the final RMSNorm to the R rows whose outputs were asked for, into s.hn.
func (m *Model) finalNorm(R int) {
	s := &m.s
	H := m.Config.HiddenSize
	s.hn = grow(s.hn, R*H)
	for o, r := range s.outRows {
		kernels.RMSNorm(s.hn[o*H:(o+1)*H], s.x[r*H:(r+1)*H], m.Norm, float32(m.Config.RMSNormEps))
	}
}

// rowsPerSeq splits R output rows of width w (flat) per sequence, in the caller's order.
func (m *Model) rowsPerSeq(batch []Seq, flat []float32, w int) [][][]float32 {
	out := make([][][]float32, len(batch))
	o := 0
	for k, sq := range batch {
		n := 1
		if sq.AllLogits {
			n = len(sq.Tokens)
		}
		i := m.s.order[k]
		out[i] = make([][]float32, n)
		for j := range n {
			out[i][j] = flat[(o+j)*w : (o+j+1)*w : (o+j+1)*w]
		}
		o += n
	}
	return out
}

// logits applies the LM head (with each sequence's adapter) to the normed rows and returns them per sequence
// in the caller's order, in dst's buffer (nil: a new one).
func (m *Model) logits(dst *Logits, batch []Seq, R int) [][][]float32 {
	s := &m.s
	H, V := m.Config.HiddenSize, m.Config.VocabSize
	var flat []float32
	if dst == nil {
		flat = make([]float32, R*V)
	} else {
		dst.buf = grow(dst.buf, R*V)
		flat = dst.buf
	}
	m.LMHead.Forward(m.Pool, flat, s.hn, R) // straight into the returned logits
	o := 0
	for _, sq := range batch {
		n := 1
		if sq.AllLogits {
			n = len(sq.Tokens)
		}
		if sq.Adapter != nil {
			sq.Adapter.ApplyRows(m.Pool, "lm_head", flat[o*V:(o+n)*V], s.hn[o*H:(o+n)*H], n, H, V)
		}
		o += n
	}
	return m.rowsPerSeq(batch, flat, V)
}

// hidden returns a copy of the normed rows per sequence in the caller's order.
func (m *Model) hidden(batch []Seq, R int) [][][]float32 {
	H := m.Config.HiddenSize
	return m.rowsPerSeq(batch, append([]float32(nil), m.s.hn[:R*H]...), H)
}

func rmsNormRows(y, x, w []float32, eps float32, rows, n int) {
	for r := range rows {
		kernels.RMSNorm(y[r*n:(r+1)*n], x[r*n:(r+1)*n], w, eps)
	}
}
