package gguf

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"

	"github.com/lorakit/lorakit/internal/mmap"
)

// File is an opened GGUF file: its metadata and tensor table, with the data memory-mapped until Close.
type File struct {
	Path      string
	Version   uint32
	KV        []KV
	Tensors   []TensorInfo
	Alignment uint64
	// DataOffset is where the data section starts in the file.
	DataOffset uint64

	kv      map[string]int
	tensor  map[string]int
	data    []byte // the data section
	release func() error
}

// Open maps path and parses its header. Every count, length and offset is checked against the file's size, so a
// truncated or hostile file is an error that names the field, never a huge allocation.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	buf, release, err := mmap.File(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("gguf: map %s: %w", path, err)
	}
	g, err := Parse(buf)
	if err != nil {
		release()
		return nil, fmt.Errorf("gguf: %s: %w", path, err)
	}
	g.Path, g.release = path, release
	return g, nil
}

// Parse reads a whole GGUF file image; the File views buf.
func Parse(buf []byte) (*File, error) {
	r := &reader{buf: buf}
	if len(buf) < 4 || string(buf[:4]) != Magic {
		return nil, fmt.Errorf("not a GGUF file (magic %q)", buf[:min(4, len(buf))])
	}
	r.off = 4
	g := &File{Version: r.u32(), kv: map[string]int{}, tensor: map[string]int{}}
	if r.err == nil && g.Version != 2 && g.Version != 3 {
		return nil, fmt.Errorf("GGUF version %d is not supported (2 or 3)", g.Version)
	}
	nt, nkv := r.u64(), r.u64()
	if r.err != nil {
		return nil, fmt.Errorf("header: %w", r.err)
	}
	// Each entry takes at least 8+4 bytes (a key and a type), each tensor at least 8+4+4+8: bound the counts by
	// what the file could hold before allocating.
	if nkv > uint64(len(buf))/12 || nt > uint64(len(buf))/24 {
		return nil, fmt.Errorf("header: %d tensors and %d metadata entries cannot fit in %d bytes", nt, nkv, len(buf))
	}
	if err := g.readKV(r, nkv); err != nil {
		return nil, err
	}
	if err := g.readTensorTable(r, nt); err != nil {
		return nil, err
	}
	if err := g.checkData(buf, uint64(r.off)); err != nil {
		return nil, err
	}
	return g, nil
}

// readKV reads the metadata entries and the alignment they set.
func (g *File) readKV(r *reader, n uint64) error {
	g.KV = make([]KV, 0, n)
	for i := range n {
		key := r.str()
		t := ValueType(r.u32())
		v := r.value(t, 0)
		if r.err != nil {
			return fmt.Errorf("metadata entry %d (%q): %w", i, key, r.err)
		}
		if _, dup := g.kv[key]; dup {
			return fmt.Errorf("metadata key %q appears twice", key)
		}
		g.kv[key] = len(g.KV)
		g.KV = append(g.KV, KV{Key: key, Value: v})
	}
	g.Alignment = DefaultAlignment
	if v, ok := g.Get(AlignmentKey); ok {
		a, ok := v.(uint32)
		if !ok || a == 0 || a&(a-1) != 0 {
			return fmt.Errorf("%s must be a uint32 power of two, got %T %v", AlignmentKey, v, v)
		}
		g.Alignment = uint64(a)
	}
	return nil
}

// readTensorTable reads the tensor infos; dimensions are bounded so that element counts cannot overflow.
func (g *File) readTensorTable(r *reader, n uint64) error {
	g.Tensors = make([]TensorInfo, 0, n)
	for i := range n {
		t := TensorInfo{Name: r.str()}
		nd := r.u32()
		if r.err == nil && nd > 8 {
			return fmt.Errorf("tensor %d (%s): %d dimensions (at most 8)", i, t.Name, nd)
		}
		t.Shape = make([]int, nd)
		elems := 1
		for d := range nd {
			n := r.u64()
			if n > 1<<40 || n != 0 && elems > (1<<48)/int(n) {
				return fmt.Errorf("tensor %s: dimension %d is out of range", t.Name, n)
			}
			t.Shape[nd-1-d] = int(n)
			elems *= int(n)
		}
		t.Type = Type(r.u32())
		t.Offset = r.u64()
		if r.err != nil {
			return fmt.Errorf("tensor table entry %d: %w", i, r.err)
		}
		if _, dup := g.tensor[t.Name]; dup {
			return fmt.Errorf("tensor %s appears twice", t.Name)
		}
		g.tensor[t.Name] = len(g.Tensors)
		g.Tensors = append(g.Tensors, t)
	}
	return nil
}

// checkData places the data section after the header (end) and checks every tensor of a known type lies in it.
func (g *File) checkData(buf []byte, end uint64) error {
	g.DataOffset = align(end, g.Alignment)
	if g.DataOffset > uint64(len(buf)) {
		if len(g.Tensors) > 0 {
			return fmt.Errorf("data section starts at %d, past the end of the file (%d bytes; truncated?)", g.DataOffset, len(buf))
		}
		g.DataOffset = uint64(len(buf))
	}
	g.data = buf[g.DataOffset:]
	for _, t := range g.Tensors {
		if t.Offset%g.Alignment != 0 {
			return fmt.Errorf("tensor %s: offset %d is not a multiple of the alignment %d", t.Name, t.Offset, g.Alignment)
		}
		if !t.Type.Known() {
			continue // sized only when read; Bytes names the type
		}
		n, err := t.Bytes()
		if err != nil {
			return err
		}
		if t.Offset+uint64(n) > uint64(len(g.data)) {
			return fmt.Errorf("tensor %s: %d bytes at offset %d run past the data section (%d bytes; truncated?)", t.Name, n, t.Offset, len(g.data))
		}
	}
	return nil
}

// Close unmaps the file; tensor bytes returned earlier must not be used afterwards.
func (g *File) Close() error {
	if g.release == nil {
		return nil
	}
	err := g.release()
	g.release, g.data = nil, nil
	return err
}

// Get returns the value of a metadata key.
func (g *File) Get(key string) (any, bool) {
	i, ok := g.kv[key]
	if !ok {
		return nil, false
	}
	return g.KV[i].Value, true
}

// String returns a string metadata value; ok is false when the key is absent, an error when it has another type.
func (g *File) String(key string) (string, bool, error) {
	v, ok := g.Get(key)
	if !ok {
		return "", false, nil
	}
	s, isStr := v.(string)
	if !isStr {
		return "", true, fmt.Errorf("metadata %s: want a string, got %T", key, v)
	}
	return s, true, nil
}

// Int returns an integer metadata value of any integer type.
func (g *File) Int(key string) (int64, bool, error) {
	v, ok := g.Get(key)
	if !ok {
		return 0, false, nil
	}
	switch x := v.(type) {
	case uint8:
		return int64(x), true, nil
	case int8:
		return int64(x), true, nil
	case uint16:
		return int64(x), true, nil
	case int16:
		return int64(x), true, nil
	case uint32:
		return int64(x), true, nil
	case int32:
		return int64(x), true, nil
	case uint64:
		if x > math.MaxInt64 {
			return 0, true, fmt.Errorf("metadata %s: %d is out of range", key, x)
		}
		return int64(x), true, nil
	case int64:
		return x, true, nil
	}
	return 0, true, fmt.Errorf("metadata %s: want an integer, got %T", key, v)
}

// Float returns a float32 or float64 metadata value.
func (g *File) Float(key string) (float64, bool, error) {
	v, ok := g.Get(key)
	if !ok {
		return 0, false, nil
	}
	switch x := v.(type) {
	case float32:
		return float64(x), true, nil
	case float64:
		return x, true, nil
	}
	return 0, true, fmt.Errorf("metadata %s: want a float, got %T", key, v)
}

// Bool returns a bool metadata value.
func (g *File) Bool(key string) (bool, bool, error) {
	v, ok := g.Get(key)
	if !ok {
		return false, false, nil
	}
	b, isBool := v.(bool)
	if !isBool {
		return false, true, fmt.Errorf("metadata %s: want a bool, got %T", key, v)
	}
	return b, true, nil
}

// Tensor returns the table entry of a tensor.
func (g *File) Tensor(name string) (TensorInfo, bool) {
	i, ok := g.tensor[name]
	if !ok {
		return TensorInfo{}, false
	}
	return g.Tensors[i], true
}

// TensorBytes returns a view of a tensor's stored bytes.
func (g *File) TensorBytes(name string) ([]byte, TensorInfo, error) {
	t, ok := g.Tensor(name)
	if !ok {
		return nil, t, fmt.Errorf("gguf: %s: tensor %s is missing", g.Path, name)
	}
	n, err := t.Bytes()
	if err != nil {
		return nil, t, fmt.Errorf("gguf: %s: %w", g.Path, err)
	}
	if t.Offset+uint64(n) > uint64(len(g.data)) {
		return nil, t, fmt.Errorf("gguf: %s: tensor %s: the file is closed", g.Path, name)
	}
	return g.data[t.Offset : t.Offset+uint64(n)], t, nil
}

// Evict drops the resident pages of a tensor whose bytes the caller has copied or re-packed (they are read
// again from the file if TensorBytes is asked for later).
func (g *File) Evict(name string) {
	if raw, _, err := g.TensorBytes(name); err == nil {
		mmap.Evict(raw)
	}
}

// EvictAll drops every resident page of the mapping (see mmap.Evict): for a caller that copied what it keeps.
func (g *File) EvictAll() { mmap.Evict(g.data) }

// Float32s decodes a tensor of type F32, F16, BF16, Q8_0 or Q4_0 into a new f32 slice.
func (g *File) Float32s(name string) ([]float32, TensorInfo, error) {
	raw, t, err := g.TensorBytes(name)
	if err != nil {
		return nil, t, err
	}
	out := make([]float32, t.Elems())
	if err := Decode(t.Type, raw, out); err != nil {
		return nil, t, fmt.Errorf("gguf: %s: tensor %s: %w", g.Path, name, err)
	}
	return out, t, nil
}

type reader struct {
	buf []byte
	off int
	err error
}

func (r *reader) take(n uint64) []byte {
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.buf)-r.off) {
		r.err = errShort
		return nil
	}
	b := r.buf[r.off : r.off+int(n)]
	r.off += int(n)
	return b
}

func (r *reader) u8() uint8 {
	if b := r.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if b := r.take(2); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if b := r.take(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if b := r.take(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

func (r *reader) str() string { return string(r.take(r.u64())) }

// value reads one value of type t; arrays nest at most a few levels.
func (r *reader) value(t ValueType, depth int) any {
	switch t {
	case TypeUint8:
		return r.u8()
	case TypeInt8:
		return int8(r.u8())
	case TypeUint16:
		return r.u16()
	case TypeInt16:
		return int16(r.u16())
	case TypeUint32:
		return r.u32()
	case TypeInt32:
		return int32(r.u32())
	case TypeFloat32:
		return math.Float32frombits(r.u32())
	case TypeBool:
		b := r.u8()
		if r.err == nil && b > 1 {
			r.err = fmt.Errorf("bool value %d", b)
		}
		return b == 1
	case TypeString:
		return r.str()
	case TypeUint64:
		return r.u64()
	case TypeInt64:
		return int64(r.u64())
	case TypeFloat64:
		return math.Float64frombits(r.u64())
	case TypeArray:
		if depth >= 4 {
			r.err = fmt.Errorf("arrays nested deeper than 4")
			return nil
		}
		return r.array(depth)
	}
	if r.err == nil {
		r.err = fmt.Errorf("unknown value type %d", uint32(t))
	}
	return nil
}

func (r *reader) array(depth int) any {
	et := ValueType(r.u32())
	n := r.u64()
	if r.err != nil {
		return nil
	}
	// Every element takes at least one byte (strings and arrays at least 8): bound n before allocating.
	if n > uint64(len(r.buf)-r.off) {
		r.err = fmt.Errorf("array of %d %s elements cannot fit in the rest of the file", n, et)
		return nil
	}
	switch et {
	case TypeUint8:
		return readSlice(r, n, func() uint8 { return r.u8() })
	case TypeInt8:
		return readSlice(r, n, func() int8 { return int8(r.u8()) })
	case TypeUint16:
		return readSlice(r, n, func() uint16 { return r.u16() })
	case TypeInt16:
		return readSlice(r, n, func() int16 { return int16(r.u16()) })
	case TypeUint32:
		return readSlice(r, n, func() uint32 { return r.u32() })
	case TypeInt32:
		return readSlice(r, n, func() int32 { return int32(r.u32()) })
	case TypeFloat32:
		return readSlice(r, n, func() float32 { return math.Float32frombits(r.u32()) })
	case TypeBool:
		return readSlice(r, n, func() bool { return r.value(TypeBool, depth).(bool) })
	case TypeString:
		return readSlice(r, n, r.str)
	case TypeUint64:
		return readSlice(r, n, func() uint64 { return r.u64() })
	case TypeInt64:
		return readSlice(r, n, func() int64 { return int64(r.u64()) })
	case TypeFloat64:
		return readSlice(r, n, func() float64 { return math.Float64frombits(r.u64()) })
	case TypeArray:
		return readSlice(r, n, func() any { return r.value(TypeArray, depth+1) })
	}
	r.err = fmt.Errorf("array of unknown value type %d", uint32(et))
	return nil
}

func readSlice[T any](r *reader, n uint64, next func() T) []T {
	out := make([]T, 0, min(n, 1<<20))
	for range n {
		v := next()
		if r.err != nil {
			return nil
		}
		out = append(out, v)
	}
	return out
}
