package data

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/safetensors"
)

// smolLM2Shape is HuggingFaceTB/SmolLM2-135M's config.json; classifier adds a one-output score head (a reward
// model of that shape, as Skywork-Reward heads are).
const smolLM2Shape = `{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":576,
"intermediate_size":1536,"num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3,"vocab_size":49152,
"max_position_embeddings":8192,"rms_norm_eps":1e-5,"rope_theta":100000,"tie_word_embeddings":true,"bos_token_id":0,
"eos_token_id":0,"pad_token_id":2,"hidden_act":"silu","torch_dtype":"bfloat16"}`

// randomTensors serves every tensor a config asks for as random bf16 values (std 0.02; norms 1), generated
// from the tensor's name, in memory.
type randomTensors struct{ shapes map[string][]int }

func (r randomTensors) Info(name string) (safetensors.TensorInfo, string, bool) {
	shape, ok := r.shapes[name]
	return safetensors.TensorInfo{Name: name, DType: safetensors.BF16, Shape: shape}, "random", ok
}

func (r randomTensors) Float32s(name string) ([]float32, error) {
	n := 1
	for _, d := range r.shapes[name] {
		n *= d
	}
	v := make([]float32, n)
	if strings.HasSuffix(name, "norm.weight") {
		for i := range v {
			v[i] = 1
		}
		return v, nil
	}
	h := fnv.New64a()
	h.Write([]byte(name))
	rng := rand.New(rand.NewPCG(h.Sum64(), 1))
	for i := range v {
		v[i] = float32(rng.NormFloat64() * 0.02)
	}
	return v, nil
}

func (r randomTensors) Bytes(name string) ([]byte, error) {
	v, _ := r.Float32s(name)
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], safetensors.F32ToBF16(x))
	}
	return b, nil
}

// randomSmolLM2 builds the smollm2-135m shape with random bf16 weights: the causal LM, or with classifier a
// LlamaForSequenceClassification with one output.
func randomSmolLM2(tb testing.TB, classifier bool) *llama.Model {
	tb.Helper()
	cfgJSON := smolLM2Shape
	if classifier {
		cfgJSON = strings.Replace(cfgJSON, `"LlamaForCausalLM"`, `"LlamaForSequenceClassification"`, 1)
		cfgJSON = strings.Replace(cfgJSON, `"model_type"`, `"id2label":{"0":"LABEL_0"},"model_type"`, 1)
	}
	cfg, err := llama.ParseConfig([]byte(cfgJSON))
	if err != nil {
		tb.Fatal(err)
	}
	H, I, Q, KV := cfg.HiddenSize, cfg.IntermediateSize, cfg.QDim(), cfg.KVDim()
	shapes := map[string][]int{"model.embed_tokens.weight": {cfg.VocabSize, H}, "model.norm.weight": {H}}
	if classifier {
		shapes["score.weight"] = []int{1, H}
	}
	for l := range cfg.NumHiddenLayers {
		p := fmt.Sprintf("model.layers.%d.", l)
		for name, s := range map[string][]int{"input_layernorm": {H}, "post_attention_layernorm": {H},
			"self_attn.q_proj": {Q, H}, "self_attn.k_proj": {KV, H}, "self_attn.v_proj": {KV, H}, "self_attn.o_proj": {H, Q},
			"mlp.gate_proj": {I, H}, "mlp.up_proj": {I, H}, "mlp.down_proj": {H, I}} {
			shapes[p+name+".weight"] = s
		}
	}
	m, err := llama.LoadTensors(randomTensors{shapes}, "random smollm2-135m", cfg, llama.LoadOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

// BenchmarkJudgeSmolLM2 compares what data score spends per example on the smollm2-135m shape (random bf16
// weights, all cores): perplexity scoring (the conversation and the response alone through the LM head with
// logits at every position, as ScoreFile sends them) against reward scoring (the conversation through a
// one-output score head read at the last token). Examples are 96-token prompts with 32-token responses, 8 per
// call. Run:
//
//	go test ./train/data -run X -bench JudgeSmolLM2 -benchtime 3x
func BenchmarkJudgeSmolLM2(b *testing.B) {
	const examples, prompt, response = 8, 96, 32
	rng := rand.New(rand.NewPCG(1, 2))
	var conv, alone [][]int
	for range examples {
		c := make([]int, prompt+response)
		for i := range c {
			c[i] = 3 + rng.IntN(49000) // never the pad token (2)
		}
		conv = append(conv, c)
		alone = append(alone, append([]int{0}, c[prompt:]...))
	}
	b.Run("perplexity", func(b *testing.B) {
		s := &ModelScorer{Net: randomSmolLM2(b, false)}
		seqs := make([][]int, 0, 2*examples)
		for i := range conv {
			seqs = append(seqs, conv[i], alone[i])
		}
		b.ResetTimer()
		for b.Loop() {
			if _, err := s.TokenNLL(seqs); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(examples*b.N)/b.Elapsed().Seconds(), "examples/s")
	})
	b.Run("reward", func(b *testing.B) {
		j := &Judge{Net: randomSmolLM2(b, true)}
		b.ResetTimer()
		for b.Loop() {
			out, err := j.Classify(conv)
			if err != nil || len(out) != examples || math.IsNaN(out[0][0]) {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(examples*b.N)/b.Elapsed().Seconds(), "examples/s")
	})
}
