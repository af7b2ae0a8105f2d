package train

import (
	"math"
	"testing"

	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/testmodel"
)

// TestTrainTokensGradient checks the trained token rows' gradients (embedding lookup and LM head, tied and
// untied) against central differences of the loss, then that one step moves them and that the adapter, applied
// by the inference engine, computes what the training forward computes.
func TestTrainTokensGradient(t *testing.T) {
	for _, tied := range []bool{true, false} {
		name := map[bool]string{true: "tied", false: "untied"}[tied]
		t.Run(name, func(t *testing.T) {
			o := testmodel.Default()
			o.Tied = tied
			base := loadTestModel(t, o)
			net, err := NewNet(base, LoRA, LoRAOptions{Targets: []string{"q", "v"}, Rank: 2, Alpha: 4, Seed: 3})
			if err != nil {
				t.Fatal(err)
			}
			ids := []int{5, 70, 80, 90, 100, 3}
			if err := net.SetTrainTokens([]int{80, 3, 100}); err != nil {
				t.Fatal(err)
			}
			want := baseLogits(t, base, ids, nil)
			if got := baseLogits(t, base, ids, net.Adapter()); maxDiff(got, want) > 1e-5 { // a dot product, not the GEMM's sum order
				t.Fatalf("untrained token rows change the logits by %g", maxDiff(got, want))
			}
			for i, p := range net.Params { // B non-zero, token rows moved, so that every path carries gradient
				v := vals(p)
				for j := range v {
					v[j] += float32(math.Sin(float64(i*131+j))) * 0.05
				}
			}
			batch := []Sample{
				{IDs: ids, Mask: []bool{false, true, true, true, true, false}},
				{IDs: []int{100, 8, 3, 10}, Mask: []bool{true, true, true, false}},
			}
			denom := float32(batch[0].Targets() + batch[1].Targets())
			if _, _, err := net.Accumulate(batch, denom, 1); err != nil {
				t.Fatal(err)
			}
			loss := func() float64 {
				s, c, err := net.Loss(batch)
				if err != nil {
					t.Fatal(err)
				}
				return s / float64(c)
			}
			checked := 0
			for i, p := range net.Params {
				if net.Names[i] != lora.TokensKey(lora.EmbedModule) && net.Names[i] != lora.TokensKey(lora.HeadModule) {
					continue
				}
				g, v := vals(p.Grad()), vals(p)
				for j := 0; j < len(v); j += 7 {
					old := v[j]
					h := float32(1e-2)
					v[j] = old + h
					fp := loss()
					v[j] = old - h
					fm := loss()
					v[j] = old
					num := (fp - fm) / float64(2*h)
					if math.Abs(num-float64(g[j])) > 2e-3+0.05*math.Abs(num) {
						t.Errorf("%s[%d]: grad %g, finite difference %g", net.Names[i], j, g[j], num)
					}
					checked++
				}
			}
			if wantParams := map[bool]int{true: 1, false: 2}[tied]; checked == 0 || len(net.AdCfg.TrainableTokens.ByKey) != wantParams {
				t.Fatalf("checked %d entries; trainable_token_indices %v", checked, net.AdCfg.TrainableTokens.ByKey)
			}
			train, err := net.Logits(ids)
			if err != nil {
				t.Fatal(err)
			}
			if d := maxDiff(baseLogits(t, base, ids, net.Adapter()), train); d > 1e-4 {
				t.Fatalf("adapter with trained rows at inference differs from the training forward by %g", d)
			}
			if d := maxDiff(train, want); d < 1e-3 {
				t.Fatalf("trained rows do not change the logits (%g)", d)
			}
			t.Logf("%d entries checked", checked)
		})
	}
}
