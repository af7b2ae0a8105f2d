package ggufconv

import (
	"fmt"
	"io"
	"strings"

	"github.com/lorakit/lorakit/models/gguf"
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/lora"
)

// AdapterOptions tune ExportAdapter.
type AdapterOptions struct {
	Type gguf.Type // F32 (default when zero), F16 or BF16
	Name string
}

// moduleShapes gives the (in, out) of each linear module of the Llama family for cfg.
func moduleShapes(c *llama.Config) func(module string) (int, int, bool) {
	H, Q, KV, I, V := c.HiddenSize, c.QDim(), c.KVDim(), c.IntermediateSize, c.VocabSize
	return func(module string) (int, int, bool) {
		if module == "lm_head" {
			return H, V, true
		}
		if _, ok := TensorName(module + ".weight"); !ok {
			return 0, 0, false
		}
		switch module[strings.LastIndexByte(module, '.')+1:] {
		case "q_proj":
			return H, Q, true
		case "k_proj", "v_proj":
			return H, KV, true
		case "o_proj":
			return Q, H, true
		case "gate_proj", "up_proj":
			return H, I, true
		case "down_proj":
			return I, H, true
		}
		return 0, 0, false
	}
}

// ExportAdapter writes the PEFT LoRA adapter in adapterDir, trained on the base folder baseDir, as a llama.cpp
// LoRA adapter file: general.type "adapter", adapter.type "lora", adapter.lora.alpha, and for every target the
// pair <tensor>.lora_a (A, [r, in]) and <tensor>.lora_b (B, [out, r]) under llama.cpp's tensor names, with B's
// rows permuted like the base's q/k weights. llama.cpp scales each pair by alpha/r; a module whose scaling is
// different (use_rslora, rank_pattern, alpha_pattern) has the ratio folded into its B, so that the product
// is the adapter's.
func ExportAdapter(baseDir, adapterDir, out string, opts AdapterOptions) (*Result, error) {
	t := opts.Type
	if t == 0 {
		t = gguf.F32
	}
	if t != gguf.F32 && t != gguf.F16 && t != gguf.BF16 {
		return nil, fmt.Errorf("ggufconv: adapter weight type %s is not supported (f32, f16, bf16)", t)
	}
	cfg, err := llama.LoadConfig(baseDir)
	if err != nil {
		return nil, err
	}
	arch, err := Arch(cfg)
	if err != nil {
		return nil, fmt.Errorf("ggufconv: %s: %w", baseDir, err)
	}
	if c, err := lora.LoadConfig(adapterDir); err == nil && c.UseDoRA {
		return nil, fmt.Errorf("ggufconv: adapter %s is a DoRA adapter (use_dora): a GGUF LoRA adapter has no magnitude vector for llama.cpp to apply; merge it (lorakit merge) and export the merged folder", adapterDir)
	}
	a, err := lora.LoadUnmerged(adapterDir, lora.Base{Linear: moduleShapes(cfg)})
	if err != nil {
		return nil, err
	}
	if len(a.Tokens) > 0 {
		return nil, fmt.Errorf("ggufconv: adapter %s trains token rows (trainable_token_indices), which a llama.cpp LoRA cannot carry: merge it (lorakit merge) and export the merged folder", adapterDir)
	}
	if _, ok := a.Modules["lm_head"]; ok && cfg.TieWordEmbeddings {
		return nil, fmt.Errorf("ggufconv: adapter %s adapts lm_head, which the base ties to the embedding: llama.cpp has no separate output tensor to apply it to; merge it (lorakit merge) and export the merged folder", adapterDir)
	}
	alpha := a.Config.Alpha
	res := &Result{Arch: arch}
	type pair struct {
		name string
		p    *lora.Pair
		fold float32 // factor folded into B (1: none)
		perm int     // heads to permute B's rows by (0: none)
	}
	var pairs []pair
	var infos []gguf.TensorInfo
	folded := 0
	for _, m := range a.Names() {
		p := a.Modules[m]
		name, ok := TensorName(m + ".weight")
		if !ok {
			return nil, fmt.Errorf("ggufconv: adapter %s: module %s has no llama.cpp tensor", adapterDir, m)
		}
		fold := float32(1)
		if alpha == 0 {
			fold = p.Scale // llama.cpp then applies scale 1
		} else if p.Scale != lora.Scaling(alpha, p.R, false) {
			fold = p.Scale / lora.Scaling(alpha, p.R, false)
			folded++
		}
		perm := 0
		if permutes(arch) {
			perm = qkHeads(cfg, m)
		}
		pairs = append(pairs, pair{name, p, fold, perm})
		infos = append(infos,
			gguf.TensorInfo{Name: name + ".lora_a", Type: t, Shape: []int{p.R, p.In}},
			gguf.TensorInfo{Name: name + ".lora_b", Type: t, Shape: []int{p.Out, p.R}})
	}
	if len(pairs) == 0 {
		return nil, fmt.Errorf("ggufconv: adapter %s has no LoRA modules", adapterDir)
	}
	if folded > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d module(s) scale by other than lora_alpha/r (use_rslora, rank_pattern or alpha_pattern): the factor is folded into lora_b", folded))
	}
	name := opts.Name
	if name == "" {
		name = baseName(adapterDir)
	}
	kvs := []gguf.KV{
		{Key: "general.architecture", Value: arch},
		{Key: "general.type", Value: "adapter"},
		{Key: "general.name", Value: name},
		{Key: "adapter.type", Value: "lora"},
		{Key: "adapter.lora.alpha", Value: float32(alpha)},
	}
	var buf []byte
	err = gguf.Write(out, kvs, infos, func(i int, w io.Writer) error {
		pr := pairs[i/2]
		v := pr.p.A
		if i%2 == 1 {
			v = pr.p.B
			if pr.perm > 0 {
				v = permuteRows(v, pr.perm, pr.p.R)
			}
			if pr.fold != 1 {
				v = scaled(v, pr.fold)
			}
		}
		var err error
		if buf, err = gguf.Encode(buf[:0], t, v); err != nil {
			return err
		}
		_, err = w.Write(buf)
		return err
	})
	if err != nil {
		return nil, err
	}
	res.Tensors = len(infos)
	return res, nil
}

func scaled(v []float32, s float32) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = x * s
	}
	return out
}
