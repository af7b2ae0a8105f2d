package train

import (
	"github.com/nlpodyssey/spago/mat"
	spnn "github.com/nlpodyssey/spago/nn"
)

// embedFn looks up rows of a trainable embedding table W [V, D] (full
// fine-tuning). Its gradient is not accumulated into W during the backward
// pass but kept in DW and added by the trainer once the pass is over: with tied
// embeddings W has two consumers (this op and the LM head), and adding both in
// a fixed order keeps training bit-for-bit deterministic.
type embedFn struct {
	w    *spnn.Param
	ids  []int
	v, d int
	DW   []float32
}

// Embed returns W[ids] as [len(ids), d].
func (e *Env) Embed(w *spnn.Param, ids []int, vocab, d int) (mat.Tensor, *embedFn) {
	f := &embedFn{w: w, ids: ids, v: vocab, d: d}
	return run(f), f
}

func (f *embedFn) Operands() []mat.Tensor { return []mat.Tensor{f.w} }

func (f *embedFn) Forward() (mat.Tensor, error) {
	w, d := vals(f.w), f.d
	y := make([]float32, len(f.ids)*d)
	for i, id := range f.ids {
		copy(y[i*d:(i+1)*d], w[id*d:(id+1)*d])
	}
	return newMat(len(f.ids), d, y), nil
}

func (f *embedFn) Backward(gy mat.Tensor) error {
	g, d := vals(gy), f.d
	f.DW = make([]float32, f.v*d)
	for i, id := range f.ids {
		row := f.DW[id*d : (id+1)*d]
		for j, x := range g[i*d : (i+1)*d] {
			row[j] += x
		}
	}
	return nil
}
