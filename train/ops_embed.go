package train

import (
	"github.com/nlpodyssey/spago/mat"
	spnn "github.com/nlpodyssey/spago/nn"
)

// embedFn looks up rows of a trainable embedding table W [V, D] (full
// fine-tuning). Its gradient is not accumulated into W during the backward
// pass but kept by row (the distinct ids, in order of first use, each row the sum
// of its positions' gradients in position order) and added by the trainer once
// the pass is over (addGrad): with tied embeddings W has two consumers (this op
// and the LM head), and adding both in a fixed order keeps training
// bit-for-bit deterministic. Only the rows of the batch's ids are touched (not a
// [V, D] buffer per step).
type embedFn struct {
	w    *spnn.Param
	ids  []int
	v, d int
	// rowIDs are the distinct ids of the batch and DW their gradient rows [len(rowIDs), d] (nil before Backward)
	rowIDs []int
	DW     []float32
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
	slot := make(map[int]int, len(f.ids))
	f.rowIDs = f.rowIDs[:0]
	for _, id := range f.ids {
		if _, ok := slot[id]; !ok {
			slot[id] = len(f.rowIDs)
			f.rowIDs = append(f.rowIDs, id)
		}
	}
	f.DW = make([]float32, len(f.rowIDs)*d)
	for i, id := range f.ids {
		s := slot[id]
		row := f.DW[s*d : (s+1)*d]
		for j, x := range g[i*d : (i+1)*d] {
			row[j] += x
		}
	}
	return nil
}

// addGrad adds the rows' gradient into W's gradient (a dense [V, D] matrix the first time W gets one).
func (f *embedFn) addGrad() {
	d := f.d
	if gw := gradOf(f.w); gw != nil {
		for s, id := range f.rowIDs {
			row := gw[id*d : (id+1)*d]
			for j, x := range f.DW[s*d : (s+1)*d] {
				row[j] += x
			}
		}
		return
	}
	full := make([]float32, f.v*d)
	for s, id := range f.rowIDs {
		copy(full[id*d:(id+1)*d], f.DW[s*d:(s+1)*d])
	}
	accGrad(f.w, f.v, d, full)
}
