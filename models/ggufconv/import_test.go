package ggufconv_test

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/internal/testenv"
	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/gguf"
	"github.com/lorakit/lorakit/models/ggufconv"
	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/nn"
	"github.com/lorakit/lorakit/models/testmodel"
)

type logitsGolden struct {
	Prompt    string    `json:"prompt"`
	PromptIDs []int     `json:"prompt_ids"`
	Logits    []float64 `json:"logits"`
}

func lastLogits(t *testing.T, m *models.Model, ids []int) []float32 {
	t.Helper()
	out, err := m.Net.Forward([]llama.Seq{{Tokens: ids}})
	if err != nil {
		t.Fatal(err)
	}
	return out[0][0]
}

func maxAbsDiff(a []float32, b []float64) float64 {
	var d float64
	for i := range a {
		d = max(d, math.Abs(float64(a[i])-b[i]))
	}
	return d
}

// checkGoldenModel loads file (a GGUF model of stories260K) and compares it with the goldens: greedy tokens,
// last-position logits within 1e-4, and the tokenizer rebuilt from the metadata on the golden prompts.
func checkGoldenModel(t *testing.T, shared, file, logitsFile string, greedy bool) {
	t.Helper()
	m, err := models.Load(file, models.LoadOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	lg, _ := readJSONL[logitsGolden](t, filepath.Join(shared, "golden", logitsFile))
	for _, g := range lg {
		if d := maxAbsDiff(lastLogits(t, m, g.PromptIDs), g.Logits); d > 1e-4 {
			t.Errorf("%s: %q: max |Δlogit| %.3g > 1e-4", filepath.Base(file), g.Prompt, d)
		}
	}
	gr, _ := readJSONL[greedyGolden](t, filepath.Join(shared, "golden", "stories260K-greedy.jsonl"))
	for _, g := range gr {
		if ids := m.EncodePrompt(g.Prompt); !slices.Equal(ids, g.PromptIDs) {
			t.Errorf("tokenizer from GGUF metadata: %q → %v, want %v", g.Prompt, ids, g.PromptIDs)
		}
		if !greedy {
			continue
		}
		got, _ := lorakitGreedy(t, m, g.PromptIDs, len(g.GreedyIDs), nil)
		if !slices.Equal(got, g.GreedyIDs) {
			t.Errorf("%s: %q: greedy %v, want %v", filepath.Base(file), g.Prompt, got, g.GreedyIDs)
		}
	}
	if m.Chat == nil || !strings.Contains(m.Chat.Source(), "### assistant") {
		t.Error("chat template not rebuilt from tokenizer.chat_template")
	}
}

// TestImportOwnExport: stories260K exported as f32 (and the bf16 folder as bf16) loads back from the GGUF file
// with the golden greedy tokens and logits.
func TestImportOwnExport(t *testing.T) {
	shared := testenv.Testdata(t)
	out := t.TempDir()
	for _, c := range []struct {
		src, logits string
		typ         gguf.Type
	}{
		{"stories260K", "stories260K-logits.jsonl", gguf.F32},
		{"stories260K-bf16", "stories260K-bf16-logits.jsonl", gguf.BF16},
	} {
		f := filepath.Join(out, c.src+".gguf")
		if _, err := ggufconv.ExportModel(context.Background(), filepath.Join(shared, "models", c.src), f, ggufconv.ExportOptions{Type: c.typ}); err != nil {
			t.Fatal(err)
		}
		checkGoldenModel(t, shared, f, c.logits, c.typ == gguf.F32)
	}
}

// exportVariant writes a tiny random model of options o and its f32 GGUF export; it returns both paths.
func exportVariant(t *testing.T, o testmodel.Options) (dir, file string) {
	t.Helper()
	dir = t.TempDir()
	if err := testmodel.Write(dir, o); err != nil {
		t.Fatal(err)
	}
	file = filepath.Join(t.TempDir(), "m.gguf")
	if _, err := ggufconv.ExportModel(context.Background(), dir, file, ggufconv.ExportOptions{Type: gguf.F32}); err != nil {
		t.Fatal(err)
	}
	return dir, file
}

// TestImportVariants: each architecture option of a tiny random model gives the same logits from its f32 GGUF
// export as from its Hugging Face folder (biases, qk-norm, tied/untied heads, llama3 rope via rope_freqs).
func TestImportVariants(t *testing.T) {
	for _, o := range []testmodel.Options{
		{ModelType: "llama", AttentionBias: true, Llama3RopeScaling: true},
		{ModelType: "qwen2", Tied: true},
		{ModelType: "qwen3", HeadDim: 16},
	} {
		t.Run(o.ModelType, func(t *testing.T) {
			dir, f := exportVariant(t, o)
			hf, err := models.Load(dir, models.LoadOptions{Threads: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer hf.Close()
			gm, err := models.Load(f, models.LoadOptions{Threads: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer gm.Close()
			ids := hf.Tok.Encode("hello world, hello GGUF", true)
			if got := gm.Tok.Encode("hello world, hello GGUF", true); !slices.Equal(got, ids) {
				t.Fatalf("tokens %v, want %v", got, ids)
			}
			a, b := lastLogits(t, hf, ids), lastLogits(t, gm, ids)
			for i := range a {
				if math.Abs(float64(a[i]-b[i])) > 1e-4 {
					t.Fatalf("logit %d: %g from GGUF, %g from the folder", i, b[i], a[i])
				}
			}
		})
	}
}

// TestQ4_0Weight: ggml Q4_0 blocks re-packed for the 4-bit kernels dequantise to exactly the values ggml's
// layout stands for, and multiply like the dense matrix of those values.
func TestQ4_0Weight(t *testing.T) {
	const rows, cols = 24, 128
	rng := rand.New(rand.NewPCG(9, 9))
	w := make([]float32, rows*cols)
	for i := range w {
		w[i] = float32(rng.NormFloat64())
	}
	raw, _ := gguf.Encode(nil, gguf.Q4_0, w)
	want := make([]float32, len(w))
	if err := gguf.Decode(gguf.Q4_0, raw, want); err != nil {
		t.Fatal(err)
	}
	q, err := ggufconv.Q4_0Weight(raw, rows, cols)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]float32, len(w))
	q.Dequantize(got)
	if !slices.Equal(got, want) {
		t.Fatal("dequantised Q4_0 weight differs from ggml's values")
	}
	x := make([]float32, 3*cols)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	p := kernels.NewPool(1)
	yq, yd := make([]float32, 3*rows), make([]float32, 3*rows)
	(&nn.Quantized{Q: q}).Forward(p, yq, x, 3)
	d, _ := nn.NewDense("F32", f32Bytes(want), rows, cols)
	d.Forward(p, yd, x, 3)
	for i := range yq {
		if math.Abs(float64(yq[i]-yd[i])) > 1e-3*(1+math.Abs(float64(yd[i]))) {
			t.Fatalf("y[%d] = %g with the integer kernels, %g dense", i, yq[i], yd[i])
		}
	}
}

// TestQ8_0Weight: ggml Q8_0 blocks split for the int8 kernels dequantise to exactly the values ggml's
// layout stands for, and multiply like the dense matrix of those values.
func TestQ8_0Weight(t *testing.T) {
	const rows, cols = 24, 192
	rng := rand.New(rand.NewPCG(10, 10))
	w := make([]float32, rows*cols)
	for i := range w {
		w[i] = float32(rng.NormFloat64())
	}
	raw, _ := gguf.Encode(nil, gguf.Q8_0, w)
	want := make([]float32, len(w))
	if err := gguf.Decode(gguf.Q8_0, raw, want); err != nil {
		t.Fatal(err)
	}
	q, err := ggufconv.Q8_0Weight(raw, rows, cols)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]float32, len(w))
	q.Dequantize(got)
	if !slices.Equal(got, want) {
		t.Fatal("dequantised Q8_0 weight differs from ggml's values")
	}
	x := make([]float32, 3*cols)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	p := kernels.NewPool(1)
	yq, yd := make([]float32, 3*rows), make([]float32, 3*rows)
	(&nn.Quantized{Q: q}).Forward(p, yq, x, 3) // the Q8_0 kernel where the CPU has AVX-512 VNNI, the dequantising path elsewhere
	d, _ := nn.NewDense("F32", f32Bytes(want), rows, cols)
	d.Forward(p, yd, x, 3)
	for i := range yq {
		if math.Abs(float64(yq[i]-yd[i])) > 1e-3*(1+math.Abs(float64(yd[i]))) {
			t.Fatalf("y[%d] = %g with the integer kernels, %g dense", i, yq[i], yd[i])
		}
	}
}

func f32Bytes(v []float32) []byte {
	out := make([]byte, 4*len(v))
	for i, x := range v {
		b := math.Float32bits(x)
		out[4*i], out[4*i+1], out[4*i+2], out[4*i+3] = byte(b), byte(b>>8), byte(b>>16), byte(b>>24)
	}
	return out
}

// TestLlamaCppQuantized: llama.cpp's own quantizer (llama_model_quantize from the libllama node-llama-cpp ships,
// the function behind llama-quantize) re-writes our f32 export as F32, F16, BF16, Q8_0 and Q4_0. Every tensor it
// writes is byte for byte what lorakit's encoder writes for the same values, and lorakit loads its files: the
// F32 one with the golden greedy tokens and logits within 1e-4.
func TestLlamaCppQuantized(t *testing.T) {
	nodeScripts(t) // skips without node-llama-cpp
	shared := testenv.Dir(t, "golden")
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("gcc not found (needed to call libllama's quantizer)")
	}
	lib := filepath.Join(os.Getenv("LORAKIT_NODE_LLAMA_CPP"), "@node-llama-cpp", "linux-x64", "bins", "linux-x64")
	libs, _ := filepath.Glob(filepath.Join(lib, "libllama.v*.so"))
	if len(libs) != 1 {
		t.Skipf("no prebuilt libllama for this platform in %s", lib)
	}
	out := t.TempDir()
	bin := filepath.Join(out, "quantize")
	if b, err := exec.Command(gcc, "-O1", "-o", bin, filepath.Join("testdata", "llamacpp_quantize.c"), "-L"+lib,
		"-l:"+filepath.Base(libs[0]), "-Wl,-rpath,"+lib).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, b)
	}
	src := filepath.Join(out, "ours-f32.gguf")
	if _, err := ggufconv.ExportModel(context.Background(), filepath.Join(shared, "models", "stories260K"), src, ggufconv.ExportOptions{Type: gguf.F32}); err != nil {
		t.Fatal(err)
	}
	ours, err := gguf.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer ours.Close()
	for _, ft := range []struct {
		name  string
		ftype int
	}{{"f32", 0}, {"f16", 1}, {"bf16", 32}, {"q8_0", 7}, {"q4_0", 2}} {
		dst := filepath.Join(out, "llamacpp-"+ft.name+".gguf")
		if b, err := exec.Command(bin, src, dst, strconv.Itoa(ft.ftype)).CombinedOutput(); err != nil {
			t.Fatalf("llama_model_quantize %s: %v\n%s", ft.name, err, b)
		}
		theirs, err := gguf.Open(dst)
		if err != nil {
			t.Fatal(err)
		}
		types := map[gguf.Type]int{}
		for _, ti := range theirs.Tensors {
			raw, _, err := theirs.TensorBytes(ti.Name)
			if err != nil {
				t.Fatal(err)
			}
			v, _, err := ours.Float32s(ti.Name)
			if err != nil {
				t.Fatal(err)
			}
			enc, err := gguf.Encode(nil, ti.Type, v)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(enc, raw) {
				t.Errorf("%s: tensor %s (%s): llama.cpp's bytes differ from lorakit's encoding", ft.name, ti.Name, ti.Type)
			}
			types[ti.Type]++
		}
		theirs.Close()
		t.Logf("%s: tensors by type %v", ft.name, types)
		if ft.name == "f32" {
			checkGoldenModel(t, shared, dst, "stories260K-logits.jsonl", true)
			continue
		}
		m, err := models.Load(dst, models.LoadOptions{Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		ids := m.EncodePrompt("Once upon a time")
		got, _ := lorakitGreedy(t, m, ids, 8, nil)
		t.Logf("%s: first greedy tokens %v", ft.name, got)
		m.Close()
	}
}

// TestQuantizedEmbedding: a Q8_0 token_embd (what llama.cpp's q4_0 and q8_0 files hold) stays in its blocks: rows
// are looked up dequantised, exactly as ggml's values, and the tied head runs on the Q8_0 kernel: each logit within
// the rounding of x to int8 per 32-block (half a step, max|x|/254, times Σ|w| over the block) of the float64
// product of the same values.
func TestQuantizedEmbedding(t *testing.T) {
	shared := testenv.Testdata(t)
	f := filepath.Join(t.TempDir(), "q4_0.gguf")
	if _, err := ggufconv.ExportModel(context.Background(), filepath.Join(shared, "models", "stories260K"), f, ggufconv.ExportOptions{Type: gguf.Q4_0}); err != nil {
		t.Fatal(err)
	}
	m, err := models.Load(f, models.LoadOptions{Threads: 1, Head: "auto"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	q, ok := m.Net.EmbedTokens.(*nn.Quantized)
	if !ok {
		t.Fatalf("embedding loaded as %T, want *nn.Quantized (Q8_0 blocks)", m.Net.EmbedTokens)
	}
	if m.Net.LMHead != nn.Linear(q) {
		t.Fatalf("tied head is %T, want the Q8_0 embedding itself", m.Net.LMHead)
	}
	g, err := gguf.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	want, _, err := g.Float32s("token_embd.weight")
	if err != nil {
		t.Fatal(err)
	}
	V, H := q.Out(), q.In()
	row := make([]float32, H)
	for _, i := range []int{0, 1, 7, V / 2, V - 1} {
		q.Row(i, row)
		if !slices.Equal(row, want[i*H:(i+1)*H]) {
			t.Fatalf("row %d differs from ggml's Q8_0 values", i)
		}
	}
	ids := m.EncodePrompt("Once upon a time")
	got := lastLogits(t, m, ids)
	hs, err := m.Net.Hidden([]llama.Seq{{Tokens: ids}})
	if err != nil {
		t.Fatal(err)
	}
	h := hs[0][0]
	for v := range V {
		w := want[v*H : (v+1)*H]
		var ref, tol float64
		for b := 0; b < H; b += 32 {
			var xmax, wsum float64
			for c := b; c < b+32; c++ {
				ref += float64(w[c]) * float64(h[c])
				xmax, wsum = max(xmax, math.Abs(float64(h[c]))), wsum+math.Abs(float64(w[c]))
			}
			tol += wsum * xmax / 254
		}
		if d := math.Abs(float64(got[v]) - ref); d > tol*1.01+1e-5 {
			t.Fatalf("logit %d: %g with the Q8_0 head, %g exact (bound %.3g)", v, got[v], ref, tol)
		}
	}
}
