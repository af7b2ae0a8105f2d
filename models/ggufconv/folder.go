package ggufconv

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/lorakit/lorakit/internal/atomicfile"
	"github.com/lorakit/lorakit/models/gguf"
	"github.com/lorakit/lorakit/models/safetensors"
)

// hfArchitectures names the transformers class of each architecture, for config.json.
var hfArchitectures = map[string]string{"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}

// IsModelFile reports whether path names a GGUF file (by its name; the header is checked when it is opened).
func IsModelFile(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular() && strings.EqualFold(filepath.Ext(path), ".gguf")
}

// AsFolder gives commands that read a Hugging Face folder (merge, quantize) a GGUF base: for a .gguf file it
// writes the folder (WriteFolder) into a temporary beside out and returns it with the function that removes it;
// anything else is returned as it is.
func AsFolder(base, out string) (dir string, cleanup func(), err error) {
	if !IsModelFile(base) {
		return base, func() {}, nil
	}
	tmp, err := atomicfile.TempDir(filepath.Clean(out) + ".gguf-base")
	if err != nil {
		return "", nil, err
	}
	cleanup = func() { os.RemoveAll(tmp) }
	if err := WriteFolder(base, tmp); err != nil {
		cleanup()
		return "", nil, err
	}
	return tmp, cleanup, nil
}

// WriteFolder writes the llama.cpp model file path as a Hugging Face folder dir (which must exist and be empty):
// config.json and generation_config.json rebuilt from the metadata, tokenizer.json and tokenizer_config.json
// rebuilt from the tokenizer metadata, and model.safetensors in Hugging Face names and layout (F32, F16 and BF16
// tensors as stored, Q8_0 and Q4_0 dequantised to F32). It refuses what config.json or tokenizer.json cannot
// carry exactly: llama3 rope scaling stored only as rope_freqs.weight, and a tokenizer whose tokenizer.json would
// not give back the same tokenizer metadata.
func WriteFolder(path, dir string) error {
	g, err := gguf.Open(path)
	if err != nil {
		return err
	}
	defer g.Close()
	raw, err := configMap(g)
	if err != nil {
		return err
	}
	if _, ok := g.Tensor("rope_freqs.weight"); ok {
		return fmt.Errorf("%s: its rope scaling is stored only as rope_freqs.weight factors, which config.json cannot carry; use the Hugging Face folder it was made from", path)
	}
	cfg, err := Config(g)
	if err != nil {
		return err
	}
	w, err := NewWeights(g, cfg)
	if err != nil {
		return err
	}
	if err := writeTokenizer(g, dir); err != nil {
		return err
	}
	hs, err := folderHeaders(g, w)
	if err != nil {
		return err
	}
	narrow, err := narrowVectors(w, hs)
	if err != nil {
		return err
	}
	raw["architectures"] = []string{hfArchitectures[cfg.ModelType]}
	raw["torch_dtype"] = torchDType(hs)
	if err := writeJSON(filepath.Join(dir, "config.json"), raw); err != nil {
		return err
	}
	gen := map[string]any{"_from_model_config": true}
	if cfg.BOSTokenID >= 0 {
		gen["bos_token_id"] = cfg.BOSTokenID
	}
	if len(cfg.EOSTokenIDs) > 0 {
		gen["eos_token_id"] = cfg.EOSTokenIDs[0]
	}
	if err := writeJSON(filepath.Join(dir, "generation_config.json"), gen); err != nil {
		return err
	}
	return safetensors.WriteStream(filepath.Join(dir, "model.safetensors"), hs, nil, func(i int, out io.Writer) error {
		b, ok := narrow[hs[i].Name]
		if !ok {
			if b, err = w.Bytes(hs[i].Name); err != nil {
				return err
			}
		}
		_, err = out.Write(b)
		return err
	})
}

// folderHeaders lists the model's tensors under their Hugging Face names, in the file's order.
func folderHeaders(g *gguf.File, w *Weights) ([]safetensors.Header, error) {
	var hs []safetensors.Header
	for _, t := range g.Tensors {
		hf, ok := HFName(t.Name)
		if !ok {
			return nil, fmt.Errorf("%s: tensor %s has no Hugging Face name lorakit knows", g.Path, t.Name)
		}
		info, _, _ := w.Info(hf)
		hs = append(hs, safetensors.Header{Name: hf, DType: info.DType, Shape: info.Shape})
	}
	return hs, nil
}

// narrowVectors stores the F32 vectors (norms, biases) of a BF16 or F16 model in the model's dtype when every
// value is exact in it: llama.cpp keeps them F32 whatever the model, and a folder exported from a bf16 one gets
// its own tensors back bit for bit. It rewrites those headers and returns their bytes.
func narrowVectors(w *Weights, hs []safetensors.Header) (map[string][]byte, error) {
	var dt safetensors.DType
	for _, h := range hs {
		if h.Name == "model.embed_tokens.weight" && (h.DType == safetensors.BF16 || h.DType == safetensors.F16) {
			dt = h.DType
		}
	}
	out := map[string][]byte{}
	if dt == "" {
		return out, nil
	}
	for i, h := range hs {
		if h.DType != safetensors.F32 || len(h.Shape) != 1 {
			continue
		}
		v, err := w.Float32s(h.Name)
		if err != nil {
			return nil, err
		}
		b, err := safetensors.Encode(dt, v)
		if err != nil {
			return nil, err
		}
		back := make([]float32, len(v))
		if err := safetensors.Decode(dt, b, back); err != nil {
			return nil, err
		}
		if !reflect.DeepEqual(back, v) {
			continue
		}
		hs[i].DType = dt
		out[h.Name] = b
	}
	return out, nil
}

// torchDType is config.json's torch_dtype: the embedding's dtype.
func torchDType(hs []safetensors.Header) string {
	for _, h := range hs {
		if h.Name == "model.embed_tokens.weight" {
			switch h.DType {
			case safetensors.F16:
				return "float16"
			case safetensors.BF16:
				return "bfloat16"
			}
		}
	}
	return "float32"
}

// writeTokenizer writes tokenizer.json and tokenizer_config.json rebuilt from the metadata, then checks that they
// give back the same tokenizer metadata (what VocabKV would export from them): otherwise something the GGUF
// tokenizer has would be lost, and the folder is refused.
func writeTokenizer(g *gguf.File, dir string) error {
	tj, cj, err := TokenizerFiles(g)
	if err != nil {
		return fmt.Errorf("%s: the tokenizer cannot be rebuilt from its metadata: %w", g.Path, err)
	}
	if err := atomicfile.WriteBytes(filepath.Join(dir, "tokenizer.json"), tj); err != nil {
		return err
	}
	if err := atomicfile.WriteBytes(filepath.Join(dir, "tokenizer_config.json"), cj); err != nil {
		return err
	}
	kvs, err := VocabKV(dir, 0)
	if err != nil {
		return fmt.Errorf("%s: the rebuilt tokenizer.json cannot be read back: %w", g.Path, err)
	}
	back := map[string]any{}
	for _, kv := range kvs {
		back[kv.Key] = kv.Value
	}
	for _, key := range []string{keyTokModel, keyTokens, keyTokenType, keyMerges, keyBOS, keyEOS, keyUNK, keyAddBOS, keyAddEOS, keyChat} {
		orig, ok := g.Get(key)
		if !ok {
			continue
		}
		if !sameValue(orig, back[key]) {
			return fmt.Errorf("%s: the tokenizer cannot be written as tokenizer.json without loss (%s differs after the round trip); use the Hugging Face folder it was made from", g.Path, key)
		}
	}
	if m, _, _ := g.String(keyTokModel); m == "gpt2" {
		if p, _, _ := g.String(keyTokPre); p != back[keyTokPre] {
			return fmt.Errorf("%s: the tokenizer cannot be written as tokenizer.json without loss (%s %q comes back as %v); use the Hugging Face folder it was made from", g.Path, keyTokPre, p, back[keyTokPre])
		}
	}
	return nil
}

// sameValue compares metadata values across integer widths (a token id may be stored as any integer type).
func sameValue(a, b any) bool {
	ai, aok := asInt(a)
	bi, bok := asInt(b)
	if aok || bok {
		return aok && bok && ai == bi
	}
	return reflect.DeepEqual(a, b)
}

func asInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int8:
		return int64(x), true
	case uint8:
		return int64(x), true
	case int16:
		return int64(x), true
	case uint16:
		return int64(x), true
	case int32:
		return int64(x), true
	case uint32:
		return int64(x), true
	case int64:
		return x, true
	case uint64:
		return int64(x), true
	}
	return 0, false
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return atomicfile.WriteBytes(path, append(b, '\n'))
}
