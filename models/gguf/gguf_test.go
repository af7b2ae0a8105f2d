package gguf

import (
	"bytes"
	"encoding/binary"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/x448/float16"
)

func allKinds() []KV {
	return []KV{
		{"u8", uint8(200)}, {"i8", int8(-100)}, {"u16", uint16(60000)}, {"i16", int16(-30000)},
		{"u32", uint32(4000000000)}, {"i32", int32(-2000000000)}, {"f32", float32(1.5)}, {"b", true},
		{"s", "héllo\x00world"}, {"u64", uint64(1 << 60)}, {"i64", int64(-1 << 60)}, {"f64", 2.25},
		{"au8", []uint8{1, 2}}, {"ai8", []int8{-1}}, {"au16", []uint16{7}}, {"ai16", []int16{-7}},
		{"au32", []uint32{1, 2, 3}}, {"ai32", []int32{-3}}, {"af32", []float32{0.5, -0.25}},
		{"ab", []bool{true, false}}, {"as", []string{"a", "", "▁b"}}, {"au64", []uint64{9}},
		{"ai64", []int64{-9}}, {"af64", []float64{1e300}}, {"empty", []string{}},
		{"nested", []any{[]int32{1, 2}, []string{"x"}}},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, alignment := range []uint32{0, 64} {
		kvs := allKinds()
		if alignment != 0 {
			kvs = append(kvs, KV{AlignmentKey, alignment})
		}
		rng := rand.New(rand.NewPCG(1, 2))
		data := map[string][]float32{}
		tensors := []TensorInfo{
			{Name: "a", Type: F32, Shape: []int{3, 5}},
			{Name: "b", Type: F16, Shape: []int{7}},
			{Name: "c", Type: BF16, Shape: []int{2, 3}},
			{Name: "d", Type: Q8_0, Shape: []int{2, 64}},
			{Name: "e", Type: Q4_0, Shape: []int{3, 32}},
			{Name: "f", Type: F32, Shape: []int{2, 1, 3}},
		}
		for _, ti := range tensors {
			v := make([]float32, ti.Elems())
			for i := range v {
				v[i] = float32(rng.NormFloat64())
			}
			data[ti.Name] = v
		}
		path := filepath.Join(t.TempDir(), "x.gguf")
		err := Write(path, kvs, tensors, func(i int, w io.Writer) error {
			b, err := Encode(nil, tensors[i].Type, data[tensors[i].Name])
			if err != nil {
				return err
			}
			_, err = w.Write(b)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		g, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(g.KV, kvs) {
			t.Fatalf("metadata:\n got %#v\nwant %#v", g.KV, kvs)
		}
		want := uint64(DefaultAlignment)
		if alignment != 0 {
			want = uint64(alignment)
		}
		if g.Alignment != want || g.DataOffset%want != 0 {
			t.Fatalf("alignment %d data offset %d", g.Alignment, g.DataOffset)
		}
		for _, ti := range tensors {
			got, info, err := g.Float32s(ti.Name)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(info.Shape, ti.Shape) || info.Type != ti.Type || info.Offset%want != 0 {
				t.Fatalf("%s: %+v", ti.Name, info)
			}
			ref := make([]float32, len(got))
			b, _ := Encode(nil, ti.Type, data[ti.Name])
			if err := Decode(ti.Type, b, ref); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, ref) {
				t.Fatalf("%s: data differs", ti.Name)
			}
			if ti.Type == F32 && !reflect.DeepEqual(got, data[ti.Name]) {
				t.Fatalf("%s: f32 data differs", ti.Name)
			}
		}
		st, _ := os.Stat(path)
		if st.Size()%int64(want) != 0 {
			t.Fatalf("file size %d is not aligned", st.Size())
		}
		g.Close()
	}
}

// TestHeaderBytes pins the byte layout of a minimal file against the GGUF specification by hand.
func TestHeaderBytes(t *testing.T) {
	var buf bytes.Buffer
	tensors := []TensorInfo{{Name: "w", Type: F32, Shape: []int{2, 3}}}
	err := WriteTo(&buf, []KV{{"k", uint32(7)}}, tensors, func(i int, w io.Writer) error {
		_, err := w.Write(make([]byte, 24))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	le := func(v any) { binary.Write(&want, binary.LittleEndian, v) }
	want.WriteString("GGUF")
	le(uint32(3))
	le(uint64(1)) // tensors
	le(uint64(1)) // kvs
	le(uint64(1))
	want.WriteString("k")
	le(uint32(TypeUint32))
	le(uint32(7))
	le(uint64(1))
	want.WriteString("w")
	le(uint32(2))
	le(uint64(3)) // ne[0] = innermost
	le(uint64(2))
	le(uint32(0)) // F32
	le(uint64(0))
	for want.Len()%32 != 0 {
		want.WriteByte(0)
	}
	want.Write(make([]byte, 32)) // 24 bytes of data padded to 32
	if !bytes.Equal(buf.Bytes(), want.Bytes()) {
		t.Fatalf("bytes:\n got %x\nwant %x", buf.Bytes(), want.Bytes())
	}
}

func TestBadFiles(t *testing.T) {
	var buf bytes.Buffer
	tensors := []TensorInfo{{Name: "w", Type: F32, Shape: []int{4}}}
	WriteTo(&buf, allKinds(), tensors, func(i int, w io.Writer) error { _, err := w.Write(make([]byte, 16)); return err })
	good := buf.Bytes()
	if _, err := Parse(good); err != nil {
		t.Fatal(err)
	}
	for n := range len(good) - 1 {
		if n >= len(good)-16 { // only the last tensor's padding is cut: still readable
			continue
		}
		if _, err := Parse(good[:n]); err == nil {
			t.Fatalf("truncated to %d bytes: no error", n)
		}
	}
	huge := append([]byte(nil), good...)
	binary.LittleEndian.PutUint64(huge[16:], 1<<50) // kv count
	if _, err := Parse(huge); err == nil || !strings.Contains(err.Error(), "cannot fit") {
		t.Fatalf("huge count: %v", err)
	}
	if _, err := Parse([]byte("GGML....")); err == nil {
		t.Fatal("bad magic accepted")
	}
	if err := WriteTo(io.Discard, []KV{{"x", 1}}, nil, nil); err == nil {
		t.Fatal("int (no GGUF type) accepted")
	}
	if err := WriteTo(io.Discard, []KV{{AlignmentKey, uint32(3)}}, nil, nil); err == nil {
		t.Fatal("alignment 3 accepted")
	}
	short := func(i int, w io.Writer) error { _, err := w.Write(make([]byte, 3)); return err }
	if err := WriteTo(io.Discard, nil, tensors, short); err == nil {
		t.Fatal("short tensor accepted")
	}
}

func TestAtomicWriteLeavesNothingOnError(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.gguf")
	os.WriteFile(path, []byte("keep"), 0o644)
	tensors := []TensorInfo{{Name: "w", Type: F32, Shape: []int{4}}}
	err := Write(path, nil, tensors, func(i int, w io.Writer) error { return io.ErrUnexpectedEOF })
	if err == nil {
		t.Fatal("no error")
	}
	if b, _ := os.ReadFile(path); string(b) != "keep" {
		t.Fatal("existing file changed")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("temporaries left: %v", ents)
	}
}

// refQ8_0 and refQ4_0 follow ggml's published reference quantizers (quantize_row_q8_0_ref and
// quantize_row_q4_0_ref in ggml-quants.c), written independently here: per block of 32, float32 arithmetic,
// the scale rounded to f16 (round to nearest even).
func refQ8_0(x []float32) []byte {
	var out []byte
	for b := 0; b < len(x); b += 32 {
		amax := float32(0)
		for _, v := range x[b : b+32] {
			if float32(math.Abs(float64(v))) > amax {
				amax = float32(math.Abs(float64(v)))
			}
		}
		d := amax / float32(127)
		id := float32(0)
		if d != 0 {
			id = float32(1) / d
		}
		out = binary.LittleEndian.AppendUint16(out, float16.Fromfloat32(d).Bits())
		for _, v := range x[b : b+32] {
			p := float64(float32(v * id))
			// roundf: halfway cases away from zero
			r := math.Floor(math.Abs(p) + 0.5)
			if p < 0 {
				r = -r
			}
			out = append(out, byte(int8(r)))
		}
	}
	return out
}

func refQ4_0(x []float32) []byte {
	var out []byte
	for b := 0; b < len(x); b += 32 {
		blk := x[b : b+32]
		amax, mx := float32(0), float32(0)
		for _, v := range blk {
			if a := float32(math.Abs(float64(v))); amax < a {
				amax, mx = a, v
			}
		}
		d := mx / float32(-8)
		id := float32(0)
		if d != 0 {
			id = float32(1) / d
		}
		out = binary.LittleEndian.AppendUint16(out, float16.Fromfloat32(d).Bits())
		level := func(v float32) byte {
			f := float32(v*id) + float32(8.5)
			q := int(math.Trunc(float64(f))) // C's (int8_t) conversion truncates toward zero
			return byte(min(15, q))
		}
		for j := range 16 {
			out = append(out, level(blk[j])|level(blk[j+16])<<4)
		}
	}
	return out
}

func TestBlocksMatchReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var inputs [][]float32
	for range 200 {
		v := make([]float32, 64)
		scale := math.Pow(10, rng.Float64()*8-6)
		for i := range v {
			v[i] = float32(rng.NormFloat64() * scale)
		}
		inputs = append(inputs, v)
	}
	zero := make([]float32, 32)
	ties := make([]float32, 32) // equal magnitudes: the first one sets the sign of d
	for i := range ties {
		ties[i] = float32(i%3-1) * 0.5
	}
	halves := make([]float32, 32) // x/d + 8.5 lands exactly on integers and .5 boundaries
	for i := range halves {
		halves[i] = float32(i-16) * 0.25
	}
	small := make([]float32, 32) // a scale that rounds to an f16 subnormal
	for i := range small {
		small[i] = float32(i) * 1e-7
	}
	inputs = append(inputs, zero, ties, halves, small)
	for n, x := range inputs {
		for _, c := range []struct {
			t   Type
			ref func([]float32) []byte
		}{{Q8_0, refQ8_0}, {Q4_0, refQ4_0}} {
			got, err := Encode(nil, c.t, x)
			if err != nil {
				t.Fatal(err)
			}
			if want := c.ref(x); !bytes.Equal(got, want) {
				t.Fatalf("input %d %s:\n got %x\nwant %x", n, c.t, got, want)
			}
			// dequantising gives (level)·d exactly, within half a step of the input
			back := make([]float32, len(x))
			if err := Decode(c.t, got, back); err != nil {
				t.Fatal(err)
			}
			for i := range x {
				blk := x[i/32*32 : i/32*32+32]
				var amax float64
				for _, v := range blk {
					amax = max(amax, math.Abs(float64(v)))
				}
				tol := amax / 127 * 0.51 // half a step
				if c.t == Q4_0 {
					tol = amax / 8 * 1.01 // a whole step: +amax clamps to level 15 when the max is negative
				}
				tol += amax/1024 + 128*math.Ldexp(1, -25) // the f16 rounding of d, relative and (subnormal) absolute
				if math.Abs(float64(back[i]-x[i])) > tol {
					t.Fatalf("input %d %s [%d]: %g back to %g (tolerance %g)", n, c.t, i, x[i], back[i], tol)
				}
			}
		}
	}
}

// TestQ4_0KnownBlock pins one block by hand: max magnitude -8 gives d = 1, levels x+8.
func TestQ4_0KnownBlock(t *testing.T) {
	x := make([]float32, 32)
	for i := range x {
		x[i] = float32(i%16 - 8)
	}
	b, _ := Encode(nil, Q4_0, x)
	if d := binary.LittleEndian.Uint16(b); d != float16.Fromfloat32(1).Bits() {
		t.Fatalf("d = %#x", d)
	}
	for j := range 16 {
		lo, hi := b[2+j]&15, b[2+j]>>4
		if int(lo) != j || int(hi) != j {
			t.Fatalf("byte %d = %#x", j, b[2+j])
		}
	}
}

func TestParseType(t *testing.T) {
	for _, s := range []string{"q8_0", "Q4_0", "bf16", "f32", "F16"} {
		if _, ok := ParseType(s); !ok {
			t.Fatal(s)
		}
	}
	if _, ok := ParseType("q9"); ok {
		t.Fatal("q9")
	}
	if err := Decode(Q4_K, make([]byte, 144), make([]float32, 256)); err == nil || !strings.Contains(err.Error(), "Q4_K") {
		t.Fatalf("Q4_K decode: %v", err)
	}
}

// FuzzParse: no input makes Parse panic or allocate beyond the input's size, and every tensor it accepts can be
// read (or is refused with an error).
func FuzzParse(f *testing.F) {
	var buf bytes.Buffer
	tensors := []TensorInfo{{Name: "a", Type: F32, Shape: []int{2, 2}}, {Name: "b", Type: Q4_0, Shape: []int{32}}}
	WriteTo(&buf, allKinds(), tensors, func(i int, w io.Writer) error {
		n, _ := tensors[i].Bytes()
		_, err := w.Write(make([]byte, n))
		return err
	})
	f.Add(buf.Bytes())
	f.Add([]byte("GGUF\x03\x00\x00\x00"))
	huge := append([]byte(nil), buf.Bytes()...) // dimensions whose product overflows
	if i := bytes.Index(huge, []byte("\x01\x00\x00\x00\x00\x00\x00\x00a\x02\x00\x00\x00")); i >= 0 {
		for k := range 2 {
			binary.LittleEndian.PutUint64(huge[i+13+8*k:], 1<<40)
		}
		f.Add(huge)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := Parse(b)
		if err != nil {
			return
		}
		for _, ti := range g.Tensors {
			if v, _, err := g.Float32s(ti.Name); err == nil && len(v) != ti.Elems() {
				t.Fatalf("%s: %d values for %d elements", ti.Name, len(v), ti.Elems())
			}
		}
	})
}
