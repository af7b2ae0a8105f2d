package testmodel

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"

	"github.com/lorakit/lorakit/models/safetensors"
)

// doraConfig is adapter_config.json as PEFT 0.17 writes it for LoraConfig(r=4, lora_alpha=8, use_dora=True,
// target_modules=[...]) (written here by hand, not by lorakit).
const doraConfig = `{
  "alpha_pattern": {},
  "auto_mapping": null,
  "base_model_name_or_path": %q,
  "bias": "none",
  "corda_config": null,
  "eva_config": null,
  "exclude_modules": null,
  "fan_in_fan_out": false,
  "inference_mode": true,
  "init_lora_weights": true,
  "layer_replication": null,
  "layers_pattern": null,
  "layers_to_transform": null,
  "loftq_config": {},
  "lora_alpha": 8,
  "lora_bias": false,
  "lora_dropout": 0.0,
  "megatron_config": null,
  "megatron_core": "megatron.core",
  "modules_to_save": null,
  "peft_type": "LORA",
  "peft_version": "0.17.1",
  "qalora_group_size": 16,
  "r": 4,
  "rank_pattern": {},
  "revision": null,
  "target_modules": [%s],
  "target_parameters": null,
  "task_type": "CAUSAL_LM",
  "trainable_token_indices": null,
  "use_dora": true,
  "use_qalora": false,
  "use_rslora": false
}`

// PEFTDoRA writes into dir a DoRA adapter (r 4, α 8, so s = 2) for the checkpoint folder base on the module
// suffixes targets ("q_proj", "down_proj", ...), the way PEFT saves one: adapter_config.json with use_dora true
// and, per module, lora_A.weight [4, in], lora_B.weight [out, 4] and lora_magnitude_vector [out] (no .weight
// suffix) in adapter_model.safetensors. A and B are random and non-zero (a trained adapter); the magnitude is
// PEFT's initial ‖W + s·B·A‖ per row times a random factor in [0.6, 1.4] (a trained magnitude). It returns, by
// base tensor name ("model.layers.0.self_attn.q_proj.weight"), PEFT's merged weight computed in float64 from the
// stored values: W' = m ⊙ (W + s·B·A) / ‖W + s·B·A‖ per output row.
func PEFTDoRA(dir, base string, seed uint64, targets []string) (map[string][]float64, error) {
	const r, s = 4, 2.0
	ck, err := safetensors.OpenCheckpoint(base)
	if err != nil {
		return nil, err
	}
	defer ck.Close()
	rng := rand.New(rand.NewPCG(seed, 0xd0a))
	merged := map[string][]float64{}
	var ts []safetensors.Tensor
	for _, name := range ck.Names() {
		if !strings.HasPrefix(name, "model.layers.") || !hasTarget(name, targets) {
			continue
		}
		info, _, _ := ck.Info(name)
		out, in := info.Shape[0], info.Shape[1]
		w, err := ck.Float32s(name)
		if err != nil {
			return nil, err
		}
		a, b, m := make([]float32, r*in), make([]float32, out*r), make([]float32, out)
		bound := 1 / math.Sqrt(float64(in))
		for i := range a {
			a[i] = float32((2*rng.Float64() - 1) * bound)
		}
		for i := range b {
			b[i] = float32(rng.NormFloat64() * 0.05)
		}
		v := doraDirection(w, a, b, s, r, in, out)
		for o := range m {
			m[o] = float32(rowNorm(v[o*in:(o+1)*in]) * (0.6 + 0.8*rng.Float64()))
		}
		wm := make([]float64, len(v))
		for o := 0; o < out; o++ {
			n := rowNorm(v[o*in : (o+1)*in])
			for i := 0; i < in; i++ {
				wm[o*in+i] = float64(m[o]) * v[o*in+i] / n
			}
		}
		merged[name] = wm
		key := "base_model.model." + strings.TrimSuffix(name, ".weight")
		for _, t := range []struct {
			suf   string
			v     []float32
			shape []int
		}{{".lora_A.weight", a, []int{r, in}}, {".lora_B.weight", b, []int{out, r}}, {".lora_magnitude_vector", m, []int{out}}} {
			data, err := safetensors.Encode(safetensors.F32, t.v)
			if err != nil {
				return nil, err
			}
			ts = append(ts, safetensors.Tensor{Name: key + t.suf, DType: safetensors.F32, Shape: t.shape, Data: data})
		}
	}
	if len(ts) == 0 {
		return nil, fmt.Errorf("testmodel: %s has no module %v", base, targets)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	quoted := make([]string, len(targets))
	for i, t := range targets {
		quoted[i] = fmt.Sprintf("%q", t)
	}
	cfg := fmt.Sprintf(doraConfig, base, strings.Join(quoted, ", "))
	if err := os.WriteFile(filepath.Join(dir, "adapter_config.json"), []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	return merged, safetensors.Write(filepath.Join(dir, "adapter_model.safetensors"), ts, map[string]string{"format": "pt"})
}

func hasTarget(name string, targets []string) bool {
	for _, t := range targets {
		if strings.HasSuffix(name, "."+t+".weight") {
			return true
		}
	}
	return false
}

// doraDirection is V = W + s·B·A [out, in] in float64.
func doraDirection(w, a, b []float32, s float64, r, in, out int) []float64 {
	v := make([]float64, out*in)
	for o := 0; o < out; o++ {
		for i := 0; i < in; i++ {
			var d float64
			for k := 0; k < r; k++ {
				d += float64(b[o*r+k]) * float64(a[k*in+i])
			}
			v[o*in+i] = float64(w[o*in+i]) + s*d
		}
	}
	return v
}

func rowNorm(v []float64) float64 {
	var ss float64
	for _, x := range v {
		ss += x * x
	}
	return math.Sqrt(ss)
}
