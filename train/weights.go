package train

import (
	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/nn"
	"github.com/lorakit/lorakit/models/safetensors"
)

// denseF32 returns the f32 weight of a dense f32 layer without copying.
func denseF32(l BaseLinear) ([]float32, bool) {
	if d, ok := l.(*nn.Dense); ok && d.DType == safetensors.F32 && d.F32 != nil {
		return d.F32, true
	}
	return nil, false
}

// expandWeight writes the [Out, In] f32 weight of l into dst when l's type is known (4-bit weights are
// dequantised over p's threads).
func expandWeight(p *kernels.Pool, l BaseLinear, dst []float32) bool {
	switch d := l.(type) {
	case *nn.Dense:
		for i := 0; i < d.Rows; i++ {
			d.Row(i, dst[i*d.Cols:(i+1)*d.Cols])
		}
		return true
	case *nf4Linear:
		d.q.DequantizeP(p, dst)
		return true
	case *nn.Quantized:
		d.Q.DequantizeP(p, dst)
		return true
	}
	return false
}
