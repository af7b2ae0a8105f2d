package quant

import (
	"encoding/json"
	bnb "github.com/lorakit/lorakit/models/quant"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/models/safetensors"
	"github.com/lorakit/lorakit/models/testmodel"
)

// TestQuantizeFolderShapes quantises bases whose weights are not a multiple of the block size (last block
// partial) and have an odd number of elements (last byte half used), with --skip by module name, for every
// type; the tensors have bitsandbytes' shapes and reload to exactly what bnb.Quantize4/bnb.Quantize8 give.
func TestQuantizeFolderShapes(t *testing.T) {
	// qwen3, hidden 15, 3 heads of 6, 1 KV head, intermediate 21: q [18 15], k/v [6 15], o [15 18],
	// gate/up [21 15] and down [15 21] (315 values: odd, 4 blocks of 64 + 59).
	o := testmodel.Options{ModelType: "qwen3", DType: "BF16", Hidden: 15, Heads: 3, KVHeads: 1, HeadDim: 6, Intermediate: 21, Seed: 3, Tied: true}
	root := t.TempDir()
	in := filepath.Join(root, "in")
	if err := testmodel.Write(in, o); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		opt   FolderOptions
		skip  []string // module names expected unquantised
		wantQ int
	}{
		{FolderOptions{Type: bnb.NF4, Double: true}, nil, 14},
		{FolderOptions{Type: bnb.NF4, BlockSize: 32, Skip: []string{"model.layers.1.mlp.down_proj", "self_attn.o_proj"}},
			[]string{"model.layers.1.mlp.down_proj", "model.layers.0.self_attn.o_proj", "model.layers.1.self_attn.o_proj"}, 11},
		{FolderOptions{Type: bnb.FP4, BlockSize: 128, Double: true}, nil, 14},
		{FolderOptions{Type: bnb.Int8, Skip: []string{"layers.0."}}, []string{"model.layers.0.self_attn.q_proj"}, 7},
	} {
		name := string(tc.opt.Type)
		if len(tc.opt.Skip) > 0 {
			name += "-skip"
		}
		t.Run(name, func(t *testing.T) {
			out := filepath.Join(root, name)
			res, err := QuantizeFolder(in, out, tc.opt)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Quantized) != tc.wantQ {
				t.Fatalf("quantised %d, want %d", len(res.Quantized), tc.wantQ)
			}
			src, _ := safetensors.OpenCheckpoint(in)
			defer src.Close()
			dst, err := safetensors.OpenCheckpoint(out)
			if err != nil {
				t.Fatal(err)
			}
			defer dst.Close()
			bs := tc.opt.BlockSize
			if bs == 0 {
				bs = bnb.DefaultBlockSize
			}
			for _, r := range res.Quantized {
				w, _ := src.Float32s(r.Name)
				n := len(w)
				var want *bnb.Weight
				if tc.opt.Type == bnb.Int8 {
					want, err = bnb.Quantize8(w, r.Shape)
				} else {
					want, err = bnb.Quantize4(tc.opt.Type, w, r.Shape, bs, tc.opt.Double)
					info, _, _ := dst.Info(r.Name)
					if info.DType != safetensors.U8 || len(info.Shape) != 2 || info.Shape[0] != (n+1)/2 || info.Shape[1] != 1 {
						t.Errorf("%s: stored %s %v, want U8 [%d 1]", r.Name, info.DType, info.Shape, (n+1)/2)
					}
					am, _, _ := dst.Info(r.Name + ".absmax")
					if am.Elems() != (n+bs-1)/bs {
						t.Errorf("%s: absmax %v, want %d blocks", r.Name, am.Shape, (n+bs-1)/bs)
					}
				}
				if err != nil {
					t.Fatal(err)
				}
				got, ok, err := bnb.FromCheckpoint(dst, r.Name)
				if err != nil || !ok {
					t.Fatalf("%s: %v %v", r.Name, ok, err)
				}
				a, b := make([]float32, n), make([]float32, n)
				want.Dequantize(a)
				got.Dequantize(b)
				for i := range a {
					if a[i] != b[i] {
						t.Fatalf("%s[%d]: reloaded %g, quantised %g", r.Name, i, b[i], a[i])
					}
				}
			}
			for _, m := range tc.skip {
				a, _ := src.Bytes(m + ".weight")
				b, err := dst.Bytes(m + ".weight")
				if err != nil || string(a) != string(b) {
					t.Errorf("%s: skipped module not kept bit for bit (%v)", m, err)
				}
			}
			var cfg struct {
				Q BnBConfig `json:"quantization_config"`
			}
			raw, _ := os.ReadFile(filepath.Join(out, "config.json"))
			if err := json.Unmarshal(raw, &cfg); err != nil {
				t.Fatal(err)
			}
			if len(tc.opt.Skip) > 0 && strings.Join(cfg.Q.LLMInt8SkipModules, ",") != "lm_head,"+strings.Join(tc.opt.Skip, ",") {
				t.Errorf("llm_int8_skip_modules %v", cfg.Q.LLMInt8SkipModules)
			}
		})
	}
}

// TestQuantizeFolderRefusals: an already quantised input (by config or by its tensors), pickled weights, and an
// output folder that is not a previous quantised output are refused with the file named; a previous output is
// replaced, and --force replaces anything but the input.
func TestQuantizeFolderRefusals(t *testing.T) {
	root := t.TempDir()
	in := filepath.Join(root, "in")
	if err := testmodel.Write(in, testmodel.Options{Seed: 4}); err != nil {
		t.Fatal(err)
	}
	nf := filepath.Join(root, "nf4")
	if _, err := QuantizeFolder(in, nf, FolderOptions{}); err != nil {
		t.Fatal(err)
	}
	expectErr := func(err error, want ...string) {
		t.Helper()
		if err == nil {
			t.Fatalf("accepted (want an error mentioning %q)", want)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error does not mention %q: %v", w, err)
			}
		}
	}
	// Already quantised: by config.json.
	_, err := QuantizeFolder(nf, filepath.Join(root, "x"), FolderOptions{})
	expectErr(err, "config.json", "already quantised")
	// Already quantised: bitsandbytes tensors, quantization_config removed from config.json.
	strip := filepath.Join(root, "strip")
	os.MkdirAll(strip, 0o755)
	ents, _ := os.ReadDir(nf)
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join(nf, e.Name()))
		os.WriteFile(filepath.Join(strip, e.Name()), b, 0o644)
	}
	cfg, _ := os.ReadFile(filepath.Join(in, "config.json"))
	os.WriteFile(filepath.Join(strip, "config.json"), cfg, 0o644)
	_, err = QuantizeFolder(strip, filepath.Join(root, "x"), FolderOptions{})
	expectErr(err, "already quantised", ".weight.")
	// Pickled weights only.
	pick := filepath.Join(root, "pickle")
	os.MkdirAll(pick, 0o755)
	os.WriteFile(filepath.Join(pick, "config.json"), cfg, 0o644)
	os.WriteFile(filepath.Join(pick, "pytorch_model.bin"), []byte("PK"), 0o644)
	_, err = QuantizeFolder(pick, filepath.Join(root, "x"), FolderOptions{})
	expectErr(err, "pytorch_model.bin", "safetensors")
	// Corrupted weights: the file is named.
	bad := filepath.Join(root, "bad")
	os.MkdirAll(bad, 0o755)
	os.WriteFile(filepath.Join(bad, "config.json"), cfg, 0o644)
	os.WriteFile(filepath.Join(bad, "model.safetensors"), []byte("\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":"), 0o644)
	_, err = QuantizeFolder(bad, filepath.Join(root, "x"), FolderOptions{})
	expectErr(err, "model.safetensors")
	if _, err := os.Stat(filepath.Join(root, "x")); err == nil {
		t.Fatal("output written by a refused quantisation")
	}
	// OUT: a folder that is not a quantised model is kept; --force replaces it; a previous output is replaced.
	foreign := filepath.Join(root, "foreign")
	os.MkdirAll(foreign, 0o755)
	os.WriteFile(filepath.Join(foreign, "notes.txt"), []byte("mine"), 0o644)
	_, err = QuantizeFolder(in, foreign, FolderOptions{})
	expectErr(err, foreign, "--force")
	if b, _ := os.ReadFile(filepath.Join(foreign, "notes.txt")); string(b) != "mine" {
		t.Fatal("foreign folder touched")
	}
	if _, err := QuantizeFolder(in, nf, FolderOptions{Type: bnb.FP4}); err != nil {
		t.Fatalf("previous output not replaced: %v", err)
	}
	if _, err := QuantizeFolder(in, foreign, FolderOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(foreign, "notes.txt")); err == nil {
		t.Error("--force did not replace the folder")
	}
	if _, err := QuantizeFolder(in, in, FolderOptions{Force: true}); err == nil {
		t.Error("--force replaced the input")
	}
}
