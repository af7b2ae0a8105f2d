package models

import (
	"fmt"

	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/nn"
	"github.com/lorakit/lorakit/models/safetensors"
)

// AdapterBase describes a loaded network to lora.LoadUnmerged and lora.Adapter.CheckUnmerged: the shapes of its
// linear modules, their weights as f32 rows (DoRA's row norms) and, from dir, the checkpoint its weights came
// from (to compare the base layers an adapter saved with the base's own).
func AdapterBase(net *llama.Model, dir string) lora.Base {
	return lora.Base{
		Linear: func(module string) (int, int, bool) {
			l, ok := net.Linear(module)
			if !ok || l == nil {
				return 0, 0, false
			}
			return l.In(), l.Out(), true
		},
		Weights: func() (*safetensors.Checkpoint, error) { return safetensors.OpenCheckpoint(dir) },
		Rows: func(module string) (lora.RowReader, []float32, error) {
			l, ok := net.Linear(module)
			if !ok || l == nil {
				return nil, nil, fmt.Errorf("the base model has no linear module %s", module)
			}
			return LinearRows(l)
		},
		Pool:     net.Pool,
		Vocab:    net.Config.VocabSize,
		Dim:      net.Config.HiddenSize,
		TiedHead: net.Config.TieWordEmbeddings,
	}
}

// RowsLinear is a linear layer defined outside models (training's frozen NF4 layer) that reads its own weight
// rows as f32 and gives its bias.
type RowsLinear interface {
	nn.Linear
	LinearRows() (rows lora.RowReader, bias []float32)
}

// LinearRows reads the weight of a base linear layer as f32 rows (bf16/f16 converted, 4-bit dequantised) and
// returns its bias.
func LinearRows(l nn.Linear) (lora.RowReader, []float32, error) {
	switch d := l.(type) {
	case RowsLinear:
		rows, bias := d.LinearRows()
		return rows, bias, nil
	case *nn.Dense:
		return func(o0 int, dst []float32) {
			for i := 0; i < len(dst)/d.Cols; i++ {
				d.Row(o0+i, dst[i*d.Cols:(i+1)*d.Cols])
			}
		}, d.Bias, nil
	case *nn.Quantized:
		cols := d.In()
		return func(o0 int, dst []float32) { d.Q.DequantizeRange(dst, o0*cols) }, d.Bias, nil
	}
	return nil, nil, fmt.Errorf("cannot read the weights of a %T layer", l)
}

// LoadAdapter reads the PEFT adapter folder dir for m, as generate and serve apply it (lora.LoadUnmerged): what
// only a merge can apply (embedding LoRA, modules_to_save, biases, changed base layers) and modules that do not
// fit m are refused, naming the file and tensor; a DoRA adapter gets its per-row scales from m's weights.
func (m *Model) LoadAdapter(dir string) (*lora.Adapter, error) {
	return lora.LoadUnmerged(dir, AdapterBase(m.Net, m.Dir))
}
