package quant

import (
	"math"

	"github.com/lorakit/lorakit/models/safetensors"
)

// TensorHeaders lists, in ToTensors order, the tensors ToTensors writes for the weight name of shape quantised with
// typ/blockSize/double, without quantising it, so that a folder can be planned (and sharded) before any weight
// is quantised. nestedOffset is the double-quantisation offset the quant_state JSON records (NestedOffset).
func TensorHeaders(name string, shape []int, origDType string, typ Type, blockSize int, double bool, nestedOffset float32) []safetensors.Header {
	n := 1
	for _, d := range shape {
		n *= d
	}
	if typ == Int8 {
		prefix := ModulePrefix(name)
		return []safetensors.Header{
			{Name: name, DType: safetensors.I8, Shape: append([]int(nil), shape...)},
			{Name: prefix + ".SCB", DType: safetensors.F32, Shape: []int{shape[0]}},
			{Name: prefix + ".weight_format", DType: safetensors.U8, Shape: []int{}},
		}
	}
	nb := (n + blockSize - 1) / blockSize
	hs := []safetensors.Header{
		{Name: name, DType: safetensors.U8, Shape: []int{(n + 1) / 2, 1}},
		{Name: name + keyQuantMap, DType: safetensors.F32, Shape: []int{16}},
	}
	q := &Weight{Type: typ, Shape: shape, BlockSize: blockSize}
	if double {
		q.Double, q.NestedBlockSize, q.NestedOffset = true, NestedBlockSize, nestedOffset
		hs = append(hs,
			safetensors.Header{Name: name + keyAbsmax, DType: safetensors.U8, Shape: []int{nb}},
			safetensors.Header{Name: name + keyNestedAbsmax, DType: safetensors.F32, Shape: []int{(nb + NestedBlockSize - 1) / NestedBlockSize}},
			safetensors.Header{Name: name + keyNestedQuantMap, DType: safetensors.F32, Shape: []int{len(dynamicMap)}})
	} else {
		hs = append(hs, safetensors.Header{Name: name + keyAbsmax, DType: safetensors.F32, Shape: []int{nb}})
	}
	js := quantStateJSON(q, origDType)
	return append(hs, safetensors.Header{Name: name + keyQuantState + string(typ), DType: safetensors.U8, Shape: []int{len(js)}})
}

// NestedOffsetOf is the offset Quantize4's double quantisation subtracts from the block absmax values of w: their
// mean, computed exactly as doubleQuantize does.
func NestedOffsetOf(w []float32, blockSize int) float32 {
	nb := (len(w) + blockSize - 1) / blockSize
	var sum float64
	for b := 0; b < nb; b++ {
		var amax float32
		for _, v := range w[b*blockSize : min((b+1)*blockSize, len(w))] {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		sum += float64(amax)
	}
	return float32(sum / float64(nb))
}
