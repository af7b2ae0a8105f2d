package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// TokenizerConfig holds the parts of tokenizer_config.json that lorakit uses.
// Token fields are "" when the file leaves them unset or null.
type TokenizerConfig struct {
	BOSToken string // bos_token (plain string or {"__type":"AddedToken","content":...})
	EOSToken string // eos_token
	PadToken string // pad_token
	UnkToken string // unk_token
	// AddBOSToken and AddEOSToken are the effective add_bos_token / add_eos_token values: the file's value when
	// present, otherwise the default of the tokenizer class (true/false for Llama and Gemma classes, false else).
	AddBOSToken, AddEOSToken bool
	// HasAddBOSToken / HasAddEOSToken report whether the file set the key explicitly.
	HasAddBOSToken, HasAddEOSToken bool
	// ChatTemplate is chat_template (a string; for a list of named templates the one named "default", else
	// the first), or chat_template.jinja next to the config when the key is absent. "" when there is none.
	ChatTemplate string
	// CleanUpTokenizationSpaces is clean_up_tokenization_spaces (transformers' decode removes the space
	// before . ? ! , and some contractions when it is true).
	CleanUpTokenizationSpaces bool
	TokenizerClass            string // tokenizer_class
}

type rawTokenizerConfig struct {
	BOSToken                  json.RawMessage `json:"bos_token"`
	EOSToken                  json.RawMessage `json:"eos_token"`
	PadToken                  json.RawMessage `json:"pad_token"`
	UnkToken                  json.RawMessage `json:"unk_token"`
	AddBOSToken               *bool           `json:"add_bos_token"`
	AddEOSToken               *bool           `json:"add_eos_token"`
	ChatTemplate              json.RawMessage `json:"chat_template"`
	CleanUpTokenizationSpaces *bool           `json:"clean_up_tokenization_spaces"`
	TokenizerClass            string          `json:"tokenizer_class"`
}

// parseTokenValue accepts null, "content" or {"__type":"AddedToken","content":"..."}.
func parseTokenValue(raw json.RawMessage, field string) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var obj struct {
		Content *string `json:"content"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil || obj.Content == nil {
		return "", fmt.Errorf("field %s: want a string or an AddedToken object with content, got %.80s", field, raw)
	}
	return *obj.Content, nil
}

// llamaLikeClass reports whether transformers rebuilds the post-processor from add_bos_token/add_eos_token for
// this tokenizer_class (LlamaTokenizerFast and GemmaTokenizerFast do, in update_post_processor).
func llamaLikeClass(class string) bool {
	switch class {
	case "LlamaTokenizer", "LlamaTokenizerFast", "CodeLlamaTokenizer", "CodeLlamaTokenizerFast",
		"GemmaTokenizer", "GemmaTokenizerFast":
		return true
	}
	return false
}

// parseConfig parses tokenizer_config.json content. dir is used to find chat_template.jinja.
func parseConfig(data []byte, path, dir string) (*TokenizerConfig, error) {
	var raw rawTokenizerConfig
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c := &TokenizerConfig{TokenizerClass: raw.TokenizerClass}
	var err error
	for _, f := range []struct {
		raw  json.RawMessage
		name string
		dst  *string
	}{{raw.BOSToken, "bos_token", &c.BOSToken}, {raw.EOSToken, "eos_token", &c.EOSToken},
		{raw.PadToken, "pad_token", &c.PadToken}, {raw.UnkToken, "unk_token", &c.UnkToken}} {
		if *f.dst, err = parseTokenValue(f.raw, f.name); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	if llamaLikeClass(c.TokenizerClass) {
		c.AddBOSToken = true
		// The class's constructor defaults apply to keys the file leaves out (an explicit null stays "").
		defaults := [4]string{"<s>", "</s>", "", "<unk>"}
		if strings.HasPrefix(c.TokenizerClass, "Gemma") {
			defaults = [4]string{"<bos>", "<eos>", "<pad>", "<unk>"}
		}
		for i, f := range []struct {
			raw json.RawMessage
			dst *string
		}{{raw.BOSToken, &c.BOSToken}, {raw.EOSToken, &c.EOSToken}, {raw.PadToken, &c.PadToken}, {raw.UnkToken, &c.UnkToken}} {
			if f.raw == nil {
				*f.dst = defaults[i]
			}
		}
	}
	if raw.AddBOSToken != nil {
		c.AddBOSToken, c.HasAddBOSToken = *raw.AddBOSToken, true
	}
	if raw.AddEOSToken != nil {
		c.AddEOSToken, c.HasAddEOSToken = *raw.AddEOSToken, true
	}
	if raw.CleanUpTokenizationSpaces != nil {
		c.CleanUpTokenizationSpaces = *raw.CleanUpTokenizationSpaces
	}
	if len(raw.ChatTemplate) > 0 && string(raw.ChatTemplate) != "null" {
		var s string
		if err := json.Unmarshal(raw.ChatTemplate, &s); err == nil {
			c.ChatTemplate = s
		} else {
			var list []struct {
				Name     string `json:"name"`
				Template string `json:"template"`
			}
			if err := json.Unmarshal(raw.ChatTemplate, &list); err != nil {
				return nil, fmt.Errorf("%s: field chat_template: want a string or a list of {name, template}: %w", path, err)
			}
			for i, t := range list {
				if t.Name == "default" || (i == 0 && c.ChatTemplate == "") {
					c.ChatTemplate = t.Template
				}
			}
		}
	}
	if c.ChatTemplate == "" && dir != "" {
		if b, err := os.ReadFile(filepath.Join(dir, "chat_template.jinja")); err == nil {
			c.ChatTemplate = string(b)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("read chat_template.jinja: %w", err)
		}
	}
	return c, nil
}
