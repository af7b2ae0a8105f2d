package ggufconv

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strings"

	"github.com/lorakit/lorakit/models/gguf"
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/nn"
	"github.com/lorakit/lorakit/models/quant"
	"github.com/lorakit/lorakit/models/safetensors"
)

// Config rebuilds the Hugging Face config of a llama.cpp model file (architecture llama, qwen2 or qwen3) from its
// metadata and tensor table, validated by llama.ParseConfig: biases and tied embeddings from the tensors present,
// llama3 rope scaling from rope_freqs.weight.
func Config(g *gguf.File) (*llama.Config, error) {
	raw, err := configMap(g)
	if err != nil {
		return nil, err
	}
	data, err := json.Marshal(raw)
	if err != nil {
		return nil, err
	}
	cfg, err := llama.ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", g.Path, err)
	}
	if _, ok := g.Tensor("rope_freqs.weight"); ok {
		f, ti, err := g.Float32s("rope_freqs.weight")
		if err != nil {
			return nil, err
		}
		if len(f) != cfg.HeadDim/2 {
			return nil, fmt.Errorf("%s: rope_freqs.weight has %d values, want head_dim/2 = %d", g.Path, ti.Elems(), cfg.HeadDim/2)
		}
		cfg.RopeFreqFactors = f
	}
	return cfg, nil
}

// configMap is config.json's content as the metadata and tensor table give it.
//
// complexity: one read per GGUF metadata key it maps, in config.json's order.
func configMap(g *gguf.File) (map[string]any, error) {
	arch, _, err := g.String("general.architecture")
	if err != nil {
		return nil, err
	}
	if typ, _, _ := g.String("general.type"); typ == "adapter" {
		return nil, fmt.Errorf("%s is a LoRA adapter GGUF (general.type adapter), not a model", g.Path)
	}
	switch arch {
	case "llama", "qwen2", "qwen3":
	case "":
		return nil, fmt.Errorf("%s: general.architecture is missing", g.Path)
	default:
		return nil, fmt.Errorf("%s: architecture %q is not supported (llama, qwen2, qwen3)", g.Path, arch)
	}
	raw := map[string]any{"model_type": arch, "architectures": []string{"GGUFForCausalLM"}, "hidden_act": "silu"}
	ints := map[string]string{
		"embedding_length": "hidden_size", "feed_forward_length": "intermediate_size", "block_count": "num_hidden_layers",
		"attention.head_count": "num_attention_heads", "attention.head_count_kv": "num_key_value_heads",
		"context_length": "max_position_embeddings", "attention.key_length": "head_dim",
	}
	for k, hf := range ints {
		v, ok, err := g.Int(arch + "." + k)
		if err != nil {
			return nil, err
		}
		if ok {
			raw[hf] = v
		}
	}
	if v, ok, err := g.Int(arch + ".attention.value_length"); err != nil {
		return nil, err
	} else if ok && raw["head_dim"] != nil && v != raw["head_dim"] {
		return nil, fmt.Errorf("%s: attention.value_length %d differs from key_length %v (not supported)", g.Path, v, raw["head_dim"])
	}
	if v, ok, err := g.Int(arch + ".rope.dimension_count"); err != nil {
		return nil, err
	} else if ok && raw["head_dim"] != nil && v != raw["head_dim"] {
		return nil, fmt.Errorf("%s: rope.dimension_count %d is not the head size %v (partial rotary is not supported)", g.Path, v, raw["head_dim"])
	}
	for k, hf := range map[string]string{"rope.freq_base": "rope_theta", "attention.layer_norm_rms_epsilon": "rms_norm_eps"} {
		v, ok, err := g.Float(arch + "." + k)
		if err != nil {
			return nil, err
		}
		if ok {
			raw[hf] = v
		}
	}
	if s, ok, _ := g.String(arch + ".rope.scaling.type"); ok && s != "none" && s != "" {
		return nil, fmt.Errorf("%s: rope scaling %q is not supported", g.Path, s)
	}
	emb, ok := g.Tensor("token_embd.weight")
	if !ok || len(emb.Shape) != 2 {
		return nil, fmt.Errorf("%s: tensor token_embd.weight is missing", g.Path)
	}
	raw["vocab_size"] = emb.Shape[0]
	_, hasOutput := g.Tensor("output.weight")
	raw["tie_word_embeddings"] = !hasOutput
	if _, ok := g.Tensor("blk.0.attn_q.bias"); ok && arch != "qwen2" {
		raw["attention_bias"] = true
		if _, ok := g.Tensor("blk.0.attn_output.bias"); !ok {
			return nil, fmt.Errorf("%s: q/k/v biases without an output bias are only supported for qwen2", g.Path)
		}
	}
	for k, hf := range map[string]string{keyBOS: "bos_token_id", keyEOS: "eos_token_id"} {
		if v, ok, err := g.Int(k); err != nil {
			return nil, err
		} else if ok {
			raw[hf] = v
		}
	}
	return raw, nil
}

// Weights serves the tensors of a llama.cpp model file to llama.LoadTensors under their Hugging Face names and
// in Hugging Face layout (q/k rows back in rotate_half order for the "llama" architecture). F32, F16 and BF16
// tensors are served as stored (zero-copy unless permuted); Q4_0 and Q8_0 linear weights become quant.Weight for
// the integer kernels (LoadLinear); other Q8_0/Q4_0 tensors are dequantised to F32.
type Weights struct {
	g    *gguf.File
	cfg  *llama.Config
	arch string
	// Compact writes the Q4_0 and Q8_0 weights straight into their kernels' layout where the dot kernels run them
	// (llama.LoadOptions.Compact), so that no tensor is ever resident in two layouts.
	Compact bool
}

// NewWeights checks every tensor's type (K-quants and other types are refused, naming the tensor).
func NewWeights(g *gguf.File, cfg *llama.Config) (*Weights, error) {
	arch, _, _ := g.String("general.architecture")
	var bad []string
	for _, t := range g.Tensors {
		switch t.Type {
		case gguf.F32, gguf.F16, gguf.BF16, gguf.Q8_0, gguf.Q4_0:
		default:
			bad = append(bad, t.Name+" ("+t.Type.String()+")")
		}
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("%s: %d tensor(s) of a type lorakit cannot read yet: %s; supported: F32, F16, BF16, Q8_0, Q4_0 (K-quants are not): re-quantise with llama-quantize to Q8_0 or Q4_0, or export from the Hugging Face folder",
			g.Path, len(bad), strings.Join(bad[:min(len(bad), 4)], ", "))
	}
	return &Weights{g: g, cfg: cfg, arch: arch}, nil
}

var _ llama.Tensors = (*Weights)(nil)

func (w *Weights) lookup(hf string) (gguf.TensorInfo, bool) {
	name, ok := TensorName(hf)
	if !ok {
		return gguf.TensorInfo{}, false
	}
	return w.g.Tensor(name)
}

// Info reports a tensor as F32 when it is stored in blocks (it is served dequantised).
func (w *Weights) Info(hf string) (safetensors.TensorInfo, string, bool) {
	t, ok := w.lookup(hf)
	if !ok {
		return safetensors.TensorInfo{}, "", false
	}
	dt := safetensors.F32
	switch t.Type {
	case gguf.F16:
		dt = safetensors.F16
	case gguf.BF16:
		dt = safetensors.BF16
	}
	return safetensors.TensorInfo{Name: hf, DType: dt, Shape: t.Shape}, w.g.Path, true
}

func (w *Weights) heads(hf string) int {
	if !permutes(w.arch) {
		return 0
	}
	return qkHeads(w.cfg, hf)
}

// Bytes returns the tensor in Info's dtype.
func (w *Weights) Bytes(hf string) ([]byte, error) {
	t, ok := w.lookup(hf)
	if !ok {
		return nil, fmt.Errorf("%s: tensor %s is missing", w.g.Path, hf)
	}
	raw, _, err := w.g.TensorBytes(t.Name)
	if err != nil {
		return nil, err
	}
	if t.Type == gguf.Q8_0 || t.Type == gguf.Q4_0 {
		v, err := w.Float32s(hf)
		if err != nil {
			return nil, err
		}
		out := make([]byte, 4*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(x))
		}
		return out, nil
	}
	if h := w.heads(hf); h > 0 {
		return unpermuteRows(raw, h, len(raw)/t.Shape[0]), nil
	}
	return raw, nil
}

// Float32s returns a converted copy in Hugging Face layout.
func (w *Weights) Float32s(hf string) ([]float32, error) {
	t, ok := w.lookup(hf)
	if !ok {
		return nil, fmt.Errorf("%s: tensor %s is missing", w.g.Path, hf)
	}
	v, _, err := w.g.Float32s(t.Name)
	if err != nil {
		return nil, err
	}
	if h := w.heads(hf); h > 0 {
		cols := 1
		if len(t.Shape) == 2 {
			cols = t.Shape[1]
		}
		v = unpermuteRows(v, h, cols)
	}
	return v, nil
}

// LoadLinear gives the Q4_0 and Q8_0 weights whose rows are whole groups of 64 to the integer kernels (never
// widened to f32); everything else loads dense.
func (w *Weights) LoadLinear(_ *safetensors.Checkpoint, module string, out, in int) (nn.Linear, bool, error) {
	t, ok := w.lookup(module + ".weight")
	if !ok || (t.Type != gguf.Q4_0 && t.Type != gguf.Q8_0) || len(t.Shape) != 2 || in%64 != 0 {
		return nil, false, nil
	}
	raw, _, err := w.g.TensorBytes(t.Name)
	if err != nil {
		return nil, false, err
	}
	rows, cols := t.Shape[0], t.Shape[1]
	if h := w.heads(module + ".weight"); h > 0 {
		raw = unpermuteRows(raw, h, len(raw)/rows)
	}
	conv := Q4_0Weight
	if t.Type == gguf.Q8_0 {
		conv = Q8_0Weight
	}
	q, err := conv(raw, rows, cols, w.Compact)
	if err != nil {
		return nil, false, fmt.Errorf("%s: tensor %s: %w", w.g.Path, t.Name, err)
	}
	w.g.Evict(t.Name) // re-packed into q: the mapped blocks need not stay resident too
	return &nn.Quantized{Q: q}, true, nil
}

// Q4_0Weight re-packs ggml Q4_0 blocks ([rows, cols], row-major) into a quant.Weight of type Q4_0: per 32-block an
// absmax of 8·d and the codes two per byte, first element in the high nibble (ggml keeps element j in the low
// nibble of byte j and element j+16 in its high nibble). With compact the codes go straight into the kernels'
// layout where the dot kernels run (quant.Weight.FillCodes).
func Q4_0Weight(raw []byte, rows, cols int, compact bool) (*quant.Weight, error) {
	nb := rows * cols / gguf.QK
	if cols%gguf.QK != 0 || len(raw) != nb*gguf.Q4_0Bytes {
		return nil, fmt.Errorf("Q4_0: %d bytes for [%d %d]", len(raw), rows, cols)
	}
	code, _ := quant.Code(quant.Q4_0)
	q := &quant.Weight{Type: quant.Q4_0, Shape: []int{rows, cols}, BlockSize: gguf.QK, Code: code, Absmax: make([]float32, nb)}
	for b := range nb {
		q.Absmax[b] = 8 * safetensors.F16ToF32(binary.LittleEndian.Uint16(raw[b*gguf.Q4_0Bytes:]))
	}
	rb := cols / gguf.QK
	q.FillCodes(compact, func(r int, dst []byte) {
		for b := range rb {
			blk := raw[(r*rb+b)*gguf.Q4_0Bytes+2 : (r*rb+b+1)*gguf.Q4_0Bytes]
			d := dst[b*gguf.QK/2 : (b+1)*gguf.QK/2]
			for i := range gguf.QK / 4 { // elements 2i, 2i+1 from the first half, 16+2i, 16+2i+1 from the second
				lo, hi := blk[2*i], blk[2*i+1]
				d[i] = lo<<4 | hi&15
				d[gguf.QK/4+i] = lo&0xf0 | hi>>4
			}
		}
	})
	return q, nil
}

// Q8_0Weight splits ggml Q8_0 blocks ([rows, cols], row-major) into a quant.Weight of type Q8_0: the int8 codes
// in element order and, per 32-block, ggml's f16 scale d as a float32 (exact). With compact the codes go straight
// into the kernels' layout where the dot kernels run (quant.Weight.FillCodes).
func Q8_0Weight(raw []byte, rows, cols int, compact bool) (*quant.Weight, error) {
	nb := rows * cols / gguf.QK
	if cols%gguf.QK != 0 || len(raw) != nb*gguf.Q8_0Bytes {
		return nil, fmt.Errorf("Q8_0: %d bytes for [%d %d]", len(raw), rows, cols)
	}
	q := &quant.Weight{Type: quant.Q8_0, Shape: []int{rows, cols}, BlockSize: gguf.QK, Absmax: make([]float32, nb)}
	for b := range nb {
		q.Absmax[b] = safetensors.F16ToF32(binary.LittleEndian.Uint16(raw[b*gguf.Q8_0Bytes:]))
	}
	rb := cols / gguf.QK
	q.FillCodes(compact, func(r int, dst []byte) {
		for b := range rb {
			copy(dst[b*gguf.QK:(b+1)*gguf.QK], raw[(r*rb+b)*gguf.Q8_0Bytes+2:(r*rb+b+1)*gguf.Q8_0Bytes])
		}
	})
	return q, nil
}
