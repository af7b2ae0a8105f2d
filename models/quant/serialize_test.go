package quant

import (
	"fmt"
	"math/rand"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/models/safetensors"
)

func writeCkpt(t *testing.T, ts []safetensors.Tensor) *safetensors.Checkpoint {
	t.Helper()
	dir := t.TempDir()
	if err := safetensors.Write(filepath.Join(dir, "model.safetensors"), ts, nil); err != nil {
		t.Fatal(err)
	}
	c, err := safetensors.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestQuantStateJSON(t *testing.T) {
	q := &Weight{Type: NF4, Shape: []int{576, 1536}, BlockSize: 64}
	if got, want := string(quantStateJSON(q, "BF16")), `{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [576, 1536]}`; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	q.Double, q.NestedBlockSize, q.NestedOffset = true, 256, 0.5
	want := `{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [576, 1536], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 0.5}`
	if got := string(quantStateJSON(q, "F32")); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	for f, s := range map[float64]string{1: "1.0", 0.012345678918063641: "0.012345678918063641", 1e-05: "1e-05"} {
		if pyFloat(f) != s {
			t.Errorf("pyFloat(%v) = %s, want %s", f, pyFloat(f), s)
		}
	}
}

func TestSerializeRoundTrip(t *testing.T) {
	r := rand.New(rand.NewSource(10))
	w := randW(r, 40*64+6, 0.02) // 41 blocks, partial last block
	var ts []safetensors.Tensor
	qs := map[string]*Weight{}
	for i, cfg := range []struct {
		typ Type
		dq  bool
	}{{NF4, false}, {NF4, true}, {FP4, true}, {FP4, false}} {
		q, err := Quantize4(cfg.typ, w, []int{2, len(w) / 2}, 64, cfg.dq)
		if err != nil {
			t.Fatal(err)
		}
		name := "model.layers." + string(rune('0'+i)) + ".mlp.up_proj.weight"
		qs[name] = q
		ts = append(ts, ToTensors(name, q, "BF16")...)
	}
	q8, _ := Quantize8(w, []int{2, len(w) / 2})
	qs["model.layers.9.self_attn.o_proj.weight"] = q8
	ts = append(ts, ToTensors("model.layers.9.self_attn.o_proj.weight", q8, "F16")...)
	ts = append(ts, safetensors.F32Tensor("model.norm.weight", []int{4}, []float32{1, 1, 1, 1}))

	names := map[string]bool{}
	for _, tt := range ts {
		names[tt.Name] = true
	}
	for _, k := range []string{"model.layers.1.mlp.up_proj.weight.absmax", "model.layers.1.mlp.up_proj.weight.nested_absmax",
		"model.layers.1.mlp.up_proj.weight.nested_quant_map", "model.layers.1.mlp.up_proj.weight.quant_map",
		"model.layers.1.mlp.up_proj.weight.quant_state.bitsandbytes__nf4", "model.layers.2.mlp.up_proj.weight.quant_state.bitsandbytes__fp4",
		"model.layers.9.self_attn.o_proj.SCB", "model.layers.9.self_attn.o_proj.weight_format"} {
		if !names[k] {
			t.Errorf("missing %s", k)
		}
		if !IsAuxTensor(k) {
			t.Errorf("IsAuxTensor(%s) = false", k)
		}
	}
	c := writeCkpt(t, ts)
	for name, want := range qs {
		got, ok, err := FromCheckpoint(c, name)
		if err != nil || !ok {
			t.Fatalf("%s: ok=%v err=%v", name, ok, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: round trip differs:\n got %+v\nwant %+v", name, got, want)
		}
	}
	if _, ok, err := FromCheckpoint(c, "model.norm.weight"); ok || err != nil {
		t.Errorf("plain tensor: ok=%v err=%v", ok, err)
	}
	info, _, _ := c.Info("model.layers.0.mlp.up_proj.weight")
	if info.DType != safetensors.U8 || !reflect.DeepEqual(info.Shape, []int{(len(w) + 1) / 2, 1}) {
		t.Errorf("packed weight %s %v", info.DType, info.Shape)
	}
	info, _, _ = c.Info("model.layers.1.mlp.up_proj.weight.absmax")
	if info.DType != safetensors.U8 || info.Shape[0] != 41 {
		t.Errorf("dq absmax %s %v", info.DType, info.Shape)
	}
}

func TestFromCheckpointRejectsCorrupt(t *testing.T) {
	w := randW(rand.New(rand.NewSource(11)), 256, 0.02)
	q, _ := Quantize4(NF4, w, []int{4, 64}, 64, true)
	name := "m.weight"
	good := ToTensors(name, q, "BF16")
	mutate := func(key string, f func(*safetensors.Tensor)) []safetensors.Tensor {
		var out []safetensors.Tensor
		for _, tt := range good {
			tt.Data = append([]byte(nil), tt.Data...)
			if tt.Name == key {
				f(&tt)
			}
			out = append(out, tt)
		}
		return out
	}
	cases := map[string][]safetensors.Tensor{
		"bad json": mutate(name+".quant_state.bitsandbytes__nf4", func(tt *safetensors.Tensor) { tt.Data[0] = 'x' }),
		"short absmax": mutate(name+".absmax", func(tt *safetensors.Tensor) {
			tt.Data, tt.Shape = tt.Data[:3], []int{3}
		}),
		"short packed": mutate(name, func(tt *safetensors.Tensor) { tt.Data, tt.Shape = tt.Data[:10], []int{10, 1} }),
		"nan nested":   mutate(name+".nested_absmax", func(tt *safetensors.Tensor) { copy(tt.Data, []byte{0, 0, 0xc0, 0x7f}) }),
		"bad map":      mutate(name+".quant_map", func(tt *safetensors.Tensor) { tt.Data, tt.Shape = tt.Data[:32], []int{8} }),
	}
	for what, ts := range cases {
		c := writeCkpt(t, ts)
		if _, _, err := FromCheckpoint(c, name); err == nil || !strings.Contains(err.Error(), "m.weight") {
			t.Errorf("%s: err = %v", what, err)
		}
	}
}

// TestFromCheckpointTransformersStyle reads a weight stored the way other writers do it: JSON keys in another
// order with an integer-looking offset, and the packed bytes in a bfloat16 quant_storage tensor.
func TestFromCheckpointTransformersStyle(t *testing.T) {
	w := randW(rand.New(rand.NewSource(13)), 8*64, 0.02)
	q, _ := Quantize4(NF4, w, []int{8, 64}, 64, true)
	name := "model.layers.0.self_attn.q_proj.weight"
	var ts []safetensors.Tensor
	for _, tt := range ToTensors(name, q, "BF16") {
		switch {
		case tt.Name == name:
			tt.DType, tt.Shape = safetensors.BF16, []int{len(tt.Data) / 2, 1}
		case strings.HasSuffix(tt.Name, "bitsandbytes__nf4"):
			js := fmt.Sprintf(`{"shape":[8,64],"nested_offset":%v,"dtype":"bfloat16","blocksize":64,"quant_type":"nf4","nested_blocksize":256,"nested_dtype":"float32"}`, float64(q.NestedOffset))
			tt.Data, tt.Shape = []byte(js), []int{len(js)}
		}
		ts = append(ts, tt)
	}
	c := writeCkpt(t, ts)
	got, dt, ok, err := FromCheckpointDType(c, name)
	if err != nil || !ok || dt != "bfloat16" {
		t.Fatalf("ok=%v dtype=%q err=%v", ok, dt, err)
	}
	if !reflect.DeepEqual(got, q) {
		t.Errorf("differs:\n got %+v\nwant %+v", got, q)
	}
}
