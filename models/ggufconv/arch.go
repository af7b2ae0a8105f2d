// Package ggufconv converts between Hugging Face Llama-family folders (llama, mistral, qwen2, qwen3) and PEFT
// LoRA adapters on one side and llama.cpp GGUF files on the other: the hyperparameters and their keys, the
// tensor names, the Q/K row permutation of llama.cpp's "llama" architecture, and the tokenizer metadata.
package ggufconv

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/lorakit/lorakit/models/gguf"
	"github.com/lorakit/lorakit/models/llama"
)

// Arch is the llama.cpp architecture name of a config: "llama" for llama and mistral, "qwen2", "qwen3".
func Arch(c *llama.Config) (string, error) {
	switch c.ModelType {
	case "llama", "mistral":
		return "llama", nil
	case "qwen2", "qwen3":
		return c.ModelType, nil
	}
	return "", fmt.Errorf("model_type %q has no llama.cpp architecture lorakit can write", c.ModelType)
}

// permutes reports whether llama.cpp's architecture applies RoPE to interleaved pairs (2i, 2i+1), so that the
// rows of q_proj and k_proj (and of their biases and LoRA B matrices) must be permuted from Hugging Face's
// rotate_half order, as llama.cpp's converter does for "llama". Qwen2/Qwen3 use NeoX RoPE (rotate_half).
func permutes(arch string) bool { return arch == "llama" }

// permuteRows reorders the rows of w ([rows, rowLen], rows = heads·headDim) from rotate_half order (within a
// head: first the real halves 0..d/2-1, then the imaginary ones) to interleaved order (pairs of rows side by
// side): destination row h·d + 2i + j takes source row h·d + j·d/2 + i. A row is rowLen elements of any type (f32
// values, or the raw bytes of whole quantised blocks).
func permuteRows[T any](w []T, heads, rowLen int) []T { return reorderRows(w, heads, rowLen, false) }

// unpermuteRows is the inverse of permuteRows.
func unpermuteRows[T any](w []T, heads, rowLen int) []T { return reorderRows(w, heads, rowLen, true) }

func reorderRows[T any](w []T, heads, rowLen int, inverse bool) []T {
	rows := len(w) / rowLen
	d := rows / heads
	out := make([]T, len(w))
	for h := range heads {
		for i := range d / 2 {
			for j := range 2 {
				dst, src := h*d+2*i+j, h*d+j*d/2+i
				if inverse {
					dst, src = src, dst
				}
				copy(out[dst*rowLen:(dst+1)*rowLen], w[src*rowLen:(src+1)*rowLen])
			}
		}
	}
	return out
}

// HParamsKV returns general.architecture and the {arch}.* hyperparameters of c.
func HParamsKV(c *llama.Config, arch string) []gguf.KV {
	u := func(v int) uint32 { return uint32(v) }
	kvs := []gguf.KV{
		{Key: "general.architecture", Value: arch},
		{Key: arch + ".vocab_size", Value: u(c.VocabSize)},
		{Key: arch + ".context_length", Value: u(c.MaxPositionEmbeddings)},
		{Key: arch + ".embedding_length", Value: u(c.HiddenSize)},
		{Key: arch + ".block_count", Value: u(c.NumHiddenLayers)},
		{Key: arch + ".feed_forward_length", Value: u(c.IntermediateSize)},
		{Key: arch + ".attention.head_count", Value: u(c.NumAttentionHeads)},
		{Key: arch + ".attention.head_count_kv", Value: u(c.NumKeyValueHeads)},
		{Key: arch + ".attention.key_length", Value: u(c.HeadDim)},
		{Key: arch + ".attention.value_length", Value: u(c.HeadDim)},
		{Key: arch + ".rope.dimension_count", Value: u(c.HeadDim)},
		{Key: arch + ".rope.freq_base", Value: float32(c.RopeTheta)},
		{Key: arch + ".attention.layer_norm_rms_epsilon", Value: float32(c.RMSNormEps)},
	}
	return kvs
}

// ropeFreqs are llama.cpp's rope_freqs.weight for llama3 rope scaling: per frequency pair, the divisor that
// turns the plain inverse frequency into the scaled one (1 for high frequencies, factor for low ones, smooth in
// between), as Config.InvFreq applies it.
func ropeFreqs(c *llama.Config) []float32 {
	rs := c.RopeScaling
	out := make([]float32, c.HeadDim/2)
	for i := range out {
		f := 1 / math.Pow(c.RopeTheta, float64(2*i)/float64(c.HeadDim))
		wave := 2 * math.Pi / f
		lowWave := float64(rs.OriginalMaxPositionEmbeddings) / rs.LowFreqFactor
		highWave := float64(rs.OriginalMaxPositionEmbeddings) / rs.HighFreqFactor
		switch {
		case wave < highWave:
			out[i] = 1
		case wave > lowWave:
			out[i] = float32(rs.Factor)
		default:
			smooth := (float64(rs.OriginalMaxPositionEmbeddings)/wave - rs.LowFreqFactor) / (rs.HighFreqFactor - rs.LowFreqFactor)
			out[i] = float32(1 / ((1-smooth)/rs.Factor + smooth))
		}
	}
	return out
}

// hfToGGUF maps the Hugging Face names inside a layer to llama.cpp's.
var hfToGGUF = map[string]string{
	"input_layernorm.weight":          "attn_norm.weight",
	"self_attn.q_proj.weight":         "attn_q.weight",
	"self_attn.q_proj.bias":           "attn_q.bias",
	"self_attn.k_proj.weight":         "attn_k.weight",
	"self_attn.k_proj.bias":           "attn_k.bias",
	"self_attn.v_proj.weight":         "attn_v.weight",
	"self_attn.v_proj.bias":           "attn_v.bias",
	"self_attn.o_proj.weight":         "attn_output.weight",
	"self_attn.o_proj.bias":           "attn_output.bias",
	"self_attn.q_norm.weight":         "attn_q_norm.weight",
	"self_attn.k_norm.weight":         "attn_k_norm.weight",
	"post_attention_layernorm.weight": "ffn_norm.weight",
	"mlp.gate_proj.weight":            "ffn_gate.weight",
	"mlp.up_proj.weight":              "ffn_up.weight",
	"mlp.down_proj.weight":            "ffn_down.weight",
}

// fixedNames are the tensors outside the layers.
var fixedNames = map[string]string{
	"model.embed_tokens.weight": "token_embd.weight",
	"model.norm.weight":         "output_norm.weight",
	"lm_head.weight":            "output.weight",
}

// The same tables read from llama.cpp's names.
var (
	ggufToHF      = invert(hfToGGUF)
	fixedNamesInv = invert(fixedNames)
)

func invert(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[v] = k
	}
	return out
}

// TensorName maps a Hugging Face tensor name to llama.cpp's ("model.layers.3.mlp.up_proj.weight" →
// "blk.3.ffn_up.weight"); ok is false for a name llama.cpp has no place for.
func TensorName(hf string) (string, bool) {
	return rename(hf, fixedNames, "model.layers.", "blk.", hfToGGUF)
}

// HFName is the inverse of TensorName.
func HFName(g string) (string, bool) {
	return rename(g, fixedNamesInv, "blk.", "model.layers.", ggufToHF)
}

// rename maps a name through fixed, or a layer's name (from + N + "." + part) through parts.
func rename(name string, fixed map[string]string, from, to string, parts map[string]string) (string, bool) {
	if n, ok := fixed[name]; ok {
		return n, true
	}
	rest, ok := strings.CutPrefix(name, from)
	if !ok {
		return "", false
	}
	num, sub, ok := strings.Cut(rest, ".")
	if _, err := strconv.Atoi(num); !ok || err != nil {
		return "", false
	}
	p, ok := parts[sub]
	if !ok {
		return "", false
	}
	return to + num + "." + p, true
}

// qkHeads returns the number of heads whose rows a tensor's permutation groups: num_attention_heads for q_proj,
// num_key_value_heads for k_proj, 0 for a tensor that is not permuted.
func qkHeads(c *llama.Config, hf string) int {
	switch {
	case strings.HasSuffix(hf, ".self_attn.q_proj.weight"), strings.HasSuffix(hf, ".self_attn.q_proj.bias"),
		strings.HasSuffix(hf, ".self_attn.q_proj"):
		return c.NumAttentionHeads
	case strings.HasSuffix(hf, ".self_attn.k_proj.weight"), strings.HasSuffix(hf, ".self_attn.k_proj.bias"),
		strings.HasSuffix(hf, ".self_attn.k_proj"):
		return c.NumKeyValueHeads
	}
	return 0
}
