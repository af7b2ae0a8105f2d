package ggufconv

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/lorakit/lorakit/models/gguf"
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/safetensors"
)

// ExportOptions tune ExportModel.
type ExportOptions struct {
	// Type is the storage type of the 2-D weights: F32, F16, BF16, Q8_0 or Q4_0. Norms and biases stay F32. With
	// Q4_0 the embedding and the output head are Q8_0 (llama.cpp's q4_0 files keep them at higher precision too;
	// lorakit writes no K-quants). A matrix whose rows are not whole 32-blocks is written as F16.
	Type gguf.Type
	// Name is general.name ("" : the folder's name).
	Name string
	// Progress, if set, is called after each tensor with the count written and the total.
	Progress func(done, total int)
}

// Result describes a written file.
type Result struct {
	Arch    string
	Tensors int
	// Notes are decisions the caller should show: type fallbacks and features llama.cpp does not have.
	Notes []string
}

// fileTypes are general.file_type (llama_ftype) for each weight type.
var fileTypes = map[gguf.Type]uint32{gguf.F32: 0, gguf.F16: 1, gguf.Q4_0: 2, gguf.Q8_0: 7, gguf.BF16: 32}

// ExportModel writes the Hugging Face folder dir as a complete llama.cpp model file at out (atomically, one
// tensor in memory at a time): hyperparameters, tokenizer, chat template and every weight under llama.cpp's
// names, with q_proj/k_proj rows permuted for the "llama" architecture.
func ExportModel(ctx context.Context, dir, out string, opts ExportOptions) (*Result, error) {
	if _, ok := fileTypes[opts.Type]; !ok {
		return nil, fmt.Errorf("ggufconv: weight type %s is not supported (f32, f16, bf16, q8_0, q4_0)", opts.Type)
	}
	if st, err := os.Stat(dir); err == nil && !st.IsDir() {
		return nil, fmt.Errorf("ggufconv: %s is a file; export reads a Hugging Face model folder", dir)
	}
	cfg, err := llama.LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	if cfg.Quantization != nil {
		return nil, fmt.Errorf("ggufconv: %s holds bitsandbytes-quantised weights; export the unquantised (or merged) folder instead", dir)
	}
	arch, err := Arch(cfg)
	if err != nil {
		return nil, fmt.Errorf("ggufconv: %s: %w", dir, err)
	}
	ck, err := safetensors.OpenCheckpoint(dir)
	if err != nil {
		return nil, fmt.Errorf("ggufconv: %w", err)
	}
	defer ck.Close()
	res := &Result{Arch: arch}
	if cfg.SlidingWindow > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("sliding_window %d: llama.cpp's llama architecture attends to the whole context", cfg.SlidingWindow))
	}
	plan, err := planTensors(ck, cfg, arch, opts.Type, res)
	if err != nil {
		return nil, fmt.Errorf("ggufconv: %s: %w", dir, err)
	}
	vocab, err := VocabKV(dir, cfg.VocabSize)
	if err != nil {
		return nil, err
	}
	if n := len(kvValue(vocab, keyTokens).([]string)); n != cfg.VocabSize {
		return nil, fmt.Errorf("ggufconv: %s: the tokenizer has %d tokens but vocab_size is %d; llama.cpp needs one embedding row per token", dir, n, cfg.VocabSize)
	}
	name := opts.Name
	if name == "" {
		name = filepath.Base(filepath.Clean(dir))
	}
	kvs := HParamsKV(cfg, arch)
	kvs = append(kvs[:1], append([]gguf.KV{
		{Key: "general.type", Value: "model"},
		{Key: "general.name", Value: name},
		{Key: "general.file_type", Value: fileTypes[opts.Type]},
		{Key: "general.quantization_version", Value: uint32(2)},
	}, kvs[1:]...)...)
	kvs = append(kvs, vocab...)
	infos := make([]gguf.TensorInfo, len(plan))
	for i, p := range plan {
		infos[i] = p.info
	}
	var buf []byte
	err = gguf.Write(out, kvs, infos, func(i int, w io.Writer) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		v, err := plan[i].values()
		if err != nil {
			return err
		}
		if buf, err = gguf.Encode(buf[:0], plan[i].info.Type, v); err != nil {
			return err
		}
		if _, err = w.Write(buf); err != nil {
			return err
		}
		if opts.Progress != nil {
			opts.Progress(i+1, len(plan))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	res.Tensors = len(plan)
	return res, nil
}

type planned struct {
	info   gguf.TensorInfo
	values func() ([]float32, error)
}

// planTensors lists the output tensors in llama.cpp's usual order with their types and how to compute them.
// Every checkpoint tensor must find a place; every tensor the config implies must be present.
func planTensors(ck *safetensors.Checkpoint, c *llama.Config, arch string, typ gguf.Type, res *Result) ([]planned, error) {
	var plan []planned
	var errs, fallback []string
	used := map[string]bool{}
	add := func(hf string, shape ...int) {
		name, _ := TensorName(hf)
		ti, f, ok := ck.Info(hf)
		if !ok {
			errs = append(errs, "tensor "+hf+" is missing")
			return
		}
		used[hf] = true
		if !slices.Equal(ti.Shape, shape) {
			errs = append(errs, fmt.Sprintf("%s: tensor %s has shape %v, want %v", f.Path, hf, ti.Shape, shape))
			return
		}
		t := gguf.F32
		if len(shape) == 2 {
			t = typ
			if typ == gguf.Q4_0 && (hf == "model.embed_tokens.weight" || hf == "lm_head.weight") {
				t = gguf.Q8_0
			}
			if t.BlockSize() > 1 && shape[1]%t.BlockSize() != 0 {
				fallback = append(fallback, name)
				t = gguf.F16
			}
		}
		heads := 0
		if permutes(arch) {
			heads = qkHeads(c, hf)
		}
		cols := 1
		if len(shape) == 2 {
			cols = shape[1]
		}
		plan = append(plan, planned{
			info: gguf.TensorInfo{Name: name, Type: t, Shape: shape},
			values: func() ([]float32, error) {
				v, err := ck.Float32s(hf)
				if err != nil || heads == 0 {
					return v, err
				}
				return permuteRows(v, heads, cols), nil
			},
		})
	}
	H, Q, KV, I, V, D := c.HiddenSize, c.QDim(), c.KVDim(), c.IntermediateSize, c.VocabSize, c.HeadDim
	add("model.embed_tokens.weight", V, H)
	if rs := c.RopeScaling; rs != nil && rs.RopeType == "llama3" {
		freqs := ropeFreqs(c)
		plan = append(plan, planned{info: gguf.TensorInfo{Name: "rope_freqs.weight", Type: gguf.F32, Shape: []int{len(freqs)}},
			values: func() ([]float32, error) { return freqs, nil }})
	}
	for l := range c.NumHiddenLayers {
		p := "model.layers." + strconv.Itoa(l) + "."
		add(p+"input_layernorm.weight", H)
		add(p+"self_attn.q_proj.weight", Q, H)
		if c.AttentionBias {
			add(p+"self_attn.q_proj.bias", Q)
		}
		add(p+"self_attn.k_proj.weight", KV, H)
		if c.AttentionBias {
			add(p+"self_attn.k_proj.bias", KV)
		}
		add(p+"self_attn.v_proj.weight", KV, H)
		if c.AttentionBias {
			add(p+"self_attn.v_proj.bias", KV)
		}
		add(p+"self_attn.o_proj.weight", H, Q)
		if c.OProjBias {
			add(p+"self_attn.o_proj.bias", H)
		}
		if c.QKNorm {
			add(p+"self_attn.q_norm.weight", D)
			add(p+"self_attn.k_norm.weight", D)
		}
		add(p+"post_attention_layernorm.weight", H)
		add(p+"mlp.gate_proj.weight", I, H)
		add(p+"mlp.up_proj.weight", I, H)
		add(p+"mlp.down_proj.weight", H, I)
	}
	add("model.norm.weight", H)
	if !c.TieWordEmbeddings {
		add("lm_head.weight", V, H)
	} else {
		used["lm_head.weight"] = true // a tied head saved anyway is the embedding; llama.cpp reuses token_embd
	}
	for _, n := range ck.Names() {
		if !used[n] && !strings.HasSuffix(n, ".rotary_emb.inv_freq") {
			errs = append(errs, "tensor "+n+" has no place in a llama.cpp "+arch+" file")
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%d problem(s):\n%s", len(errs), strings.Join(errs, "\n"))
	}
	if len(fallback) > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d matri(ces) with rows that are not whole 32-blocks written as F16 (%s)",
			len(fallback), strings.Join(fallback, ", ")))
	}
	return plan, nil
}

func kvValue(kvs []gguf.KV, key string) any {
	for _, kv := range kvs {
		if kv.Key == key {
			return kv.Value
		}
	}
	return nil
}
