package models

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/sample"
)

// GenerationConfig is generation_config.json: the sampling defaults a checkpoint ships with. Absent fields take
// transformers' GenerationConfig defaults (greedy unless do_sample; temperature 1, top_k 50, top_p 1).
type GenerationConfig struct {
	Present           bool // the file exists
	BOSTokenID        int  // -1 if absent
	EOSTokenIDs       []int
	PadTokenID        int // -1 if absent
	DoSample          bool
	Temperature       float32
	TopK              int
	TopP              float32
	MinP              float32
	RepetitionPenalty float32
	MaxNewTokens      int // 0 if absent
	MaxLength         int // 0 if absent
}

// DefaultGenerationConfig is transformers' GenerationConfig() defaults.
func DefaultGenerationConfig() GenerationConfig {
	return GenerationConfig{BOSTokenID: -1, PadTokenID: -1, Temperature: 1, TopK: 50, TopP: 1, RepetitionPenalty: 1}
}

// ParseGenerationConfig parses generation_config.json.
func ParseGenerationConfig(data []byte) (GenerationConfig, error) {
	g := DefaultGenerationConfig()
	g.Present = true
	var r struct {
		BOS               json.RawMessage `json:"bos_token_id"`
		EOS               json.RawMessage `json:"eos_token_id"`
		Pad               json.RawMessage `json:"pad_token_id"`
		DoSample          *bool           `json:"do_sample"`
		Temperature       *float32        `json:"temperature"`
		TopK              *int            `json:"top_k"`
		TopP              *float32        `json:"top_p"`
		MinP              *float32        `json:"min_p"`
		RepetitionPenalty *float32        `json:"repetition_penalty"`
		MaxNewTokens      *int            `json:"max_new_tokens"`
		MaxLength         *int            `json:"max_length"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return g, fmt.Errorf("generation_config.json: %w", err)
	}
	one := func(key string, m json.RawMessage) (int, error) {
		ids, err := llama.IntOrList(m)
		if err != nil {
			return -1, fmt.Errorf("generation_config.json: %s: %w", key, err)
		}
		if len(ids) == 0 {
			return -1, nil
		}
		return ids[0], nil
	}
	var err error
	if g.BOSTokenID, err = one("bos_token_id", r.BOS); err != nil {
		return g, err
	}
	if g.PadTokenID, err = one("pad_token_id", r.Pad); err != nil {
		return g, err
	}
	if g.EOSTokenIDs, err = llama.IntOrList(r.EOS); err != nil {
		return g, fmt.Errorf("generation_config.json: eos_token_id: %w", err)
	}
	if r.DoSample != nil {
		g.DoSample = *r.DoSample
	}
	if r.Temperature != nil {
		g.Temperature = *r.Temperature
	}
	if r.TopK != nil {
		g.TopK = *r.TopK
	}
	if r.TopP != nil {
		g.TopP = *r.TopP
	}
	if r.MinP != nil {
		g.MinP = *r.MinP
	}
	if r.RepetitionPenalty != nil {
		g.RepetitionPenalty = *r.RepetitionPenalty
	}
	if r.MaxNewTokens != nil {
		g.MaxNewTokens = *r.MaxNewTokens
	}
	if r.MaxLength != nil {
		g.MaxLength = *r.MaxLength
	}
	if g.Temperature < 0 || g.TopK < 0 || g.TopP < 0 || g.TopP > 1 || g.MinP < 0 || g.MinP > 1 || g.RepetitionPenalty < 0 {
		return g, fmt.Errorf("generation_config.json: sampling value out of range (temperature %g, top_k %d, top_p %g, min_p %g, repetition_penalty %g)",
			g.Temperature, g.TopK, g.TopP, g.MinP, g.RepetitionPenalty)
	}
	return g, nil
}

// LoadGenerationConfig reads dir/generation_config.json; a missing file gives the defaults (Present false).
func LoadGenerationConfig(dir string) (GenerationConfig, error) {
	path := filepath.Join(dir, "generation_config.json")
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return DefaultGenerationConfig(), nil
	}
	if err != nil {
		return DefaultGenerationConfig(), err
	}
	g, err := ParseGenerationConfig(data)
	if err != nil {
		return g, fmt.Errorf("%s: %w", dir, err)
	}
	return g, nil
}

// Sampling returns the checkpoint's default sampling options (greedy when do_sample is false).
func (g GenerationConfig) Sampling() sample.Options {
	if !g.DoSample {
		return sample.Options{RepetitionPenalty: g.RepetitionPenalty}
	}
	return sample.Options{Temperature: g.Temperature, TopK: g.TopK, TopP: g.TopP, MinP: g.MinP,
		RepetitionPenalty: g.RepetitionPenalty}
}
