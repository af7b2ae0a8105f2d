package train

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"

	"github.com/nlpodyssey/spago/mat"
	spnn "github.com/nlpodyssey/spago/nn"
	"github.com/nlpodyssey/spago/optimizers"
)

// AdamW is PyTorch's torch.optim.AdamW as a spago optimizers.OptimizationStrategy.
//
// spago's own adam.Adam (with Lambda set) multiplies the weight-decay term by
// the bias-corrected step size and adds ε to the uncorrected √v, which is not
// the decoupled update of Loshchilov & Hutter / PyTorch; it also allocates five
// state matrices and several temporaries per parameter per step. This strategy
// keeps PyTorch's update exactly:
//
//	w ← w·(1 − lr·λ);  m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²
//	w ← w − lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + ε)
//
// with g the gradient times ClipCoef (global-norm clipping). Params listed in
// NoDecay (norms, biases) get λ = 0. State lives in Param.State (*AdamState).
type AdamW struct {
	LR, Beta1, Beta2, Eps, WeightDecay float64
	Step                               int     // 1-based step of the update being applied
	ClipCoef                           float64 // gradient multiplier (1 without clipping)
	NoDecay                            map[*spnn.Param]bool
}

// AdamState is the per-parameter optimizer state.
type AdamState struct{ M, V []float32 }

var _ optimizers.OptimizationStrategy = (*AdamW)(nil)

// OptimizeParams applies one update to p and zeroes its gradient.
func (o *AdamW) OptimizeParams(p *spnn.Param) error {
	w := mat.Data[float32](p.Matrix)
	g := mat.Data[float32](p.Grad())
	if len(g) != len(w) {
		return fmt.Errorf("adamw: gradient has %d values, parameter %d", len(g), len(w))
	}
	st, ok := p.State.(*AdamState)
	if !ok || len(st.M) != len(w) {
		st = &AdamState{M: make([]float32, len(w)), V: make([]float32, len(w))}
		p.State = st
	}
	t := float64(o.Step)
	bc1 := 1 - math.Pow(o.Beta1, t)
	bc2 := math.Sqrt(1 - math.Pow(o.Beta2, t))
	decay := float32(1)
	if !o.NoDecay[p] {
		decay = float32(1 - o.LR*o.WeightDecay)
	}
	step := float32(o.LR / bc1)
	b1, b2 := float32(o.Beta1), float32(o.Beta2)
	c1, c2 := 1-b1, 1-b2
	inv2, eps, clip := float32(1/bc2), float32(o.Eps), float32(o.ClipCoef)
	m, v, g := st.M[:len(w)], st.V[:len(w)], g[:len(w)]
	for i := range w {
		gi := g[i] * clip
		m[i] = b1*m[i] + c1*gi
		v[i] = b2*v[i] + c2*gi*gi
		den := float32(math.Sqrt(float64(v[i])))*inv2 + eps
		w[i] = w[i]*decay - step*m[i]/den
		g[i] = 0 // zeroed in place, in the same pass: the next step accumulates into the same buffer
	}
	return nil
}

// GradNorm is the global L2 norm of the gradients of params (summed in order, in float64).
func GradNorm(params []*spnn.Param) float64 {
	var s float64
	for _, p := range params {
		if !p.HasGrad() {
			continue
		}
		var ps float64
		for _, x := range mat.Data[float32](p.Grad()) {
			ps += float64(x) * float64(x)
		}
		s += ps
	}
	return math.Sqrt(s)
}

// ApplyUpdate applies the strategy o (a spago optimizers.OptimizationStrategy)
// to every param with a gradient, in parallel, and returns when all are done.
//
// It does not go through spago's optimizers.Optimizer.Optimize: in v1.1.0 that
// function returns without waiting for its per-parameter goroutines on the
// success path (no wg.Wait), so the next forward pass races with the updates
// (found with -race), and a failing strategy can send on a closed channel.
func ApplyUpdate(params []*spnn.Param, o optimizers.OptimizationStrategy) error {
	errs := make([]error, len(params))
	var wg sync.WaitGroup
	next := make(chan int)
	workers := min(runtime.GOMAXPROCS(0), len(params))
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if params[i].HasGrad() {
					errs[i] = o.OptimizeParams(params[i])
				}
			}
		}()
	}
	for i := range params {
		next <- i
	}
	close(next)
	wg.Wait()
	return errors.Join(errs...)
}

// ZeroGrads clears the gradients of params (a cancelled step).
func ZeroGrads(params []*spnn.Param) {
	for _, p := range params {
		p.ZeroGrad()
	}
}
