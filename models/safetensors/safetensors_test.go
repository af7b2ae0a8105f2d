package safetensors

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/internal/testenv"
)

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "m.safetensors")
	bf, _ := Encode(BF16, []float32{1, -2.5, 3})
	in := []Tensor{
		F32Tensor("b", []int{2, 2}, []float32{1, 2, 3, 4}),
		{Name: "a", DType: BF16, Shape: []int{3}, Data: bf},
		{Name: "scalar", DType: U8, Shape: []int{}, Data: []byte{7}},
	}
	if err := Write(p, in, map[string]string{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	f, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := strings.Join(f.Names(), ","); got != "a,b,scalar" {
		t.Fatalf("names %s", got)
	}
	if f.Metadata["format"] != "pt" || f.Metadata["k"] != "v" {
		t.Fatalf("metadata %v", f.Metadata)
	}
	a, err := f.Float32s("a")
	if err != nil || a[0] != 1 || a[1] != -2.5 || a[2] != 3 {
		t.Fatalf("a = %v, %v", a, err)
	}
	b, _ := f.Float32s("b")
	if b[3] != 4 {
		t.Fatalf("b = %v", b)
	}
	raw, _ := os.ReadFile(p)
	if n := binary.LittleEndian.Uint64(raw); n%8 != 0 {
		t.Fatalf("header length %d not padded to 8", n)
	}
}

func TestBF16Rounding(t *testing.T) {
	cases := []struct {
		in   uint32
		want uint16
	}{
		{0x3f808000, 0x3f80}, // tie, even stays
		{0x3f818000, 0x3f82}, // tie, odd rounds up
		{0x3f808001, 0x3f81},
		{0x7f7fffff, 0x7f80}, // rounds to +Inf
	}
	for _, c := range cases {
		if got := F32ToBF16(math.Float32frombits(c.in)); got != c.want {
			t.Errorf("F32ToBF16(%#x) = %#x, want %#x", c.in, got, c.want)
		}
	}
	if v := BF16ToF32(F32ToBF16(float32(math.NaN()))); !math.IsNaN(float64(v)) {
		t.Errorf("NaN became %v", v)
	}
}

// writeRaw writes a file with a hand-made header.
func writeRaw(t *testing.T, header string, data []byte) string {
	p := filepath.Join(t.TempDir(), "x.safetensors")
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(header)))
	if err := os.WriteFile(p, append(append(n[:], header...), data...), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBadFiles(t *testing.T) {
	cases := map[string]struct {
		header string
		data   []byte
		want   string
	}{
		"out of range":  {`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 4), "outside"},
		"size mismatch": {`{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, make([]byte, 8), "needs 12"},
		"bad dtype":     {`{"w":{"dtype":"Q9","shape":[1],"data_offsets":[0,1]}}`, make([]byte, 1), "unsupported dtype"},
		"negative":      {`{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}`, nil, "invalid shape"},
		"overlap": {`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`,
			make([]byte, 12), "overlap"},
		"bad json": {`{"w":`, nil, "header json"},
	}
	for name, c := range cases {
		_, err := Open(writeRaw(t, c.header, c.data))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to mention %q", name, err, c.want)
		}
	}
	// A truncated copy of a good file.
	p := filepath.Join(t.TempDir(), "t.safetensors")
	if err := Write(p, []Tensor{F32Tensor("w", []int{64}, make([]float32, 64))}, nil); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(p)
	for _, cut := range []int{0, 5, 20, len(raw) - 1} {
		q := filepath.Join(t.TempDir(), "cut.safetensors")
		os.WriteFile(q, raw[:cut], 0o644)
		if _, err := Open(q); err == nil || !strings.Contains(err.Error(), "cut.safetensors") {
			t.Errorf("cut at %d: err = %v", cut, err)
		}
	}
}

func TestShardedCheckpoint(t *testing.T) {
	dir := t.TempDir()
	Write(filepath.Join(dir, "model-00001-of-00002.safetensors"), []Tensor{F32Tensor("a", []int{1}, []float32{1})}, nil)
	Write(filepath.Join(dir, "model-00002-of-00002.safetensors"), []Tensor{F32Tensor("b", []int{1}, []float32{2})}, nil)
	idx := `{"metadata":{},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}`
	os.WriteFile(filepath.Join(dir, IndexName), []byte(idx), 0o644)
	c, err := OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if b, _ := c.Float32s("b"); b[0] != 2 {
		t.Fatalf("b = %v", b)
	}
	if _, err := OpenCheckpoint(t.TempDir()); err == nil {
		t.Fatal("empty folder opened")
	}
}

func TestStories260K(t *testing.T) {
	shared := testenv.Testdata(t)
	for _, m := range []string{"stories260K", "stories260K-bf16"} {
		c, err := OpenCheckpoint(filepath.Join(shared, "models", m))
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Names()) != 47 {
			t.Errorf("%s: %d tensors, want 47", m, len(c.Names()))
		}
		ti, _, ok := c.Info("model.layers.0.mlp.down_proj.weight")
		if !ok || ti.Shape[0] != 64 || ti.Shape[1] != 172 {
			t.Errorf("%s: down_proj %v", m, ti)
		}
		c.Close()
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte{})
	hdr := `{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(hdr)))
	f.Add(append(append(n[:], hdr...), make([]byte, 8)...))
	binary.LittleEndian.PutUint64(n[:], 1<<62)
	f.Add(append(n[:], `{}`...))
	f.Fuzz(func(t *testing.T, b []byte) {
		sf, err := parse(b)
		if err != nil {
			return
		}
		for _, name := range sf.Names() {
			raw, err := sf.Bytes(name)
			if err != nil {
				t.Fatal(err)
			}
			ti, _ := sf.Info(name)
			if int64(len(raw)) != ti.End-ti.Begin {
				t.Fatalf("%s: %d bytes", name, len(raw))
			}
			if ti.DType.IsFloat() {
				if _, err := sf.Float32s(name); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
}
