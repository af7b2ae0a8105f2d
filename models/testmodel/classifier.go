package testmodel

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/lorakit/lorakit/models/safetensors"
)

// ClassifierOptions describe the sequence-classification head WriteClassifier adds.
type ClassifierOptions struct {
	Labels      []string // id2label in id order (one label: a reward model)
	ProblemType string   // config problem_type ("" leaves it out)
	PadTokenID  int      // pad_token_id written to config.json (-1: none)
	Seed        uint64
	Std         float64 // of the random head (0: 1)
}

// WriteClassifier writes to dst the *ForSequenceClassification checkpoint that transformers'
// AutoModelForSequenceClassification.from_pretrained(src, num_labels=...).save_pretrained(dst) would save from
// the causal LM folder src, with a random score head: config.json with the classifier's architectures,
// id2label, label2id, num_labels, pad_token_id (and problem_type), model.safetensors with src's decoder
// tensors (model.*, in F32) and score.weight [num_labels, hidden] (no bias, no lm_head), and src's other files.
func WriteClassifier(dst, src string, o ClassifierOptions) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || name == "config.json" || strings.HasSuffix(name, ".safetensors") || name == safetensors.IndexName {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, name), b, 0o644); err != nil {
			return err
		}
	}
	hidden, err := classifierConfig(dst, src, o)
	if err != nil {
		return err
	}
	return classifierWeights(dst, src, hidden, o)
}

// classifierConfig writes dst/config.json from src's and returns hidden_size.
func classifierConfig(dst, src string, o ClassifierOptions) (int, error) {
	b, err := os.ReadFile(filepath.Join(src, "config.json"))
	if err != nil {
		return 0, err
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		return 0, fmt.Errorf("testmodel: %s/config.json: %w", src, err)
	}
	arch := map[string]string{"llama": "LlamaForSequenceClassification", "mistral": "MistralForSequenceClassification",
		"qwen2": "Qwen2ForSequenceClassification", "qwen3": "Qwen3ForSequenceClassification"}[fmt.Sprint(cfg["model_type"])]
	if arch == "" {
		return 0, fmt.Errorf("testmodel: model_type %v has no sequence classifier", cfg["model_type"])
	}
	id2label, label2id := map[string]string{}, map[string]int{}
	for i, l := range o.Labels {
		id2label[strconv.Itoa(i)], label2id[l] = l, i
	}
	cfg["architectures"], cfg["id2label"], cfg["label2id"], cfg["num_labels"] = []string{arch}, id2label, label2id, len(o.Labels)
	cfg["pad_token_id"] = o.PadTokenID
	if o.PadTokenID < 0 {
		cfg["pad_token_id"] = nil
	}
	if o.ProblemType != "" {
		cfg["problem_type"] = o.ProblemType
	}
	if err := writeJSON(filepath.Join(dst, "config.json"), cfg); err != nil {
		return 0, err
	}
	h, ok := cfg["hidden_size"].(float64)
	if !ok {
		return 0, fmt.Errorf("testmodel: %s/config.json has no hidden_size", src)
	}
	return int(h), nil
}

// classifierWeights writes src's decoder tensors and a random score head to dst/model.safetensors.
func classifierWeights(dst, src string, hidden int, o ClassifierOptions) error {
	ck, err := safetensors.OpenCheckpoint(src)
	if err != nil {
		return err
	}
	defer ck.Close()
	var ts []safetensors.Tensor
	for _, name := range ck.Names() {
		if !strings.HasPrefix(name, "model.") {
			continue // lm_head: a classifier has none
		}
		ti, _, _ := ck.Info(name)
		v, err := ck.Float32s(name)
		if err != nil {
			return err
		}
		ts = append(ts, safetensors.F32Tensor(name, ti.Shape, v))
	}
	std := o.Std
	if std == 0 {
		std = 1
	}
	rng := rand.New(rand.NewPCG(o.Seed, 3))
	w := make([]float32, len(o.Labels)*hidden)
	for i := range w {
		w[i] = float32(rng.NormFloat64() * std)
	}
	ts = append(ts, safetensors.F32Tensor("score.weight", []int{len(o.Labels), hidden}, w))
	return safetensors.Write(filepath.Join(dst, "model.safetensors"), ts, map[string]string{"format": "pt"})
}
