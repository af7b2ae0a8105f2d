package safetensors

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

// Reader reads the tensors of a checkpoint with pread instead of through its memory maps, so that a job that
// visits every tensor once (merge, quantize) keeps its resident memory near the tensor at hand instead of
// growing with every page of the checkpoint it has touched. It is safe for concurrent use.
type Reader struct {
	ck    *Checkpoint
	files map[*File]*rawFile
}

type rawFile struct {
	f     *os.File
	start int64 // offset of the data section
}

// NewReader opens every file of ck for pread.
func NewReader(ck *Checkpoint) (*Reader, error) {
	r := &Reader{ck: ck, files: map[*File]*rawFile{}}
	for _, sf := range ck.Files {
		f, err := os.Open(sf.Path)
		if err != nil {
			r.Close()
			return nil, err
		}
		var n [8]byte
		if _, err := f.ReadAt(n[:], 0); err != nil {
			f.Close()
			r.Close()
			return nil, fmt.Errorf("%s: %w", sf.Path, err)
		}
		r.files[sf] = &rawFile{f: f, start: 8 + int64(binary.LittleEndian.Uint64(n[:]))}
	}
	return r, nil
}

// Close closes the files.
func (r *Reader) Close() error {
	for _, f := range r.files {
		f.f.Close()
	}
	return nil
}

// Section returns a reader of the raw bytes of tensor name.
func (r *Reader) Section(name string) (*io.SectionReader, TensorInfo, error) {
	info, sf, ok := r.ck.Info(name)
	if !ok {
		return nil, info, fmt.Errorf("tensor %q not in %s", name, r.ck.Dir)
	}
	f := r.files[sf]
	if f == nil {
		return nil, info, fmt.Errorf("tensor %q: file %s not open", name, sf.Path)
	}
	return io.NewSectionReader(f.f, f.start+info.Begin, info.End-info.Begin), info, nil
}

// CopyRaw streams the bytes of tensor name unchanged into w.
func (r *Reader) CopyRaw(name string, w io.Writer) error {
	sec, _, err := r.Section(name)
	if err != nil {
		return err
	}
	if _, err := io.CopyBuffer(w, sec, make([]byte, 1<<20)); err != nil {
		return fmt.Errorf("copy tensor %q: %w", name, err)
	}
	return nil
}

// Float32s reads float tensor name as f32, converting chunk by chunk.
func (r *Reader) Float32s(name string) ([]float32, error) {
	sec, info, err := r.Section(name)
	if err != nil {
		return nil, err
	}
	if !info.DType.IsFloat() {
		return nil, fmt.Errorf("tensor %q has dtype %s, not a float type", name, info.DType)
	}
	n := info.Elems()
	v := make([]float32, n)
	es := info.DType.Size()
	const chunk = 1 << 16
	buf := make([]byte, min(n, chunk)*es)
	for i := 0; i < n; i += chunk {
		k := min(chunk, n-i)
		if _, err := io.ReadFull(sec, buf[:k*es]); err != nil {
			return nil, fmt.Errorf("read tensor %q: %w", name, err)
		}
		if err := Decode(info.DType, buf[:k*es], v[i:i+k]); err != nil {
			return nil, fmt.Errorf("tensor %q: %w", name, err)
		}
	}
	return v, nil
}
