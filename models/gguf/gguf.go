// Package gguf reads and writes GGUF version 3, the file format of llama.cpp and Ollama: a little-endian header
// ("GGUF", version, tensor count, metadata count), typed metadata key/values (scalars, strings and arrays of
// them), a tensor table (name, dimensions innermost first, ggml type, offset) and the tensor data, each tensor
// aligned to general.alignment (32 unless set). It also holds the ggml block layouts it can produce and read
// bit for bit (F32, F16, BF16, Q8_0, Q4_0).
//
// Shapes in this package are row-major like safetensors' ([out, in] for a linear weight); GGUF stores them the
// other way round (ne[0] = in), and the reader and writer reverse them.
package gguf

import (
	"fmt"
)

// Magic opens every GGUF file; Version is the version this package writes (it reads 2 and 3).
const (
	Magic            = "GGUF"
	Version          = 3
	DefaultAlignment = 32
	// AlignmentKey sets the data alignment when present (a uint32 power of two).
	AlignmentKey = "general.alignment"
)

// ValueType is the type tag of a metadata value.
type ValueType uint32

// Metadata value types, as gguf.h numbers them.
const (
	TypeUint8 ValueType = iota
	TypeInt8
	TypeUint16
	TypeInt16
	TypeUint32
	TypeInt32
	TypeFloat32
	TypeBool
	TypeString
	TypeArray
	TypeUint64
	TypeInt64
	TypeFloat64
)

var valueTypeNames = [...]string{"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool",
	"string", "array", "uint64", "int64", "float64"}

func (t ValueType) String() string {
	if int(t) < len(valueTypeNames) {
		return valueTypeNames[t]
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// KV is one metadata entry. Value's Go type gives its GGUF type: uint8, int8, uint16, int16, uint32, int32,
// float32, bool, string, uint64, int64, float64, a slice of one of those (an array), or []any for an array of
// arrays (as the reader returns nested arrays).
type KV struct {
	Key   string
	Value any
}

// Type is a ggml tensor type.
type Type uint32

// ggml tensor types, as ggml.h numbers them.
const (
	F32    Type = 0
	F16    Type = 1
	Q4_0   Type = 2
	Q4_1   Type = 3
	Q5_0   Type = 6
	Q5_1   Type = 7
	Q8_0   Type = 8
	Q8_1   Type = 9
	Q2_K   Type = 10
	Q3_K   Type = 11
	Q4_K   Type = 12
	Q5_K   Type = 13
	Q6_K   Type = 14
	Q8_K   Type = 15
	IQ4_NL Type = 20
	I8     Type = 24
	I16    Type = 25
	I32    Type = 26
	I64    Type = 27
	F64    Type = 28
	BF16   Type = 30
)

type typeInfo struct {
	name        string
	block, size int // elements per block, bytes per block
}

// types are the ggml types whose block layout this package knows (enough to size a tensor); Encode and Decode
// handle F32, F16, BF16, Q8_0 and Q4_0.
var types = map[Type]typeInfo{
	F32: {"F32", 1, 4}, F16: {"F16", 1, 2}, BF16: {"BF16", 1, 2}, F64: {"F64", 1, 8},
	I8: {"I8", 1, 1}, I16: {"I16", 1, 2}, I32: {"I32", 1, 4}, I64: {"I64", 1, 8},
	Q4_0: {"Q4_0", 32, 18}, Q4_1: {"Q4_1", 32, 20}, Q5_0: {"Q5_0", 32, 22}, Q5_1: {"Q5_1", 32, 24},
	Q8_0: {"Q8_0", 32, 34}, Q8_1: {"Q8_1", 32, 36}, IQ4_NL: {"IQ4_NL", 32, 18},
	Q2_K: {"Q2_K", 256, 84}, Q3_K: {"Q3_K", 256, 110}, Q4_K: {"Q4_K", 256, 144}, Q5_K: {"Q5_K", 256, 176},
	Q6_K: {"Q6_K", 256, 210}, Q8_K: {"Q8_K", 256, 292},
}

func (t Type) String() string {
	if ti, ok := types[t]; ok {
		return ti.name
	}
	return fmt.Sprintf("ggml type %d", uint32(t))
}

// ParseType maps a lower- or upper-case type name ("q8_0", "BF16") to its Type.
func ParseType(name string) (Type, bool) {
	for t, ti := range types {
		if equalFold(ti.name, name) {
			return t, true
		}
	}
	return 0, false
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		x, y := a[i], b[i]
		if 'a' <= x && x <= 'z' {
			x -= 'a' - 'A'
		}
		if 'a' <= y && y <= 'z' {
			y -= 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// BlockSize is the number of elements per block (1 for plain types); 0 for a type this package does not know.
func (t Type) BlockSize() int { return types[t].block }

// Known reports whether the block layout of t is known (so its tensors can be sized).
func (t Type) Known() bool { _, ok := types[t]; return ok }

// RowBytes is the byte size of n elements of type t; an error when n is not a whole number of blocks.
func (t Type) RowBytes(n int) (int, error) {
	ti, ok := types[t]
	if !ok {
		return 0, fmt.Errorf("%s: unknown block layout", t)
	}
	if n%ti.block != 0 {
		return 0, fmt.Errorf("%s: %d elements is not a multiple of the block size %d", t, n, ti.block)
	}
	return n / ti.block * ti.size, nil
}

// TensorInfo is one entry of the tensor table. Shape is row-major (outermost first); Offset is relative to the
// start of the data section.
type TensorInfo struct {
	Name   string
	Type   Type
	Shape  []int
	Offset uint64
}

// Elems is the number of elements.
func (t TensorInfo) Elems() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Bytes is the byte size of the tensor's data. Rows (the innermost dimension) must be whole blocks.
func (t TensorInfo) Bytes() (int, error) {
	inner := 1
	if len(t.Shape) > 0 {
		inner = t.Shape[len(t.Shape)-1]
	}
	row, err := t.Type.RowBytes(inner)
	if err != nil {
		return 0, fmt.Errorf("tensor %s: %w", t.Name, err)
	}
	if inner == 0 {
		return 0, nil
	}
	return row * (t.Elems() / inner), nil
}

func align(n, a uint64) uint64 { return (n + a - 1) / a * a }
