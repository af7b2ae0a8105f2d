package safetensors

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/x448/float16"
)

// DType is a safetensors element type as spelled in the file header.
type DType string

// The element types lorakit reads and writes.
const (
	F64  DType = "F64"
	F32  DType = "F32"
	F16  DType = "F16"
	BF16 DType = "BF16"
	I64  DType = "I64"
	I32  DType = "I32"
	I16  DType = "I16"
	I8   DType = "I8"
	U8   DType = "U8"
	BOOL DType = "BOOL"
)

// Size is the element size in bytes, or 0 for an unknown type.
func (d DType) Size() int {
	switch d {
	case F64, I64:
		return 8
	case F32, I32:
		return 4
	case F16, BF16, I16:
		return 2
	case I8, U8, BOOL:
		return 1
	}
	return 0
}

// IsFloat reports whether d is a floating-point type that Decode converts.
func (d DType) IsFloat() bool { return d == F64 || d == F32 || d == F16 || d == BF16 }

// BF16ToF32 widens a bfloat16 bit pattern exactly.
func BF16ToF32(u uint16) float32 { return math.Float32frombits(uint32(u) << 16) }

// F32ToBF16 rounds to the nearest bfloat16, ties to even; NaN stays a (quiet) NaN.
func F32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 { // NaN: keep the sign, force a quiet mantissa bit
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// F16ToF32 widens an IEEE half-precision bit pattern exactly.
func F16ToF32(u uint16) float32 { return float16.Frombits(u).Float32() }

// F32ToF16 rounds to the nearest half-precision value, ties to even.
func F32ToF16(f float32) uint16 { return float16.Fromfloat32(f).Bits() }

// Decode converts little-endian raw data of type dt into dst; len(dst) must equal the element count.
func Decode(dt DType, raw []byte, dst []float32) error {
	if !dt.IsFloat() {
		return fmt.Errorf("decode: dtype %s is not a float type", dt)
	}
	if len(raw) != len(dst)*dt.Size() {
		return fmt.Errorf("decode %s: %d bytes for %d elements", dt, len(raw), len(dst))
	}
	switch dt {
	case F32:
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
	case BF16:
		for i := range dst {
			dst[i] = BF16ToF32(binary.LittleEndian.Uint16(raw[2*i:]))
		}
	case F16:
		for i := range dst {
			dst[i] = F16ToF32(binary.LittleEndian.Uint16(raw[2*i:]))
		}
	case F64:
		for i := range dst {
			dst[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(raw[8*i:])))
		}
	}
	return nil
}

// Encode converts src to little-endian bytes of type dt, rounding once.
func Encode(dt DType, src []float32) ([]byte, error) {
	out := make([]byte, len(src)*dt.Size())
	switch dt {
	case F32:
		for i, v := range src {
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
		}
	case BF16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(out[2*i:], F32ToBF16(v))
		}
	case F16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(out[2*i:], F32ToF16(v))
		}
	case F64:
		for i, v := range src {
			binary.LittleEndian.PutUint64(out[8*i:], math.Float64bits(float64(v)))
		}
	default:
		return nil, fmt.Errorf("encode: dtype %s is not a float type", dt)
	}
	return out, nil
}
