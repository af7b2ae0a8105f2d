package train

import (
	"bytes"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/testmodel"
)

func TestPackRows(t *testing.T) {
	// Best-fit decreasing by hand: 7 opens row 0 (3 free), 6 row 1 (4 free), 5 row 2 (5 free); 3 fills row 0;
	// 2 goes to row 1, the fullest with room (2 free), and so does 1.
	lens := []int{3, 7, 2, 6, 5, 1}
	got := packRows(lens, 10)
	want := [][]int{{1, 0}, {3, 2, 5}, {4}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("packRows = %v, want %v", got, want)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 20; trial++ {
		budget := 16 + rng.IntN(200)
		lens := make([]int, 1+rng.IntN(300))
		for i := range lens {
			lens[i] = 1 + rng.IntN(budget)
		}
		rows := packRows(lens, budget)
		if !reflect.DeepEqual(rows, packRows(lens, budget)) {
			t.Fatal("packRows is not deterministic")
		}
		seen := make([]int, len(lens))
		fill := make([]int, len(rows))
		for k, r := range rows {
			for _, i := range r {
				seen[i]++
				fill[k] += lens[i]
			}
			if fill[k] > budget || len(r) == 0 {
				t.Fatalf("row %v holds %d tokens, budget %d", r, fill[k], budget)
			}
		}
		for i, c := range seen {
			if c != 1 {
				t.Fatalf("example %d is in %d rows", i, c)
			}
		}
		// A row is opened only for an example that fits no open row, so no two rows could be merged.
		for a := range fill {
			for b := a + 1; b < len(fill); b++ {
				if fill[a]+fill[b] <= budget {
					t.Fatalf("rows %d and %d (%d and %d tokens) fit in one row of %d", a, b, fill[a], fill[b], budget)
				}
			}
		}
	}
}

// TestPackedBatchEqualsOneByOne is the check of --packing: a packed row of examples (block-diagonal causal
// attention, positions restarting per example, the loss mask per example) gives the same summed loss and the
// same gradients as the examples run one at a time, with the same per-token normaliser.
func TestPackedBatchEqualsOneByOne(t *testing.T) {
	for _, method := range []Method{LoRA, Full} {
		for _, mt := range []string{"llama", "qwen3"} {
			t.Run(string(method)+"/"+mt, func(t *testing.T) {
				o := testmodel.Default()
				o.ModelType = mt
				if mt == "qwen3" {
					o.HeadDim = 8
				}
				net, err := NewNet(loadTestModel(t, o), method, LoRAOptions{Targets: []string{"all-linear"}, Rank: 2, Alpha: 4, Seed: 3})
				if err != nil {
					t.Fatal(err)
				}
				for i, p := range net.Params { // B non-zero so that every path carries gradient
					v := vals(p)
					for j := range v {
						if v[j] == 0 {
							v[j] = float32(math.Sin(float64(i*131+j))) * 0.05
						}
					}
				}
				exs := []Sample{
					{IDs: []int{5, 70, 80, 90, 100, 3}, Mask: []bool{false, true, true, true, true, false}},
					{IDs: []int{7, 8, 9, 10}, Mask: []bool{true, false, true, false}},
					{IDs: []int{11, 12, 13, 200, 201, 202, 203}, Mask: []bool{false, false, false, true, true, true, false}},
					{IDs: []int{40, 41, 42}, Mask: []bool{true, true, false}},
				}
				lens := make([]int, len(exs))
				denom := 0
				for i, s := range exs {
					lens[i] = len(s.IDs)
					denom += s.Targets()
				}
				rows := packRows(lens, 12)
				if len(rows) >= len(exs) {
					t.Fatalf("nothing packed: %v", rows)
				}
				var wantLoss float64
				for _, s := range exs {
					l, _, err := net.Accumulate([]Sample{s}, float32(denom), 1)
					if err != nil {
						t.Fatal(err)
					}
					wantLoss += l
				}
				want := gradsCopy(net)
				ZeroGrads(net.Params)
				var gotLoss float64
				for _, r := range rows {
					var row []Sample
					for _, i := range r {
						row = append(row, exs[i])
					}
					l, _, err := net.Accumulate(row, float32(denom), 1)
					if err != nil {
						t.Fatal(err)
					}
					gotLoss += l
				}
				got := gradsCopy(net)
				ZeroGrads(net.Params)
				if d := math.Abs(gotLoss-wantLoss) / float64(denom); d > 1e-5 {
					t.Fatalf("packed loss %g, one by one %g (per token)", gotLoss/float64(denom), wantLoss/float64(denom))
				}
				worst := 0.0
				for i := range want {
					d := maxDiff(got[i], want[i])
					worst = math.Max(worst, d)
					if d > 1e-5 {
						t.Errorf("%s: packed gradient differs by %g", net.Names[i], d)
					}
				}
				t.Logf("rows %v: loss %.6f, worst gradient difference %.2g", rows, gotLoss/float64(denom), worst)
			})
		}
	}
}

func gradsCopy(n *Net) [][]float32 {
	out := make([][]float32, len(n.Params))
	for i, p := range n.Params {
		if p.HasGrad() {
			out[i] = append([]float32(nil), vals(p.Grad())...)
		} else {
			out[i] = make([]float32, p.Size())
		}
	}
	return out
}

func TestRunPacking(t *testing.T) {
	dir := setupTiny(t)
	const maxLen = 128
	m, err := models.Load(filepath.Join(dir, "model"), BaseOptions(1, false))
	if err != nil {
		t.Fatal(err)
	}
	d, err := LoadData(filepath.Join(dir, "data.jsonl"), m, maxLen, false, true, nil)
	m.Close()
	if err != nil {
		t.Fatal(err)
	}
	lens := make([]int, len(d.Samples))
	for i, s := range d.Samples {
		lens[i] = len(s.IDs)
	}
	rows := len(packRows(lens, maxLen))
	if rows >= len(lens) {
		t.Fatalf("%d examples made %d rows of %d tokens: nothing to pack", len(lens), rows, maxLen)
	}
	res, err := tinyRun(t, dir, func(c *Config) { c.Packing, c.MaxSeqLen, c.MaxSteps, c.Epochs = true, maxLen, 0, 1 })
	if err != nil {
		t.Fatal(err)
	}
	// An epoch is ⌈rows / (batch-size·grad-accum)⌉ steps: --batch-size counts rows.
	if want := (rows + 3) / 4; res.Steps != want {
		t.Fatalf("packed epoch took %d steps, want %d (%d rows)", res.Steps, want, rows)
	}
	if math.IsNaN(res.Loss) || res.Loss <= 0 {
		t.Fatalf("loss %v", res.Loss)
	}
	// Into a second epoch, interrupted at step 3 and resumed: bit-identical to the uninterrupted run (the rows
	// are planned the same way again and reshuffled per epoch from the seed).
	packed := func(c *Config) { c.Packing, c.MaxSeqLen, c.MaxSteps = true, maxLen, 7 }
	whole, cut := filepath.Join(dir, "whole"), filepath.Join(dir, "cut")
	if _, err := tinyRun(t, dir, func(c *Config) { packed(c); c.Out = whole }); err != nil {
		t.Fatal(err)
	}
	if _, err := tinyRun(t, dir, func(c *Config) { packed(c); c.Out = cut; c.SaveEvery = 3 }); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(cut, "adapter_model.safetensors"))
	os.RemoveAll(filepath.Join(cut, "checkpoint-6"))
	if _, err := tinyRun(t, dir, func(c *Config) { packed(c); c.Out = cut; c.Resume = filepath.Join(cut, "checkpoint-3") }); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readBytes(t, filepath.Join(whole, "adapter_model.safetensors")), readBytes(t, filepath.Join(cut, "adapter_model.safetensors"))) {
		t.Fatal("resumed packed run differs from the uninterrupted one")
	}
}
