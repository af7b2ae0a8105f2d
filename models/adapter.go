package models

import (
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/safetensors"
)

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
