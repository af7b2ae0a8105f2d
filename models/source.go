package models

import (
	"fmt"
	"io"
	"os"

	"github.com/lorakit/lorakit/models/gguf"
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/nn"
	"github.com/lorakit/lorakit/models/quant"
	"github.com/lorakit/lorakit/models/safetensors"
	"github.com/lorakit/lorakit/models/tokenizer"
)

// Source is where a model's parts come from. Load asks a Source for them and does everything else (EOS ids,
// chat template, quantisation options) itself, so another file format is one more Source: it parses its own
// config, generation defaults, tokenizer and tensors, and builds the network with the options Load chose.
type Source interface {
	// Path names the source in messages; it becomes Model.Dir.
	Path() string
	Config() (*llama.Config, error)
	// GenerationConfig is the checkpoint's generation defaults (DefaultGenerationConfig when it ships none).
	GenerationConfig() (GenerationConfig, error)
	Tokenizer() (*tokenizer.Tokenizer, error)
	// Network builds the weights for cfg. opts carries Load's thread pool and quantisers; a source may set
	// LoadLinear for tensors it stores pre-quantised. The closer releases what the weights map.
	Network(cfg *llama.Config, opts llama.LoadOptions) (*llama.Model, io.Closer, error)
}

// Open checks what path holds and returns the Source that reads it: a Hugging Face checkpoint folder
// (config.json beside safetensors weights) or a llama.cpp GGUF model file; anything else is refused with what
// path is and what to do.
// This is the one place that tells model sources apart: a new format adds its test here.
func Open(path string) (Source, error) {
	if st, err := os.Stat(path); err == nil && !st.IsDir() && isGGUF(path) {
		return OpenGGUF(path)
	}
	if err := checkFolder(path); err != nil {
		return nil, err
	}
	return Folder(path), nil
}

// Folder is a Hugging Face checkpoint folder: config.json, generation_config.json, tokenizer.json (+
// tokenizer_config.json) and model.safetensors or shards, whose tensors may be stored as bitsandbytes 4-bit or
// 8-bit weights.
type Folder string

// Path is the folder.
func (f Folder) Path() string { return string(f) }

// Config reads config.json.
func (f Folder) Config() (*llama.Config, error) { return llama.LoadConfig(string(f)) }

// GenerationConfig reads generation_config.json.
func (f Folder) GenerationConfig() (GenerationConfig, error) { return LoadGenerationConfig(string(f)) }

// Tokenizer reads tokenizer.json and tokenizer_config.json.
func (f Folder) Tokenizer() (*tokenizer.Tokenizer, error) {
	tok, err := tokenizer.Load(string(f))
	if err != nil {
		return nil, fmt.Errorf("models: %s: %w", f, err)
	}
	return tok, nil
}

// Network memory-maps the safetensors weights; tensors saved quantised by bitsandbytes (or lorakit quantize)
// load as they are. The closer is the *safetensors.Checkpoint.
func (f Folder) Network(cfg *llama.Config, opts llama.LoadOptions) (*llama.Model, io.Closer, error) {
	ck, err := safetensors.OpenCheckpoint(string(f))
	if err != nil {
		return nil, nil, fmt.Errorf("models: %w", err)
	}
	opts.LoadLinear = func(ck *safetensors.Checkpoint, module string, out, in int) (nn.Linear, bool, error) {
		q, ok, err := quant.FromCheckpoint(ck, module+".weight")
		if err != nil || !ok {
			return nil, false, err
		}
		return &nn.Quantized{Q: q}, true, nil
	}
	net, err := llama.Load(ck, cfg, opts)
	if err != nil {
		ck.Close()
		return nil, nil, err
	}
	return net, ck, nil
}

// isGGUF reports whether the file at path starts with the GGUF magic.
func isGGUF(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var magic [4]byte
	_, err = io.ReadFull(f, magic[:])
	return err == nil && string(magic[:]) == gguf.Magic
}
