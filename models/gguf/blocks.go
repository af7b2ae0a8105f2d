package gguf

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/lorakit/lorakit/models/safetensors"
)

// QK is the block size of Q8_0 and Q4_0: 32 values share one f16 scale.
const QK = 32

// Block sizes in bytes: the f16 scale d, then 32 int8 values (Q8_0) or 16 bytes of two 4-bit values (Q4_0).
const (
	Q8_0Bytes = 2 + QK
	Q4_0Bytes = 2 + QK/2
)

// Encode converts src to the stored bytes of type t (F32, F16, BF16, Q8_0 or Q4_0), appended to dst. For the
// block types len(src) must be a multiple of 32; the blocks are what ggml's reference quantizer writes for the
// same input, bit for bit.
func Encode(dst []byte, t Type, src []float32) ([]byte, error) {
	switch t {
	case F32, F16, BF16:
		b, err := safetensors.Encode(floatDType(t), src)
		if err != nil {
			return dst, err
		}
		return append(dst, b...), nil
	case Q8_0, Q4_0:
		if len(src)%QK != 0 {
			return dst, fmt.Errorf("%s: %d values is not a multiple of %d", t, len(src), QK)
		}
		var blk [Q8_0Bytes]byte
		for i := 0; i < len(src); i += QK {
			if t == Q8_0 {
				QuantizeQ8_0Block(blk[:Q8_0Bytes], src[i:i+QK])
				dst = append(dst, blk[:Q8_0Bytes]...)
			} else {
				QuantizeQ4_0Block(blk[:Q4_0Bytes], src[i:i+QK])
				dst = append(dst, blk[:Q4_0Bytes]...)
			}
		}
		return dst, nil
	}
	return dst, fmt.Errorf("encoding to %s is not supported (f32, f16, bf16, q8_0, q4_0)", t)
}

// Decode converts stored bytes of type t into dst (len(dst) elements).
func Decode(t Type, raw []byte, dst []float32) error {
	switch t {
	case F32, F16, BF16:
		return safetensors.Decode(floatDType(t), raw, dst)
	case Q8_0, Q4_0:
		size := Q8_0Bytes
		if t == Q4_0 {
			size = Q4_0Bytes
		}
		if len(dst)%QK != 0 || len(raw) != len(dst)/QK*size {
			return fmt.Errorf("decode %s: %d bytes for %d elements", t, len(raw), len(dst))
		}
		for i := 0; i < len(dst); i += QK {
			b := raw[i/QK*size : (i/QK+1)*size]
			if t == Q8_0 {
				DequantizeQ8_0Block(dst[i:i+QK], b)
			} else {
				DequantizeQ4_0Block(dst[i:i+QK], b)
			}
		}
		return nil
	}
	if t.Known() {
		return fmt.Errorf("%s tensors are not supported (f32, f16, bf16, q8_0 and q4_0 are)", t)
	}
	return fmt.Errorf("%s is not supported (f32, f16, bf16, q8_0 and q4_0 are)", t)
}

func floatDType(t Type) safetensors.DType {
	switch t {
	case F16:
		return safetensors.F16
	case BF16:
		return safetensors.BF16
	}
	return safetensors.F32
}

// QuantizeQ8_0Block writes one Q8_0 block of x (32 values): d = max|x|/127 stored as f16, then each value times
// 1/d rounded half away from zero. The arithmetic is float32 as in ggml's reference (the explicit conversions
// keep the compiler from fusing it).
func QuantizeQ8_0Block(dst []byte, x []float32) {
	var amax float32
	for _, v := range x[:QK] {
		amax = max(amax, abs32(v))
	}
	d := amax / 127
	var id float32
	if d != 0 {
		id = 1 / d
	}
	binary.LittleEndian.PutUint16(dst, safetensors.F32ToF16(d))
	for j, v := range x[:QK] {
		dst[2+j] = byte(int8(math.Round(float64(float32(v * id)))))
	}
}

// DequantizeQ8_0Block expands one Q8_0 block into 32 values.
func DequantizeQ8_0Block(dst []float32, b []byte) {
	d := safetensors.F16ToF32(binary.LittleEndian.Uint16(b))
	for j := range QK {
		dst[j] = float32(int8(b[2+j])) * d
	}
}

// QuantizeQ4_0Block writes one Q4_0 block of x (32 values): the value of largest magnitude m (the first one on
// ties) gives d = m/-8, stored as f16; each value becomes min(15, trunc(x/d + 8.5)), a level in 0..15 that
// stands for (level-8)·d. Byte j holds element j in its low nibble and element j+16 in its high nibble.
func QuantizeQ4_0Block(dst []byte, x []float32) {
	var amax, m float32
	for _, v := range x[:QK] {
		if amax < abs32(v) {
			amax, m = abs32(v), v
		}
	}
	d := m / -8
	var id float32
	if d != 0 {
		id = 1 / d
	}
	binary.LittleEndian.PutUint16(dst, safetensors.F32ToF16(d))
	for j := range QK / 2 {
		lo := min(15, int8(float32(x[j]*id)+8.5))
		hi := min(15, int8(float32(x[j+QK/2]*id)+8.5))
		dst[2+j] = byte(lo) | byte(hi)<<4
	}
}

// DequantizeQ4_0Block expands one Q4_0 block into 32 values.
func DequantizeQ4_0Block(dst []float32, b []byte) {
	d := safetensors.F16ToF32(binary.LittleEndian.Uint16(b))
	for j := range QK / 2 {
		q := b[2+j]
		dst[j] = float32(int(q&15)-8) * d
		dst[j+QK/2] = float32(int(q>>4)-8) * d
	}
}

func abs32(v float32) float32 { return math.Float32frombits(math.Float32bits(v) &^ (1 << 31)) }
