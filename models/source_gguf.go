package models

import (
	"fmt"
	"io"

	"github.com/lorakit/lorakit/models/gguf"
	"github.com/lorakit/lorakit/models/ggufconv"
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/tokenizer"
)

// GGUFFile is a llama.cpp model file (architecture llama, qwen2 or qwen3; tensors F32, F16, BF16, Q8_0, Q4_0):
// its config and tokenizer are rebuilt from the metadata, its tensors served under Hugging Face names.
type GGUFFile struct {
	path string
	meta *gguf.File // header only (its data is unmapped)
	cfg  *llama.Config
}

// OpenGGUF reads the header of a GGUF model file.
func OpenGGUF(path string) (*GGUFFile, error) {
	g, err := gguf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("models: %w", err)
	}
	cfg, err := ggufconv.Config(g)
	g.Close() // the metadata are copies; Network maps the file again for the weights
	if err != nil {
		return nil, fmt.Errorf("models: %w", err)
	}
	return &GGUFFile{path: path, meta: g, cfg: cfg}, nil
}

// Path is the file.
func (f *GGUFFile) Path() string { return f.path }

// Config is rebuilt from the metadata and tensor table.
func (f *GGUFFile) Config() (*llama.Config, error) { c := *f.cfg; return &c, nil }

// GenerationConfig is transformers' defaults (greedy) with the file's EOS id.
func (f *GGUFFile) GenerationConfig() (GenerationConfig, error) {
	g := DefaultGenerationConfig()
	g.EOSTokenIDs = append([]int(nil), f.cfg.EOSTokenIDs...)
	g.BOSTokenID = f.cfg.BOSTokenID
	return g, nil
}

// Tokenizer is rebuilt from tokenizer.ggml.* and tokenizer.chat_template.
func (f *GGUFFile) Tokenizer() (*tokenizer.Tokenizer, error) {
	tj, cj, err := ggufconv.TokenizerFiles(f.meta)
	if err != nil {
		return nil, fmt.Errorf("models: %s: tokenizer metadata: %w", f.path, err)
	}
	tok, err := tokenizer.Parse(tj, cj)
	if err != nil {
		return nil, fmt.Errorf("models: %s: tokenizer rebuilt from the metadata: %w", f.path, err)
	}
	return tok, nil
}

// Network maps the file; Q4_0 and Q8_0 linear weights run on the integer kernels as stored (blocks re-laid out,
// never widened to f32).
func (f *GGUFFile) Network(cfg *llama.Config, opts llama.LoadOptions) (*llama.Model, io.Closer, error) {
	g, err := gguf.Open(f.path)
	if err != nil {
		return nil, nil, fmt.Errorf("models: %w", err)
	}
	w, err := ggufconv.NewWeights(g, cfg)
	if err != nil {
		g.Close()
		return nil, nil, fmt.Errorf("models: %w", err)
	}
	w.Compact = opts.Compact
	opts.LoadLinear = w.LoadLinear
	net, err := llama.LoadTensors(w, f.path, cfg, opts)
	if err != nil {
		g.Close()
		return nil, nil, err
	}
	return net, g, nil
}
