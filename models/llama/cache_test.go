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

// cached returns slot i's keys and values of every cached position of c, read through its block table.
func cached[T float32 | uint16](c *KVCache, pick func(*kvArena) (k, v [][]T), i int) (k, v []T) {
	var bk, bv []T
	k, v = span(c, pick, i, 0, c.Len(), &bk, &bv)
	return append([]T(nil), k...), append([]T(nil), v...)
}

// TestKVCacheBF16Layout: a bf16 cache holds exactly the bf16 rounding of what an f32 cache holds after the same
// prefill in layer 0 (later layers' inputs differ by the rounding), over several blocks in two arenas of its
// private pool, and holds exactly the blocks its positions fill.
func TestKVCacheBF16Layout(t *testing.T) {
	m := loadDir(t, writeTiny(t, testmodel.Options{ModelType: "qwen2", Seed: 3}), 2)
	f, b := m.NewCache(0), m.NewCacheDType(0, KVBF16)
	for step := range 5 { // 1, then 16-token chunks: the private pool adds a second arena of 4 blocks
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
	if f.Blocks() != 5 || b.Blocks() != 5 || len(f.pool.arenas) != 2 || f.pool.Used() != 5 || f.pool.Allocated() != 8*f.pool.BlockBytes() {
		t.Fatalf("65 positions in %d/%d blocks (%d arenas, %d used, %d bytes), want 5 blocks in two arenas of 4",
			f.Blocks(), b.Blocks(), len(f.pool.arenas), f.pool.Used(), f.pool.Allocated())
	}
	if want := int64(5 * KVBlockSize * 2 * len(m.Layers) * m.Config.KVDim() * 2); b.Bytes() != want || f.Bytes() != 2*want {
		t.Fatalf("caches hold %d/%d bytes, want %d/%d", f.Bytes(), b.Bytes(), 2*want, want)
	}
	for i := range m.Config.NumKeyValueHeads { // layer 0: later layers see the rounding's effect on their input
		fk, fv := cached(f, pickF32, i)
		bk, bv := cached(b, pickBF16, i)
		if len(fk) != 65*m.Config.HeadDim || len(bk) != len(fk) {
			t.Fatalf("%d/%d elements of slot %d", len(fk), len(bk), i)
		}
		for j := range fk {
			if safetensors.F32ToBF16(fk[j]) != bk[j] || safetensors.F32ToBF16(fv[j]) != bv[j] {
				t.Fatalf("slot %d element %d: bf16 %#x/%#x, f32 %g/%g", i, j, bk[j], bv[j], fk[j], fv[j])
			}
		}
	}
}

// TestKVShareBF16: blocks shared out of a bf16 cache and attached to another cache of the same pool continue
// decoding exactly as the cache they came from, without a copy (the blocks are the same); blocks of another
// pool are refused; the blocks return to the pool when the last holder lets go.
func TestKVShareBF16(t *testing.T) {
	m := loadDir(t, writeTiny(t, testmodel.Options{Seed: 9}), 2)
	prompt := make([]int, 40)
	for i := range prompt {
		prompt[i] = (i*13 + 1) % 300
	}
	pool := m.NewKVPool(KVBF16, 0)
	src := pool.NewCache(64)
	if _, err := m.Forward([]Seq{{Tokens: prompt, Cache: src}}); err != nil {
		t.Fatal(err)
	}
	a, err := src.Share(0, 16)
	if err != nil {
		t.Fatal(err)
	}
	b, err := src.Share(16, 32)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Share(16, 24); err == nil {
		t.Fatal("a partial block shared")
	}
	if want := int64(2 * len(m.Layers) * m.Config.KVDim() * 16 * 2); a.Bytes() != want {
		t.Fatalf("16 bf16 positions hold %d bytes, want %d", a.Bytes(), want)
	}
	dst := pool.NewCache(64)
	if err := dst.Attach(a, b); err != nil {
		t.Fatal(err)
	}
	if dst.table[0] != src.table[0] || dst.table[1] != src.table[1] || pool.Used() != 3 {
		t.Fatalf("attached blocks %v, source %v, %d used: not shared", dst.table, src.table, pool.Used())
	}
	if err := m.NewCache(64).Attach(a); err == nil {
		t.Fatal("blocks of a bf16 pool attached to a cache of another pool")
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
			t.Fatalf("logit %d: %g after attached blocks, %g in the source cache", i, v, want[0][0][i])
		}
	}
	a.Release()
	b.Release()
	src.Release()
	if pool.Used() != 3 { // dst's two shared blocks and its own third
		t.Fatalf("%d blocks used after the source let go, want 3", pool.Used())
	}
	dst.Release()
	if pool.Used() != 0 {
		t.Fatalf("%d blocks used after every holder let go", pool.Used())
	}
}

// TestKVSharedBlockNeverWritten: a sequence that attached shared blocks and diverges inside one of them (Truncate
// into a block, as a sequence whose prompt differs inside a block would) gets its own copy of that block: the
// source's keys and values are unchanged, and both continue exactly as caches that computed everything alone.
func TestKVSharedBlockNeverWritten(t *testing.T) {
	for _, dt := range []KVDType{KVF32, KVBF16} {
		t.Run(dt.String(), func(t *testing.T) {
			m := loadDir(t, writeTiny(t, testmodel.Options{Seed: 5}), 2)
			prompt := make([]int, 40)
			other := make([]int, 16)
			for i := range prompt {
				prompt[i] = (i*17 + 3) % 300
			}
			for i := range other {
				other[i] = (i*29 + 7) % 300
			}
			pool := m.NewKVPool(dt, 0)
			src := pool.NewCache(64)
			if _, err := m.Forward([]Seq{{Tokens: prompt[:32], Cache: src}}); err != nil {
				t.Fatal(err)
			}
			share, err := src.Share(0, 32)
			if err != nil {
				t.Fatal(err)
			}
			dst := pool.NewCache(64)
			if err := dst.Attach(share); err != nil {
				t.Fatal(err)
			}
			dst.Truncate(24) // diverge inside the shared second block
			got, err := m.Forward([]Seq{{Tokens: other, Cache: dst}})
			if err != nil {
				t.Fatal(err)
			}
			if dst.table[0] != src.table[0] || dst.table[1] == src.table[1] {
				t.Fatalf("tables %v and %v: the first block should stay shared, the second be copied", dst.table, src.table)
			}
			alone := m.NewCacheDType(64, dt)
			want, err := m.Forward([]Seq{{Tokens: append(slices.Clone(prompt[:24]), other...), Cache: alone}})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got[0][0], want[0][0]) {
				t.Fatal("the diverged sequence's logits differ from a cache that computed its tokens alone")
			}
			gotSrc, err := m.Forward([]Seq{{Tokens: prompt[32:], Cache: src}})
			if err != nil {
				t.Fatal(err)
			}
			ref := m.NewCacheDType(64, dt)
			wantSrc, err := m.Forward([]Seq{{Tokens: prompt, Cache: ref}})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(gotSrc[0][0], wantSrc[0][0]) {
				t.Fatal("the source's logits changed: a shared block was written")
			}
		})
	}
}

// TestKVPagedLayoutInvariant: caches whose blocks are scattered over a shared pool give bit-identical logits to
// caches whose blocks are adjacent, decoding (attention reads the scattered blocks run by run, in place: it
// gathers nothing) and prefilling (a blocked prefill gathers them), f32 and bf16.
func TestKVPagedLayoutInvariant(t *testing.T) {
	for _, dt := range []KVDType{KVF32, KVBF16} {
		t.Run(dt.String(), func(t *testing.T) {
			m := loadDir(t, writeTiny(t, testmodel.Options{Seed: 11}), 2)
			pool := m.NewKVPool(dt, 0)
			shared := []*KVCache{pool.NewCache(0), pool.NewCache(0), pool.NewCache(0)}
			own := []*KVCache{m.NewCacheDType(0, dt), m.NewCacheDType(0, dt), m.NewCacheDType(0, dt)}
			for step := range 12 {
				for i := range shared { // one sequence at a time: their blocks interleave in the pool
					n := 1
					if step%4 == 0 {
						n = 20 // a blocked prefill over scattered blocks
					}
					toks := make([]int, n)
					for j := range toks {
						toks[j] = (step*37 + i*11 + j*5) % 300
					}
					a, err := m.Forward([]Seq{{Tokens: toks, Cache: shared[i]}})
					if err != nil {
						t.Fatal(err)
					}
					b, err := m.Forward([]Seq{{Tokens: toks, Cache: own[i]}})
					if err != nil {
						t.Fatal(err)
					}
					if !slices.Equal(a[0][0], b[0][0]) {
						t.Fatalf("step %d sequence %d: scattered blocks give other logits than adjacent ones", step, i)
					}
				}
			}
			if shared[0].table[1] == shared[0].table[0]+1 && shared[0].table[2] == shared[0].table[1]+1 {
				t.Fatalf("blocks %v are adjacent: the test does not exercise the scattered reads", shared[0].table)
			}
			for w := range m.s.runs {
				if m.s.runs[w].gk != nil || m.s.runs16[w].gk != nil {
					t.Fatalf("worker %d gathered keys to decode over scattered blocks", w)
				}
			}
		})
	}
}

// TestKVPrivatePoolNeverMoves: a private cache (generate, eval) that outgrows its pool's arenas gets a new arena
// as large as what it holds (or as a prefill asks for) instead of moving its blocks into a larger one: the
// first arena and what it holds stay where they are, and a cache of n positions is at most log₂ n runs.
func TestKVPrivatePoolNeverMoves(t *testing.T) {
	m := loadDir(t, writeTiny(t, testmodel.Options{Seed: 5}), 2)
	c := m.NewCacheDType(0, KVBF16)
	prompt := make([]int, 40)
	for i := range prompt {
		prompt[i] = (i*13 + 1) % 300
	}
	if _, err := m.Forward([]Seq{{Tokens: prompt, Cache: c}}); err != nil {
		t.Fatal(err)
	}
	first := c.pool.arenas[0]
	k0 := &first.k16[0][0]
	keys, _ := cached(c, pickBF16, 0)
	for step := range 20 { // to 40 + 20·13 = 300 positions
		toks := []int{step + 1}
		if step%2 == 0 {
			toks = prompt[:25]
		}
		if _, err := m.Forward([]Seq{{Tokens: toks, Cache: c}}); err != nil {
			t.Fatal(err)
		}
	}
	if c.pool.arenas[0] != first || &c.pool.arenas[0].k16[0][0] != k0 {
		t.Fatal("the private pool moved its first arena")
	}
	now, _ := cached(c, pickBF16, 0)
	if !slices.Equal(now[:len(keys)], keys) {
		t.Fatal("the first positions' keys changed")
	}
	if runs := len(c.pool.arenas); runs > 6 || c.pool.Allocated() > 2*c.Bytes() {
		t.Fatalf("%d positions in %d arenas, %d bytes allocated for %d held", c.Len(), runs, c.pool.Allocated(), c.Bytes())
	}
}

// TestKVPoolBound: a bounded pool hands out at most its blocks; a cache that cannot get them keeps what it held;
// memory held is blocks × block size.
func TestKVPoolBound(t *testing.T) {
	m := loadDir(t, writeTiny(t, testmodel.Options{Seed: 2}), 2)
	pool := m.NewKVPool(KVBF16, 4)
	a, b := pool.NewCache(0), pool.NewCache(0)
	if err := a.Reserve(40); err != nil || a.Blocks() != 3 || pool.Free() != 1 {
		t.Fatalf("reserve 40: %v, %d blocks, %d free", err, a.Blocks(), pool.Free())
	}
	if err := b.Reserve(20); err == nil || b.Blocks() != 0 || pool.Free() != 1 {
		t.Fatalf("reserve past the bound: %v, %d blocks, %d free", err, b.Blocks(), pool.Free())
	}
	if a.Bytes() != 3*pool.BlockBytes() || pool.Allocated() > 4*pool.BlockBytes() {
		t.Fatalf("%d bytes held in 3 blocks of %d; %d allocated", a.Bytes(), pool.BlockBytes(), pool.Allocated())
	}
	if _, err := m.Forward([]Seq{{Tokens: make([]int, 17), Cache: b}}); err == nil || b.Len() != 0 {
		t.Fatalf("forward past the bound: %v, %d positions", err, b.Len())
	}
	a.Release()
	if _, err := m.Forward([]Seq{{Tokens: make([]int, 17), Cache: b}}); err != nil || b.Blocks() != 2 {
		t.Fatalf("forward after the release: %v, %d blocks", err, b.Blocks())
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
			if !slices.Equal(got[:n], g.GreedyIDs[:n]) {
				t.Errorf("%s, bf16 KV cache, %q:\n got %v\nwant %v", dir, g.Prompt, got[:n], g.GreedyIDs[:n])
			}
		}
	}
}

// TestKVPoolKeepsCachesAdjacent: caches of one pool that take blocks in turn get them where each can keep
// growing in place (the block after its last), so attention reads them without a gather.
func TestKVPoolKeepsCachesAdjacent(t *testing.T) {
	m := loadDir(t, writeTiny(t, testmodel.Options{Seed: 2}), 2)
	pool := m.NewKVPool(KVBF16, 0)
	warm := pool.NewCache(0)
	if err := warm.Reserve(64 * KVBlockSize); err != nil { // arenas of 4, 4, 8, 16 and 32 blocks
		t.Fatal(err)
	}
	warm.Release()
	caches := make([]*KVCache, 4)
	for i := range caches {
		caches[i] = pool.NewCache(0)
	}
	for _, n := range []int{1, 17, 33} {
		for _, c := range caches {
			if err := c.Reserve(n); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, c := range caches {
		for b := 1; b < len(c.table); b++ {
			if c.table[b] != c.table[b-1]+1 || pool.arenaOf[c.table[b]] != pool.arenaOf[c.table[b-1]] {
				t.Errorf("cache %d: blocks %v are not adjacent", i, c.table)
			}
		}
	}
	if pool.Used() != 12 || pool.Allocated() != 64*pool.BlockBytes() {
		t.Errorf("%d blocks used, %d bytes allocated; want 12 of 64 blocks", pool.Used(), pool.Allocated())
	}
}
