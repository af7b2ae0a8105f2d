package models

import (
	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/lora"
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
