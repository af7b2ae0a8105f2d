package lora

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/models/safetensors"
)

// TestSaveLoadEmbedAndBaseLayers: embedding LoRA and saved base layers round-trip through Save and Load with
// PEFT's key names, and CheckUnmerged refuses them for the unmerged path (naming the tensor, pointing at merge)
// but drops a base layer equal to the base's own tensor.
func TestSaveLoadEmbedAndBaseLayers(t *testing.T) {
	a := New(NewConfig(2, 4, []string{"embed_tokens", "lm_head"}))
	a.Embed = map[string]*Pair{"model.embed_tokens": {A: []float32{1, 2, 3, 4, 5, 6}, B: []float32{1, 0, 0, 1}, R: 2, In: 3, Out: 2, Alpha: 4, Scale: 2}}
	a.Modules["lm_head"] = &Pair{A: []float32{1, 2, 3, 4}, B: []float32{1, 1, 1, 1, 1, 1}, R: 2, In: 2, Out: 3, Alpha: 4, Scale: 2}
	head := safetensors.F32Tensor("lm_head.weight", []int{3, 2}, []float32{1, 2, 3, 4, 5, 6})
	a.BaseLayers = map[string]safetensors.Tensor{"lm_head.weight": head}
	dir := filepath.Join(t.TempDir(), "ad")
	if err := a.Save(dir); err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Open(filepath.Join(dir, WeightsName))
	if err != nil {
		t.Fatal(err)
	}
	names := strings.Join(f.Names(), " ")
	f.Close()
	for _, k := range []string{"model.embed_tokens.lora_embedding_A", "model.embed_tokens.lora_embedding_B", "lm_head.base_layer.weight", "lm_head.lora_A.weight"} {
		if !strings.Contains(names, KeyPrefix+k) {
			t.Errorf("saved keys %s lack %s", names, k)
		}
	}
	b, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(b.Embed, a.Embed) || !reflect.DeepEqual(b.Modules, a.Modules) || !reflect.DeepEqual(b.BaseLayers["lm_head.weight"].Data, head.Data) {
		t.Fatalf("round trip: %+v", b)
	}
	err = b.CheckUnmerged(Base{})
	if err == nil || !strings.Contains(err.Error(), "lora_embedding_A") || !strings.Contains(err.Error(), "lorakit merge") {
		t.Fatalf("embedding LoRA: %v", err)
	}
	b.Embed = nil
	if err := b.CheckUnmerged(Base{}); err == nil || !strings.Contains(err.Error(), "lm_head.base_layer.weight") {
		t.Fatalf("base layer without base weights: %v", err)
	}
	base := t.TempDir()
	if err := safetensors.Write(filepath.Join(base, "model.safetensors"), []safetensors.Tensor{head}, nil); err != nil {
		t.Fatal(err)
	}
	open := func() (*safetensors.Checkpoint, error) { return safetensors.OpenCheckpoint(base) }
	if err := b.CheckUnmerged(Base{Weights: open}); err != nil || b.BaseLayers != nil {
		t.Fatalf("base layer equal to the base: %v (%d left)", err, len(b.BaseLayers))
	}
	b.BaseLayers = map[string]safetensors.Tensor{"lm_head.weight": safetensors.F32Tensor("lm_head.weight", []int{3, 2}, []float32{1, 2, 3, 4, 5, 7})}
	if err := b.CheckUnmerged(Base{Weights: open}); err == nil || !strings.Contains(err.Error(), "differs") {
		t.Fatalf("changed base layer: %v", err)
	}
}
