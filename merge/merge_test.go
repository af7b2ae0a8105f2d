package merge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/safetensors"
)

// tiny model shape: hidden 16, intermediate 24, 2 layers, 4 heads × 4, 2 KV heads, vocab 40.
const (
	tH, tI, tL, tHeads, tKV, tD, tV = 16, 24, 2, 4, 2, 4, 40
)

type baseOpts struct {
	dtype  safetensors.DType
	tied   bool
	shards int
	seed   uint64
}

// writeBase writes a tiny random Llama HF folder (config, generation config, tokenizer files, weights).
func writeBase(t *testing.T, dir string, o baseOpts) {
	t.Helper()
	if o.dtype == "" {
		o.dtype = safetensors.F32
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tdt := map[safetensors.DType]string{safetensors.F32: "float32", safetensors.BF16: "bfloat16", safetensors.F16: "float16"}[o.dtype]
	cfg := fmt.Sprintf(`{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":%d,"intermediate_size":%d,
"num_hidden_layers":%d,"num_attention_heads":%d,"num_key_value_heads":%d,"head_dim":%d,"vocab_size":%d,
"max_position_embeddings":64,"rms_norm_eps":1e-5,"rope_theta":10000.0,"tie_word_embeddings":%v,"bos_token_id":1,
"eos_token_id":2,"torch_dtype":%q}`, tH, tI, tL, tHeads, tKV, tD, tV, o.tied, tdt)
	files := map[string]string{"config.json": cfg, "generation_config.json": `{"bos_token_id":1,"eos_token_id":2}`,
		"tokenizer.json": `{"version":"1.0","model":{"type":"BPE"}}`, "tokenizer_config.json": `{"bos_token":"<s>"}`,
		"special_tokens_map.json": `{}`}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(o.seed, 7))
	var ts []safetensors.Tensor
	add := func(name string, shape []int, std float64, mean float64) {
		n := 1
		for _, d := range shape {
			n *= d
		}
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(mean + std*rng.NormFloat64())
		}
		b, err := safetensors.Encode(o.dtype, v)
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, safetensors.Tensor{Name: name, DType: o.dtype, Shape: shape, Data: b})
	}
	add("model.embed_tokens.weight", []int{tV, tH}, 0.5, 0)
	for l := 0; l < tL; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		add(p+"input_layernorm.weight", []int{tH}, 0.1, 1)
		add(p+"post_attention_layernorm.weight", []int{tH}, 0.1, 1)
		add(p+"self_attn.q_proj.weight", []int{tHeads * tD, tH}, 0.3, 0)
		add(p+"self_attn.k_proj.weight", []int{tKV * tD, tH}, 0.3, 0)
		add(p+"self_attn.v_proj.weight", []int{tKV * tD, tH}, 0.3, 0)
		add(p+"self_attn.o_proj.weight", []int{tH, tHeads * tD}, 0.3, 0)
		add(p+"mlp.gate_proj.weight", []int{tI, tH}, 0.3, 0)
		add(p+"mlp.up_proj.weight", []int{tI, tH}, 0.3, 0)
		add(p+"mlp.down_proj.weight", []int{tH, tI}, 0.3, 0)
	}
	add("model.norm.weight", []int{tH}, 0.1, 1)
	if !o.tied {
		add("lm_head.weight", []int{tV, tH}, 0.5, 0)
	}
	if o.shards <= 1 {
		if err := safetensors.Write(filepath.Join(dir, "model.safetensors"), ts, nil); err != nil {
			t.Fatal(err)
		}
		return
	}
	wm := map[string]string{}
	per := (len(ts) + o.shards - 1) / o.shards
	for s := 0; s < o.shards; s++ {
		name := fmt.Sprintf("model-%05d-of-%05d.safetensors", s+1, o.shards)
		part := ts[s*per : min((s+1)*per, len(ts))]
		for _, x := range part {
			wm[x.Name] = name
		}
		if err := safetensors.Write(filepath.Join(dir, name), part, nil); err != nil {
			t.Fatal(err)
		}
	}
	idx, _ := json.Marshal(map[string]any{"metadata": map[string]any{"total_size": 0}, "weight_map": wm})
	if err := os.WriteFile(filepath.Join(dir, safetensors.IndexName), idx, 0o644); err != nil {
		t.Fatal(err)
	}
}

// makeAdapter returns an adapter with random non-zero A and B on the given projections of every layer.
func makeAdapter(t *testing.T, seed uint64, r int, alpha float64, targets []string, rslora bool) *lora.Adapter {
	t.Helper()
	cfg := lora.NewConfig(r, alpha, targets)
	cfg.UseRSLoRA = rslora
	a := lora.New(cfg)
	rng := rand.New(rand.NewPCG(seed, 11))
	dims := map[string][2]int{"self_attn.q_proj": {tH, tHeads * tD}, "self_attn.k_proj": {tH, tKV * tD},
		"self_attn.v_proj": {tH, tKV * tD}, "self_attn.o_proj": {tHeads * tD, tH}, "mlp.gate_proj": {tH, tI},
		"mlp.up_proj": {tH, tI}, "mlp.down_proj": {tI, tH}}
	subs := make([]string, 0, len(dims))
	for sub := range dims {
		subs = append(subs, sub)
	}
	sort.Strings(subs) // deterministic random values per module
	for l := 0; l < tL; l++ {
		for _, sub := range subs {
			d := dims[sub]
			m := fmt.Sprintf("model.layers.%d.%s", l, sub)
			if !cfg.Targets(m) {
				continue
			}
			p := cfg.NewPair(m, d[0], d[1])
			for i := range p.A {
				p.A[i] = float32(rng.NormFloat64() * 0.3)
			}
			for i := range p.B {
				p.B[i] = float32(rng.NormFloat64() * 0.05)
			}
			a.Modules[m] = p
		}
	}
	return a
}

func saveAdapter(t *testing.T, a *lora.Adapter) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "adapter")
	if err := a.Save(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func loadModel(t *testing.T, dir string) (*llama.Model, func()) {
	t.Helper()
	cfg, err := llama.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := safetensors.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := llama.Load(ck, cfg, llama.LoadOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	return m, func() { ck.Close() }
}

var testSeqs = [][]int{{1, 5, 9, 30, 2, 17, 8}, {3, 39, 0, 12}}

func logits(t *testing.T, m *llama.Model, d llama.Delta) [][]float32 {
	t.Helper()
	var out [][]float32
	for _, s := range testSeqs {
		l, err := m.Forward([]llama.Seq{{Tokens: s, Adapter: d, AllLogits: true}})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, l[0]...)
	}
	return out
}

func maxDiff(a, b [][]float32) float64 {
	var m float64
	for i := range a {
		for j := range a[i] {
			m = math.Max(m, math.Abs(float64(a[i][j]-b[i][j])))
		}
	}
	return m
}

func tensorF32(t *testing.T, dir, name string) ([]float32, safetensors.DType) {
	t.Helper()
	ck, err := safetensors.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	info, _, ok := ck.Info(name)
	if !ok {
		t.Fatalf("%s: no tensor %s", dir, name)
	}
	v, err := ck.Float32s(name)
	if err != nil {
		t.Fatal(err)
	}
	return v, info.DType
}

func tensorRaw(t *testing.T, dir, name string) []byte {
	t.Helper()
	ck, err := safetensors.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	b, err := ck.Bytes(name)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), b...)
}

func TestMergeF32(t *testing.T) {
	root := t.TempDir()
	base := filepath.Join(root, "base")
	writeBase(t, base, baseOpts{seed: 1})
	ad := makeAdapter(t, 2, 4, 8, []string{"q_proj", "v_proj", "o_proj", "down_proj", "gate_proj"}, false)
	adDir := saveAdapter(t, ad)
	loaded, err := lora.Load(adDir)
	if err != nil {
		t.Fatal(err)
	}

	bm, closeB := loadModel(t, base)
	defer closeB()
	plain := logits(t, bm, nil)
	adapted := logits(t, bm, loaded)
	if d := maxDiff(plain, adapted); d < 1e-2 {
		t.Fatalf("the adapter barely changes the logits (max diff %g): the merge test would prove nothing", d)
	}

	out := filepath.Join(root, "merged")
	res, err := Run(context.Background(), base, out, Options{Adapters: []Source{{Dir: adDir, Weight: 1}}, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Verify == nil || !res.Verify.OK || res.Verify.MaxAbsDiff > 1e-5 || res.Verify.AdapterEffect < 1e-2 {
		t.Fatalf("verify %+v", res.Verify)
	}
	mm, closeM := loadModel(t, out)
	defer closeM()
	merged := logits(t, mm, nil)
	if d := maxDiff(adapted, merged); d > 1e-5 {
		t.Fatalf("forward(merged) vs forward(base+adapter): max abs diff %g > 1e-5", d)
	}
	t.Logf("adapter effect %.3g, merged vs base+adapter %.3g, max logit %.3g", maxDiff(plain, adapted), maxDiff(adapted, merged), res.Verify.MaxAbsLogit)

	// Tensor level: W' − W == s·B·A, and untouched tensors are bit for bit the base's.
	for _, m := range loaded.Names() {
		w, _ := tensorF32(t, base, m+".weight")
		w2, dt := tensorF32(t, out, m+".weight")
		if dt != safetensors.F32 {
			t.Fatalf("%s written as %s", m, dt)
		}
		d := lora.DeltaWeight(loaded.Modules[m])
		for i := range w {
			if got := w2[i] - w[i]; math.Abs(float64(got-d[i])) > 1e-6*(1+math.Abs(float64(w[i]))) {
				t.Fatalf("%s[%d]: W'-W = %g, s·B·A = %g", m, i, got, d[i])
			}
		}
	}
	for _, name := range []string{"model.embed_tokens.weight", "lm_head.weight", "model.layers.0.self_attn.k_proj.weight",
		"model.layers.1.mlp.up_proj.weight", "model.norm.weight"} {
		if string(tensorRaw(t, base, name)) != string(tensorRaw(t, out, name)) {
			t.Errorf("%s not copied bit for bit", name)
		}
	}
	if res.Merged != len(loaded.Modules) || res.Copied != res.Tensors-res.Merged || res.Shards != 1 {
		t.Errorf("result %+v", res)
	}
	for _, f := range []string{"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
		"special_tokens_map.json", "model.safetensors", "lorakit_merge.json"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("merged folder lacks %s", f)
		}
	}
	a, _ := os.ReadFile(filepath.Join(base, "config.json"))
	b, _ := os.ReadFile(filepath.Join(out, "config.json"))
	if string(a) != string(b) {
		t.Errorf("config.json changed:\n%s", b)
	}
	f, err := safetensors.Open(filepath.Join(out, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if f.Metadata["format"] != "pt" {
		t.Errorf("metadata %v", f.Metadata)
	}
	f.Close()
	noTemps(t, root)
}

func TestMergeBF16(t *testing.T) {
	root := t.TempDir()
	base := filepath.Join(root, "base")
	writeBase(t, base, baseOpts{seed: 3, dtype: safetensors.BF16})
	ad := makeAdapter(t, 4, 8, 16, lora.DefaultTargets, false)
	adDir := saveAdapter(t, ad)
	loaded, err := lora.Load(adDir)
	if err != nil {
		t.Fatal(err)
	}
	bm, closeB := loadModel(t, base)
	defer closeB()
	plain, adapted := logits(t, bm, nil), logits(t, bm, loaded)
	if maxDiff(plain, adapted) < 1e-2 {
		t.Fatal("adapter does not change the logits")
	}

	out := filepath.Join(root, "merged-bf16")
	res, err := Run(context.Background(), base, out, Options{Adapters: []Source{{Dir: adDir, Weight: 1}}, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	// Rounded once: every merged weight is the bf16 nearest to W + s·B·A (computed in f32).
	for _, m := range loaded.Names() {
		w, _ := tensorF32(t, base, m+".weight")
		w2, dt := tensorF32(t, out, m+".weight")
		if dt != safetensors.BF16 {
			t.Fatalf("%s written as %s", m, dt)
		}
		d := lora.DeltaWeight(loaded.Modules[m])
		for i := range w {
			exact := w[i] + d[i]
			if math.Abs(float64(w2[i]-exact)) > math.Abs(float64(exact))/256+1e-30 {
				t.Fatalf("%s[%d] = %g, want bf16(%g)", m, i, w2[i], exact)
			}
		}
	}
	mm, closeM := loadModel(t, out)
	defer closeM()
	merged := logits(t, mm, nil)
	bound := BoundFor(safetensors.BF16, res.Verify.MaxAbsLogit)
	if d := maxDiff(adapted, merged); d > bound {
		t.Fatalf("bf16 merged vs base+adapter: %g > bound %g", d, bound)
	}
	t.Logf("bf16: adapter effect %.3g, merged vs base+adapter %.3g (bound %.3g)", maxDiff(plain, adapted), maxDiff(adapted, merged), bound)

	// --dtype f32 from a bf16 base is exact up to f32 summation order.
	out32 := filepath.Join(root, "merged-f32")
	if _, err := Run(context.Background(), base, out32, Options{Adapters: []Source{{Dir: adDir, Weight: 1}}, DType: "f32"}); err != nil {
		t.Fatal(err)
	}
	m32, close32 := loadModel(t, out32)
	defer close32()
	if d := maxDiff(adapted, logits(t, m32, nil)); d > 1e-5 {
		t.Fatalf("f32 merge of a bf16 base: %g > 1e-5", d)
	}
	cfg, _ := os.ReadFile(filepath.Join(out32, "config.json"))
	if !strings.Contains(string(cfg), `"torch_dtype": "float32"`) {
		t.Errorf("torch_dtype not updated: %s", cfg)
	}
	if _, dt := tensorF32(t, out32, "model.norm.weight"); dt != safetensors.F32 {
		t.Errorf("untouched tensor not converted to f32: %s", dt)
	}
}

func TestMergeWeightedAdapters(t *testing.T) {
	root := t.TempDir()
	base := filepath.Join(root, "base")
	writeBase(t, base, baseOpts{seed: 5})
	a1 := makeAdapter(t, 6, 4, 8, []string{"q_proj", "up_proj"}, false)
	a2 := makeAdapter(t, 7, 8, 4, []string{"q_proj", "k_proj"}, true) // rslora
	a2.Config.AlphaPattern = map[string]float64{"k_proj": 32}
	a2.Config.RankPattern = map[string]float64{`layers\.1\.self_attn\.q_proj`: 2}
	a2 = makeAdapterCfg(t, 8, a2.Config)
	d1, d2 := saveAdapter(t, a1), saveAdapter(t, a2)
	l1, _ := lora.Load(d1)
	l2, _ := lora.Load(d2)
	if p := l2.Modules["model.layers.1.self_attn.q_proj"]; p.R != 2 || p.Scale != float32(4/math.Sqrt(2)) {
		t.Fatalf("rank_pattern/rslora: %+v", p)
	}
	if p := l2.Modules["model.layers.0.self_attn.k_proj"]; p.Scale != float32(32/math.Sqrt(8)) {
		t.Fatalf("alpha_pattern: %v", p.Scale)
	}
	srcs := []Source{{Dir: d1, Weight: 0.5}, {Dir: d2, Weight: -1.5}}
	out := filepath.Join(root, "merged")
	if _, err := Run(context.Background(), base, out, Options{Adapters: srcs}); err != nil {
		t.Fatal(err)
	}
	bm, closeB := loadModel(t, base)
	defer closeB()
	want := logits(t, bm, &Weighted{Adapters: []*lora.Adapter{l1, l2}, Weights: []float64{0.5, -1.5}})
	if maxDiff(want, logits(t, bm, nil)) < 1e-2 {
		t.Fatal("adapters do not change the logits")
	}
	mm, closeM := loadModel(t, out)
	defer closeM()
	if d := maxDiff(want, logits(t, mm, nil)); d > 1e-5 {
		t.Fatalf("weighted merge: %g > 1e-5", d)
	}
	m := "model.layers.0.self_attn.q_proj"
	w, _ := tensorF32(t, base, m+".weight")
	w2, _ := tensorF32(t, out, m+".weight")
	e1, e2 := lora.DeltaWeight(l1.Modules[m]), lora.DeltaWeight(l2.Modules[m])
	for i := range w {
		exp := w[i] + 0.5*e1[i] - 1.5*e2[i]
		if math.Abs(float64(w2[i]-exp)) > 1e-5*(1+math.Abs(float64(exp))) {
			t.Fatalf("[%d] %g vs %g", i, w2[i], exp)
		}
	}
}

// makeAdapterCfg is makeAdapter with a full config (patterns).
func makeAdapterCfg(t *testing.T, seed uint64, cfg lora.Config) *lora.Adapter {
	a := makeAdapter(t, seed, cfg.R, cfg.Alpha, cfg.TargetModules, cfg.UseRSLoRA)
	b := lora.New(cfg)
	rng := rand.New(rand.NewPCG(seed, 13))
	for m, p := range a.Modules {
		q := cfg.NewPair(m, p.In, p.Out)
		for i := range q.A {
			q.A[i] = float32(rng.NormFloat64() * 0.3)
		}
		for i := range q.B {
			q.B[i] = float32(rng.NormFloat64() * 0.05)
		}
		b.Modules[m] = q
	}
	return b
}

func TestMergeShardsAndModulesToSave(t *testing.T) {
	root := t.TempDir()
	base := filepath.Join(root, "base")
	writeBase(t, base, baseOpts{seed: 9, shards: 3})
	ad := makeAdapter(t, 10, 4, 8, []string{"v_proj"}, false)
	ad.Config.ModulesToSave = []string{"lm_head"}
	head := make([]float32, tV*tH)
	for i := range head {
		head[i] = float32(i%7) * 0.01
	}
	ad.Saved["lm_head.weight"] = safetensors.F32Tensor("lm_head.weight", []int{tV, tH}, head)
	adDir := saveAdapter(t, ad)
	out := filepath.Join(root, "merged")
	res, err := Run(context.Background(), base, out, Options{Adapters: []Source{{Dir: adDir, Weight: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Shards != 1 || res.Replaced != 1 {
		t.Errorf("result %+v", res)
	}
	if _, err := os.Stat(filepath.Join(out, safetensors.IndexName)); err != nil {
		t.Fatal("a sharded base gives a sharded output with an index")
	}
	got, _ := tensorF32(t, out, "lm_head.weight")
	for i := range got {
		if got[i] != head[i] {
			t.Fatalf("lm_head not replaced by modules_to_save: [%d] %g", i, got[i])
		}
	}
	// --max-shard-size splits an unsharded base too; the index lists every tensor.
	base1 := filepath.Join(root, "base1")
	writeBase(t, base1, baseOpts{seed: 9})
	out2 := filepath.Join(root, "merged2")
	res, err = Run(context.Background(), base1, out2, Options{Adapters: []Source{{Dir: adDir, Weight: 1}}, MaxShardSize: 6000})
	if err != nil {
		t.Fatal(err)
	}
	if res.Shards < 3 {
		t.Fatalf("%d shards", res.Shards)
	}
	var idx struct {
		Metadata  map[string]int64  `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}
	b, _ := os.ReadFile(filepath.Join(out2, safetensors.IndexName))
	if err := json.Unmarshal(b, &idx); err != nil || len(idx.WeightMap) != res.Tensors || idx.Metadata["total_size"] != res.Bytes {
		t.Fatalf("index %s (%v)", b, err)
	}
	m, closeM := loadModel(t, out2)
	closeM()
	_ = m

	// A tied base gets an untied lm_head when the adapter saved one.
	tied := filepath.Join(root, "tied")
	writeBase(t, tied, baseOpts{seed: 9, tied: true})
	out3 := filepath.Join(root, "merged3")
	if _, err := Run(context.Background(), tied, out3, Options{Adapters: []Source{{Dir: adDir, Weight: 1}}}); err != nil {
		t.Fatal(err)
	}
	cfg, _ := os.ReadFile(filepath.Join(out3, "config.json"))
	if !strings.Contains(string(cfg), `"tie_word_embeddings": false`) {
		t.Errorf("config %s", cfg)
	}
	mt, closeT := loadModel(t, out3)
	defer closeT()
	if mt.LMHead == embedOf(mt) {
		t.Error("lm_head still tied")
	}
}

func embedOf(m *llama.Model) any { return m.EmbedTokens }

func noOut(t *testing.T, root, out string) {
	t.Helper()
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s exists after a failed merge", out)
	}
	noTemps(t, root)
}

// noTemps fails t when root holds a temporary (a hidden name).
func noTemps(t *testing.T, root string) {
	t.Helper()
	ents, _ := os.ReadDir(root)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temporary left behind: %s", e.Name())
		}
	}
}

func TestMergeErrors(t *testing.T) {
	root := t.TempDir()
	base := filepath.Join(root, "base")
	writeBase(t, base, baseOpts{seed: 1})
	out := filepath.Join(root, "out")
	run := func(a *lora.Adapter) error {
		_, err := Run(context.Background(), base, out, Options{Adapters: []Source{{Dir: "mem", Weight: 1, Adapter: a}}})
		return err
	}
	// Another model's adapter: in features differ.
	other := makeAdapter(t, 1, 4, 8, []string{"q_proj"}, false)
	p := other.Config.NewPair("model.layers.0.mlp.up_proj", tH+8, tI)
	other.Modules["model.layers.0.mlp.up_proj"] = p
	err := run(other)
	if err == nil || !strings.Contains(err.Error(), "model.layers.0.mlp.up_proj.lora_A.weight") || !strings.Contains(err.Error(), "[24 16]") {
		t.Errorf("shape mismatch: %v", err)
	}
	noOut(t, root, out)
	// A module the base does not have.
	other = makeAdapter(t, 1, 4, 8, []string{"q_proj"}, false)
	other.Modules["model.layers.7.self_attn.q_proj"] = other.Config.NewPair("model.layers.7.self_attn.q_proj", tH, tH)
	if err := run(other); err == nil || !strings.Contains(err.Error(), "model.layers.7.self_attn.q_proj") {
		t.Errorf("missing module: %v", err)
	}
	noOut(t, root, out)
	// NaN in B fails during writing: nothing appears at OUT.
	nan := makeAdapter(t, 1, 4, 8, []string{"q_proj", "down_proj"}, false)
	nan.Modules["model.layers.1.mlp.down_proj"].B[3] = float32(math.NaN())
	if err := run(nan); err == nil || !strings.Contains(err.Error(), "model.layers.1.mlp.down_proj.weight") {
		t.Errorf("NaN: %v", err)
	}
	noOut(t, root, out)
	// Interrupted (context cancelled) merge.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = Run(ctx, base, out, Options{Adapters: []Source{{Dir: "x", Weight: 1, Adapter: makeAdapter(t, 1, 4, 8, []string{"q_proj"}, false)}}})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	noOut(t, root, out)
	// A DoRA config without magnitude vectors and unknown keys are rejected by the loader with the tensor/field named.
	good := saveAdapter(t, makeAdapter(t, 1, 4, 8, []string{"q_proj"}, false))
	cfgPath := filepath.Join(good, lora.ConfigName)
	c, _ := os.ReadFile(cfgPath)
	os.WriteFile(cfgPath, []byte(strings.Replace(string(c), `"use_dora": false`, `"use_dora": true`, 1)), 0o644)
	_, err = Run(context.Background(), base, out, Options{Adapters: []Source{{Dir: good, Weight: 1}}})
	if err == nil || !strings.Contains(err.Error(), "DoRA") {
		t.Errorf("DoRA: %v", err)
	}
	noOut(t, root, out)
	// Bad options.
	for _, o := range []Options{{DType: "f8"}, {Requantize: "nf4"}, {}} {
		if o.DType == "" && o.Requantize == "" {
			o.Adapters = nil
		} else {
			o.Adapters = []Source{{Dir: "x", Weight: 1, Adapter: makeAdapter(t, 1, 4, 8, []string{"q_proj"}, false)}}
		}
		if _, err := Run(context.Background(), base, out, o); err == nil {
			t.Errorf("options %+v accepted", o)
		}
	}
	if _, err := Run(context.Background(), base, base, Options{Adapters: []Source{{Dir: good, Weight: 1}}}); err == nil {
		t.Error("OUT == BASE accepted")
	}
	noOut(t, root, out)
}

func TestMergeRefusesForeignOut(t *testing.T) {
	root := t.TempDir()
	base := filepath.Join(root, "base")
	writeBase(t, base, baseOpts{seed: 1})
	out := filepath.Join(root, "out")
	os.MkdirAll(out, 0o755)
	os.WriteFile(filepath.Join(out, "notes.txt"), []byte("mine"), 0o644)
	src := []Source{{Dir: "x", Weight: 1, Adapter: makeAdapter(t, 1, 4, 8, []string{"q_proj"}, false)}}
	if _, err := Run(context.Background(), base, out, Options{Adapters: src}); err == nil {
		t.Fatal("replaced a folder that is not a model")
	}
	if b, _ := os.ReadFile(filepath.Join(out, "notes.txt")); string(b) != "mine" {
		t.Fatal("foreign folder touched")
	}
	// A previous merge output is replaced.
	out2 := filepath.Join(root, "out2")
	for i := 0; i < 2; i++ {
		if _, err := Run(context.Background(), base, out2, Options{Adapters: src}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestVerifyCatchesWrongMerge: a merged folder that carries a wrong share of the adapter fails verification,
// in f32 and in bf16.
func TestVerifyCatchesWrongMerge(t *testing.T) {
	for _, dt := range []safetensors.DType{safetensors.F32, safetensors.BF16} {
		root := t.TempDir()
		base := filepath.Join(root, "base")
		writeBase(t, base, baseOpts{seed: 21, dtype: dt})
		ad := makeAdapter(t, 22, 4, 8, lora.DefaultTargets, false)
		out := filepath.Join(root, "out")
		if _, err := Run(context.Background(), base, out, Options{Adapters: []Source{{Dir: "a", Weight: 1, Adapter: ad}}, Threads: 1}); err != nil {
			t.Fatal(err)
		}
		for _, w := range []float64{1, 0, 0.6, 1.4} {
			v, err := Verify(base, out, []Source{{Dir: "a", Weight: w, Adapter: ad}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if v.OK != (w == 1) {
				t.Errorf("%s: merged with weight 1, verified against weight %g: ok=%v (%+v)", dt, w, v.OK, v)
			}
		}
	}
}
