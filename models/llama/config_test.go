package llama

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const llamaJSON = `{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":64,"intermediate_size":172,
"num_hidden_layers":5,"num_attention_heads":8,"num_key_value_heads":4,"vocab_size":512,"max_position_embeddings":512,
"rms_norm_eps":1e-05,"rope_theta":10000.0,"rope_scaling":null,"hidden_act":"silu","attention_bias":false,"mlp_bias":false,
"tie_word_embeddings":true,"bos_token_id":1,"eos_token_id":2,"torch_dtype":"float32"}`

// patch returns llamaJSON with keys set (nil value deletes the key).
func patch(t testing.TB, kv map[string]any) []byte {
	var m map[string]any
	if err := json.Unmarshal([]byte(llamaJSON), &m); err != nil {
		t.Fatal(err)
	}
	for k, v := range kv {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseConfigLlama(t *testing.T) {
	c, err := ParseConfig([]byte(llamaJSON))
	if err != nil {
		t.Fatal(err)
	}
	if c.HeadDim != 8 || c.KVDim() != 32 || c.QDim() != 64 || !c.TieWordEmbeddings || c.BOSTokenID != 1 ||
		len(c.EOSTokenIDs) != 1 || c.EOSTokenIDs[0] != 2 || c.RopeScaling != nil || c.AttentionBias || c.QKNorm {
		t.Fatalf("bad config %+v", c)
	}
}

func TestParseConfigOptions(t *testing.T) {
	c, err := ParseConfig(patch(t, map[string]any{"model_type": "qwen2", "architectures": []string{"Qwen2ForCausalLM"}, "attention_bias": nil, "eos_token_id": []int{2, 7}, "tie_word_embeddings": nil}))
	if err != nil {
		t.Fatal(err)
	}
	if !c.AttentionBias || c.OProjBias || c.QKNorm || c.TieWordEmbeddings || len(c.EOSTokenIDs) != 2 || c.EOSTokenIDs[1] != 7 {
		t.Fatalf("qwen2: %+v", c)
	}
	c, err = ParseConfig(patch(t, map[string]any{"model_type": "qwen3", "head_dim": 16}))
	if err != nil {
		t.Fatal(err)
	}
	if !c.QKNorm || c.HeadDim != 16 || c.QDim() != 128 || c.AttentionBias {
		t.Fatalf("qwen3: %+v", c)
	}
	c, err = ParseConfig(patch(t, map[string]any{"attention_bias": true}))
	if err != nil || !c.AttentionBias || !c.OProjBias {
		t.Fatalf("llama bias: %+v %v", c, err)
	}
	c, err = ParseConfig(patch(t, map[string]any{"model_type": "mistral", "sliding_window": 100}))
	if err != nil || c.SlidingWindow != 100 {
		t.Fatalf("mistral window: %+v %v", c, err)
	}
	c, err = ParseConfig(patch(t, map[string]any{"rope_scaling": map[string]any{"rope_type": "llama3", "factor": 8.0,
		"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}, "rope_theta": 500000.0}))
	if err != nil || c.RopeScaling == nil || c.RopeScaling.Factor != 8 {
		t.Fatalf("llama3: %+v %v", c, err)
	}
	inv := c.InvFreq()
	if len(inv) != 4 || inv[0] != 1 {
		t.Fatalf("inv freq %v", inv)
	}
	// Lowest frequency has wavelength >> 64 → divided by the factor.
	want := 1 / math.Pow(500000, 6.0/8) / 8
	if math.Abs(float64(inv[3])-want) > 1e-9 {
		t.Fatalf("inv[3] = %g want %g", inv[3], want)
	}
	c, err = ParseConfig(patch(t, map[string]any{"eos_token_id": []int{-1, 5}, "pad_token_id": -1, "hidden_act": "swish"}))
	if err != nil || len(c.EOSTokenIDs) != 1 || c.EOSTokenIDs[0] != 5 || c.PadTokenID != -1 {
		t.Fatalf("lenient ids: %+v %v", c, err)
	}
	c, err = ParseConfig(patch(t, map[string]any{"eos_token_id": nil, "bos_token_id": nil, "num_key_value_heads": nil}))
	if err != nil || c.EOSTokenIDs != nil || c.BOSTokenID != -1 || c.NumKeyValueHeads != 8 {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	c, err = ParseConfig(patch(t, map[string]any{"rope_scaling": nil, "rope_parameters": map[string]any{"rope_type": "default", "rope_theta": 1234.0}}))
	if err != nil || c.RopeTheta != 1234 {
		t.Fatalf("rope_parameters: %+v %v", c, err)
	}
}

func TestParseConfigErrors(t *testing.T) {
	cases := []struct {
		kv   map[string]any
		want string
	}{
		{map[string]any{"model_type": "gemma"}, `model_type "gemma"`},
		{map[string]any{"model_type": nil}, "model_type is missing"},
		{map[string]any{"rope_scaling": map[string]any{"rope_type": "yarn", "factor": 4.0}}, `rope_scaling.rope_type "yarn"`},
		{map[string]any{"rope_scaling": map[string]any{"type": "linear", "factor": 4.0}}, `rope_scaling.rope_type "linear"`},
		{map[string]any{"rope_scaling": map[string]any{"type": "dynamic", "factor": 4.0}}, `"dynamic"`},
		{map[string]any{"rope_scaling": map[string]any{"rope_type": "llama3", "factor": 8.0}}, "rope_scaling.low_freq_factor is missing"},
		{map[string]any{"hidden_act": "gelu"}, `hidden_act "gelu"`},
		{map[string]any{"mlp_bias": true}, "mlp_bias"},
		{map[string]any{"hidden_size": nil}, "hidden_size is missing"},
		{map[string]any{"hidden_size": -3}, "hidden_size = -3"},
		{map[string]any{"num_key_value_heads": 3}, "not a multiple of num_key_value_heads"},
		{map[string]any{"eos_token_id": "x"}, "eos_token_id"},
		{map[string]any{"model_type": "qwen2", "use_sliding_window": true}, "use_sliding_window"},
		{map[string]any{"final_logit_softcapping": 30.0}, "final_logit_softcapping"},
		{map[string]any{"partial_rotary_factor": 0.5}, "partial_rotary_factor"},
		{map[string]any{"architectures": []string{"LlamaForTokenClassification"}}, "architectures"},
		{map[string]any{"architectures": []string{"Qwen2ForSequenceClassification"}}, "architectures"},
		{map[string]any{"architectures": []string{"LlamaForCausalLM", "LlamaForSequenceClassification"}}, "mixes"},
		{map[string]any{"architectures": []string{"LlamaForSequenceClassification"}, "id2label": map[string]string{"0": "a", "2": "b"}}, "id2label"},
		{map[string]any{"architectures": []string{"LlamaForSequenceClassification"}, "id2label": map[string]string{"0": "a"}, "num_labels": 2}, "num_labels"},
		{map[string]any{"architectures": []string{"LlamaForSequenceClassification"}, "problem_type": "ranking"}, "problem_type"},
		{map[string]any{"quantization_config": map[string]any{"quant_method": "gptq"}}, "quant_method"},
		{map[string]any{"head_dim": 7}, "must be even"},
		{map[string]any{"layer_types": []string{"sliding_attention"}}, "layer_types"},
		{map[string]any{"model_type": "qwen2", "attention_bias": false}, "attention_bias"},
	}
	for _, tc := range cases {
		_, err := ParseConfig(patch(t, tc.kv))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want it to contain %q", tc.kv, err, tc.want)
		}
	}
	// several problems are reported together
	_, err := ParseConfig(patch(t, map[string]any{"hidden_act": "gelu", "mlp_bias": true}))
	if err == nil || !strings.Contains(err.Error(), "hidden_act") || !strings.Contains(err.Error(), "mlp_bias") {
		t.Fatalf("joined errors: %v", err)
	}
	if _, err := ParseConfig([]byte("{")); err == nil {
		t.Fatal("truncated json accepted")
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(llamaJSON))
	f.Add(patch(f, map[string]any{"model_type": "qwen3", "head_dim": 16}))
	f.Add(patch(f, map[string]any{"rope_scaling": map[string]any{"rope_type": "llama3", "factor": 8.0,
		"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}))
	f.Add([]byte(`{"model_type":"qwen2","eos_token_id":[1,2]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			return
		}
		if c.HeadDim <= 0 || c.NumAttentionHeads%c.NumKeyValueHeads != 0 || c.HeadDim%2 != 0 {
			t.Fatalf("invalid config accepted: %+v", c)
		}
		_ = c.InvFreq()
	})
}

// TestRealConfigs parses config.json files as published for popular checkpoints.
func TestRealConfigs(t *testing.T) {
	want := map[string]func(c *Config) bool{
		"llama-3.2-1b.json": func(c *Config) bool {
			return c.RopeScaling != nil && c.RopeScaling.Factor == 32 && c.HeadDim == 64 && len(c.EOSTokenIDs) == 3 && c.TieWordEmbeddings
		},
		"qwen2.5-0.5b-instruct.json": func(c *Config) bool {
			return c.AttentionBias && !c.OProjBias && c.HeadDim == 64 && c.SlidingWindow == 0 && c.RopeTheta == 1e6
		},
		"qwen3-0.6b.json":            func(c *Config) bool { return c.QKNorm && c.HeadDim == 128 && c.QDim() == 2048 && !c.AttentionBias },
		"smollm2-135m-instruct.json": func(c *Config) bool { return c.HeadDim == 64 && c.PadTokenID == 2 && c.RopeTheta == 1e5 },
		"mistral-7b-v0.1.json":       func(c *Config) bool { return c.SlidingWindow == 4096 && !c.TieWordEmbeddings },
		"tinyllama-1.1b-chat.json":   func(c *Config) bool { return c.KVDim() == 256 && c.MaxPositionEmbeddings == 2048 },
	}
	for name, check := range want {
		if _, err := LoadConfig(filepath.Join("testdata", "configs", strings.TrimSuffix(name, ".json"))); err == nil {
			t.Fatal("LoadConfig must read dir/config.json")
		}
		data, err := os.ReadFile(filepath.Join("testdata", "configs", name))
		if err != nil {
			t.Fatal(err)
		}
		c, err := ParseConfig(data)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !check(c) {
			t.Errorf("%s: unexpected %+v", name, c)
		}
	}
}

// TestParseConfigClassifier reads the labels of *ForSequenceClassification configs as transformers writes them.
func TestParseConfigClassifier(t *testing.T) {
	c, err := ParseConfig(patch(t, map[string]any{"architectures": []string{"LlamaForSequenceClassification"},
		"id2label": map[string]string{"1": "toxic", "0": "clean"}, "label2id": map[string]int{"clean": 0, "toxic": 1},
		"problem_type": "multi_label_classification"}))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Classifier() || strings.Join(c.Labels, ",") != "clean,toxic" || c.ProblemType != "multi_label_classification" {
		t.Errorf("labels %v problem_type %q classifier %v", c.Labels, c.ProblemType, c.Classifier())
	}
	c, err = ParseConfig(patch(t, map[string]any{"model_type": "qwen3", "architectures": []string{"Qwen3ForSequenceClassification"}, "num_labels": 1}))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Labels) != 1 || c.Labels[0] != "LABEL_0" {
		t.Errorf("labels %v, want [LABEL_0]", c.Labels)
	}
	if c, err = ParseConfig([]byte(llamaJSON)); err != nil || c.Classifier() {
		t.Errorf("causal LM: classifier %v, err %v", c != nil && c.Classifier(), err)
	}
}
