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
	"github.com/lorakit/lorakit/models/quant"
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

// TestBlockWeights: ggml Q4_0 and Q8_0 blocks re-packed for the integer kernels dequantise to exactly the values
// ggml's layout stands for, and multiply like the dense matrix of those values, within the rounding of x the
// kernels do (to int16, or on the dot kernels to int8 per 32 values: at most max|x of the block|/254 per value).
// Written compact (straight into the dot kernels' layout where they run: the rows come in tiles of 16), they
// dequantise and multiply exactly as the row-major weight.
func TestBlockWeights(t *testing.T) {
	for _, c := range []struct {
		typ  gguf.Type
		cols int
		conv func(raw []byte, rows, cols int, compact bool) (*quant.Weight, error)
	}{{gguf.Q4_0, 128, ggufconv.Q4_0Weight}, {gguf.Q8_0, 192, ggufconv.Q8_0Weight}} {
		t.Run(c.typ.String(), func(t *testing.T) {
			const rows, m = 32, 3
			rng := rand.New(rand.NewPCG(9, uint64(c.typ)))
			w := randNorm(rng, rows*c.cols)
			raw, _ := gguf.Encode(nil, c.typ, w)
			want := make([]float32, len(w))
			if err := gguf.Decode(c.typ, raw, want); err != nil {
				t.Fatal(err)
			}
			p := kernels.NewPool(1)
			x := randNorm(rng, m*c.cols)
			yd := make([]float32, m*rows)
			d, _ := nn.NewDense("F32", f32Bytes(want), rows, c.cols)
			d.Forward(p, yd, x, m)
			var ys [2][]float32
			for i, compact := range []bool{false, true} {
				q, err := c.conv(raw, rows, c.cols, compact)
				if err != nil {
					t.Fatal(err)
				}
				got := make([]float32, len(w))
				q.Dequantize(got)
				if !slices.Equal(got, want) {
					t.Fatalf("compact %v (row-major codes kept: %v): dequantised weight differs from ggml's values", compact, q.Packed != nil)
				}
				ys[i] = make([]float32, m*rows)
				(&nn.Quantized{Q: q}).Forward(p, ys[i], x, m)
			}
			for i, y := range ys[0] {
				if tol := roundingBound(want, x, i/rows, i%rows, c.cols); math.Abs(float64(y-yd[i])) > tol {
					t.Fatalf("y[%d] = %g with the integer kernels, %g dense (bound %g)", i, y, yd[i], tol)
				}
				if ys[1][i] != y {
					t.Fatalf("y[%d] = %g from the weight written compact, %g from the row-major one", i, ys[1][i], y)
				}
			}
		})
	}
}

// roundingBound bounds |y − ŷ| for y[r, o] = Σ_c w[o, c]·x[r, c] when x is rounded to int8 per 32 values (step
// max|x|/127, so each value moves by at most half of it), plus 1e-4 relative for the float sums.
func roundingBound(w, x []float32, r, o, cols int) float64 {
	var b, y float64
	for c0 := 0; c0 < cols; c0 += 32 {
		var mx, sw float64
		for c := c0; c < c0+32; c++ {
			mx = max(mx, math.Abs(float64(x[r*cols+c])))
			sw += math.Abs(float64(w[o*cols+c]))
			y += math.Abs(float64(w[o*cols+c] * x[r*cols+c]))
		}
		b += sw * mx / 254
	}
	return b + 1e-4*(1+y)
}

func randNorm(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return v
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
