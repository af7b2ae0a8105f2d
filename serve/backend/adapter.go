package backend

import (
	"fmt"
	"sync"

	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/safetensors"
)

// servedAdapter is a LoRA adapter in a serving layout, built once at load (a served adapter is never trained, so
// the copies cannot go stale), and implements llama.RowsDelta: Forward hands it all the rows of a batch that use
// it at once, so prefill chunks and same-adapter decode rows go through A and B as one matrix product per module,
// with no allocation. f32 storage keeps A [r, in] and B transposed, Bt [r, out], so the expand Y += s·T·Bᵀ streams
// contiguous rows of Bt (one Axpy per rank and row; a GEMM from gemmRows rows) instead of rank-16 dot products.
// bf16 storage keeps A and B [out, r] as bf16 (half the bytes, which is what a many-adapter decode step is short
// of) and runs both products through the bf16 tile kernel. The f32 lora.Adapter is not retained.
type servedAdapter struct {
	pairs map[string]*servedPair
}

// servedPair is one module's pair in the serving layout.
type servedPair struct {
	A32   []float32 // A [r, in] (f32 storage), or nil
	A16   []uint16  // A [r, in] as bf16 bit patterns (bf16 storage), or nil
	Bt    []float32 // Bᵀ [r, out] (f32 storage), or nil
	B16   []uint16  // B [out, r] as bf16 bit patterns (bf16 storage), or nil
	R     int
	In    int
	Out   int
	Scale float32
}

func newServedAdapter(a *lora.Adapter, bf16 bool) *servedAdapter {
	sa := &servedAdapter{pairs: make(map[string]*servedPair, len(a.Modules))}
	for name, q := range a.Modules {
		sp := &servedPair{R: q.R, In: q.In, Out: q.Out, Scale: q.Scale}
		if bf16 {
			sp.A16, sp.B16 = toBF16(q.A), toBF16(q.B)
		} else {
			sp.A32, sp.Bt = q.A, make([]float32, q.R*q.Out)
			for o := 0; o < q.Out; o++ {
				for k := 0; k < q.R; k++ {
					sp.Bt[k*q.Out+o] = q.B[o*q.R+k]
				}
			}
		}
		sa.pairs[name] = sp
	}
	return sa
}

func toBF16(v []float32) []uint16 {
	out := make([]uint16, len(v))
	for i, f := range v {
		out[i] = safetensors.F32ToBF16(f)
	}
	return out
}

var (
	_ llama.RowsDelta = (*servedAdapter)(nil)
	// scratch holds the [rows, r] intermediate T; a sync.Pool keeps ApplyRows allocation-free and safe when the
	// model pool runs different adapters (or modules) at once.
	scratch  = sync.Pool{New: func() any { return new([]float32) }}
	inlineAt = 1 << 16 // below this many multiply-adds a pool hand-off costs more than it saves
	gemmRows = 32      // from this many rows the expand runs as one GEMM (same speed as per-row Axpys, and pooled)
)

// Apply adds s·B·(A·x) for one row (llama.Delta).
func (a *servedAdapter) Apply(module string, y, x []float32, in, out int) {
	a.ApplyRows(nil, module, y, x, len(x)/max(in, 1), in, out)
}

// ApplyRows adds s·B·(A·x) to every row of y ([rows,out]) from x ([rows,in]).
func (a *servedAdapter) ApplyRows(p *kernels.Pool, module string, y, x []float32, rows, in, out int) {
	if rows <= 0 {
		return
	}
	q := a.pairs[module]
	if q == nil {
		return
	}
	r := q.R
	if in != q.In || out != q.Out || len(x) < rows*in || len(y) < rows*out {
		panic(fmt.Sprintf("serve: adapter %s: rows %d in %d out %d do not fit a rank-%d pair [%d×%d]", module, rows, in, out, r, q.Out, q.In))
	}
	x, y = x[:rows*in], y[:rows*out]
	if rows*r*(in+out) < inlineAt {
		p = nil
	}
	need := rows * r
	if q.B16 != nil {
		need += rows * out
	}
	bp := scratch.Get().(*[]float32)
	if cap(*bp) < need {
		*bp = make([]float32, need)
	}
	t := (*bp)[:rows*r]
	if q.A16 != nil { // T[rows, r] = X·Aᵀ
		kernels.MatMulBF16T(p, t, x, q.A16, rows, r, in)
	} else {
		kernels.MatMulF32T(p, t, x, q.A32, rows, r, in)
	}
	kernels.Scale(q.Scale, t)
	switch {
	case q.B16 != nil: // D[rows, out] = T·Bᵀ through the bf16 tile kernel (half the bytes of an f32 Bt), Y += D
		d := (*bp)[rows*r : rows*(r+out)]
		kernels.MatMulBF16T(p, d, t, q.B16, rows, out, r)
		kernels.Axpy(1, d, y)
	case rows >= gemmRows: // Y[rows, out] += T·Bt
		kernels.Gemm(p, false, false, rows, out, r, 1, t, r, q.Bt, out, 1, y, out)
	default:
		for k := 0; k < r; k++ { // row k of Bt stays in L1 while it goes into every row of Y
			bk := q.Bt[k*out : (k+1)*out]
			for j := 0; j < rows; j++ {
				kernels.Axpy(t[j*r+k], bk, y[j*out:(j+1)*out])
			}
		}
	}
	scratch.Put(bp)
}
