package train

import (
	"fmt"

	"github.com/nlpodyssey/spago/ag"
	"github.com/nlpodyssey/spago/mat"
	spnn "github.com/nlpodyssey/spago/nn"
)

// Gradient checkpointing (--gradient-checkpointing) as one spago operator per decoder layer. Its forward pass
// runs the layer's ops and keeps only the output: the inner graph, with every activation the ops saved for
// their backward passes, is dropped at once. Its backward pass runs the layer again from the saved input (the
// same dropout masks: they are drawn from the step's seed), back-propagates the output gradient through that
// fresh graph (which frees its buffers as it goes, as any backward pass does), and hands the input's gradient on.
// The layer's parameters are the operator's operands, so their gradients accumulate exactly as without it.

// checkpointFn is one checkpointed layer.
type checkpointFn struct {
	x      mat.Tensor   // the layer's input [T, H]
	params []mat.Tensor // the layer's trainable parameters (operands, so that the graph knows the layer needs them)
	t, h   int
	layer  func(mat.Tensor) mat.Tensor
}

// Checkpoint runs layer on x [T, H] keeping only its output; the backward pass recomputes it.
func (e *Env) Checkpoint(x mat.Tensor, T, H int, params []mat.Tensor, layer func(mat.Tensor) mat.Tensor) mat.Tensor {
	return run(&checkpointFn{x: x, params: params, t: T, h: H, layer: layer})
}

func (f *checkpointFn) Operands() []mat.Tensor { return append([]mat.Tensor{f.x}, f.params...) }

// Forward runs the layer on a copy of the input that is no graph node (its gradient flows nowhere), so the inner
// graph is unreachable once the output values are taken.
func (f *checkpointFn) Forward() (mat.Tensor, error) {
	in := newMat(f.t, f.h, append([]float32(nil), vals(f.x)...))
	y := f.layer(in)
	return newMat(f.t, f.h, vals(y)), nil
}

// Backward rebuilds the layer on a leaf holding the input values and back-propagates gy through it.
func (f *checkpointFn) Backward(gy mat.Tensor) error {
	in := newMat(f.t, f.h, append([]float32(nil), vals(f.x)...))
	in.SetRequiresGrad(needsGrad(f.x))
	y := f.layer(in)
	if !y.RequiresGrad() {
		return nil // nothing in or before the layer is trained
	}
	y.AccGrad(gy)
	if err := ag.Backward(y); err != nil {
		return fmt.Errorf("recompute layer: %w", err)
	}
	if needsGrad(f.x) {
		if g := in.Grad(); g != nil {
			f.x.AccGrad(g)
		}
	}
	return nil
}

// params lists the layer's trainable parameters: LoRA factors (and DoRA magnitudes), or every weight, bias and norm.
func (L *netLayer) params() []mat.Tensor {
	var ps []mat.Tensor
	add := func(p *spnn.Param) {
		if p != nil {
			ps = append(ps, p)
		}
	}
	for _, group := range [][]*Proj{L.qkv, L.o, L.gu, L.down} {
		for _, p := range group {
			add(p.A)
			add(p.B)
			add(p.Mag)
			add(p.W)
			add(p.Bias)
		}
	}
	add(L.inNormP)
	add(L.postNormP)
	add(L.qNormP)
	add(L.kNormP)
	return ps
}
