package merge

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"

	"github.com/lorakit/lorakit/models/safetensors"
)

// rawFile reads tensor bytes with pread instead of through the mmap, so a merge's resident memory stays near
// the tensor being processed instead of growing with every page of the base it has touched.
type rawFile struct {
	f     *os.File
	start int64 // offset of the data section
}

func (p *plan) reader(sf *safetensors.File) (*rawFile, error) {
	if r := p.readers[sf]; r != nil {
		return r, nil
	}
	f, err := os.Open(sf.Path)
	if err != nil {
		return nil, err
	}
	var n [8]byte
	if _, err := f.ReadAt(n[:], 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", sf.Path, err)
	}
	r := &rawFile{f: f, start: 8 + int64(binary.LittleEndian.Uint64(n[:]))}
	p.readers[sf] = r
	return r, nil
}

func (p *plan) closeReaders() {
	for _, r := range p.readers {
		r.f.Close()
	}
}

func (p *plan) section(name string) (*io.SectionReader, safetensors.TensorInfo, error) {
	info, sf, ok := p.base.Info(name)
	if !ok {
		return nil, info, fmt.Errorf("tensor %q not in base", name)
	}
	r, err := p.reader(sf)
	if err != nil {
		return nil, info, err
	}
	return io.NewSectionReader(r.f, r.start+info.Begin, info.End-info.Begin), info, nil
}

// copyRaw streams a base tensor's bytes unchanged.
func (p *plan) copyRaw(name string, w io.Writer) error {
	sec, _, err := p.section(name)
	if err != nil {
		return err
	}
	_, err = io.CopyBuffer(w, sec, make([]byte, 1<<20))
	return err
}

// rawBytes reads a whole base tensor.
func (p *plan) rawBytes(name string) ([]byte, safetensors.TensorInfo, error) {
	sec, info, err := p.section(name)
	if err != nil {
		return nil, info, err
	}
	b := make([]byte, sec.Size())
	if _, err := io.ReadFull(sec, b); err != nil {
		return nil, info, fmt.Errorf("read tensor %q: %w", name, err)
	}
	return b, info, nil
}

// readF32 reads a base float tensor as f32, converting chunk by chunk.
func (p *plan) readF32(name string) ([]float32, error) {
	sec, info, err := p.section(name)
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
	buf := make([]byte, chunk*es)
	for i := 0; i < n; i += chunk {
		k := min(chunk, n-i)
		if _, err := io.ReadFull(sec, buf[:k*es]); err != nil {
			return nil, fmt.Errorf("read tensor %q: %w", name, err)
		}
		if err := safetensors.Decode(info.DType, buf[:k*es], v[i:i+k]); err != nil {
			return nil, fmt.Errorf("tensor %q: %w", name, err)
		}
	}
	return v, nil
}

// convertStream rewrites a base float tensor in dtype dt chunk by chunk, never holding the whole tensor.
func (p *plan) convertStream(name string, dt safetensors.DType, w io.Writer) error {
	sec, info, err := p.section(name)
	if err != nil {
		return err
	}
	n := info.Elems()
	es := info.DType.Size()
	const chunk = 1 << 16
	buf := make([]byte, chunk*es)
	v := make([]float32, chunk)
	for i := 0; i < n; i += chunk {
		k := min(chunk, n-i)
		if _, err := io.ReadFull(sec, buf[:k*es]); err != nil {
			return fmt.Errorf("read tensor %q: %w", name, err)
		}
		if err := safetensors.Decode(info.DType, buf[:k*es], v[:k]); err != nil {
			return fmt.Errorf("tensor %q: %w", name, err)
		}
		if err := encodeTo(w, dt, v[:k]); err != nil {
			return err
		}
	}
	return nil
}
