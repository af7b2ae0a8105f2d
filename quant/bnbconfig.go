package quant

import bnb "github.com/lorakit/lorakit/models/quant"

// BnBConfig is the `quantization_config` block transformers writes to config.json for bitsandbytes
// (BitsAndBytesConfig.to_dict), in its key order.
type BnBConfig struct {
	LoadIn4bitPriv              bool        `json:"_load_in_4bit"`
	LoadIn8bitPriv              bool        `json:"_load_in_8bit"`
	Bnb4bitComputeDType         string      `json:"bnb_4bit_compute_dtype"`
	Bnb4bitQuantStorage         string      `json:"bnb_4bit_quant_storage"`
	Bnb4bitQuantType            string      `json:"bnb_4bit_quant_type"`
	Bnb4bitUseDoubleQuant       bool        `json:"bnb_4bit_use_double_quant"`
	LLMInt8EnableFP32CPUOffload bool        `json:"llm_int8_enable_fp32_cpu_offload"`
	LLMInt8HasFP16Weight        bool        `json:"llm_int8_has_fp16_weight"`
	LLMInt8SkipModules          []string    `json:"llm_int8_skip_modules"`
	LLMInt8Threshold            bnb.PyFloat `json:"llm_int8_threshold"`
	LoadIn4bit                  bool        `json:"load_in_4bit"`
	LoadIn8bit                  bool        `json:"load_in_8bit"`
	QuantMethod                 string      `json:"quant_method"`
}

// NewBnBConfig describes a checkpoint quantised with type t. computeDType is the torch name of the compute
// dtype ("bfloat16", "float32", ...); skip lists modules left unquantised (nil = transformers' default,
// which keeps lm_head).
func NewBnBConfig(t bnb.Type, double bool, computeDType string, skip []string) BnBConfig {
	c := BnBConfig{Bnb4bitComputeDType: computeDType, Bnb4bitQuantStorage: "uint8", Bnb4bitQuantType: "fp4",
		LLMInt8SkipModules: skip, LLMInt8Threshold: 6.0, QuantMethod: "bitsandbytes"}
	if t == bnb.Int8 {
		c.LoadIn8bitPriv, c.LoadIn8bit = true, true
	} else {
		c.LoadIn4bitPriv, c.LoadIn4bit = true, true
		c.Bnb4bitQuantType = string(t)
		c.Bnb4bitUseDoubleQuant = double
	}
	return c
}
