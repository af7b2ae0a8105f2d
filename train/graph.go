// Package train fine-tunes Llama-family models on a CPU: LoRA, QLoRA (a frozen
// NF4 base) and full fine-tuning.
//
// The computation graph, the trainable parameters and the optimizer framework
// are spago's (ag.Operator, nn.Param, optimizers.Optimizer). Every transformer
// op is one fused ag.AutoGradFunction with a hand-written backward pass over the
// fast kernels of models/kernels (see ops_*.go); each backward pass is checked
// against float64 finite differences in the tests.
//
// A micro-batch is packed: the rows of all its sequences are concatenated into
// one [T, hidden] matrix, so every linear layer runs as one matrix product, and
// attention and RoPE work per sequence segment (block-diagonal causal attention).
package train

import (
	"github.com/nlpodyssey/spago/ag"
	"github.com/nlpodyssey/spago/mat"
)

// newMat wraps data (not copied) as a rows×cols spago matrix.
func newMat(rows, cols int, data []float32) *mat.Dense[float32] {
	return mat.NewDense[float32](mat.WithShape(rows, cols), mat.WithBacking(data))
}

// vals returns the float32 backing slice of a node's value (no copy).
func vals(t mat.Tensor) []float32 {
	v := t.Value()
	if o, ok := v.(*node); ok {
		return mat.Data[float32](o.Dense)
	}
	return mat.Data[float32](v)
}

// run wraps fn in a spago operator and runs its forward pass synchronously.
func run(fn ag.AutoGradFunction) mat.Tensor { return ag.NewOperator(fn).Run() }

// accGrad adds g (rows×cols) to t's gradient.
func accGrad(t mat.Tensor, rows, cols int, g []float32) { t.AccGrad(newMat(rows, cols, g)) }

// needsGrad reports whether gradients must flow into t.
func needsGrad(t mat.Tensor) bool { return t != nil && t.RequiresGrad() }

// Segment is one sequence inside a packed micro-batch: rows [Start, Start+Len).
type Segment struct{ Start, Len int }
