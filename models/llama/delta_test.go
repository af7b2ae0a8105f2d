package llama

import (
	"math"
	"sync/atomic"
	"testing"

	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/testmodel"
)

// rowsDelta is a Delta whose effect depends on the row's input and on its own scale: y[i] += c·x[i%in].
type rowsDelta struct {
	c     float32
	calls atomic.Int64 // ApplyRows calls
	rows  atomic.Int64 // rows passed to ApplyRows
}

func (d *rowsDelta) Apply(module string, y, x []float32, in, out int) {
	d.ApplyRows(nil, module, y, x, 1, in, out)
	d.calls.Add(-1)
	d.rows.Add(-1)
}

func (d *rowsDelta) ApplyRows(_ *kernels.Pool, module string, y, x []float32, rows, in, out int) {
	if len(y) != rows*out || len(x) != rows*in {
		panic("bad lengths")
	}
	d.calls.Add(1)
	d.rows.Add(int64(rows))
	for r := range rows {
		for i := range out {
			y[r*out+i] += d.c * x[r*in+i%in]
		}
	}
}

// TestRowsDeltaGrouping checks that sequences sharing a Delta go through it together (one call per module),
// also when their rows are not adjacent, with the same logits as each sequence alone.
func TestRowsDeltaGrouping(t *testing.T) {
	m := loadDir(t, writeTiny(t, testmodel.Options{Seed: 21}), 2)
	a, b := &rowsDelta{c: 0.02}, &rowsDelta{c: -0.03}
	adapters := []Delta{a, nil, b, a, &fakeDelta{calls: map[string]int{}}, b, a}
	var prompts [][]int
	for i := range adapters {
		p := []int{1 + i, 7, 3*i + 2}
		if i == 3 {
			p = append(p, make([]int, 40)...) // a prefill long enough for the blocked attention
		}
		prompts = append(prompts, p)
	}
	var want [][]float32
	for i, p := range prompts {
		out, err := m.Forward([]Seq{{Tokens: p, Adapter: adapters[i]}})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, out[0][0])
	}
	a.calls.Store(0)
	a.rows.Store(0)
	var batch []Seq
	for i, p := range prompts {
		batch = append(batch, Seq{Tokens: p, Adapter: adapters[i]})
	}
	got, err := m.Forward(batch)
	if err != nil {
		t.Fatal(err)
	}
	for i := range prompts {
		for j, v := range got[i][0] {
			if d := math.Abs(float64(v - want[i][j])); d > 1e-5 {
				t.Fatalf("seq %d: batched differs from alone by %g", i, d)
			}
		}
	}
	modules := int64(len(m.Modules()))       // every linear and lm_head
	if c := a.calls.Load(); c != modules+2 { // lm_head is applied per sequence
		t.Fatalf("adapter a: %d ApplyRows calls, want %d", c, modules+2)
	}
	// every linear takes a's 49 rows, except the last layer's o_proj and MLP (4 modules) and lm_head, which
	// take only the 3 rows returned
	if r, want := a.rows.Load(), int64(len(m.Modules())-1-4)*int64(3+43+3)+4*3+3; r != want {
		t.Fatalf("adapter a: %d rows, want %d", r, want)
	}
}

// TestPrefillAllocations checks that a repeated prefill allocates only the returned logits.
func TestPrefillAllocations(t *testing.T) {
	m := loadDir(t, writeTiny(t, testmodel.Options{Seed: 3}), 2)
	toks := make([]int, 150)
	for i := range toks {
		toks[i] = (i*31 + 7) % 300
	}
	c := m.NewCache(len(toks))
	batch := []Seq{{Tokens: toks, Cache: c}}
	allocs := testing.AllocsPerRun(5, func() {
		c.Reset()
		if _, err := m.Forward(batch); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 3 {
		t.Fatalf("prefill allocates %v times", allocs)
	}
}

// TestMixedDecodeAllocations checks that a decode step of several sequences over several adapters allocates
// only the returned logits (the fake adapters allocate nothing themselves).
func TestMixedDecodeAllocations(t *testing.T) {
	m := loadDir(t, writeTiny(t, testmodel.Options{Seed: 4}), 2)
	a, b := &rowsDelta{c: 0.01}, &rowsDelta{c: 0.02}
	var batch []Seq
	for i, d := range []Delta{a, b, nil, a, b, a} {
		c := m.NewCache(256)
		if _, err := m.Forward([]Seq{{Tokens: []int{1, 2, 3 + i}, Cache: c, Adapter: d}}); err != nil {
			t.Fatal(err)
		}
		batch = append(batch, Seq{Tokens: []int{4}, Cache: c, Adapter: d})
	}
	allocs := testing.AllocsPerRun(20, func() {
		if _, err := m.Forward(batch); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > float64(3+len(batch)) { // logits: one backing array, the outer slice and one per sequence (+1 seen with the base alone)
		t.Fatalf("mixed decode step allocates %v times (%d seqs)", allocs, len(batch))
	}
}

// TestOrderByAdapter checks that sequences sharing an adapter become adjacent, stably by first appearance
// (moved with the grouping from the serving engine, which ordered its rows this way before handing them over).
func TestOrderByAdapter(t *testing.T) {
	a, b := &rowsDelta{c: 1}, &rowsDelta{c: 2}
	ds := []Delta{a, nil, a, b, nil}
	batch := make([]Seq, len(ds))
	for i, d := range ds {
		batch[i] = Seq{Tokens: make([]int, i+1), Adapter: d}
	}
	m := &Model{}
	got := m.orderByAdapter(batch)
	want := []int{0, 2, 1, 4, 3}
	for k, i := range want {
		if m.s.order[k] != i || got[k].Adapter != ds[i] {
			t.Fatalf("position %d holds row %d, want %d", k, m.s.order[k], i)
		}
	}
	if g := m.s.groups; len(g) != 2 || g[0] != (RowGroup{Start: 0, N: 1 + 3, Adapter: a}) || g[1] != (RowGroup{Start: 4 + 2 + 5, N: 4, Adapter: b}) {
		t.Fatalf("groups %+v", g)
	}
}

var (
	_ Delta    = (*lora.Adapter)(nil)
	_ Factored = (*lora.Packed)(nil)
)

// TestPackedAdaptersBatched runs decode and prefill rows of several packed adapters (bf16 and f32 layouts, one
// adapter with many rows so that it takes the whole pool) in one Forward, through the batched LoRA path, and
// checks each sequence's logits against the sequence alone and that the adapters change them.
func TestPackedAdaptersBatched(t *testing.T) {
	m := loadDir(t, writeTiny(t, testmodel.Options{Seed: 22}), 2)
	var ads []Delta
	for i, l := range []lora.Layout{lora.BF16, lora.BF16, lora.F32BT, lora.BF16} {
		ads = append(ads, newBenchLoRA(m, 4+4*i, uint64(30+i), l))
	}
	var batch []Seq
	var alone, base [][]float32
	for i := range 11 {
		toks := []int{1 + i, 9, 2*i + 3}
		if i == 2 {
			toks = append(toks, make([]int, 40)...) // a group of bigRows rows or more
		}
		var d Delta
		if i%5 != 4 {
			d = ads[i%len(ads)]
		}
		out, err := m.Forward([]Seq{{Tokens: toks, Adapter: d}})
		if err != nil {
			t.Fatal(err)
		}
		b, err := m.Forward([]Seq{{Tokens: toks}})
		if err != nil {
			t.Fatal(err)
		}
		alone, base = append(alone, out[0][0]), append(base, b[0][0])
		batch = append(batch, Seq{Tokens: toks, Adapter: d})
	}
	got, err := m.Forward(batch)
	if err != nil {
		t.Fatal(err)
	}
	for i := range batch {
		changed := 0.0
		for j, v := range got[i][0] {
			if d := math.Abs(float64(v - alone[i][j])); d > 1e-4 {
				t.Fatalf("seq %d: batched differs from alone by %g at %d", i, d, j)
			}
			changed = max(changed, math.Abs(float64(v-base[i][j])))
		}
		if (batch[i].Adapter != nil) != (changed > 1e-3) {
			t.Fatalf("seq %d (adapter %v): logits differ from the base's by at most %g", i, batch[i].Adapter != nil, changed)
		}
	}
}
