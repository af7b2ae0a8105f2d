package llama

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/nn"
	"github.com/lorakit/lorakit/models/quant"
	"github.com/lorakit/lorakit/models/safetensors"
	"github.com/lorakit/lorakit/models/testmodel"
)

func writeTiny(t testing.TB, o testmodel.Options) string {
	t.Helper()
	dir := t.TempDir()
	if err := testmodel.Write(dir, o); err != nil {
		t.Fatal(err)
	}
	return dir
}

// refForward is testmodel's independent float64 forward pass (no cache) with the LM head applied: logits
// for every position.
func refForward(t testing.TB, dir string, cfg *Config, tokens []int) [][]float64 {
	t.Helper()
	return refForwardWith(t, dir, cfg, refConfig(cfg), tokens)
}

// refForwardWith is refForward with the reference's configuration rc.
func refForwardWith(t testing.TB, dir string, cfg *Config, rc testmodel.RefConfig, tokens []int) [][]float64 {
	t.Helper()
	hs, err := testmodel.RefHidden(dir, rc, tokens)
	if err != nil {
		t.Fatal(err)
	}
	head := "lm_head.weight"
	if cfg.TieWordEmbeddings {
		head = "model.embed_tokens.weight"
	}
	w := tensorF32(t, dir, head)
	out := make([][]float64, len(hs))
	for p, h := range hs {
		out[p] = testmodel.RefMatVec(w, h)
	}
	return out
}

// refConfig is cfg as testmodel's reference forward takes it.
func refConfig(cfg *Config) testmodel.RefConfig {
	return testmodel.RefConfig{Hidden: cfg.HiddenSize, HeadDim: cfg.HeadDim, Heads: cfg.NumAttentionHeads,
		KVHeads: cfg.NumKeyValueHeads, Layers: cfg.NumHiddenLayers, RMSNormEps: cfg.RMSNormEps, InvFreq: cfg.InvFreq(),
		QKNorm: cfg.QKNorm, SlidingWindow: cfg.SlidingWindow}
}

// tensorF32 reads the tensor name of the checkpoint folder dir as float32.
func tensorF32(t testing.TB, dir, name string) []float32 {
	t.Helper()
	ck, err := safetensors.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	w, err := ck.Float32s(name)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// eachVariant runs check as a subtest on every variant (seed 7), loaded with 2 threads from the folder dir.
func eachVariant(t *testing.T, check func(t *testing.T, dir string, m *Model)) {
	for name, o := range variants {
		t.Run(name, func(t *testing.T) {
			o.Seed = 7
			dir := writeTiny(t, o)
			check(t, dir, loadDir(t, dir, 2))
		})
	}
}

// refTokens is the prompt the variants are checked with: long enough for the blocked (GEMM) prefill path.
func refTokens() []int {
	tokens := []int{5, 100, 260, 7, 42, 299, 0, 13, 77}
	for i := range 31 {
		tokens = append(tokens, (i*53+11)%300)
	}
	return tokens
}

var variants = map[string]testmodel.Options{
	"llama":          {ModelType: "llama"},
	"llama-tied":     {ModelType: "llama", Tied: true},
	"llama-bias":     {ModelType: "llama", AttentionBias: true},
	"llama3-rope":    {ModelType: "llama", Llama3RopeScaling: true},
	"llama-bf16":     {ModelType: "llama", DType: "BF16"},
	"llama-f16":      {ModelType: "llama", DType: "F16", Tied: true},
	"llama-sharded":  {ModelType: "llama", Shards: 3},
	"llama-headdim":  {ModelType: "llama", HeadDim: 16},
	"mistral":        {ModelType: "mistral"},
	"mistral-window": {ModelType: "mistral", SlidingWindow: 3},
	"qwen2":          {ModelType: "qwen2", Tied: true},
	"qwen3":          {ModelType: "qwen3", HeadDim: 16, Tied: true},
	"qwen3-bias":     {ModelType: "qwen3", AttentionBias: true, DType: "BF16"},
	"mha":            {ModelType: "llama", Heads: 2, KVHeads: 2, Hidden: 16},
}

func TestVariantsMatchReference(t *testing.T) {
	tokens := refTokens()
	eachVariant(t, func(t *testing.T, dir string, m *Model) {
		want := refForward(t, dir, m.Config, tokens)
		got, err := m.Forward([]Seq{{Tokens: tokens, AllLogits: true}})
		if err != nil {
			t.Fatal(err)
		}
		worst := 0.0
		for p := range tokens {
			for i, v := range got[0][p] {
				worst = math.Max(worst, math.Abs(float64(v)-want[p][i])/(1+math.Abs(want[p][i])))
			}
		}
		if worst > 1e-4 {
			t.Fatalf("max rel diff vs float64 reference %g", worst)
		}
		// Incremental decoding through the cache gives the same logits as the full prefill.
		cache := m.NewCache(0)
		for p, tok := range tokens {
			step, err := m.Forward([]Seq{{Tokens: []int{tok}, Cache: cache}})
			if err != nil {
				t.Fatal(err)
			}
			for i, v := range step[0][0] {
				if d := math.Abs(float64(v - got[0][p][i])); d > 1e-4 {
					t.Fatalf("position %d: cached decode differs from prefill by %g", p, d)
				}
			}
		}
	})
}

func TestLlama3ScalingChangesLogits(t *testing.T) {
	a := loadDir(t, writeTiny(t, testmodel.Options{Seed: 3}), 1)
	b := loadDir(t, writeTiny(t, testmodel.Options{Seed: 3, Llama3RopeScaling: true}), 1)
	toks := make([]int, 40)
	for i := range toks {
		toks[i] = (i * 37) % 300
	}
	la, _ := a.Forward([]Seq{{Tokens: toks}})
	lb, _ := b.Forward([]Seq{{Tokens: toks}})
	if la[0][0][0] == lb[0][0][0] {
		t.Fatal("llama3 rope scaling had no effect")
	}
}

// fakeDelta adds module-dependent constants so adapter routing can be checked.
type fakeDelta struct{ calls map[string]int }

func (f *fakeDelta) Apply(module string, y, x []float32, in, out int) {
	if len(y) != out || len(x) != in {
		panic("bad row lengths")
	}
	f.calls[module]++
	for i := range y {
		y[i] += 0.01 * x[i%in]
	}
}

// ApplyRows applies the delta one row at a time.
func (f *fakeDelta) ApplyRows(_ *kernels.Pool, module string, y, x []float32, rows, in, out int) {
	for r := range rows {
		f.Apply(module, y[r*out:(r+1)*out], x[r*in:(r+1)*in], in, out)
	}
}

func TestBatchedEqualsSingle(t *testing.T) {
	m := loadDir(t, writeTiny(t, testmodel.Options{ModelType: "qwen2", Seed: 5}), 2)
	prompts := [][]int{{1, 2, 3, 4, 5}, {9, 8}, {100, 200, 250, 12}}
	delta := &fakeDelta{calls: map[string]int{}}
	adapters := []Delta{nil, delta, nil}
	// reference: each sequence alone
	var want [][][]float32
	for i, p := range prompts {
		c := m.NewCache(32)
		out, err := m.Forward([]Seq{{Tokens: p, Cache: c, Adapter: adapters[i], AllLogits: i == 2}})
		if err != nil {
			t.Fatal(err)
		}
		o2, err := m.Forward([]Seq{{Tokens: []int{7}, Cache: c, Adapter: adapters[i]}})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, out[0], o2[0])
	}
	// batched: prefill together, then decode together at different positions
	caches := []*KVCache{m.NewCache(32), m.NewCache(32), m.NewCache(32)}
	var batch []Seq
	for i, p := range prompts {
		batch = append(batch, Seq{Tokens: p, Cache: caches[i], Adapter: adapters[i], AllLogits: i == 2})
	}
	pre, err := m.Forward(batch)
	if err != nil {
		t.Fatal(err)
	}
	for i := range batch {
		batch[i].Tokens, batch[i].AllLogits = []int{7}, false
	}
	dec, err := m.Forward(batch)
	if err != nil {
		t.Fatal(err)
	}
	for i := range prompts {
		if len(pre[i]) != len(want[2*i]) {
			t.Fatalf("seq %d: %d logit rows, want %d", i, len(pre[i]), len(want[2*i]))
		}
		for _, pair := range [][2][][]float32{{pre[i], want[2*i]}, {dec[i], want[2*i+1]}} {
			for r := range pair[0] {
				for j, v := range pair[0][r] {
					if d := math.Abs(float64(v - pair[1][r][j])); d > 1e-5 {
						t.Fatalf("seq %d row %d: batched differs from single by %g", i, r, d)
					}
				}
			}
		}
	}
	if delta.calls["model.layers.1.mlp.down_proj"] == 0 || delta.calls["lm_head"] == 0 {
		t.Fatalf("adapter not applied: %v", delta.calls)
	}
	// The adapter changes the logits of its row.
	base, _ := m.Forward([]Seq{{Tokens: prompts[1]}})
	if base[0][0][0] == want[2][0][0] {
		t.Fatal("adapter had no effect")
	}
	if caches[0].Len() != 6 || caches[1].Len() != 3 {
		t.Fatalf("cache lengths %d %d", caches[0].Len(), caches[1].Len())
	}
}

func TestForwardErrors(t *testing.T) {
	m := loadDir(t, writeTiny(t, testmodel.Options{}), 1)
	c := m.NewCache(4)
	cases := []struct {
		batch []Seq
		want  string
	}{
		{[]Seq{{Tokens: nil}}, "no tokens"},
		{[]Seq{{Tokens: []int{300}}}, "outside the vocabulary"},
		{[]Seq{{Tokens: []int{-1}}}, "outside the vocabulary"},
		{[]Seq{{Tokens: []int{1, 2, 3, 4, 5}, Cache: c}}, "exceed the cache size"},
		{[]Seq{{Tokens: []int{1}, Cache: c}, {Tokens: []int{2}, Cache: c}}, "share a cache"},
	}
	for _, tc := range cases {
		if _, err := m.Forward(tc.batch); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("err = %v, want %q", err, tc.want)
		}
	}
	if c.Len() != 0 {
		t.Fatal("failed forward modified the cache")
	}
	if out, err := m.Forward(nil); err != nil || len(out) != 0 {
		t.Fatalf("empty batch: %v %v", out, err)
	}
	other := loadDir(t, writeTiny(t, testmodel.Options{Layers: 3}), 1)
	if _, err := m.Forward([]Seq{{Tokens: []int{1}, Cache: other.NewCache(4)}}); err == nil {
		t.Fatal("foreign cache accepted")
	}
	c.Reset()
	if _, err := m.Forward([]Seq{{Tokens: []int{1, 2, 3}, Cache: c}}); err != nil {
		t.Fatal(err)
	}
	c.Truncate(1)
	if c.Len() != 1 {
		t.Fatal("truncate")
	}
}

func TestLinearLookup(t *testing.T) {
	m := loadDir(t, writeTiny(t, testmodel.Options{Layers: 2}), 1)
	for _, name := range m.Modules() {
		if _, ok := m.Linear(name); !ok {
			t.Errorf("module %s not found", name)
		}
	}
	l, ok := m.Linear("base_model.model.model.layers.1.mlp.down_proj")
	if !ok || l.In() != 64 || l.Out() != 32 {
		t.Fatalf("down_proj lookup: %v %v", l, ok)
	}
	for _, bad := range []string{"model.layers.2.mlp.down_proj", "model.layers.01.mlp.down_proj", "model.layers.x", "model.norm", "model.layers.0.mlp.act"} {
		if _, ok := m.Linear(bad); ok {
			t.Errorf("%s found", bad)
		}
	}
}

func TestLoadReportsAllProblems(t *testing.T) {
	o := testmodel.Options{Seed: 1}
	dir := writeTiny(t, o)
	// Rewrite the weights: drop one tensor, mis-shape two.
	var ts []safetensors.Tensor
	for _, tn := range testmodel.Tensors(o) {
		switch tn.Name {
		case "model.layers.0.self_attn.k_proj.weight":
			continue
		case "model.layers.1.mlp.up_proj.weight":
			tn.Shape = []int{32, 64}
		case "model.norm.weight":
			tn = safetensors.F32Tensor(tn.Name, []int{31}, make([]float32, 31))
		}
		ts = append(ts, tn)
	}
	if err := safetensors.Write(filepath.Join(dir, "model.safetensors"), ts, nil); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := safetensors.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	_, err = Load(ck, cfg, LoadOptions{Threads: 1})
	if err == nil {
		t.Fatal("broken checkpoint loaded")
	}
	msg := err.Error()
	for _, want := range []string{
		"tensor model.layers.0.self_attn.k_proj.weight: missing (want shape [16 32])",
		"model.safetensors: tensor model.layers.1.mlp.up_proj.weight: shape [32 64], want [64 32]",
		"model.safetensors: tensor model.norm.weight: shape [31], want [32]",
		"3 problem(s)",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	// Untied model without lm_head; a qwen3 config over llama weights lacks the q/k norms.
	cfg2 := *cfg
	cfg2.QKNorm = true
	_, err = Load(ck, &cfg2, LoadOptions{Threads: 1})
	if err == nil || !strings.Contains(err.Error(), "self_attn.q_norm.weight: missing") {
		t.Fatalf("qk norm: %v", err)
	}
}

func TestLoadIntDType(t *testing.T) {
	o := testmodel.Options{Seed: 1, Tied: true}
	dir := writeTiny(t, o)
	var ts []safetensors.Tensor
	for _, tn := range testmodel.Tensors(o) {
		if tn.Name == "model.norm.weight" {
			tn.DType = safetensors.I32
		}
		ts = append(ts, tn)
	}
	if err := safetensors.Write(filepath.Join(dir, "model.safetensors"), ts, nil); err != nil {
		t.Fatal(err)
	}
	_, err := loadErr(dir)
	if err == nil || !strings.Contains(err.Error(), "dtype I32") {
		t.Fatalf("int dtype: %v", err)
	}
}

func loadErr(dir string) (*Model, error) {
	m, closeFn, err := openModel(dir, LoadOptions{Threads: 1})
	if err == nil {
		closeFn()
	}
	return m, err
}

func TestTruncatedAndBadOffsets(t *testing.T) {
	dir := writeTiny(t, testmodel.Options{})
	path := filepath.Join(dir, "model.safetensors")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b[:len(b)-100], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadErr(dir); err == nil || !strings.Contains(err.Error(), "model.safetensors") {
		t.Fatalf("truncated file: %v", err)
	}
	// Corrupt an offset in the header (same length so the header stays parseable).
	hdr := string(b)
	i := strings.Index(hdr, `"data_offsets":[0,`)
	if i < 0 {
		t.Skip("unexpected header layout")
	}
	bad := []byte(hdr[:i] + `"data_offsets":[9,` + hdr[i+len(`"data_offsets":[0,`):])
	if err := os.WriteFile(path, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadErr(dir); err == nil {
		t.Fatal("bad offsets accepted")
	}
}

func TestDecodeAllocations(t *testing.T) {
	if allocs := decodeAllocs(t, loadDir(t, writeTiny(t, testmodel.Options{}), 2)); allocs > 2 { // the returned logits' two slice headers
		t.Fatalf("decode step allocates %v times", allocs)
	}
}

// decodeAllocs is the allocations of one decode step after a 3-token prompt, with the logits written into a
// reused buffer (ForwardInto), as generate and serve decode.
func decodeAllocs(t *testing.T, m *Model) float64 {
	t.Helper()
	c := m.NewCache(256)
	if _, err := m.Forward([]Seq{{Tokens: []int{1, 2, 3}, Cache: c}}); err != nil {
		t.Fatal(err)
	}
	batch := []Seq{{Tokens: []int{4}, Cache: c}}
	var logits Logits
	return testing.AllocsPerRun(50, func() {
		if _, err := m.ForwardInto(&logits, batch); err != nil {
			t.Fatal(err)
		}
	})
}

func TestConcurrentForward(t *testing.T) {
	m := loadDir(t, writeTiny(t, testmodel.Options{Seed: 11}), 2)
	want, err := m.Forward([]Seq{{Tokens: []int{1, 2, 3, 4}}})
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			for range 10 {
				got, err := m.Forward([]Seq{{Tokens: []int{1, 2, 3, 4}}})
				if err == nil && got[0][0][7] != want[0][0][7] {
					err = fmt.Errorf("concurrent forward differs")
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestChunkedPrefill checks blocked attention across row blocks and with earlier cached positions against
// one-token-at-a-time decoding.
func TestChunkedPrefill(t *testing.T) {
	for _, o := range []testmodel.Options{{Seed: 12}, {ModelType: "mistral", SlidingWindow: 37, Seed: 13}} {
		m := loadDir(t, writeTiny(t, o), 2)
		toks := make([]int, 300)
		for i := range toks {
			toks[i] = (i*97 + 5) % 300
		}
		c := m.NewCache(0)
		a, err := m.Forward([]Seq{{Tokens: toks[:20], Cache: c, AllLogits: true}})
		if err != nil {
			t.Fatal(err)
		}
		b, err := m.Forward([]Seq{{Tokens: toks[20:], Cache: c, AllLogits: true}})
		if err != nil {
			t.Fatal(err)
		}
		got := append(a[0], b[0]...)
		c2 := m.NewCache(0)
		for p, tok := range toks {
			step, err := m.Forward([]Seq{{Tokens: []int{tok}, Cache: c2}})
			if err != nil {
				t.Fatal(err)
			}
			for i, v := range step[0][0] {
				if d := math.Abs(float64(v - got[p][i])); d > 1e-4 {
					t.Fatalf("%s position %d: chunked prefill differs from decode by %g", o.ModelType, p, d)
				}
			}
		}
	}
}

// TestDecodeAllocationsNF4: the integer NF4 kernels keep the decode step free of per-call allocations.
func TestDecodeAllocationsNF4(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under the race detector")
	}
	m := loadDirWith(t, writeTiny(t, testmodel.Options{Hidden: 64, Intermediate: 128}), LoadOptions{Threads: 2,
		Quantize: func(_ string, d *nn.Dense) (nn.Linear, error) { return nn.Quantize(d, quant.NF4, true) }})
	if allocs := decodeAllocs(t, m); allocs > 2 {
		t.Fatalf("NF4 decode step allocates %v times", allocs)
	}
}

// TestForwardInto: ForwardInto gives Forward's logits in the caller's buffer, the same memory every step (a
// decode step then allocates none of its [rows × vocab]), while logits from Forward stay as they were.
func TestForwardInto(t *testing.T) {
	m := loadDir(t, writeTiny(t, testmodel.Options{Seed: 5}), 1)
	a, b := m.NewCache(0), m.NewCache(0)
	kept, err := m.Forward([]Seq{{Tokens: []int{1, 2, 3}, Cache: a}})
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(kept[0][0])
	var buf Logits
	var first *float32
	for step, tok := range []int{1, 2, 3, 4, 5} {
		toks := []int{tok}
		if step == 0 {
			toks = []int{1, 2, 3}
		}
		got, err := m.ForwardInto(&buf, []Seq{{Tokens: toks, Cache: b}})
		if err != nil {
			t.Fatal(err)
		}
		if step == 0 {
			first = &got[0][0][0]
			if !slices.Equal(got[0][0], want) {
				t.Fatal("ForwardInto's logits differ from Forward's")
			}
		} else if &got[0][0][0] != first {
			t.Fatalf("step %d: the logits moved out of the caller's buffer", step)
		}
		if _, err := m.Forward([]Seq{{Tokens: []int{tok}, Cache: a}}); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(kept[0][0], want) {
		t.Fatal("logits returned by Forward changed under later calls")
	}
}
