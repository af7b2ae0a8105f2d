package nn

import (
	"fmt"

	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/quant"
)

// Quantized is a block-quantised weight (NF4, FP4 or int8) of shape Q.Shape = [out, in], multiplied with a fused
// dequantise-and-multiply kernel (the whole matrix is never dequantised on the hot path).
type Quantized struct {
	Q    *quant.Weight
	Bias []float32 // [out] or nil
}

// In is the input width.
func (q *Quantized) In() int { return q.Q.Cols() }

// Out is the output width.
func (q *Quantized) Out() int { return q.Q.Rows() }

// Forward computes Y[m, Out] = X[m, In]·Wᵀ + Bias.
func (q *Quantized) Forward(p *kernels.Pool, y, x []float32, m int) {
	q.Q.MatMulT(p, y[:m*q.Out()], x[:m*q.In()], m)
	AddBias(y, q.Bias, m)
}

// maxShared is the most linears ForwardShared runs as one product (a layer's q, k and v).
const maxShared = 3

// ForwardShared runs each lins[i].Forward(p, ys[i], x, m), for linears that all take x: when they are all
// Quantized weights whose products can share x's quantisation and pool job (quant.MatMulTShared), as one
// product, and Dense weights as one pool pass (forwardSharedDense), bit for bit the same,
// otherwise one Forward each. jobs is the caller's reused buffer for the dense pass.
func ForwardShared(p *kernels.Pool, jobs *[]kernels.MatVecJob, ys [][]float32, lins []Linear, x []float32, m int) {
	if forwardSharedDense(p, jobs, ys, lins, x, m) {
		return
	}
	var ws [maxShared]*quant.Weight
	var yw [maxShared][]float32
	shared := len(lins) <= maxShared && len(ys) == len(lins)
	for i := 0; shared && i < len(lins); i++ {
		q, ok := lins[i].(*Quantized)
		shared = ok && len(ys[i]) >= m*q.Out()
		if shared {
			ws[i], yw[i] = q.Q, ys[i][:m*q.Out()]
		}
	}
	if shared && quant.MatMulTShared(p, yw[:len(lins)], ws[:len(lins)], x[:min(len(x), m*lins[0].In())], m) {
		for i, l := range lins {
			AddBias(ys[i], l.(*Quantized).Bias, m)
		}
		return
	}
	for i, l := range lins {
		l.Forward(p, ys[i], x, m)
	}
}

// Row writes the dequantised row i [In] into dst.
func (q *Quantized) Row(i int, dst []float32) {
	c := q.In()
	q.Q.DequantizeRange(dst[:c], i*c)
}

// ToF32 returns the dequantised weight [Out, In].
func (q *Quantized) ToF32() []float32 {
	out := make([]float32, q.Q.Elems())
	q.Q.Dequantize(out)
	return out
}

// Quantize converts a dense layer to a 4-bit one (t "nf4" or "fp4", bitsandbytes block size 64, double
// quantisation of the absmax values when double), keeping its bias.
func Quantize(d *Dense, t quant.Type, double bool) (*Quantized, error) {
	q, err := quant.Quantize4(t, d.ToF32(), []int{d.Rows, d.Cols}, quant.DefaultBlockSize, double)
	if err != nil {
		return nil, fmt.Errorf("nn: quantize [%d, %d]: %w", d.Rows, d.Cols, err)
	}
	return &Quantized{Q: q, Bias: d.Bias}, nil
}

// QuantizeInt8 converts a dense layer to row-wise int8 (one absmax per row, LLM.int8's layout without the
// outlier split), keeping its bias. Used for the LM head, which llama.cpp likewise keeps in 8 bits beside
// 4-bit layers: half the bytes of bf16 read per decoded token. The copy is only multiplied, so where the dot
// kernels run it keeps their layout alone (quant.Weight.Compact: 1 byte per weight less resident).
func QuantizeInt8(d *Dense) (*Quantized, error) {
	q, err := quant.Quantize8Rows([]int{d.Rows, d.Cols}, d.Row)
	if err != nil {
		return nil, fmt.Errorf("nn: quantize int8 [%d, %d]: %w", d.Rows, d.Cols, err)
	}
	q.Compact()
	return &Quantized{Q: q, Bias: d.Bias}, nil
}

// HeadQuantizer returns the LM head conversion a --head flag names: nil for "" or "stored" (the stored dtype),
// row-wise int8 for "int8". "auto" (int8 for a 4-bit base) is decided by the loader, which knows the base.
func HeadQuantizer(name string) (func(*Dense) (Linear, error), error) {
	switch name {
	case "", "stored", "auto":
		return nil, nil
	case "int8":
		return func(d *Dense) (Linear, error) { return QuantizeInt8(d) }, nil
	}
	return nil, fmt.Errorf("LM head type %q is not supported (auto, stored, int8)", name)
}
