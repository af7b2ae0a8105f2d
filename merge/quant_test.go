package merge

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/models/lora"
	bnb "github.com/lorakit/lorakit/models/quant"
	"github.com/lorakit/lorakit/models/safetensors"
	"github.com/lorakit/lorakit/quant"
)

// writeNF4Base writes a tiny base whose seven projections are stored as bitsandbytes NF4 (double quantised),
// as transformers saves a load_in_4bit model, and returns the dequantised weights.
func writeNF4Base(t *testing.T, dir string) map[string][]float32 {
	t.Helper()
	src := dir + "-f32"
	writeBase(t, src, baseOpts{seed: 31, dtype: safetensors.BF16})
	ck, err := safetensors.OpenCheckpoint(src)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	deq := map[string][]float32{}
	var ts []safetensors.Tensor
	for _, n := range ck.Names() {
		info, _, _ := ck.Info(n)
		raw, _ := ck.Bytes(n)
		if !strings.HasSuffix(n, "_proj.weight") {
			ts = append(ts, safetensors.Tensor{Name: n, DType: info.DType, Shape: info.Shape, Data: append([]byte(nil), raw...)})
			continue
		}
		w, _ := ck.Float32s(n)
		q, err := bnb.Quantize4(bnb.NF4, w, info.Shape, 64, true)
		if err != nil {
			t.Fatal(err)
		}
		d := make([]float32, len(w))
		q.Dequantize(d)
		deq[n] = d
		ts = append(ts, bnb.ToTensors(n, q, "bfloat16")...)
	}
	os.MkdirAll(dir, 0o755)
	if err := safetensors.Write(filepath.Join(dir, "model.safetensors"), ts, nil); err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	b, _ := os.ReadFile(filepath.Join(src, "config.json"))
	json.Unmarshal(b, &cfg)
	cfg["quantization_config"] = map[string]any{"quant_method": "bitsandbytes", "load_in_4bit": true, "_load_in_4bit": true,
		"bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": true, "bnb_4bit_compute_dtype": "bfloat16",
		"bnb_4bit_quant_storage": "uint8", "load_in_8bit": false, "_load_in_8bit": false}
	b, _ = json.MarshalIndent(cfg, "", "  ")
	os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644)
	for _, f := range []string{"tokenizer.json", "generation_config.json"} {
		c, _ := os.ReadFile(filepath.Join(src, f))
		os.WriteFile(filepath.Join(dir, f), c, 0o644)
	}
	return deq
}

func TestMergeNF4Base(t *testing.T) {
	root := t.TempDir()
	base := filepath.Join(root, "nf4")
	deq := writeNF4Base(t, base)
	ad := makeAdapter(t, 32, 4, 8, []string{"q_proj", "v_proj", "up_proj", "down_proj"}, false)
	srcs := []Source{{Dir: "a", Weight: 1, Adapter: ad}}

	out := filepath.Join(root, "merged")
	res, err := Run(context.Background(), base, out, Options{Adapters: srcs, Verify: true, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.Dequantized != 4*tL+3*tL || len(res.Warnings) == 0 || !strings.Contains(res.Warnings[0], "dequantised") {
		t.Errorf("result %+v", res)
	}
	if !res.Verify.OK || res.Verify.AdapterEffect < 1e-2 {
		t.Errorf("verify %+v", res.Verify)
	}
	t.Logf("nf4 base → bf16: verify %+v", res.Verify)
	for _, m := range ad.Names() {
		got, dt := tensorF32(t, out, m+".weight")
		if dt != safetensors.BF16 {
			t.Fatalf("%s: %s", m, dt)
		}
		d := lora.DeltaWeight(ad.Modules[m])
		for i, w := range deq[m+".weight"] {
			exact := w + d[i]
			if math.Abs(float64(got[i]-exact)) > math.Abs(float64(exact))/256+1e-30 {
				t.Fatalf("%s[%d] = %g, want bf16(dequant + delta) = %g", m, i, got[i], exact)
			}
		}
	}
	k, _ := tensorF32(t, out, "model.layers.0.self_attn.k_proj.weight") // untouched: dequantised, rounded once to bf16
	for i, w := range deq["model.layers.0.self_attn.k_proj.weight"] {
		if math.Abs(float64(k[i]-w)) > math.Abs(float64(w))/256 {
			t.Fatalf("k_proj[%d] %g vs %g", i, k[i], w)
		}
	}
	cfg, _ := os.ReadFile(filepath.Join(out, "config.json"))
	if strings.Contains(string(cfg), "quantization_config") || !strings.Contains(string(cfg), `"torch_dtype": "bfloat16"`) {
		t.Errorf("config %s", cfg)
	}
	ck, _ := safetensors.OpenCheckpoint(out)
	for _, n := range ck.Names() {
		if strings.Contains(n, "absmax") || strings.Contains(n, "quant") {
			t.Errorf("quantisation tensor %s left in a dequantised output", n)
		}
	}
	ck.Close()

	// --requantize nf4: merged weights NF4 again, untouched ones bit for bit, quantization_config kept.
	outQ := filepath.Join(root, "merged-nf4")
	res, err = Run(context.Background(), base, outQ, Options{Adapters: srcs, Requantize: "nf4", Verify: true, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requantized != len(ad.Modules) || !strings.Contains(strings.Join(res.Warnings, "\n"), "rounding") {
		t.Errorf("requantize result %+v", res)
	}
	for _, suf := range []string{"", ".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map", ".quant_state.bitsandbytes__nf4"} {
		n := "model.layers.1.self_attn.k_proj.weight" + suf
		if string(tensorRaw(t, base, n)) != string(tensorRaw(t, outQ, n)) {
			t.Errorf("%s not copied bit for bit", n)
		}
	}
	cfg, _ = os.ReadFile(filepath.Join(outQ, "config.json"))
	if !strings.Contains(string(cfg), "quantization_config") {
		t.Error("quantization_config dropped with --requantize")
	}
	t.Logf("requantized: verify %+v", res.Verify)
}

// TestMergeQuantizedFolders merges into folders written by quant.QuantizeFolder (what `lorakit quantize` does):
// NF4 without double quantisation, FP4, and LLM.int8. Each comes out dequantised in bf16 and verifies.
func TestMergeQuantizedFolders(t *testing.T) {
	root := t.TempDir()
	src := filepath.Join(root, "src")
	writeBase(t, src, baseOpts{seed: 41, dtype: safetensors.BF16})
	ad := makeAdapter(t, 42, 4, 8, lora.DefaultTargets, false)
	for _, o := range []quant.FolderOptions{{Type: bnb.NF4}, {Type: bnb.FP4, Double: true}, {Type: bnb.Int8}} {
		base := filepath.Join(root, string(o.Type))
		if _, err := quant.QuantizeFolder(src, base, o); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(root, "merged-"+string(o.Type))
		res, err := Run(context.Background(), base, out, Options{Adapters: []Source{{Dir: "a", Weight: 1, Adapter: ad}}, Verify: true, Threads: 1})
		if err != nil {
			t.Fatalf("%s: %v", o.Type, err)
		}
		if res.Dequantized != 7*tL || !res.Verify.OK {
			t.Errorf("%s: %+v verify %+v", o.Type, res, res.Verify)
		}
		t.Logf("%s base: verify diff %.3g, effect %.3g, bound %.3g", o.Type, res.Verify.MaxAbsDiff, res.Verify.AdapterEffect, res.Verify.Bound)
		if o.Type == bnb.Int8 {
			if _, err := Run(context.Background(), base, out+"-rq", Options{Adapters: []Source{{Dir: "a", Weight: 1, Adapter: ad}}, Requantize: "nf4"}); err == nil {
				t.Error("--requantize nf4 accepted on an int8 base")
			}
			noOut(t, root, out+"-rq")
		}
	}
}
