package train

import (
	"errors"
	"fmt"

	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/nn"
	"github.com/lorakit/lorakit/models/quant"
	"github.com/lorakit/lorakit/train/data"
)

// BaseOptions are the models.Load options of a base for training or evaluation. With qlora every decoder
// linear layer is quantised to NF4 (block 64, double quantisation) as it loads, so the f32/bf16 weights are
// never all resident at once, and kept as a frozen layer whose products use the dequantised f32 weights.
// Weights saved quantised (bitsandbytes layout, e.g. by lorakit quantize) load as they are.
func BaseOptions(threads int, qlora bool) models.LoadOptions {
	o := models.LoadOptions{Threads: threads}
	if qlora {
		scratch := NewEnv(nil)
		o.Quant, o.DoubleQuant = "nf4", true
		o.Frozen = func(q *nn.Quantized) nn.Linear {
			return &nf4Linear{q: q.Q, rows: q.Out(), cols: q.In(), bias: q.Bias, scratch: scratch}
		}
	}
	return o
}

// nf4Linear is a frozen NF4 weight: each Forward expands it block by block into
// a transient f32 buffer (one layer at a time; the model stays 4-bit resident).
type nf4Linear struct {
	q          *quant.Weight
	rows, cols int
	bias       []float32
	scratch    *Env // shared by all layers of a model: one buffer per distinct shape, not per layer
}

func (l *nf4Linear) In() int  { return l.cols }
func (l *nf4Linear) Out() int { return l.rows }

func (l *nf4Linear) Forward(p *kernels.Pool, y, x []float32, m int) {
	if m == 1 { // a single row (generation): the fused dequantising GEMV reads 4-bit blocks directly
		l.q.MatVec(p, y, x)
		nn.AddBias(y, l.bias, m)
		return
	}
	w := l.scratch.get(l.rows * l.cols)
	l.q.DequantizeP(p, w)
	kernels.MatMulF32T(p, y, x, w, m, l.rows, l.cols)
	l.scratch.put(w)
	nn.AddBias(y, l.bias, m)
}

// Data is an encoded SFT data set.
type Data struct {
	Samples []Sample
	Stats   DataStats
}

// DataStats counts what happened to the lines of a data file.
type DataStats struct {
	Lines     int `json:"lines"`     // examples read (good lines)
	Bad       int `json:"bad"`       // lines skipped as malformed
	Truncated int `json:"truncated"` // examples cut at max-seq-len (kept)
	Dropped   int `json:"dropped"`   // examples with no response token left after truncation
	Kept      int `json:"kept"`
	Targets   int `json:"targets"` // loss tokens over the kept examples
	Tokens    int `json:"tokens"`
}

// LoadData reads and encodes a JSONL file. Bad lines fail with strict, else
// they are counted (onBad sees each one).
func LoadData(path string, m *models.Model, maxLen int, trainOnPrompt, strict bool, onBad func(error)) (*Data, error) {
	d := &Data{}
	err := data.ReadJSONL(path, strict, func(ex *data.Example, err error) error {
		if err != nil {
			if strict {
				return err
			}
			d.Stats.Bad++
			if onBad != nil {
				onBad(err)
			}
			return nil
		}
		d.Stats.Lines++
		enc, err := data.Encode(m.Tok, m.Chat, ex, maxLen, trainOnPrompt)
		if errors.Is(err, data.ErrNoResponseTokens) {
			d.Stats.Dropped++
			if onBad != nil {
				onBad(fmt.Errorf("%s:%d: %w", path, ex.Line, err))
			}
			return nil
		}
		if err != nil {
			err = fmt.Errorf("%s:%d: %w", path, ex.Line, err)
			if strict {
				return err
			}
			d.Stats.Bad++
			if onBad != nil {
				onBad(err)
			}
			return nil
		}
		s := Sample{IDs: enc.IDs, Mask: enc.Mask}
		if s.Targets() == 0 {
			d.Stats.Dropped++
			return nil
		}
		if enc.Truncated {
			d.Stats.Truncated++
		}
		d.Stats.Kept++
		d.Stats.Targets += s.Targets()
		d.Stats.Tokens += len(s.IDs)
		d.Samples = append(d.Samples, s)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return d, nil
}
