// Package nn holds the linear layers shared by inference, training and serving: a dense weight kept in its
// checkpoint dtype (f32, or raw bf16/f16 bit patterns straight from the memory map) and a 4-bit quantised one.
package nn

import (
	"fmt"
	"unsafe"

	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/safetensors"
)

// Linear is a layer y = x·Wᵀ (+ b) with W of shape [Out, In] (Hugging Face / PyTorch layout).
type Linear interface {
	In() int
	Out() int
	// Forward computes Y[m, Out] = X[m, In]·Wᵀ (+ bias if any); Y is overwritten.
	Forward(p *kernels.Pool, y, x []float32, m int)
}

// Table is a weight whose rows can also be read one at a time: an embedding table, which a tied LM head
// multiplies with. Dense keeps it in its stored dtype; Quantized keeps a GGUF Q8_0 table in its blocks (a row is
// dequantised when a token is looked up), so a 4-bit GGUF base needs no f32 copy of its embedding.
type Table interface {
	Linear
	// Row writes row i (Cols values) into dst as f32.
	Row(i int, dst []float32)
	// ToF32 returns the whole table [Out, In] as f32 (training and merge verification own a copy).
	ToF32() []float32
}

// Dense is a full-precision weight W [Rows=out, Cols=in]. Exactly one of F32 (DType F32) or U16 (DType BF16 or
// F16, raw bit patterns) holds the weight; U16 and F32 may alias a memory-mapped checkpoint (read-only).
type Dense struct {
	Rows, Cols int
	DType      safetensors.DType
	F32        []float32
	U16        []uint16
	Bias       []float32 // [Rows] or nil
}

// In is the input width (Cols).
func (d *Dense) In() int { return d.Cols }

// Out is the output width (Rows).
func (d *Dense) Out() int { return d.Rows }

// Forward computes Y[m, Rows] = X[m, Cols]·Wᵀ + Bias. One row uses the matrix-vector kernel, more rows the
// batched matrix kernel, so a batch shares one pass over the weight.
func (d *Dense) Forward(p *kernels.Pool, y, x []float32, m int) {
	if m == 1 {
		switch d.DType {
		case safetensors.BF16:
			kernels.MatVecBF16(p, y, d.U16, x, d.Rows, d.Cols)
		case safetensors.F16:
			kernels.MatVecF16(p, y, d.U16, x, d.Rows, d.Cols)
		default:
			kernels.MatVecF32(p, y, d.F32, x, d.Rows, d.Cols)
		}
	} else {
		switch d.DType {
		case safetensors.BF16:
			kernels.MatMulBF16T(p, y, x, d.U16, m, d.Rows, d.Cols)
		case safetensors.F16:
			kernels.MatMulF16T(p, y, x, d.U16, m, d.Rows, d.Cols)
		default:
			kernels.MatMulF32T(p, y, x, d.F32, m, d.Rows, d.Cols)
		}
	}
	AddBias(y, d.Bias, m)
}

// forwardSharedDense is ForwardShared's dense case: Dense weights run as one kernels.MatMulsT pass (one hand-off
// to the pool instead of one per layer: for one row, each thread one contiguous share of the layers' rows; for
// more, the layers' tiles numbered one after the other), bit for bit the separate Forward calls. It reports
// false, having done nothing, for anything else.
func forwardSharedDense(p *kernels.Pool, jobs *[]kernels.MatVecJob, ys [][]float32, lins []Linear, x []float32, m int) bool {
	if m < 1 || len(ys) != len(lins) || (m > 1 && len(lins) > maxShared) { // MatMulsT's limit is maxShared's
		return false
	}
	js := (*jobs)[:0]
	for i, l := range lins {
		d, ok := l.(*Dense)
		if !ok || len(ys[i]) < m*d.Rows || len(x) < m*d.Cols {
			clear(js)
			*jobs = js
			return false
		}
		j := kernels.MatVecJob{Y: ys[i][:m*d.Rows], X: x[:m*d.Cols], Rows: d.Rows, Cols: d.Cols}
		switch d.DType {
		case safetensors.BF16:
			j.BF16 = d.U16
		case safetensors.F16:
			j.F16 = d.U16
		default:
			j.F32 = d.F32
		}
		js = append(js, j)
	}
	kernels.MatMulsT(p, js, m)
	for i, l := range lins {
		AddBias(ys[i], l.(*Dense).Bias, m)
	}
	clear(js) // do not keep the weights alive through the buffer
	*jobs = js[:0]
	return true
}

// AddBias adds b to each of the m rows of y (no-op for a nil b).
func AddBias(y, b []float32, m int) {
	if b == nil {
		return
	}
	n := len(b)
	for i := range m {
		kernels.Axpy(1, b, y[i*n:(i+1)*n])
	}
}

// Row writes row i of W as f32 into dst (len Cols): an embedding lookup.
func (d *Dense) Row(i int, dst []float32) {
	c := d.Cols
	switch d.DType {
	case safetensors.BF16:
		for j, u := range d.U16[i*c : (i+1)*c] {
			dst[j] = safetensors.BF16ToF32(u)
		}
	case safetensors.F16:
		for j, u := range d.U16[i*c : (i+1)*c] {
			dst[j] = safetensors.F16ToF32(u)
		}
	default:
		copy(dst, d.F32[i*c:(i+1)*c])
	}
}

// ToF32 returns a dequantised f32 copy of W [Rows, Cols].
func (d *Dense) ToF32() []float32 {
	out := make([]float32, d.Rows*d.Cols)
	for i := range d.Rows {
		d.Row(i, out[i*d.Cols:(i+1)*d.Cols])
	}
	return out
}

// NewDense builds a Dense view of raw little-endian tensor bytes of dtype dt with shape [rows, cols]. F32, BF16 and
// F16 are used in place when the bytes are suitably aligned (a memory map is), otherwise copied; F64 is converted
// to f32.
func NewDense(dt safetensors.DType, raw []byte, rows, cols int) (*Dense, error) {
	n := rows * cols
	if rows < 0 || cols < 0 || len(raw) != n*dt.Size() {
		return nil, fmt.Errorf("nn: %d bytes of %s do not hold a [%d, %d] matrix", len(raw), dt, rows, cols)
	}
	d := &Dense{Rows: rows, Cols: cols, DType: dt}
	switch dt {
	case safetensors.F32:
		d.F32 = Float32View(raw)
	case safetensors.BF16, safetensors.F16:
		d.U16 = Uint16View(raw)
	case safetensors.F64:
		d.DType = safetensors.F32
		d.F32 = make([]float32, n)
		if err := safetensors.Decode(dt, raw, d.F32); err != nil {
			return nil, fmt.Errorf("nn: %w", err)
		}
	default:
		return nil, fmt.Errorf("nn: dtype %s is not a float weight type", dt)
	}
	return d, nil
}

// Float32View reinterprets little-endian bytes as []float32 without copying when aligned, else copies.
func Float32View(raw []byte) []float32 {
	n := len(raw) / 4
	if n == 0 {
		return []float32{}
	}
	if uintptr(unsafe.Pointer(&raw[0]))%4 == 0 {
		return unsafe.Slice((*float32)(unsafe.Pointer(&raw[0])), n)
	}
	out := make([]float32, n)
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&out[0])), n*4), raw)
	return out
}

// Uint16View reinterprets little-endian bytes as []uint16 without copying when aligned, else copies.
func Uint16View(raw []byte) []uint16 {
	n := len(raw) / 2
	if n == 0 {
		return []uint16{}
	}
	if uintptr(unsafe.Pointer(&raw[0]))%2 == 0 {
		return unsafe.Slice((*uint16)(unsafe.Pointer(&raw[0])), n)
	}
	out := make([]uint16, n)
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&out[0])), n*2), raw)
	return out
}
