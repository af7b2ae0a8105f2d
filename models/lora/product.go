package lora

import (
	"fmt"
	"maps"
	"runtime"
	"slices"
	"sync"
	"unsafe"

	"github.com/lorakit/lorakit/internal/mmap"
	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/safetensors"
)

// Layout is how a module's A and B are stored for the product y += s·B·(A·x). The math is the same in every
// layout; only the kernels that read the factors differ.
type Layout uint8

const (
	// F32 keeps A [R, In] and B [Out, R] in f32 as PEFT saves them and training updates them.
	F32 Layout = iota
	// F32BT keeps A [R, In] and Bᵀ [R, Out] in f32: the expand streams contiguous rows of Bᵀ (one Axpy per rank
	// and row, a GEMM from gemmRows rows) instead of rank-R dot products.
	F32BT
	// BF16 keeps A [R, In] and Bᵀ [R, Out] as bf16 bit patterns: half the bytes a decode row reads for its LoRA,
	// which is what a many-adapter decode step is short of, in the layout of the batched kernels (the shrink
	// reads rows of A, the expand streams rows of Bᵀ: kernels.MatMulAddBF16). The products are computed in f32;
	// rounding the factors to bf16 changes the delta by about 2⁻⁹ of its terms' magnitude.
	BF16
)

// Factors is one module's pair in one Layout, with its scaling s. Only the slices of its layout are set.
type Factors struct {
	Layout     Layout
	R, In, Out int
	Scale      float32
	A          []float32 // A [R, In] (F32, F32BT)
	B          []float32 // B [Out, R] (F32)
	Bt         []float32 // Bᵀ [R, Out] (F32BT)
	A16, Bt16  []uint16  // A [R, In] and Bᵀ [R, Out] as bf16 (BF16)
	// RowScale and RowShift [Out] finish a DoRA module (Pair.RowScale): y ← RowScale⊙(y + s·B·A·x) + RowShift.
	// nil for LoRA.
	RowScale, RowShift []float32
	arena              *arena // the memory of A16 and Bt16 when Pack put them in one (kept alive by them)
}

// Factors is the pair as it is stored, in the F32 layout (no copy).
func (q *Pair) Factors() Factors {
	if q.Magnitude != nil && q.RowScale == nil {
		panic("lora: a DoRA pair applied unmerged before Adapter.PrepareDoRA computed its row scale")
	}
	return Factors{Layout: F32, R: q.R, In: q.In, Out: q.Out, Scale: q.Scale, A: q.A, B: q.B, RowScale: q.RowScale, RowShift: q.RowShift}
}

// Pack copies the pair into layout l (F32 shares q's slices).
func (q *Pair) Pack(l Layout) *Factors {
	f := q.Factors()
	switch l {
	case F32BT:
		f.Layout, f.B, f.Bt = F32BT, nil, transpose(q.B, q.Out, q.R)
	case BF16:
		f.Layout, f.A, f.B, f.A16, f.Bt16 = BF16, nil, nil, toBF16(q.A), toBF16(transpose(q.B, q.Out, q.R))
	}
	return &f
}

// transpose returns the [cols, rows] transpose of the row-major [rows, cols] matrix m.
func transpose(m []float32, rows, cols int) []float32 {
	t := make([]float32, rows*cols)
	for i := range rows {
		for j := range cols {
			t[j*rows+i] = m[i*cols+j]
		}
	}
	return t
}

func toBF16(v []float32) []uint16 {
	out := make([]uint16, len(v))
	for i, f := range v {
		out[i] = safetensors.F32ToBF16(f)
	}
	return out
}

var (
	// scratch holds Apply's intermediates (a pool of *[]float32), so Apply does not allocate and different
	// modules (or adapters) may run it concurrently.
	scratch  = sync.Pool{New: func() any { return new([]float32) }}
	inlineAt = 1 << 16 // multiply-adds below which Apply ignores the pool: a hand-off costs more than it saves
	gemmRows = 32      // from this many rows the F32BT expand runs as one GEMM (same speed as per-row Axpys, and pooled)
)

// Apply adds s·B·(A·x) to every row of y [rows, Out] from x [rows, In], using p for its products (p may be nil:
// single-threaded); a DoRA module then scales each row (y ← g⊙y + (1−g)⊙b, see dora.go). It does not allocate. Lengths that disagree with the module's shape are a programming error
// (Check the adapter against the base first) and panic.
func (f *Factors) Apply(p *kernels.Pool, y, x []float32, rows int) {
	if rows < 0 || len(x) != rows*f.In || len(y) != rows*f.Out {
		panic(fmt.Sprintf("lora: Apply of %d rows with len(x)=%d len(y)=%d on a pair [%d×%d]·[%d×%d]", rows, len(x), len(y), f.Out, f.R, f.R, f.In))
	}
	if rows == 0 {
		return
	}
	r, out := f.R, f.Out
	if rows*r*(f.In+out) < inlineAt {
		p = nil
	}
	need := rows * r
	if f.Layout == F32 && rows == 1 {
		need += min(256, out)
	}
	bp := scratch.Get().(*[]float32)
	if cap(*bp) < need {
		*bp = make([]float32, need)
	}
	t := (*bp)[:rows*r]
	switch f.Layout {
	case BF16:
		if p == nil { // one fused call, equal to the three below
			kernels.LowRankAddBF16(y, x, t, f.A16, f.Bt16, rows, out, f.In, r, f.Scale, nil, nil)
			break
		}
		kernels.MatMulBF16T(p, t, x, f.A16, rows, r, f.In) // T[rows, r] = X·Aᵀ
		kernels.Scale(f.Scale, t)
		expandBF16(p, y, t, f.Bt16, rows, out, r) // Y += T·Bᵀ
	case F32BT:
		Shrink(p, t, x, f.A, rows, r, f.In)
		kernels.Scale(f.Scale, t)
		if rows >= gemmRows { // Y[rows, out] += T·Bt
			kernels.Gemm(p, false, false, rows, out, r, 1, t, r, f.Bt, out, 1, y, out)
			break
		}
		for k := 0; k < r; k++ { // row k of Bt stays in L1 while it goes into every row of Y
			bk := f.Bt[k*out : (k+1)*out]
			for j := 0; j < rows; j++ {
				kernels.Axpy(t[j*r+k], bk, y[j*out:(j+1)*out])
			}
		}
	default: // F32
		Shrink(p, t, x, f.A, rows, r, f.In)
		if rows == 1 { // decode: the expand as chunks of GEMV
			addScaledB(y, f.B, t, f.Scale, (*bp)[r:need])
			break
		}
		kernels.Scale(f.Scale, t)             // alpha 1 below: the NT Gemm then needs no scratch
		Expand(p, y, t, f.B, 1, rows, out, r) // Y[rows, out] += (s·T)·Bᵀ
	}
	scratch.Put(bp)
	if f.RowScale != nil {
		f.applyRowScale(y, rows)
	}
}

// Shrink computes T[rows, r] = X[rows, in]·Aᵀ for an f32 A [r, in]: the first half of the product, which
// training keeps for its backward pass.
func Shrink(p *kernels.Pool, t, x, a []float32, rows, r, in int) {
	kernels.MatMulF32T(p, t, x, a, rows, r, in)
}

// Expand adds alpha·T·Bᵀ to Y[rows, out] for T [rows, r] and an f32 B [out, r]: the second half of the product
// (alpha is s, or 1 when T is already scaled).
func Expand(p *kernels.Pool, y, t, b []float32, alpha float32, rows, out, r int) {
	kernels.Gemm(p, false, true, rows, out, r, alpha, t, r, b, r, 1, y, out)
}

// addScaledB does y[o] += s·Σ_k B[o,k]·t[k] for B [len(y), len(t)], a chunk of rows at a time through the
// GEMV kernel into buf.
func addScaledB(y, B, t []float32, s float32, buf []float32) {
	r := len(t)
	for o0 := 0; o0 < len(y); o0 += len(buf) {
		n := min(len(buf), len(y)-o0)
		kernels.MatVecF32(nil, buf[:n], B[o0*r:(o0+n)*r], t, n, r)
		kernels.Axpy(s, buf[:n], y[o0:o0+n])
	}
}

// AddDelta adds w·B·A to the [Out, In] weight W (w is the merge weight times s): what a merge does to a linear.
func (q *Pair) AddDelta(p *kernels.Pool, W []float32, w float32) {
	kernels.Gemm(p, false, false, q.Out, q.In, q.R, w, q.B, q.R, q.A, q.In, 1, W, q.In)
}

// AddDeltaT adds w·(B·A)ᵀ = w·Aᵀ·Bᵀ to the [In, Out] table W: what a merge does to an embedding table for an
// embedding pair (In = vocab, Out = dim; PEFT's Embedding.get_delta_weight).
func (q *Pair) AddDeltaT(p *kernels.Pool, W []float32, w float32) {
	kernels.Gemm(p, true, true, q.In, q.Out, q.R, w, q.A, q.In, q.B, q.R, 1, W, q.Out)
}

// DeltaWeight is s·B·A as a new [Out, In] f32 matrix, computed as PEFT's get_delta_weight does: (B @ A) in f32,
// then multiplied by the scaling.
func DeltaWeight(q *Pair) []float32 {
	d := make([]float32, q.Out*q.In)
	kernels.Gemm(nil, false, false, q.Out, q.In, q.R, 1, q.B, q.R, q.A, q.In, 0, d, q.In)
	kernels.Scale(q.Scale, d)
	return d
}

// Packed is an adapter in one inference Layout, built once when it loads (a served adapter is never trained,
// so the copies cannot go stale); the f32 Adapter need not be retained.
type Packed struct {
	modules map[string]*Factors
	embed   *TokenRows // trainable rows of the input embedding (nil: none)
	head    *TokenRows // rows that replace LM-head rows (the embedding's when the head is tied)
}

// Pack puts every linear pair of a in layout l. In BF16 the factors of all modules go into one anonymous
// mapping in transparent huge pages (mmap.Anon, as the base weights), each module's A then Bᵀ (modules in the
// order of their sorted names): a decode step reads every adapter it serves once, a few dozen KiB per module,
// and from 4 KiB heap pages each of those reads began with TLB misses
// (BenchmarkServeAdaptersSmolLM2, 16 rows over 8 adapters, time inside lora.Batch per step, three rounds
// alternated: 3.0-3.2 ms against 3.6-3.7 from the heap). The mapping is unmapped once the Packed and every
// Factors of it are unreachable.
func Pack(a *Adapter, l Layout) *Packed {
	pk := &Packed{modules: make(map[string]*Factors, len(a.Modules))}
	var ar *arena
	if l == BF16 {
		ar = newArena(a)
	}
	for _, name := range slices.Sorted(maps.Keys(a.Modules)) {
		q := a.Modules[name]
		f := q.Pack(l)
		if ar != nil {
			f.A16, f.Bt16, f.arena = ar.take(f.A16), ar.take(f.Bt16), ar
		}
		pk.modules[name] = f
	}
	pk.embed, pk.head = a.Tokens[EmbedModule], a.headRows()
	return pk
}

// arena is the anonymous memory of a packed adapter's bf16 factors, unmapped by a cleanup once nothing refers
// to it (every Factors in it does, through Factors.arena).
type arena struct {
	b   []byte
	off int
}

// arenaAlign is where each factor matrix starts in an arena (a cache line).
const arenaAlign = 64

// newArena maps room for the bf16 factors of every linear pair of a, or returns nil (the factors then stay on
// the heap) when the mapping fails.
func newArena(a *Adapter) *arena {
	n := 0
	for _, q := range a.Modules {
		n += alignUp(2*len(q.A)) + alignUp(2*len(q.B))
	}
	b, release, err := mmap.Anon(n)
	if err != nil || n == 0 {
		return nil
	}
	ar := &arena{b: b}
	runtime.AddCleanup(ar, func(release func() error) { _ = release() }, release)
	return ar
}

func alignUp(n int) int { return (n + arenaAlign - 1) &^ (arenaAlign - 1) }

// take copies v into the arena and returns the copy.
func (ar *arena) take(v []uint16) []uint16 {
	n := 2 * len(v)
	d := unsafe.Slice((*uint16)(unsafe.Pointer(&ar.b[ar.off])), len(v))
	copy(d, v)
	ar.off += alignUp(n)
	return d
}

// EmbedRow is Adapter.EmbedRow (llama.TokenEmbedder).
func (pk *Packed) EmbedRow(id int, dst []float32) bool { return embedRow(pk.embed, id, dst) }

// ApplyRows adds s·B·(A·x) to each of rows rows of y ([rows, out]) from x ([rows, in]) as one product per
// module (llama.Delta: Forward hands it every row of a batch that uses this adapter); a module the adapter
// does not touch is a no-op. Safe to run concurrently for different adapters or modules.
func (pk *Packed) ApplyRows(p *kernels.Pool, module string, y, x []float32, rows, in, out int) {
	applyRows(pk.modules[module], p, module, y, x, rows, in, out)
	if module == HeadModule && pk.head != nil {
		pk.head.headLogits(y, x, rows, out)
	}
}

// ApplyRows is Packed.ApplyRows on the adapter's own f32 pairs (the F32 layout, no copy).
func (a *Adapter) ApplyRows(p *kernels.Pool, module string, y, x []float32, rows, in, out int) {
	if q := a.Modules[module]; q != nil {
		f := q.Factors()
		applyRows(&f, p, module, y, x, rows, in, out)
	}
	if module == HeadModule {
		a.HeadTokens(y, x, rows, out)
	}
}

func applyRows(f *Factors, p *kernels.Pool, module string, y, x []float32, rows, in, out int) {
	if f == nil || rows <= 0 {
		return
	}
	if in != f.In || out != f.Out || len(x) < rows*in || len(y) < rows*out {
		panic(fmt.Sprintf("lora: module %s: rows %d in %d out %d do not fit a rank-%d pair [%d×%d]", module, rows, in, out, f.R, f.Out, f.In))
	}
	f.Apply(p, y[:rows*out], x[:rows*in], rows)
}
