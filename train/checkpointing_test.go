package train

import (
	"math"
	"testing"

	"github.com/lorakit/lorakit/models/testmodel"
)

// TestCheckpointingSameGradients: with gradient checkpointing the loss and every parameter's gradient equal those
// of the stored-activation graph (to float32 noise), for LoRA (with dropout: the recomputed masks are the same),
// DoRA and full fine-tuning.
func TestCheckpointingSameGradients(t *testing.T) {
	for _, c := range []struct {
		method Method
		dora   bool
	}{{LoRA, false}, {LoRA, true}, {Full, false}} {
		method := c.method
		name := string(method)
		if c.dora {
			name = "dora"
		}
		t.Run(name, func(t *testing.T) {
			o := testmodel.Default()
			o.ModelType = "qwen3"
			o.HeadDim = 8
			base := loadTestModel(t, o)
			batch := []Sample{
				{IDs: []int{5, 70, 80, 90, 100, 3}, Mask: []bool{false, true, true, true, true, false}},
				{IDs: []int{7, 8, 9, 10}, Mask: []bool{true, false, true, false}},
			}
			denom := float32(batch[0].Targets() + batch[1].Targets())
			grads := func(ckpt bool) (float64, [][]float32) {
				net, err := NewNet(base, method, LoRAOptions{Targets: []string{"all-linear"}, Rank: 2, Alpha: 4, Dropout: 0.1, DoRA: c.dora, Seed: 3})
				if err != nil {
					t.Fatal(err)
				}
				net.Checkpointing = ckpt
				for i, p := range net.Params { // B non-zero so that every path carries gradient
					v := vals(p)
					for j := range v {
						if v[j] == 0 {
							v[j] = float32(math.Sin(float64(i*131+j))) * 0.05
						}
					}
				}
				loss, _, err := net.Accumulate(batch, denom, 7)
				if err != nil {
					t.Fatal(err)
				}
				var gs [][]float32
				for i, p := range net.Params {
					if !p.HasGrad() {
						t.Fatalf("checkpointing %v: %s has no gradient", ckpt, net.Names[i])
					}
					gs = append(gs, append([]float32(nil), vals(p.Grad())...))
				}
				return loss, gs
			}
			l0, g0 := grads(false)
			l1, g1 := grads(true)
			if math.Abs(l0-l1) > 1e-6*math.Abs(l0) {
				t.Fatalf("loss %v without checkpointing, %v with", l0, l1)
			}
			worst := 0.0
			for i := range g0 {
				for j := range g0[i] {
					d := math.Abs(float64(g0[i][j] - g1[i][j]))
					worst = math.Max(worst, d)
					if d > 1e-6+1e-5*math.Abs(float64(g0[i][j])) {
						t.Fatalf("param %d[%d]: gradient %g without checkpointing, %g with", i, j, g0[i][j], g1[i][j])
					}
				}
			}
			t.Logf("loss %.6f; %d parameters, largest gradient difference %g", l0, len(g0), worst)
		})
	}
}
