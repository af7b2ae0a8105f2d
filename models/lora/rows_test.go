package lora

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/lorakit/lorakit/models/kernels"
)

// TestAdapterApplyRows checks the grouped (llama.Delta; models/llama asserts that Adapter and Packed implement it) path against the one-row naive product, with and
// without a pool, and that Apply does not allocate.
func TestAdapterApplyRows(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	a := testAdapter(t, rng)
	m := "model.layers.1.mlp.down_proj"
	p := a.Modules[m]
	pool := kernels.NewPool(2)
	for _, rows := range []int{1, 2, 7, 40} {
		for _, kp := range []*kernels.Pool{nil, pool} {
			x := randVec(rng, rows*p.In)
			y := randVec(rng, rows*p.Out)
			want := append([]float32(nil), y...)
			for r := 0; r < rows; r++ {
				naive(p, want[r*p.Out:(r+1)*p.Out], x[r*p.In:(r+1)*p.In])
			}
			a.ApplyRows(kp, m, y, x, rows, p.In, p.Out)
			a.ApplyRows(kp, "model.layers.9.mlp.up_proj", y, x, rows, p.In, p.Out) // untouched: no-op
			for i := range want {
				if math.Abs(float64(y[i]-want[i])) > 1e-4*(1+math.Abs(float64(want[i]))) {
					t.Fatalf("rows %d pool %v: y[%d] = %v, want %v", rows, kp != nil, i, y[i], want[i])
				}
			}
			if n := testing.AllocsPerRun(20, func() { p.Apply(nil, y, x, p.In, p.Out) }); n > 0 {
				t.Errorf("rows %d: Apply allocates %.0f times", rows, n)
			}
		}
	}
}
