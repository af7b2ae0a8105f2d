// Package safetensors reads and writes the safetensors format: an 8-byte little-endian header length, a JSON
// header {name: {dtype, shape, data_offsets}} with optional "__metadata__", then the raw little-endian data.
// Files are memory-mapped and every offset is validated before use.
package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"sort"

	"github.com/lorakit/lorakit/internal/mmap"
)

// maxHeader bounds the JSON header so a corrupt length cannot make us allocate gigabytes.
const maxHeader = 100 << 20

// TensorInfo describes one tensor; Begin and End are byte offsets into the data section.
type TensorInfo struct {
	Name       string
	DType      DType
	Shape      []int
	Begin, End int64
}

// Elems is the number of elements, the product of the shape.
func (t TensorInfo) Elems() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// File is one opened, memory-mapped safetensors file.
type File struct {
	Path     string
	Metadata map[string]string
	tensors  map[string]TensorInfo
	names    []string
	data     []byte // the data section
	release  func() error
}

// Open maps path and validates its header: known dtypes, non-negative shapes, offsets inside the file that match
// each shape's byte size and do not overlap.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open safetensors: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("open safetensors %s: %w", path, err)
	}
	buf, release, err := mmap.File(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("map %s: %w", path, err)
	}
	sf, err := parse(buf)
	if err != nil {
		release()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	sf.Path, sf.release = path, release
	return sf, nil
}

// parse validates the header of a whole file image and returns a File that views buf.
func parse(buf []byte) (*File, error) {
	if len(buf) < 8 {
		return nil, fmt.Errorf("file is %d bytes, shorter than the 8-byte header length (truncated?)", len(buf))
	}
	n := binary.LittleEndian.Uint64(buf)
	if n > maxHeader || n > uint64(len(buf)-8) {
		return nil, fmt.Errorf("header length %d exceeds the file (%d bytes) or the %d-byte limit (truncated?)", n, len(buf), maxHeader)
	}
	header := buf[8 : 8+n]
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(header))
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("header json: %w", err)
	}
	sf := &File{tensors: make(map[string]TensorInfo, len(raw)), data: buf[8+n:]}
	for name, msg := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(msg, &sf.Metadata); err != nil {
				return nil, fmt.Errorf("header __metadata__: %w", err)
			}
			continue
		}
		ti, err := parseEntry(name, msg, int64(len(sf.data)))
		if err != nil {
			return nil, err
		}
		sf.tensors[name] = ti
		sf.names = append(sf.names, name)
	}
	sort.Strings(sf.names)
	if err := checkOverlap(sf.tensors); err != nil {
		return nil, err
	}
	return sf, nil
}

func parseEntry(name string, msg json.RawMessage, dataLen int64) (TensorInfo, error) {
	var e struct {
		DType   DType     `json:"dtype"`
		Shape   []int64   `json:"shape"`
		Offsets [2]uint64 `json:"data_offsets"`
	}
	if err := json.Unmarshal(msg, &e); err != nil {
		return TensorInfo{}, fmt.Errorf("tensor %q: header entry: %w", name, err)
	}
	size := e.DType.Size()
	if size == 0 {
		return TensorInfo{}, fmt.Errorf("tensor %q: unsupported dtype %q", name, e.DType)
	}
	ti := TensorInfo{Name: name, DType: e.DType, Shape: make([]int, len(e.Shape))}
	bytes := uint64(size)
	for i, d := range e.Shape {
		if d < 0 || d > math.MaxInt32 {
			return TensorInfo{}, fmt.Errorf("tensor %q: invalid shape %v", name, e.Shape)
		}
		ti.Shape[i] = int(d)
		if d != 0 && bytes > math.MaxInt64/uint64(d) {
			return TensorInfo{}, fmt.Errorf("tensor %q: shape %v overflows", name, e.Shape)
		}
		bytes *= uint64(d)
	}
	b, end := e.Offsets[0], e.Offsets[1]
	if b > end || end > uint64(dataLen) {
		return TensorInfo{}, fmt.Errorf("tensor %q: data_offsets [%d, %d] outside the %d-byte data section (truncated file?)", name, b, end, dataLen)
	}
	if end-b != bytes {
		return TensorInfo{}, fmt.Errorf("tensor %q: data_offsets span %d bytes, shape %v of %s needs %d", name, end-b, e.Shape, e.DType, bytes)
	}
	ti.Begin, ti.End = int64(b), int64(end)
	return ti, nil
}

func checkOverlap(ts map[string]TensorInfo) error {
	list := make([]TensorInfo, 0, len(ts))
	for _, t := range ts {
		if t.End > t.Begin {
			list = append(list, t)
		}
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Begin < list[j].Begin })
	for i := 1; i < len(list); i++ {
		if list[i].Begin < list[i-1].End {
			return fmt.Errorf("tensors %q and %q overlap", list[i-1].Name, list[i].Name)
		}
	}
	return nil
}

// Close unmaps the file; slices returned by Bytes are invalid afterwards.
func (f *File) Close() error {
	if f.release == nil {
		return nil
	}
	err := f.release()
	f.release, f.data = nil, nil
	return err
}

// EvictAll drops the resident pages of the whole data section (mmap.Evict): views stay valid and read the file
// again when touched; for a caller that copied the tensors it keeps.
func (f *File) EvictAll() { mmap.Evict(f.data) }

// Names lists the tensor names in sorted order.
func (f *File) Names() []string { return f.names }

// Info returns the header entry of a tensor.
func (f *File) Info(name string) (TensorInfo, bool) {
	t, ok := f.tensors[name]
	return t, ok
}

// Bytes returns a zero-copy view of a tensor's raw little-endian data.
func (f *File) Bytes(name string) ([]byte, error) {
	t, ok := f.tensors[name]
	if !ok {
		return nil, fmt.Errorf("%s: tensor %q not found", f.Path, name)
	}
	return f.data[t.Begin:t.End:t.End], nil
}

// Float32s returns a converted copy of a floating-point tensor.
func (f *File) Float32s(name string) ([]float32, error) {
	t, ok := f.tensors[name]
	if !ok {
		return nil, fmt.Errorf("%s: tensor %q not found", f.Path, name)
	}
	out := make([]float32, t.Elems())
	if err := Decode(t.DType, f.data[t.Begin:t.End], out); err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", f.Path, name, err)
	}
	return out, nil
}

// ErrNoWeights means a folder has neither model.safetensors nor model.safetensors.index.json.
var ErrNoWeights = errors.New("no model.safetensors or model.safetensors.index.json")
