package gguf

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/lorakit/lorakit/internal/atomicfile"
	"github.com/lorakit/lorakit/internal/iocount"
)

// Write creates the GGUF file path atomically: the header, kvs, the tensor table of tensors (their Offset fields
// are computed here) and then the data, tensor by tensor, each written by fill(i, w) and padded to the
// alignment. fill must write exactly the tensor's byte size; only one tensor needs to be in memory at a time.
func Write(path string, kvs []KV, tensors []TensorInfo, fill func(i int, w io.Writer) error) error {
	return atomicfile.Write(path, func(w *bufio.Writer) error { return WriteTo(w, kvs, tensors, fill) })
}

// WriteTo writes a GGUF stream to w, as Write does.
func WriteTo(w io.Writer, kvs []KV, tensors []TensorInfo, fill func(i int, w io.Writer) error) error {
	alignment, err := alignmentOf(kvs)
	if err != nil {
		return err
	}
	sizes, err := Layout(tensors, alignment)
	if err != nil {
		return err
	}
	ew := &errWriter{w: w}
	ew.bytes([]byte(Magic))
	ew.u32(Version)
	ew.u64(uint64(len(tensors)))
	ew.u64(uint64(len(kvs)))
	seen := make(map[string]bool, len(kvs))
	for _, kv := range kvs {
		if seen[kv.Key] {
			return fmt.Errorf("gguf: metadata key %q appears twice", kv.Key)
		}
		seen[kv.Key] = true
		ew.str(kv.Key)
		if err := ew.value(kv.Value, true); err != nil {
			return fmt.Errorf("gguf: metadata %s: %w", kv.Key, err)
		}
	}
	for _, t := range tensors {
		ew.str(t.Name)
		ew.u32(uint32(len(t.Shape)))
		for i := len(t.Shape) - 1; i >= 0; i-- {
			ew.u64(uint64(t.Shape[i]))
		}
		ew.u32(uint32(t.Type))
		ew.u64(t.Offset)
	}
	ew.pad(alignment)
	if ew.err != nil {
		return ew.err
	}
	start := ew.n
	for i, t := range tensors {
		cw := &iocount.Writer{W: ew}
		if err := fill(i, cw); err != nil {
			return fmt.Errorf("gguf: tensor %s: %w", t.Name, err)
		}
		if ew.err != nil {
			return ew.err
		}
		if cw.N != int64(sizes[i]) {
			return fmt.Errorf("gguf: tensor %s: wrote %d bytes, want %d", t.Name, cw.N, sizes[i])
		}
		if i+1 < len(tensors) {
			ew.zeros(int(start + int64(tensors[i+1].Offset) - ew.n))
		}
	}
	if len(tensors) > 0 { // the data section ends aligned, as ggml writes it
		ew.pad(alignment)
	}
	return ew.err
}

// Layout fills the Offset of every tensor for the given alignment and returns their byte sizes.
func Layout(tensors []TensorInfo, alignment uint64) ([]int, error) {
	sizes := make([]int, len(tensors))
	names := make(map[string]bool, len(tensors))
	var off uint64
	for i := range tensors {
		t := &tensors[i]
		if names[t.Name] {
			return nil, fmt.Errorf("gguf: tensor %s appears twice", t.Name)
		}
		names[t.Name] = true
		for _, d := range t.Shape {
			if d < 0 {
				return nil, fmt.Errorf("gguf: tensor %s: negative dimension in %v", t.Name, t.Shape)
			}
		}
		n, err := t.Bytes()
		if err != nil {
			return nil, fmt.Errorf("gguf: %w", err)
		}
		t.Offset, sizes[i] = off, n
		off = align(off+uint64(n), alignment)
	}
	return sizes, nil
}

func alignmentOf(kvs []KV) (uint64, error) {
	for _, kv := range kvs {
		if kv.Key != AlignmentKey {
			continue
		}
		a, ok := kv.Value.(uint32)
		if !ok || a == 0 || a&(a-1) != 0 {
			return 0, fmt.Errorf("gguf: %s must be a uint32 power of two, got %T %v", AlignmentKey, kv.Value, kv.Value)
		}
		return uint64(a), nil
	}
	return DefaultAlignment, nil
}

type errWriter struct {
	w   io.Writer
	n   int64
	err error
	buf [8]byte
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.n += int64(n)
	e.err = err
	return n, err
}

func (e *errWriter) bytes(p []byte) { e.Write(p) }
func (e *errWriter) u8(v uint8)     { e.buf[0] = v; e.Write(e.buf[:1]) }
func (e *errWriter) u16(v uint16)   { binary.LittleEndian.PutUint16(e.buf[:], v); e.Write(e.buf[:2]) }
func (e *errWriter) u32(v uint32)   { binary.LittleEndian.PutUint32(e.buf[:], v); e.Write(e.buf[:4]) }
func (e *errWriter) u64(v uint64)   { binary.LittleEndian.PutUint64(e.buf[:], v); e.Write(e.buf[:8]) }
func (e *errWriter) str(s string)   { e.u64(uint64(len(s))); e.Write([]byte(s)) }

func (e *errWriter) zeros(n int) {
	var z [64]byte
	for n > 0 {
		k := min(n, len(z))
		e.Write(z[:k])
		n -= k
	}
}

func (e *errWriter) pad(a uint64) { e.zeros(int(align(uint64(e.n), a) - uint64(e.n))) }

// value writes v's type tag (when tagged) and its payload.
func (e *errWriter) value(v any, tagged bool) error {
	t, err := typeOf(v)
	if err != nil {
		return err
	}
	if tagged {
		e.u32(uint32(t))
	}
	switch x := v.(type) {
	case uint8:
		e.u8(x)
	case int8:
		e.u8(uint8(x))
	case uint16:
		e.u16(x)
	case int16:
		e.u16(uint16(x))
	case uint32:
		e.u32(x)
	case int32:
		e.u32(uint32(x))
	case float32:
		e.u32(math.Float32bits(x))
	case bool:
		if x {
			e.u8(1)
		} else {
			e.u8(0)
		}
	case string:
		e.str(x)
	case uint64:
		e.u64(x)
	case int64:
		e.u64(uint64(x))
	case float64:
		e.u64(math.Float64bits(x))
	default:
		return e.array(v)
	}
	return nil
}

func (e *errWriter) array(v any) error {
	switch x := v.(type) {
	case []uint8:
		return writeArray(e, TypeUint8, x)
	case []int8:
		return writeArray(e, TypeInt8, x)
	case []uint16:
		return writeArray(e, TypeUint16, x)
	case []int16:
		return writeArray(e, TypeInt16, x)
	case []uint32:
		return writeArray(e, TypeUint32, x)
	case []int32:
		return writeArray(e, TypeInt32, x)
	case []float32:
		return writeArray(e, TypeFloat32, x)
	case []bool:
		return writeArray(e, TypeBool, x)
	case []string:
		return writeArray(e, TypeString, x)
	case []uint64:
		return writeArray(e, TypeUint64, x)
	case []int64:
		return writeArray(e, TypeInt64, x)
	case []float64:
		return writeArray(e, TypeFloat64, x)
	case []any:
		return writeArray(e, TypeArray, x)
	}
	return fmt.Errorf("value of Go type %T has no GGUF type", v)
}

func writeArray[T any](e *errWriter, elem ValueType, xs []T) error {
	e.u32(uint32(elem))
	e.u64(uint64(len(xs)))
	for i, x := range xs {
		if elem == TypeArray {
			if t, err := typeOf(x); err != nil || t != TypeArray {
				return fmt.Errorf("element %d of an array of arrays is %T", i, x)
			}
			if err := e.value(x, false); err != nil { // a nested array carries its own element type and count
				return err
			}
			continue
		}
		if err := e.value(x, false); err != nil {
			return err
		}
	}
	return nil
}

// typeOf maps a Go value to its GGUF value type.
func typeOf(v any) (ValueType, error) {
	switch v.(type) {
	case uint8:
		return TypeUint8, nil
	case int8:
		return TypeInt8, nil
	case uint16:
		return TypeUint16, nil
	case int16:
		return TypeInt16, nil
	case uint32:
		return TypeUint32, nil
	case int32:
		return TypeInt32, nil
	case float32:
		return TypeFloat32, nil
	case bool:
		return TypeBool, nil
	case string:
		return TypeString, nil
	case uint64:
		return TypeUint64, nil
	case int64:
		return TypeInt64, nil
	case float64:
		return TypeFloat64, nil
	case []uint8, []int8, []uint16, []int16, []uint32, []int32, []float32, []bool, []string, []uint64, []int64,
		[]float64, []any:
		return TypeArray, nil
	}
	return 0, fmt.Errorf("value of Go type %T has no GGUF type", v)
}

var errShort = errors.New("unexpected end of file (truncated?)")
