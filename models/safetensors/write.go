package safetensors

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"

	"github.com/lorakit/lorakit/internal/atomicfile"
	"github.com/lorakit/lorakit/internal/iocount"
)

// Tensor is a named tensor with its raw little-endian data, ready to write.
type Tensor struct {
	Name  string
	DType DType
	Shape []int
	Data  []byte
}

// F32Tensor packs float32 values as an F32 tensor.
func F32Tensor(name string, shape []int, v []float32) Tensor {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return Tensor{Name: name, DType: F32, Shape: shape, Data: b}
}

// Header describes a tensor to be written by WriteStream.
type Header struct {
	Name  string
	DType DType
	Shape []int
}

func (h Header) bytes() int64 {
	n := int64(h.DType.Size())
	for _, d := range h.Shape {
		n *= int64(d)
	}
	return n
}

// Write stores tensors (sorted by name) in a new safetensors file at path, atomically. Metadata gets
// "format":"pt" unless it sets a format.
func Write(path string, tensors []Tensor, metadata map[string]string) error {
	ts := append([]Tensor(nil), tensors...)
	sort.Slice(ts, func(i, j int) bool { return ts[i].Name < ts[j].Name })
	hs := make([]Header, len(ts))
	for i, t := range ts {
		hs[i] = Header{t.Name, t.DType, t.Shape}
		if int64(len(t.Data)) != hs[i].bytes() {
			return fmt.Errorf("write %s: tensor %q has %d bytes, shape %v of %s needs %d", path, t.Name, len(t.Data), t.Shape, t.DType, hs[i].bytes())
		}
	}
	return WriteStream(path, hs, metadata, func(i int, w io.Writer) error {
		_, err := w.Write(ts[i].Data)
		return err
	})
}

// WriteStream writes a safetensors file whose data is produced one tensor at a time, in the order of hs, so
// that a caller can convert a model tensor by tensor without holding it all. fill(i, w) must write exactly the
// byte size of hs[i]. The file appears at path only when complete.
func WriteStream(path string, hs []Header, metadata map[string]string, fill func(i int, w io.Writer) error) error {
	header, err := encodeHeader(hs, metadata)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return atomicfile.Write(path, func(w *bufio.Writer) error {
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(header)))
		if _, err := w.Write(n[:]); err != nil {
			return err
		}
		if _, err := w.Write(header); err != nil {
			return err
		}
		for i, h := range hs {
			cw := &iocount.Writer{W: w}
			if err := fill(i, cw); err != nil {
				return fmt.Errorf("tensor %q: %w", h.Name, err)
			}
			if cw.N != h.bytes() {
				return fmt.Errorf("tensor %q: wrote %d bytes, want %d", h.Name, cw.N, h.bytes())
			}
		}
		return nil
	})
}

// encodeHeader builds the JSON header with sorted keys, padded with spaces to a multiple of 8 bytes.
func encodeHeader(hs []Header, metadata map[string]string) ([]byte, error) {
	type entry struct {
		DType   DType    `json:"dtype"`
		Shape   []int    `json:"shape"`
		Offsets [2]int64 `json:"data_offsets"`
	}
	m := make(map[string]any, len(hs)+1)
	meta := map[string]string{"format": "pt"}
	for k, v := range metadata {
		meta[k] = v
	}
	m["__metadata__"] = meta
	var off int64
	for _, h := range hs {
		if h.DType.Size() == 0 {
			return nil, fmt.Errorf("tensor %q: unsupported dtype %q", h.Name, h.DType)
		}
		if _, dup := m[h.Name]; dup {
			return nil, fmt.Errorf("tensor %q appears twice", h.Name)
		}
		shape := h.Shape
		if shape == nil {
			shape = []int{}
		}
		m[h.Name] = entry{h.DType, shape, [2]int64{off, off + h.bytes()}}
		off += h.bytes()
	}
	b, err := json.Marshal(m) // map keys are sorted by encoding/json
	if err != nil {
		return nil, err
	}
	for len(b)%8 != 0 {
		b = append(b, ' ')
	}
	return b, nil
}
