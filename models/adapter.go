package models

import (
	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/safetensors"
)

// LoRA is a loaded PEFT adapter as llama.Forward wants it: a llama.RowsDelta, so that the rows of a sequence
// (a prefill) and of every sequence sharing the adapter (a decode batch) go through A and B together, on the
// model's pool, instead of one row at a time. It compares equal for the same *lora.Adapter.
type LoRA struct{ *lora.Adapter }

var _ llama.RowsDelta = LoRA{}

// ApplyRows adds s·B·(A·x) to each of the rows rows of y.
func (a LoRA) ApplyRows(p *kernels.Pool, module string, y, x []float32, rows, in, out int) {
	if q := a.Modules[module]; q != nil {
		q.Apply(p, y[:rows*out], x[:rows*in], in, out)
	}
}

// AsRows returns d as a llama.RowsDelta when it is a bare *lora.Adapter, else d unchanged.
func AsRows(d llama.Delta) llama.Delta {
	if a, ok := d.(*lora.Adapter); ok && a != nil {
		return LoRA{a}
	}
	return d
}

// AdapterBase describes a loaded network to lora.LoadUnmerged and lora.Adapter.CheckUnmerged: the shapes of its
// linear modules and, from dir, the checkpoint its weights came from (to compare the base layers an adapter
// saved with the base's own).
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
	}
}

// LoadAdapter reads the PEFT adapter folder dir for m, as generate and serve apply it (lora.LoadUnmerged): what
// only a merge can apply (embedding LoRA, modules_to_save, biases, changed base layers) and modules that do not
// fit m are refused, naming the file and tensor.
func (m *Model) LoadAdapter(dir string) (*lora.Adapter, error) {
	return lora.LoadUnmerged(dir, AdapterBase(m.Net, m.Dir))
}
