// Package llama implements the Llama family of decoder-only transformers (Llama, Mistral, Qwen2, Qwen3) as
// options of one architecture, using Hugging Face tensor names and layouts.
package llama

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Config is config.json of a Hugging Face checkpoint, parsed into typed fields and validated by ParseConfig.
type Config struct {
	ModelType             string
	Architectures         []string
	HiddenSize            int
	IntermediateSize      int
	NumHiddenLayers       int
	NumAttentionHeads     int
	NumKeyValueHeads      int
	HeadDim               int // explicit head_dim, or hidden_size / num_attention_heads
	VocabSize             int
	MaxPositionEmbeddings int
	RMSNormEps            float64
	RopeTheta             float64
	RopeScaling           *RopeScaling // nil: plain RoPE
	TieWordEmbeddings     bool
	// AttentionBias reports whether q/k/v projections have a bias (qwen2 always; llama/qwen3 attention_bias).
	AttentionBias bool
	// OProjBias reports whether o_proj has a bias (llama/qwen3 with attention_bias: true; never qwen2).
	OProjBias bool
	// QKNorm reports whether attention has per-head q_norm/k_norm RMSNorms (qwen3).
	QKNorm bool
	// SlidingWindow > 0 limits attention to the last SlidingWindow positions (mistral v0.1 style).
	SlidingWindow int
	BOSTokenID    int   // -1 if absent
	EOSTokenIDs   []int // eos_token_id as a list (an int becomes a list of one)
	PadTokenID    int   // -1 if absent
	TorchDType    string
	Quantization  *QuantizationConfig // bitsandbytes block if present
	// RopeFreqFactors, when set (head_dim/2 values), divide the rotary inverse frequencies: llama.cpp's
	// rope_freqs.weight, how a GGUF file carries llama3 rope scaling. config.json never sets it.
	RopeFreqFactors []float32
	// Labels names the outputs of a sequence-classification head (*ForSequenceClassification: the score
	// head [num_labels, H] read at the last token instead of the LM head), in id order as id2label gives them;
	// nil for a causal LM. A reward model has one label.
	Labels []string
	// ProblemType is problem_type of a sequence classifier: "regression", "single_label_classification",
	// "multi_label_classification" or "" (unset).
	ProblemType string
}

// Classifier reports whether the checkpoint is a *ForSequenceClassification (a score head, no LM head).
func (c *Config) Classifier() bool { return c.Labels != nil }

// RopeScaling is the rope_scaling block; only rope_type "llama3" is supported.
type RopeScaling struct {
	RopeType                      string
	Factor                        float64
	LowFreqFactor                 float64
	HighFreqFactor                float64
	OriginalMaxPositionEmbeddings int
}

// QuantizationConfig is the bitsandbytes quantization_config block.
type QuantizationConfig struct {
	QuantMethod         string `json:"quant_method"`
	LoadIn4bit          bool   `json:"load_in_4bit"`
	LoadIn8bit          bool   `json:"load_in_8bit"`
	Bnb4bitQuantType    string `json:"bnb_4bit_quant_type"`
	Bnb4bitUseDoubleQnt bool   `json:"bnb_4bit_use_double_quant"`
	Bnb4bitComputeDType string `json:"bnb_4bit_compute_dtype"`
	Bnb4bitQuantStorage string `json:"bnb_4bit_quant_storage"`
	// Raw is the block as it appeared in config.json, kept so writers can reproduce it.
	Raw json.RawMessage `json:"-"`
}

// LoadConfig reads and validates dir/config.json.
func LoadConfig(dir string) (*Config, error) {
	path := filepath.Join(dir, "config.json")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("llama: read config: %w", err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// rawConfig mirrors the config.json keys we read. Pointers distinguish "absent" from zero.
type rawConfig struct {
	ModelType             string          `json:"model_type"`
	Architectures         []string        `json:"architectures"`
	HiddenSize            *int            `json:"hidden_size"`
	IntermediateSize      *int            `json:"intermediate_size"`
	NumHiddenLayers       *int            `json:"num_hidden_layers"`
	NumAttentionHeads     *int            `json:"num_attention_heads"`
	NumKeyValueHeads      *int            `json:"num_key_value_heads"`
	HeadDim               *int            `json:"head_dim"`
	VocabSize             *int            `json:"vocab_size"`
	MaxPositionEmbeddings *int            `json:"max_position_embeddings"`
	RMSNormEps            *float64        `json:"rms_norm_eps"`
	RopeTheta             *float64        `json:"rope_theta"`
	RopeScaling           json.RawMessage `json:"rope_scaling"`
	RopeParameters        json.RawMessage `json:"rope_parameters"`
	TieWordEmbeddings     *bool           `json:"tie_word_embeddings"`
	AttentionBias         *bool           `json:"attention_bias"`
	MLPBias               *bool           `json:"mlp_bias"`
	HiddenAct             *string         `json:"hidden_act"`
	BOSTokenID            json.RawMessage `json:"bos_token_id"`
	EOSTokenID            json.RawMessage `json:"eos_token_id"`
	PadTokenID            json.RawMessage `json:"pad_token_id"`
	TorchDType            *string         `json:"torch_dtype"`
	DType                 *string         `json:"dtype"`
	SlidingWindow         json.RawMessage `json:"sliding_window"`
	UseSlidingWindow      *bool           `json:"use_sliding_window"`
	LayerTypes            []string        `json:"layer_types"`
	PartialRotaryFactor   *float64        `json:"partial_rotary_factor"`
	PretrainingTP         *int            `json:"pretraining_tp"`
	Quantization          json.RawMessage `json:"quantization_config"`
	// Keys of architectures/features we know and do not implement.
	AttnLogitSoftcapping  json.RawMessage `json:"attn_logit_softcapping"`
	FinalLogitSoftcapping json.RawMessage `json:"final_logit_softcapping"`
	NumExperts            json.RawMessage `json:"num_experts"`
	NumLocalExperts       json.RawMessage `json:"num_local_experts"`
	QKLayernorm           json.RawMessage `json:"use_qk_norm"`
	// Sequence classifiers (PretrainedConfig writes id2label; num_labels is derived from it).
	ID2Label    map[string]string `json:"id2label"`
	NumLabels   *int              `json:"num_labels"`
	ProblemType *string           `json:"problem_type"`
}

type rawRope struct {
	RopeType                      string   `json:"rope_type"`
	Type                          string   `json:"type"`
	Factor                        *float64 `json:"factor"`
	LowFreqFactor                 *float64 `json:"low_freq_factor"`
	HighFreqFactor                *float64 `json:"high_freq_factor"`
	OriginalMaxPositionEmbeddings *int     `json:"original_max_position_embeddings"`
	RopeTheta                     *float64 `json:"rope_theta"`
}

// maxDim bounds every size so that a hostile config cannot make us allocate absurd amounts.
const maxDim = 1 << 24

// ParseConfig parses config.json and validates it. Every rejection names the offending key.
//
// complexity: one check per config key, each naming the key it rejects; split, the list would be scattered.
func ParseConfig(data []byte) (*Config, error) {
	var r rawConfig
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("llama: config.json: %w", err)
	}
	c := &Config{ModelType: r.ModelType, Architectures: r.Architectures, BOSTokenID: -1, PadTokenID: -1}
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	switch c.ModelType {
	case "llama", "mistral", "qwen2", "qwen3":
	case "":
		return nil, errors.New("llama: config.json: model_type is missing")
	default:
		return nil, fmt.Errorf("llama: config.json: model_type %q is not supported (want llama, mistral, qwen2 or qwen3)", c.ModelType)
	}
	checkArchitectures(c, &r, bad)

	req := func(key string, p *int) int {
		if p == nil {
			bad("%s is missing", key)
			return 0
		}
		if *p <= 0 || *p > maxDim {
			bad("%s = %d is out of range", key, *p)
			return 0
		}
		return *p
	}
	c.HiddenSize = req("hidden_size", r.HiddenSize)
	c.IntermediateSize = req("intermediate_size", r.IntermediateSize)
	c.NumHiddenLayers = req("num_hidden_layers", r.NumHiddenLayers)
	c.NumAttentionHeads = req("num_attention_heads", r.NumAttentionHeads)
	c.VocabSize = req("vocab_size", r.VocabSize)
	if r.NumKeyValueHeads == nil {
		c.NumKeyValueHeads = c.NumAttentionHeads
	} else {
		c.NumKeyValueHeads = req("num_key_value_heads", r.NumKeyValueHeads)
	}
	if c.NumKeyValueHeads > 0 && c.NumAttentionHeads > 0 && c.NumAttentionHeads%c.NumKeyValueHeads != 0 {
		bad("num_attention_heads %d is not a multiple of num_key_value_heads %d", c.NumAttentionHeads, c.NumKeyValueHeads)
	}
	if r.HeadDim != nil {
		c.HeadDim = req("head_dim", r.HeadDim)
	} else if c.NumAttentionHeads > 0 {
		if c.HiddenSize%c.NumAttentionHeads != 0 {
			bad("hidden_size %d is not a multiple of num_attention_heads %d (and head_dim is absent)", c.HiddenSize, c.NumAttentionHeads)
		}
		c.HeadDim = c.HiddenSize / c.NumAttentionHeads
	}
	if c.HeadDim > 1<<16 {
		bad("head_dim = %d is out of range", c.HeadDim)
	}
	if c.HeadDim%2 != 0 {
		bad("head_dim %d must be even for rotary embeddings", c.HeadDim)
	}
	if c.NumHiddenLayers > 4096 {
		bad("num_hidden_layers = %d is out of range", c.NumHiddenLayers)
	}
	if c.NumAttentionHeads > 0 && c.HeadDim > 0 && int64(c.NumAttentionHeads)*int64(c.HeadDim) > maxDim {
		bad("num_attention_heads * head_dim is out of range")
	}
	// transformers' defaults per config class
	c.MaxPositionEmbeddings = map[string]int{"llama": 2048, "mistral": 4096 * 32, "qwen2": 32768, "qwen3": 32768}[c.ModelType]
	if r.MaxPositionEmbeddings != nil {
		c.MaxPositionEmbeddings = req("max_position_embeddings", r.MaxPositionEmbeddings)
	}
	c.RMSNormEps = 1e-6
	if r.RMSNormEps != nil {
		c.RMSNormEps = *r.RMSNormEps
		if !(c.RMSNormEps > 0 && c.RMSNormEps < 1) {
			bad("rms_norm_eps = %g is out of range", c.RMSNormEps)
		}
	}
	c.RopeTheta = 10000
	if c.ModelType == "qwen2" || c.ModelType == "qwen3" {
		c.RopeTheta = 1e6
	}
	if r.RopeTheta != nil {
		c.RopeTheta = *r.RopeTheta
	}
	scaling, params := r.RopeScaling, r.RopeParameters
	if isNull(scaling) && !isNull(params) {
		scaling = params // transformers >= 4.56 writes rope_parameters {rope_type, rope_theta, ...}
	}
	if !isNull(scaling) {
		var rr rawRope
		if err := json.Unmarshal(scaling, &rr); err != nil {
			bad("rope_scaling: %v", err)
		} else {
			if rr.RopeTheta != nil {
				c.RopeTheta = *rr.RopeTheta
			}
			typ := rr.RopeType
			if typ == "" {
				typ = rr.Type
			}
			switch typ {
			case "", "default":
			case "llama3":
				rs := &RopeScaling{RopeType: typ}
				f := func(key string, p *float64) float64 {
					if p == nil {
						bad("rope_scaling.%s is missing for rope_type llama3", key)
						return 0
					}
					if !(*p > 0) || math.IsInf(*p, 0) {
						bad("rope_scaling.%s = %g is out of range", key, *p)
					}
					return *p
				}
				rs.Factor = f("factor", rr.Factor)
				rs.LowFreqFactor = f("low_freq_factor", rr.LowFreqFactor)
				rs.HighFreqFactor = f("high_freq_factor", rr.HighFreqFactor)
				if rr.OriginalMaxPositionEmbeddings == nil || *rr.OriginalMaxPositionEmbeddings <= 0 {
					bad("rope_scaling.original_max_position_embeddings is missing or not positive for rope_type llama3")
				} else {
					rs.OriginalMaxPositionEmbeddings = *rr.OriginalMaxPositionEmbeddings
				}
				if rs.HighFreqFactor == rs.LowFreqFactor {
					bad("rope_scaling.high_freq_factor must differ from low_freq_factor")
				}
				c.RopeScaling = rs
			default:
				bad("rope_scaling.rope_type %q is not supported (only llama3)", typ)
			}
		}
	}
	if !(c.RopeTheta > 0) || math.IsInf(c.RopeTheta, 0) {
		bad("rope_theta = %g is out of range", c.RopeTheta)
	}
	if r.PartialRotaryFactor != nil && *r.PartialRotaryFactor != 1 {
		bad("partial_rotary_factor = %g is not supported", *r.PartialRotaryFactor)
	}

	// LlamaConfig, MistralConfig, Qwen2Config and Qwen3Config all default tie_word_embeddings to false.
	if r.TieWordEmbeddings != nil {
		c.TieWordEmbeddings = *r.TieWordEmbeddings
	}
	if r.HiddenAct != nil && *r.HiddenAct != "silu" && *r.HiddenAct != "swish" {
		bad("hidden_act %q is not supported (only silu)", *r.HiddenAct)
	}
	if r.MLPBias != nil && *r.MLPBias {
		bad("mlp_bias: true is not supported")
	}
	switch c.ModelType {
	case "qwen2":
		c.AttentionBias = true // Qwen2Attention: q/k/v with bias, o_proj without
		if r.AttentionBias != nil && !*r.AttentionBias {
			bad("attention_bias: false is not supported for qwen2 (its q/k/v projections always have biases)")
		}
	case "mistral":
		if r.AttentionBias != nil && *r.AttentionBias {
			bad("attention_bias: true is not supported for mistral")
		}
	default: // llama, qwen3: attention_bias applies to q, k, v and o
		if r.AttentionBias != nil && *r.AttentionBias {
			c.AttentionBias, c.OProjBias = true, true
		}
	}
	c.QKNorm = c.ModelType == "qwen3"

	// Sliding window: mistral applies sliding_window when set; qwen2/3 only with use_sliding_window.
	var sw *int
	if !isNull(r.SlidingWindow) {
		var v int
		if err := json.Unmarshal(r.SlidingWindow, &v); err != nil {
			bad("sliding_window: %v", err)
		} else {
			sw = &v
		}
	}
	switch c.ModelType {
	case "mistral":
		if sw != nil {
			if *sw <= 0 {
				bad("sliding_window = %d is out of range", *sw)
			} else if *sw < c.MaxPositionEmbeddings {
				c.SlidingWindow = *sw
			}
		}
	case "qwen2", "qwen3":
		if r.UseSlidingWindow != nil && *r.UseSlidingWindow {
			bad("use_sliding_window: true is not supported")
		}
	default:
		if sw != nil {
			bad("sliding_window is not supported for %s", c.ModelType)
		}
	}
	for i, lt := range r.LayerTypes {
		if lt != "full_attention" {
			bad("layer_types[%d] %q is not supported (only full_attention)", i, lt)
			break
		}
	}
	for key, v := range map[string]json.RawMessage{
		"attn_logit_softcapping": r.AttnLogitSoftcapping, "final_logit_softcapping": r.FinalLogitSoftcapping,
		"num_experts": r.NumExperts, "num_local_experts": r.NumLocalExperts, "use_qk_norm": r.QKLayernorm,
	} {
		if !isNull(v) && string(v) != "false" && string(v) != "0" {
			bad("%s is not supported", key)
		}
	}

	var err error
	if c.BOSTokenID, err = optInt(r.BOSTokenID); err != nil {
		bad("bos_token_id: %v", err)
	}
	if c.PadTokenID, err = optInt(r.PadTokenID); err != nil {
		bad("pad_token_id: %v", err)
	}
	if c.EOSTokenIDs, err = IntOrList(r.EOSTokenID); err != nil {
		bad("eos_token_id: %v", err)
	}
	if r.TorchDType != nil {
		c.TorchDType = *r.TorchDType
	} else if r.DType != nil {
		c.TorchDType = *r.DType
	}
	if !isNull(r.Quantization) {
		q := &QuantizationConfig{Raw: append(json.RawMessage(nil), r.Quantization...)}
		if err := json.Unmarshal(r.Quantization, q); err != nil {
			bad("quantization_config: %v", err)
		} else {
			switch {
			case q.QuantMethod != "bitsandbytes":
				bad("quantization_config.quant_method %q is not supported (only bitsandbytes)", q.QuantMethod)
			case !q.LoadIn4bit && !q.LoadIn8bit:
				bad("quantization_config: load_in_4bit or load_in_8bit must be true")
			case q.LoadIn4bit && q.Bnb4bitQuantType != "nf4" && q.Bnb4bitQuantType != "fp4":
				bad("quantization_config.bnb_4bit_quant_type %q is not supported", q.Bnb4bitQuantType)
			}
			c.Quantization = q
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("llama: config.json (%s): %w", c.ModelType, errors.Join(errs...))
	}
	return c, nil
}

// classifierArch is the sequence-classification class of each model_type (transformers' names).
var classifierArch = map[string]string{"llama": "LlamaForSequenceClassification", "mistral": "MistralForSequenceClassification",
	"qwen2": "Qwen2ForSequenceClassification", "qwen3": "Qwen3ForSequenceClassification"}

// checkArchitectures accepts *ForCausalLM, or the model type's *ForSequenceClassification, whose labels
// (id2label, num_labels) and problem_type it then reads into c.
func checkArchitectures(c *Config, r *rawConfig, bad func(string, ...any)) {
	cls := 0
	for _, a := range c.Architectures {
		switch {
		case strings.HasSuffix(a, "ForCausalLM"):
		case a == classifierArch[c.ModelType]:
			cls++
		default:
			bad("architectures: %q is not supported (want a *ForCausalLM or %s)", a, classifierArch[c.ModelType])
		}
	}
	if cls == 0 {
		return
	}
	if cls != len(c.Architectures) {
		bad("architectures %v mixes a causal LM with a sequence classifier", c.Architectures)
		return
	}
	n := 2 // PretrainedConfig's default
	if r.NumLabels != nil {
		n = *r.NumLabels
	}
	if r.ID2Label != nil {
		if r.NumLabels != nil && *r.NumLabels != len(r.ID2Label) {
			bad("num_labels = %d but id2label has %d labels", *r.NumLabels, len(r.ID2Label))
		}
		n = len(r.ID2Label)
	}
	if n <= 0 || n > 1<<16 {
		bad("num_labels = %d is out of range for %s", n, c.Architectures[0])
		return
	}
	c.Labels = make([]string, n)
	for i := range c.Labels {
		c.Labels[i] = "LABEL_" + strconv.Itoa(i)
	}
	for k, v := range r.ID2Label {
		i, err := strconv.Atoi(k)
		if err != nil || i < 0 || i >= n || strconv.Itoa(i) != k {
			bad("id2label: key %q is not a label id in [0, %d)", k, n)
			continue
		}
		c.Labels[i] = v
	}
	if r.ProblemType != nil {
		switch p := *r.ProblemType; p {
		case "regression", "single_label_classification", "multi_label_classification":
			c.ProblemType = p
		default:
			bad("problem_type %q is not supported (regression, single_label_classification or multi_label_classification)", p)
		}
	}
}

func isNull(m json.RawMessage) bool {
	s := bytes.TrimSpace(m)
	return len(s) == 0 || string(s) == "null"
}

func optInt(m json.RawMessage) (int, error) {
	if isNull(m) {
		return -1, nil
	}
	var v int
	if err := json.Unmarshal(m, &v); err != nil {
		return -1, err
	}
	return max(v, -1), nil // some configs write -1 for "none"
}

// IntOrList decodes a JSON int, list of ints or null (as eos_token_id appears in config.json and
// generation_config.json).
func IntOrList(m json.RawMessage) ([]int, error) {
	if isNull(m) {
		return nil, nil
	}
	var v int
	if err := json.Unmarshal(m, &v); err == nil {
		if v < 0 { // some configs write -1 for "none"
			return nil, nil
		}
		return []int{v}, nil
	}
	var l []int
	if err := json.Unmarshal(m, &l); err != nil {
		return nil, fmt.Errorf("want an int or a list of ints: %s", truncate(string(m), 40))
	}
	out := l[:0]
	for _, x := range l {
		if x >= 0 {
			out = append(out, x)
		}
	}
	return out, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// InvFreq returns the rotary inverse frequencies (head_dim/2 of them), with llama3 scaling applied.
func (c *Config) InvFreq() []float32 {
	half := c.HeadDim / 2
	out := make([]float32, half)
	for i := range half {
		// transformers computes base ** (arange(0, dim, 2) / dim) in float32.
		f := 1 / math.Pow(c.RopeTheta, float64(2*i)/float64(c.HeadDim))
		if rs := c.RopeScaling; rs != nil && rs.RopeType == "llama3" {
			old := float64(rs.OriginalMaxPositionEmbeddings)
			lowWave := old / rs.LowFreqFactor
			highWave := old / rs.HighFreqFactor
			wave := 2 * math.Pi / f
			switch {
			case wave < highWave: // high frequency: unchanged
			case wave > lowWave:
				f /= rs.Factor
			default:
				smooth := (old/wave - rs.LowFreqFactor) / (rs.HighFreqFactor - rs.LowFreqFactor)
				f = (1-smooth)*f/rs.Factor + smooth*f
			}
		}
		if i < len(c.RopeFreqFactors) {
			f /= float64(c.RopeFreqFactors[i])
		}
		out[i] = float32(f)
	}
	return out
}

// KVDim is num_key_value_heads * head_dim, the width of k_proj and v_proj.
func (c *Config) KVDim() int { return c.NumKeyValueHeads * c.HeadDim }

// QDim is num_attention_heads * head_dim, the width of q_proj.
func (c *Config) QDim() int { return c.NumAttentionHeads * c.HeadDim }
