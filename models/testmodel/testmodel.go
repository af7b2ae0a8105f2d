// Package testmodel writes tiny random Hugging Face checkpoint folders (config.json, generation_config.json,
// safetensors weights, a byte-level BPE tokenizer.json and tokenizer_config.json with a ChatML chat template) so
// that every package can test offline against a real folder layout.
package testmodel

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/lorakit/lorakit/models/safetensors"
)

// Options describe the model to write. Zero sizes take Default()'s values.
type Options struct {
	ModelType     string // llama | mistral | qwen2 | qwen3
	Hidden        int
	Intermediate  int
	Layers        int
	Heads         int
	KVHeads       int
	HeadDim       int // 0: Hidden/Heads (written explicitly for qwen3)
	Vocab         int // >= 256 + len(Specials); ids past the tokenizer's are unused rows
	MaxPositions  int // max_position_embeddings (0: 512)
	Tied          bool
	DType         string // F32 | BF16 | F16
	Shards        int    // >1: model-0000i-of-0000n.safetensors + model.safetensors.index.json
	AttentionBias bool   // llama/qwen3: attention_bias true (q/k/v/o biases); qwen2 always has q/k/v biases
	// Llama3RopeScaling writes rope_scaling {rope_type llama3, factor 8, low 1, high 4, original 16}.
	Llama3RopeScaling bool
	SlidingWindow     int // mistral: sliding_window (0: null)
	Seed              int64
	// Std is the standard deviation of the random weights (0: 0.2).
	Std float64
}

// Special tokens of the tokenizer, in id order at the end of the tokenizer vocabulary.
var Specials = []string{"<s>", "</s>", "<|im_start|>", "<|im_end|>"}

// ChatTemplate is the ChatML template written into tokenizer_config.json.
const ChatTemplate = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"

// Default is a tiny two-layer llama with grouped-query attention and a ~300-token byte-level vocabulary.
func Default() Options {
	return Options{ModelType: "llama", Hidden: 32, Intermediate: 64, Layers: 2, Heads: 4, KVHeads: 2, Vocab: 300,
		MaxPositions: 512, DType: "F32", Shards: 1, Seed: 1}
}

func (o Options) withDefaults() Options {
	d := Default()
	if o.ModelType == "" {
		o.ModelType = d.ModelType
	}
	if o.Hidden == 0 {
		o.Hidden = d.Hidden
	}
	if o.Intermediate == 0 {
		o.Intermediate = d.Intermediate
	}
	if o.Layers == 0 {
		o.Layers = d.Layers
	}
	if o.Heads == 0 {
		o.Heads = d.Heads
	}
	if o.KVHeads == 0 {
		o.KVHeads = o.Heads
		if o.Heads == d.Heads {
			o.KVHeads = d.KVHeads
		}
	}
	if o.HeadDim == 0 {
		o.HeadDim = o.Hidden / o.Heads
	}
	if o.Vocab == 0 {
		o.Vocab = d.Vocab
	}
	if o.MaxPositions == 0 {
		o.MaxPositions = d.MaxPositions
	}
	if o.DType == "" {
		o.DType = "F32"
	}
	if o.Shards == 0 {
		o.Shards = 1
	}
	if o.Std == 0 {
		o.Std = 0.2
	}
	return o
}

// Token ids of the special tokens for a given vocabulary (see Tokens).
func SpecialID(o Options, tok string) int {
	o = o.withDefaults()
	toks, _ := Tokens(o.Vocab)
	for i, t := range toks {
		if t == tok {
			return i
		}
	}
	return -1
}

// Write creates dir (if needed) and writes a complete random model folder.
func Write(dir string, o Options) error {
	o = o.withDefaults()
	switch o.ModelType {
	case "llama", "mistral", "qwen2", "qwen3":
	default:
		return fmt.Errorf("testmodel: model type %q", o.ModelType)
	}
	switch o.DType {
	case "F32", "BF16", "F16":
	default:
		return fmt.Errorf("testmodel: dtype %q", o.DType)
	}
	toks, merges := Tokens(o.Vocab)
	if len(toks) > o.Vocab {
		return fmt.Errorf("testmodel: vocab %d is smaller than the tokenizer's %d tokens", o.Vocab, len(toks))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	bos, eos, imEnd := len(toks)-4, len(toks)-3, len(toks)-1
	if err := writeJSON(filepath.Join(dir, "config.json"), configJSON(o, bos, []int{imEnd, eos})); err != nil {
		return err
	}
	gen := map[string]any{"bos_token_id": bos, "eos_token_id": []int{imEnd, eos}, "do_sample": true,
		"temperature": 0.7, "top_p": 0.9, "top_k": 20, "transformers_version": "4.51.0"}
	if err := writeJSON(filepath.Join(dir, "generation_config.json"), gen); err != nil {
		return err
	}
	if err := writeTokenizer(dir, toks, merges); err != nil {
		return err
	}
	return writeWeights(dir, o)
}

func configJSON(o Options, bos int, eos []int) map[string]any {
	arch := map[string]string{"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
		"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}[o.ModelType]
	dtype := map[string]string{"F32": "float32", "BF16": "bfloat16", "F16": "float16"}[o.DType]
	c := map[string]any{
		"architectures": []string{arch}, "model_type": o.ModelType, "hidden_size": o.Hidden,
		"intermediate_size": o.Intermediate, "num_hidden_layers": o.Layers, "num_attention_heads": o.Heads,
		"num_key_value_heads": o.KVHeads, "vocab_size": o.Vocab, "max_position_embeddings": o.MaxPositions,
		"rms_norm_eps": 1e-6, "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": o.Tied,
		"bos_token_id": bos, "eos_token_id": eos, "torch_dtype": dtype, "initializer_range": 0.02,
		"use_cache": true, "attention_dropout": 0.0, "transformers_version": "4.51.0",
	}
	if o.HeadDim != o.Hidden/o.Heads || o.ModelType == "qwen3" {
		c["head_dim"] = o.HeadDim
	}
	switch o.ModelType {
	case "llama":
		c["attention_bias"], c["mlp_bias"], c["pretraining_tp"] = o.AttentionBias, false, 1
	case "mistral":
		c["sliding_window"] = nil
		if o.SlidingWindow > 0 {
			c["sliding_window"] = o.SlidingWindow
		}
	case "qwen2":
		c["use_sliding_window"], c["sliding_window"], c["max_window_layers"] = false, o.MaxPositions, o.Layers
	case "qwen3":
		c["attention_bias"], c["use_sliding_window"], c["sliding_window"] = o.AttentionBias, false, nil
	}
	c["rope_scaling"] = nil
	if o.Llama3RopeScaling {
		c["rope_scaling"] = map[string]any{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
			"high_freq_factor": 4.0, "original_max_position_embeddings": 16}
	}
	return c
}

// Tensors returns the random weights of o (f32 values, HF names and shapes), in name order.
func Tensors(o Options) []safetensors.Tensor {
	o = o.withDefaults()
	rng := rand.New(rand.NewPCG(uint64(o.Seed), 0x1f2e3d4c))
	H, I, D, V := o.Hidden, o.Intermediate, o.HeadDim, o.Vocab
	Q, KV := o.Heads*D, o.KVHeads*D
	var ts []safetensors.Tensor
	randT := func(name string, scale, mean float64, shape ...int) {
		n := 1
		for _, d := range shape {
			n *= d
		}
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(mean + scale*rng.NormFloat64())
		}
		ts = append(ts, safetensors.F32Tensor(name, shape, v))
	}
	std := o.Std
	randT("model.embed_tokens.weight", 1, 0, V, H)
	for l := range o.Layers {
		p := fmt.Sprintf("model.layers.%d.", l)
		randT(p+"input_layernorm.weight", 0.1, 1, H)
		randT(p+"post_attention_layernorm.weight", 0.1, 1, H)
		randT(p+"self_attn.q_proj.weight", std, 0, Q, H)
		randT(p+"self_attn.k_proj.weight", std, 0, KV, H)
		randT(p+"self_attn.v_proj.weight", std, 0, KV, H)
		randT(p+"self_attn.o_proj.weight", std, 0, H, Q)
		qkvBias := o.ModelType == "qwen2" || (o.AttentionBias && (o.ModelType == "llama" || o.ModelType == "qwen3"))
		if qkvBias {
			randT(p+"self_attn.q_proj.bias", std, 0, Q)
			randT(p+"self_attn.k_proj.bias", std, 0, KV)
			randT(p+"self_attn.v_proj.bias", std, 0, KV)
		}
		if o.AttentionBias && (o.ModelType == "llama" || o.ModelType == "qwen3") {
			randT(p+"self_attn.o_proj.bias", std, 0, H)
		}
		if o.ModelType == "qwen3" {
			randT(p+"self_attn.q_norm.weight", 0.1, 1, D)
			randT(p+"self_attn.k_norm.weight", 0.1, 1, D)
		}
		randT(p+"mlp.gate_proj.weight", std, 0, I, H)
		randT(p+"mlp.up_proj.weight", std, 0, I, H)
		randT(p+"mlp.down_proj.weight", std, 0, H, I)
	}
	randT("model.norm.weight", 0.1, 1, H)
	if !o.Tied {
		randT("lm_head.weight", std, 0, V, H)
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].Name < ts[j].Name })
	return ts
}

func writeWeights(dir string, o Options) error {
	ts := Tensors(o)
	if o.DType != "F32" {
		for i := range ts {
			v := make([]float32, len(ts[i].Data)/4)
			if err := safetensors.Decode(safetensors.F32, ts[i].Data, v); err != nil {
				return err
			}
			raw, err := safetensors.Encode(safetensors.DType(o.DType), v)
			if err != nil {
				return err
			}
			ts[i].DType, ts[i].Data = safetensors.DType(o.DType), raw
		}
	}
	if o.Shards <= 1 {
		return safetensors.Write(filepath.Join(dir, "model.safetensors"), ts, nil)
	}
	weightMap := map[string]string{}
	total := 0
	for s := range o.Shards {
		name := fmt.Sprintf("model-%05d-of-%05d.safetensors", s+1, o.Shards)
		var part []safetensors.Tensor
		for i := s; i < len(ts); i += o.Shards {
			part = append(part, ts[i])
			weightMap[ts[i].Name] = name
			total += len(ts[i].Data)
		}
		if err := safetensors.Write(filepath.Join(dir, name), part, nil); err != nil {
			return err
		}
	}
	return writeJSON(filepath.Join(dir, safetensors.IndexName),
		map[string]any{"metadata": map[string]any{"total_size": total}, "weight_map": weightMap})
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// byteChars is GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to U+0100 upwards.
func byteChars() [256]string {
	var out [256]string
	n := 0
	for b := range 256 {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			out[b] = string(rune(b))
		} else {
			out[b] = string(rune(256 + n))
			n++
		}
	}
	return out
}

// corpus trains the merges; it is fixed so the tokenizer is the same for every vocabulary size.
const corpus = `Once upon a time there was a little girl. She liked to play in the park with her dog.
The dog was happy and the girl was happy too. They played all day in the sun, and then they went home.
the the the and and to to in in a a is is it it he he she she was was you you hello world`

// Tokens returns the tokenizer vocabulary (id order: 256 byte-level characters, merged pieces, then Specials)
// and the merges, for a model vocabulary of size vocab (merges fill the room left after bytes and specials).
func Tokens(vocab int) (toks []string, merges []string) {
	bc := byteChars()
	toks = append(toks, bc[:]...)
	room := vocab - 256 - len(Specials)
	if room < 0 {
		room = 0
	}
	room = min(room, 64)
	// words: each space-prefixed chunk of the corpus as byte-level symbols
	counts := map[string]int{}
	for _, line := range strings.Split(corpus, "\n") {
		for i, w := range strings.Split(line, " ") {
			if i > 0 {
				w = " " + w
			}
			counts[w]++
		}
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	words := make([][]string, len(keys))
	for i, k := range keys {
		for _, b := range []byte(k) {
			words[i] = append(words[i], bc[b])
		}
	}
	for len(merges) < room {
		pairs := map[[2]string]int{}
		for i, w := range words {
			for j := 0; j+1 < len(w); j++ {
				pairs[[2]string{w[j], w[j+1]}] += counts[keys[i]]
			}
		}
		var best [2]string
		bestN := 0
		for p, n := range pairs {
			if n > bestN || (n == bestN && p[0]+" "+p[1] < best[0]+" "+best[1]) {
				best, bestN = p, n
			}
		}
		if bestN < 2 {
			break
		}
		merges = append(merges, best[0]+" "+best[1])
		toks = append(toks, best[0]+best[1])
		for i, w := range words {
			var nw []string
			for j := 0; j < len(w); j++ {
				if j+1 < len(w) && w[j] == best[0] && w[j+1] == best[1] {
					nw = append(nw, best[0]+best[1])
					j++
				} else {
					nw = append(nw, w[j])
				}
			}
			words[i] = nw
		}
	}
	return append(toks, Specials...), merges
}

func writeTokenizer(dir string, toks, merges []string) error {
	vocab := map[string]int{}
	var added []map[string]any
	decoder := map[string]any{}
	nSpecial := len(Specials)
	for i, t := range toks {
		if i >= len(toks)-nSpecial {
			added = append(added, map[string]any{"id": i, "content": t, "single_word": false, "lstrip": false,
				"rstrip": false, "normalized": false, "special": true})
			decoder[fmt.Sprint(i)] = map[string]any{"content": t, "single_word": false, "lstrip": false,
				"rstrip": false, "normalized": false, "special": true}
		}
		vocab[t] = i
	}
	byteLevel := func() map[string]any {
		return map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
	}
	tj := map[string]any{
		"version": "1.0", "truncation": nil, "padding": nil, "added_tokens": added, "normalizer": nil,
		"pre_tokenizer": byteLevel(), "post_processor": byteLevel(), "decoder": byteLevel(),
		"model": map[string]any{"type": "BPE", "dropout": nil, "unk_token": nil, "continuing_subword_prefix": "",
			"end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
			"vocab": vocab, "merges": merges},
	}
	if err := writeJSON(filepath.Join(dir, "tokenizer.json"), tj); err != nil {
		return err
	}
	tc := map[string]any{
		"add_bos_token": false, "add_eos_token": false, "added_tokens_decoder": decoder,
		"bos_token": "<s>", "eos_token": "<|im_end|>", "pad_token": "</s>", "unk_token": nil,
		"chat_template": ChatTemplate, "clean_up_tokenization_spaces": false, "model_max_length": 512,
		"tokenizer_class": "PreTrainedTokenizerFast",
	}
	return writeJSON(filepath.Join(dir, "tokenizer_config.json"), tc)
}
