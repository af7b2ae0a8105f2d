package models

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// checkFolder explains why dir is not a Hugging Face model folder, in words that say what to do: an adapter
// folder given as the model, a file that is not GGUF, an empty folder, a folder of GGUF files, a folder without
// config.json. It returns nil when dir is a folder with a config.json.
func checkFolder(dir string) error {
	st, err := os.Stat(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("model %s does not exist (want a Hugging Face model folder; lorakit pull ORG/NAME downloads one)", dir)
		}
		return fmt.Errorf("models: %w", err)
	}
	if !st.IsDir() { // a GGUF file is a model too: Open takes it before asking here
		return fmt.Errorf("models: %s is a file but not a GGUF file; --model wants a Hugging Face model folder (config.json, *.safetensors, tokenizer.json) or a llama.cpp .gguf model file", dir)
	}
	if _, err := os.Stat(filepath.Join(dir, "config.json")); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("models: %w", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "adapter_config.json")); err == nil {
		base := ""
		var c struct {
			Base string `json:"base_model_name_or_path"`
		}
		if json.Unmarshal(b, &c) == nil && c.Base != "" {
			base = fmt.Sprintf(" (it records base_model_name_or_path %q)", c.Base)
		}
		return fmt.Errorf("%s is a PEFT adapter folder (adapter_config.json), not a model; pass it as --adapter, with --model its base%s", dir, base)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("models: %w", err)
	}
	var names, ggufs []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		names = append(names, e.Name())
		if strings.HasSuffix(strings.ToLower(e.Name()), ".gguf") {
			ggufs = append(ggufs, e.Name())
		}
	}
	switch {
	case len(names) == 0:
		return fmt.Errorf("model folder %s is empty: want a Hugging Face model folder (config.json, *.safetensors, tokenizer.json); lorakit pull ORG/NAME downloads one", dir)
	case len(ggufs) > 0:
		return fmt.Errorf("model folder %s holds GGUF files (%s) and no config.json: pass the file itself, e.g. --model %s", dir, strings.Join(ggufs, ", "), filepath.Join(dir, ggufs[0]))
	}
	if len(names) > 5 {
		names = append(names[:5], "...")
	}
	return fmt.Errorf("%s has no config.json, so it is not a Hugging Face model folder (it holds %s)", dir, strings.Join(names, ", "))
}
