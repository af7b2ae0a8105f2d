package quant

import (
	"encoding/json"
	bnb "github.com/lorakit/lorakit/models/quant"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/models/safetensors"
	"github.com/lorakit/lorakit/models/testmodel"
)

func TestQuantizeFolder(t *testing.T) {
	for _, tc := range []struct {
		typ    bnb.Type
		dq     bool
		dtype  string
		shards int
		skip   []string
	}{{bnb.NF4, true, "BF16", 1, nil}, {bnb.FP4, false, "F32", 2, []string{"down_proj"}}, {bnb.Int8, false, "F16", 1, nil}} {
		t.Run(string(tc.typ), func(t *testing.T) {
			dir := t.TempDir()
			in, out := filepath.Join(dir, "in"), filepath.Join(dir, "out")
			o := testmodel.Default()
			o.DType, o.Shards, o.ModelType, o.Hidden, o.Intermediate = tc.dtype, tc.shards, "qwen2", 64, 128
			if err := testmodel.Write(in, o); err != nil {
				t.Fatal(err)
			}
			res, err := QuantizeFolder(in, out, FolderOptions{Type: tc.typ, Double: tc.dq, Skip: tc.skip, Threads: 2})
			if err != nil {
				t.Fatal(err)
			}
			wantQ := 7 * 2
			if tc.skip != nil {
				wantQ = 6 * 2
			}
			if len(res.Quantized) != wantQ {
				t.Fatalf("quantised %d tensors, want %d", len(res.Quantized), wantQ)
			}
			for _, r := range res.Quantized {
				if r.RelRMS > 0.2 || strings.Contains(r.Name, "embed") || strings.Contains(r.Name, "norm") {
					t.Errorf("%s: relative RMS %v", r.Name, r.RelRMS)
				}
			}
			for _, f := range []string{"tokenizer.json", "tokenizer_config.json", "generation_config.json"} {
				if _, err := os.Stat(filepath.Join(out, f)); err != nil {
					t.Errorf("%s not copied", f)
				}
			}
			var cfg map[string]any
			raw, _ := os.ReadFile(filepath.Join(out, "config.json"))
			if err := json.Unmarshal(raw, &cfg); err != nil {
				t.Fatal(err)
			}
			qc, _ := cfg["quantization_config"].(map[string]any)
			if qc["quant_method"] != "bitsandbytes" || (tc.typ != bnb.Int8 && qc["bnb_4bit_quant_type"] != string(tc.typ)) ||
				qc["load_in_8bit"] != (tc.typ == bnb.Int8) || cfg["model_type"] != "qwen2" {
				t.Errorf("config %v", qc)
			}
			// reload every quantised weight and compare with the original
			src, _ := safetensors.OpenCheckpoint(in)
			defer src.Close()
			dst, err := safetensors.OpenCheckpoint(out)
			if err != nil {
				t.Fatal(err)
			}
			defer dst.Close()
			for _, r := range res.Quantized {
				q, ok, err := bnb.FromCheckpoint(dst, r.Name)
				if err != nil || !ok {
					t.Fatalf("%s: ok=%v err=%v", r.Name, ok, err)
				}
				w, _ := src.Float32s(r.Name)
				got := make([]float32, len(w))
				q.Dequantize(got)
				var se float64
				for i := range w {
					se += float64(got[i]-w[i]) * float64(got[i]-w[i])
				}
				if math.Abs(math.Sqrt(se/float64(len(w)))-r.RMSError) > 1e-9 {
					t.Errorf("%s: reloaded RMS %v, reported %v", r.Name, math.Sqrt(se/float64(len(w))), r.RMSError)
				}
			}
			// kept tensors are bit for bit
			for _, name := range res.Kept {
				a, _ := src.Bytes(name)
				b, err := dst.Bytes(name)
				if err != nil || string(a) != string(b) {
					t.Errorf("%s changed", name)
				}
				if _, ok, _ := bnb.FromCheckpoint(dst, name); ok {
					t.Errorf("%s reported quantised", name)
				}
			}
			if _, err := QuantizeFolder(in, in+"/", FolderOptions{}); err == nil {
				t.Error("writing over the input folder was accepted")
			}
			if _, err := QuantizeFolder(out, filepath.Join(dir, "again"), FolderOptions{}); err == nil {
				t.Error("re-quantising a quantised folder succeeded")
			}
		})
	}
}
