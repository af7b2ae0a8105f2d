package merge

import (
	"fmt"
	"io"

	"github.com/lorakit/lorakit/models/safetensors"
)

// section reads a base tensor's raw bytes (pread, not the mmap).
func (p *plan) section(name string) (*io.SectionReader, safetensors.TensorInfo, error) {
	return p.rd.Section(name)
}

// copyRaw streams a base tensor's bytes unchanged.
func (p *plan) copyRaw(name string, w io.Writer) error { return p.rd.CopyRaw(name, w) }

// readF32 reads a base float tensor as f32, converting chunk by chunk.
func (p *plan) readF32(name string) ([]float32, error) { return p.rd.Float32s(name) }

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
