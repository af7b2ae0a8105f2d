package ggufconv

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/models/chat"
	"github.com/lorakit/lorakit/models/gguf"
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/safetensors"
	"github.com/lorakit/lorakit/models/testmodel"
)

// TestPermutationIsRoPEConvention: rotate_half RoPE on W·x equals, after the row permutation, interleaved
// (GPT-J style, pairs 2i and 2i+1) RoPE on P·W·x — the reason llama.cpp's converter permutes q/k for "llama".
func TestPermutationIsRoPEConvention(t *testing.T) {
	const heads, d, pos = 3, 8, 5
	rng := rand.New(rand.NewPCG(1, 1))
	q := make([]float32, heads*d) // one column: W·x for some x
	for i := range q {
		q[i] = float32(rng.NormFloat64())
	}
	theta := func(i int) float64 { return pos / math.Pow(10000, float64(2*i)/d) }
	half := slices.Clone(q)
	for h := range heads {
		for i := range d / 2 {
			a, b := float64(q[h*d+i]), float64(q[h*d+i+d/2])
			half[h*d+i] = float32(a*math.Cos(theta(i)) - b*math.Sin(theta(i)))
			half[h*d+i+d/2] = float32(b*math.Cos(theta(i)) + a*math.Sin(theta(i)))
		}
	}
	p := permuteRows(q, heads, 1)
	inter := slices.Clone(p)
	for h := range heads {
		for i := range d / 2 {
			a, b := float64(p[h*d+2*i]), float64(p[h*d+2*i+1])
			inter[h*d+2*i] = float32(a*math.Cos(theta(i)) - b*math.Sin(theta(i)))
			inter[h*d+2*i+1] = float32(b*math.Cos(theta(i)) + a*math.Sin(theta(i)))
		}
	}
	if got := permuteRows(half, heads, 1); !slices.Equal(got, inter) {
		t.Fatalf("P·rope_half(q) = %v\nrope_interleaved(P·q) = %v", got, inter)
	}
	if back := unpermuteRows(p, heads, 1); !slices.Equal(back, q) {
		t.Fatal("unpermuteRows is not the inverse")
	}
}

// TestExportVariants writes tiny random models of each architecture option and reads every tensor back: names,
// shapes, types and (f32) values, q/k un-permuted, equal the checkpoint's.
func TestExportVariants(t *testing.T) {
	for _, o := range []testmodel.Options{
		{ModelType: "llama", AttentionBias: true, Llama3RopeScaling: true},
		{ModelType: "llama", Tied: true, Hidden: 64, Intermediate: 96},
		{ModelType: "qwen2", Tied: true},
		{ModelType: "qwen3", HeadDim: 16},
		{ModelType: "mistral", SlidingWindow: 64},
	} {
		t.Run(o.ModelType, func(t *testing.T) {
			dir := t.TempDir()
			if err := testmodel.Write(dir, o); err != nil {
				t.Fatal(err)
			}
			cfg, err := llama.LoadConfig(dir)
			if err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "m.gguf")
			res, err := ExportModel(context.Background(), dir, out, ExportOptions{Type: gguf.F32})
			if err != nil {
				t.Fatal(err)
			}
			if o.SlidingWindow > 0 && len(res.Notes) == 0 {
				t.Error("no note about the sliding window")
			}
			g, err := gguf.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			ck, err := safetensors.OpenCheckpoint(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer ck.Close()
			arch, _ := Arch(cfg)
			if a, _, _ := g.String("general.architecture"); a != arch {
				t.Fatalf("architecture %q", a)
			}
			n := 0
			for _, hf := range ck.Names() {
				if hf == "lm_head.weight" && cfg.TieWordEmbeddings {
					continue
				}
				name, ok := TensorName(hf)
				if !ok {
					t.Fatalf("no name for %s", hf)
				}
				if back, _ := HFName(name); back != hf {
					t.Fatalf("HFName(%s) = %s", name, back)
				}
				got, ti, err := g.Float32s(name)
				if err != nil {
					t.Fatal(err)
				}
				want, _ := ck.Float32s(hf)
				info, _, _ := ck.Info(hf)
				if !slices.Equal(ti.Shape, info.Shape) {
					t.Fatalf("%s: shape %v, want %v", name, ti.Shape, info.Shape)
				}
				if h := qkHeads(cfg, hf); h > 0 && permutes(arch) {
					cols := 1
					if len(info.Shape) == 2 {
						cols = info.Shape[1]
					}
					got = unpermuteRows(got, h, cols)
				}
				if !slices.Equal(got, want) {
					t.Fatalf("%s: values differ", name)
				}
				n++
			}
			if _, ok := g.Tensor("rope_freqs.weight"); ok != o.Llama3RopeScaling {
				t.Fatalf("rope_freqs.weight present: %v", ok)
			}
			if o.Llama3RopeScaling {
				f, _, _ := g.Float32s("rope_freqs.weight")
				plain := *cfg
				plain.RopeScaling = nil
				scaled, unscaled := cfg.InvFreq(), plain.InvFreq()
				for i := range f {
					if r := float64(unscaled[i]) / float64(scaled[i]); math.Abs(r-float64(f[i])) > 1e-5*r {
						t.Fatalf("rope_freqs[%d] = %g, want %g", i, f[i], r)
					}
				}
				n++
			}
			if n != len(g.Tensors) {
				t.Fatalf("%d tensors, want %d", len(g.Tensors), n)
			}
		})
	}
}

func TestExportRefusals(t *testing.T) {
	dir := t.TempDir()
	if err := testmodel.Write(dir, testmodel.Options{}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "m.gguf")
	if _, err := ExportModel(context.Background(), dir, out, ExportOptions{Type: gguf.Q4_K}); err == nil || !strings.Contains(err.Error(), "Q4_K") {
		t.Fatalf("Q4_K: %v", err)
	}
	// a tensor with no place in a llama.cpp file
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(strings.Replace(mustRead(t, filepath.Join(dir, "config.json")), `"num_hidden_layers": 2`, `"num_hidden_layers": 1`, 1)), 0o644)
	_, err := ExportModel(context.Background(), dir, out, ExportOptions{Type: gguf.F16})
	if err == nil || !strings.Contains(err.Error(), "model.layers.1.") {
		t.Fatalf("extra layer: %v", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatal("output written despite the error")
	}
}

func mustRead(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestOllamaTemplate(t *testing.T) {
	tpl, err := chat.New(testmodel.ChatTemplate, "<s>", "<|im_end|>")
	if err != nil {
		t.Fatal(err)
	}
	text, err := OllamaTemplate(tpl, "")
	if err != nil {
		t.Fatal(err)
	}
	msgs := []chat.Message{{Role: "system", Content: "S"}, {Role: "user", Content: "hi"}, {Role: "assistant", Content: "yo"}, {Role: "user", Content: "more"}}
	got, err := renderOllama(text, msgs)
	if err != nil {
		t.Fatal(err)
	}
	want := "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n<|im_start|>user\nmore<|im_end|>\n<|im_start|>assistant\n"
	if got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	// a template whose text depends on more than the role is not translated
	odd, _ := chat.New("{% for m in messages %}{{ loop.index }}{{ m['content'] }}{% endfor %}", "", "")
	if _, err := OllamaTemplate(odd, ""); err == nil {
		t.Fatal("a loop-index template was translated")
	}
}
