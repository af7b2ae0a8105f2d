package llama

import (
	"math"
	"path/filepath"
	"slices"
	"testing"

	"github.com/lorakit/lorakit/internal/testenv"
	"github.com/lorakit/lorakit/models/safetensors"
	"github.com/lorakit/lorakit/models/testmodel"
)

// TestKVCacheBF16 runs every variant with a bf16 KV cache: prefill (blocked attention) against the float64
// reference whose keys and values are rounded to bf16 as the cache stores them, and one-token decoding through
// the cache (the decode attention path) likewise. Most logits agree as tightly as the f32 cache's
// (median ≤ 1e-5); the worst may reach a quarter of what the rounding itself moves the reference's logits,
// because a key computed in f32 (or by the other path) can round to the bf16 neighbour of the one the float64
// reference rounds to (up to 2.3e-3 here, against 8e-3–7e-2 for the rounding).
func TestKVCacheBF16(t *testing.T) {
	tokens := refTokens()
	eachVariant(t, func(t *testing.T, dir string, m *Model) {
		rc := refConfig(m.Config)
		rc.RoundKV = func(x float64) float64 {
			return float64(safetensors.BF16ToF32(safetensors.F32ToBF16(float32(x))))
		}
		want := refForwardWith(t, dir, m.Config, rc, tokens)
		c := m.NewCacheDType(0, KVBF16)
		got, err := m.Forward([]Seq{{Tokens: tokens, Cache: c, AllLogits: true}})
		if err != nil {
			t.Fatal(err)
		}
		plain := refForward(t, dir, m.Config, tokens)
		var diffs []float64
		moved := 0.0
		for p := range tokens {
			for i, v := range got[0][p] {
				diffs = append(diffs, math.Abs(float64(v)-want[p][i])/(1+math.Abs(want[p][i])))
				moved = math.Max(moved, math.Abs(want[p][i]-plain[p][i])/(1+math.Abs(plain[p][i])))
			}
		}
		worst, med := slices.Max(diffs), median(diffs)
		t.Logf("bf16 cache: rel diff median %.2e max %.2e vs the reference with bf16 keys and values, which moves %.2e from the plain one",
			med, worst, moved)
		bound := max(1e-4, moved/4)
		if med > 1e-5 || worst > bound {
			t.Fatalf("bf16 cache: rel diff median %g max %g vs the float64 reference with bf16 keys and values", med, worst)
		}
		dec := m.NewCacheDType(0, KVBF16)
		diffs = diffs[:0]
		for p, tok := range tokens {
			step, err := m.Forward([]Seq{{Tokens: []int{tok}, Cache: dec}})
			if err != nil {
				t.Fatal(err)
			}
			for i, v := range step[0][0] {
				diffs = append(diffs, math.Abs(float64(v)-want[p][i])/(1+math.Abs(want[p][i])))
			}
		}
		med, worst = median(diffs), slices.Max(diffs)
		t.Logf("bf16 cached decode: rel diff median %.2e max %.2e", med, worst)
		if med > 1e-5 || worst > bound {
			t.Fatalf("bf16 cached decode: rel diff median %g max %g vs the float64 reference with bf16 keys and values", med, worst)
		}
	})
}

// TestKVCacheBF16Layout: a bf16 cache holds exactly the bf16 rounding of what an f32 cache holds after the same
// prefill in layer 0 (later layers' inputs differ by the rounding), and grows (several reallocations) without losing positions.
func TestKVCacheBF16Layout(t *testing.T) {
	m := loadDir(t, writeTiny(t, testmodel.Options{ModelType: "qwen2", Seed: 3}), 2)
	f, b := m.NewCache(0), m.NewCacheDType(0, KVBF16)
	for step := range 5 { // 1, then 16-token chunks: reserve doubles the storage several times
		toks := []int{step + 1}
		if step > 0 {
			toks = make([]int, 16)
			for i := range toks {
				toks[i] = (step*31 + i*7) % 300
			}
		}
		if _, err := m.Forward([]Seq{{Tokens: toks, Cache: f}, {Tokens: toks, Cache: b}}); err != nil {
			t.Fatal(err)
		}
	}
	if f.Len() != 65 || b.Len() != 65 || b.DType() != KVBF16 || f.DType() != KVF32 {
		t.Fatalf("lengths %d %d, dtypes %v %v", f.Len(), b.Len(), f.DType(), b.DType())
	}
	if len(b.k) != 0 || len(b.k16) != len(m.Layers)*m.Config.NumKeyValueHeads {
		t.Fatalf("bf16 cache has %d f32 and %d bf16 slots", len(b.k), len(b.k16))
	}
	D := m.Config.HeadDim
	for i := range m.Config.NumKeyValueHeads { // layer 0: later layers see the rounding's effect on their input
		if f.room < 65 || len(f.k[i]) != f.room*D || len(b.k16[i]) != b.room*D {
			t.Fatalf("storage of %d/%d positions, %d/%d elements", f.room, b.room, len(f.k[i]), len(b.k16[i]))
		}
		for j := range f.n * D {
			if safetensors.F32ToBF16(f.k[i][j]) != b.k16[i][j] || safetensors.F32ToBF16(f.v[i][j]) != b.v16[i][j] {
				t.Fatalf("slot %d element %d: bf16 %#x/%#x, f32 %g/%g", i, j, b.k16[i][j], b.v16[i][j], f.k[i][j], f.v[i][j])
			}
		}
	}
}

// TestKVRowsBF16: rows copied out of a bf16 cache and appended to a fresh one continue decoding exactly as the
// cache they came from; rows of the other dtype are refused.
func TestKVRowsBF16(t *testing.T) {
	m := loadDir(t, writeTiny(t, testmodel.Options{Seed: 9}), 2)
	prompt := make([]int, 40)
	for i := range prompt {
		prompt[i] = (i*13 + 1) % 300
	}
	src := m.NewCacheDType(64, KVBF16)
	if _, err := m.Forward([]Seq{{Tokens: prompt, Cache: src}}); err != nil {
		t.Fatal(err)
	}
	a, err := src.Rows(0, 16)
	if err != nil {
		t.Fatal(err)
	}
	b, err := src.Rows(16, 32)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(2 * len(m.Layers) * m.Config.KVDim() * 16 * 2); a.Bytes() != want {
		t.Fatalf("16 bf16 rows hold %d bytes, want %d", a.Bytes(), want)
	}
	dst := m.NewCacheDType(64, KVBF16)
	if err := dst.Append(a, b); err != nil {
		t.Fatal(err)
	}
	if err := m.NewCache(64).Append(a); err == nil {
		t.Fatal("bf16 rows appended to an f32 cache")
	}
	src.Truncate(32)
	want, err := m.Forward([]Seq{{Tokens: prompt[32:], Cache: src}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.Forward([]Seq{{Tokens: prompt[32:], Cache: dst}})
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range got[0][0] {
		if v != want[0][0][i] {
			t.Fatalf("logit %d: %g after appended rows, %g in the source cache", i, v, want[0][0][i])
		}
	}
}

// TestGoldenGreedyBF16Cache: stories260K (f32 and bf16 weights) decoded greedily through a bf16 KV cache keeps
// the greedy goldens, with TestGoldenGreedy's documented close call for the bf16 weights.
func TestGoldenGreedyBF16Cache(t *testing.T) {
	sh := testenv.Testdata(t)
	for _, dir := range []string{"stories260K", "stories260K-bf16"} {
		m := loadDir(t, filepath.Join(sh, "models", dir), 2)
		for _, g := range goldens[greedyGolden](t, "stories260K-greedy.jsonl") {
			got := greedyCache(t, m, m.NewCacheDType(0, KVBF16), g.PromptIDs, len(g.GreedyIDs))
			n := len(g.GreedyIDs)
			if dir == "stories260K-bf16" && g.Prompt == "Tom and his mom" {
				n = 2
			}
			if !equalShape(got[:n], g.GreedyIDs[:n]) {
				t.Errorf("%s, bf16 KV cache, %q:\n got %v\nwant %v", dir, g.Prompt, got[:n], g.GreedyIDs[:n])
			}
		}
	}
}
