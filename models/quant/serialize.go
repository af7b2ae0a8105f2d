package quant

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/lorakit/lorakit/models/safetensors"
)

// The state-dict suffixes bitsandbytes' Linear4bit writes after "<module>.weight" (QuantState.as_dict(packed=True)).
const (
	keyAbsmax         = ".absmax"
	keyQuantMap       = ".quant_map"
	keyNestedAbsmax   = ".nested_absmax"
	keyNestedQuantMap = ".nested_quant_map"
	keyQuantState     = ".quant_state.bitsandbytes__"
)

// torchDType maps a safetensors dtype name (or a torch name) to the string bitsandbytes records,
// str(torch.dtype).strip("torch.").
func torchDType(d string) string {
	switch strings.ToUpper(strings.TrimPrefix(d, "torch.")) {
	case "BF16", "BFLOAT16":
		return "bfloat16"
	case "F16", "FLOAT16", "HALF":
		return "float16"
	case "F64", "FLOAT64":
		return "float64"
	}
	return "float32"
}

// pyFloat formats f like Python's repr of a float (json.dumps): shortest round-trip digits, ".0" on integers.
func pyFloat(f float64) string {
	s := strconv.FormatFloat(f, 'g', -1, 64)
	if !strings.ContainsAny(s, ".eEnN") {
		s += ".0"
	}
	return s
}

// quantStateJSON is the UTF-8 JSON bitsandbytes packs into "quant_state.bitsandbytes__<type>", with Python's
// json.dumps spacing and bitsandbytes' key order.
func quantStateJSON(q *Weight, origDType string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `{"quant_type": "%s", "blocksize": %d, "dtype": "%s", "shape": [`, q.Type, q.BlockSize, torchDType(origDType))
	for i, s := range q.Shape {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Itoa(s))
	}
	b.WriteString("]")
	if q.Double {
		fmt.Fprintf(&b, `, "nested_blocksize": %d, "nested_dtype": "float32", "nested_offset": %s`,
			q.NestedBlockSize, pyFloat(float64(q.NestedOffset)))
	}
	b.WriteString("}")
	return []byte(b.String())
}

// ModulePrefix strips a trailing ".weight" from a tensor name ("model.layers.0.mlp.up_proj.weight" →
// "model.layers.0.mlp.up_proj").
func ModulePrefix(weightName string) string { return strings.TrimSuffix(weightName, ".weight") }

// ToTensors returns the safetensors tensors that store q under the weight name `name` exactly as transformers
// saves a bitsandbytes layer. 4-bit: `name` (packed uint8 [(n+1)/2, 1]), name.absmax (float32, or uint8 with
// double quantisation), name.quant_map (float32 [16]), with double quantisation name.nested_absmax and
// name.nested_quant_map, and name.quant_state.bitsandbytes__<type> (uint8 JSON). Int8 (LLM.int8):
// `name` (int8 [out, in]), <module>.SCB (float32 [out]) and <module>.weight_format (uint8 scalar 0 = "row").
// origDType is the dtype the weight had ("BF16", "F16", "F32" or a torch name).
func ToTensors(name string, q *Weight, origDType string) []safetensors.Tensor {
	if q.Type == Int8 {
		prefix := ModulePrefix(name)
		return []safetensors.Tensor{
			{Name: name, DType: safetensors.I8, Shape: append([]int(nil), q.Shape...), Data: q.packed()},
			safetensors.F32Tensor(prefix+".SCB", []int{len(q.absmaxes())}, q.absmaxes()),
			{Name: prefix + ".weight_format", DType: safetensors.U8, Shape: []int{}, Data: []byte{0}},
		}
	}
	ts := []safetensors.Tensor{
		{Name: name, DType: safetensors.U8, Shape: []int{q.codeBytes(), 1}, Data: q.packed()},
		safetensors.F32Tensor(name+keyQuantMap, []int{16}, q.Code[:]),
	}
	if q.Double {
		ts = append(ts,
			safetensors.Tensor{Name: name + keyAbsmax, DType: safetensors.U8, Shape: []int{len(q.QAbsmax)}, Data: q.QAbsmax},
			safetensors.F32Tensor(name+keyNestedAbsmax, []int{len(q.NestedAbsmax)}, q.NestedAbsmax),
			safetensors.F32Tensor(name+keyNestedQuantMap, []int{len(q.NestedCode)}, q.NestedCode))
	} else {
		ts = append(ts, safetensors.F32Tensor(name+keyAbsmax, []int{len(q.absmaxes())}, q.absmaxes()))
	}
	js := quantStateJSON(q, origDType)
	ts = append(ts, safetensors.Tensor{Name: name + keyQuantState + string(q.Type), DType: safetensors.U8,
		Shape: []int{len(js)}, Data: js})
	return ts
}

// IsAuxTensor reports whether a tensor name is one of the side tensors of a bitsandbytes weight (absmax,
// quant maps, quant state, SCB, weight_format) rather than a weight of its own.
func IsAuxTensor(name string) bool {
	for _, s := range []string{keyAbsmax, keyQuantMap, keyNestedAbsmax, keyNestedQuantMap} {
		if strings.HasSuffix(name, ".weight"+s) {
			return true
		}
	}
	return strings.Contains(name, ".weight"+keyQuantState) || strings.HasSuffix(name, ".SCB") ||
		strings.HasSuffix(name, ".weight_format")
}

// quantState is the JSON of quant_state.bitsandbytes__<type>.
type quantState struct {
	QuantType       string   `json:"quant_type"`
	BlockSize       int      `json:"blocksize"`
	DType           string   `json:"dtype"`
	Shape           []int    `json:"shape"`
	NestedBlockSize int      `json:"nested_blocksize"`
	NestedDType     string   `json:"nested_dtype"`
	NestedOffset    *float64 `json:"nested_offset"`
}

// FromCheckpoint loads the weight `name` ("....q_proj.weight") of a checkpoint saved by transformers with
// bitsandbytes (or by lorakit). It reports false (and no error) when name is not stored quantised. The
// returned Weight owns copies of the data. OrigDType reports the dtype recorded for the weight.
func FromCheckpoint(c *safetensors.Checkpoint, name string) (*Weight, bool, error) {
	q, _, ok, err := FromCheckpointDType(c, name)
	return q, ok, err
}

// FromCheckpointDType is FromCheckpoint that also returns the recorded original dtype ("bfloat16", ...).
//
// complexity: one check per bitsandbytes state tensor and JSON field, in the order bitsandbytes writes them.
func FromCheckpointDType(c *safetensors.Checkpoint, name string) (*Weight, string, bool, error) {
	var stateKey string
	var typ Type
	for _, t := range []Type{NF4, FP4} {
		if _, _, ok := c.Info(name + keyQuantState + string(t)); ok {
			if stateKey != "" {
				return nil, "", false, fmt.Errorf("%s: both quant_state.bitsandbytes__nf4 and __fp4 present", name)
			}
			stateKey, typ = name+keyQuantState+string(t), t
		}
	}
	if stateKey == "" {
		prefix := ModulePrefix(name)
		if _, _, ok := c.Info(prefix + ".SCB"); ok {
			q, err := int8FromCheckpoint(c, name, prefix)
			return q, "", err == nil, err
		}
		return nil, "", false, nil
	}
	raw, err := c.Bytes(stateKey)
	if err != nil {
		return nil, "", false, err
	}
	var st quantState
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, "", false, fmt.Errorf("%s: bad JSON: %w", stateKey, err)
	}
	if st.QuantType != string(typ) {
		return nil, "", false, fmt.Errorf("%s: quant_type %q does not match the key", stateKey, st.QuantType)
	}
	if st.BlockSize <= 0 || len(st.Shape) == 0 {
		return nil, "", false, fmt.Errorf("%s: blocksize %d shape %v", stateKey, st.BlockSize, st.Shape)
	}
	n := 1
	for _, s := range st.Shape {
		if s <= 0 || n > math.MaxInt32/s {
			return nil, "", false, fmt.Errorf("%s: bad shape %v", stateKey, st.Shape)
		}
		n *= s
	}
	q := &Weight{Type: typ, Shape: st.Shape, BlockSize: st.BlockSize}
	nb := q.NumBlocks()

	packed, err := c.Bytes(name)
	if err != nil {
		return nil, "", false, err
	}
	// quant_storage other than uint8 stores the same bytes viewed as a wider type
	if len(packed) < (n+1)/2 || len(packed) > (n+1)/2+8 {
		return nil, "", false, fmt.Errorf("%s: %d packed bytes for %d elements, want %d", name, len(packed), n, (n+1)/2)
	}
	q.Packed = append([]byte(nil), packed[:(n+1)/2]...)

	qm, err := c.Float32s(name + keyQuantMap)
	if err != nil {
		return nil, "", false, err
	}
	if len(qm) != 16 {
		return nil, "", false, fmt.Errorf("%s%s: %d entries, want 16", name, keyQuantMap, len(qm))
	}
	copy(q.Code[:], qm)
	if err := finite(name+keyQuantMap, qm); err != nil {
		return nil, "", false, err
	}

	info, _, ok := c.Info(name + keyAbsmax)
	if !ok {
		return nil, "", false, fmt.Errorf("%s%s: missing", name, keyAbsmax)
	}
	if st.NestedOffset != nil || st.NestedBlockSize != 0 {
		if st.NestedOffset == nil || st.NestedBlockSize <= 0 {
			return nil, "", false, fmt.Errorf("%s: incomplete nested state", stateKey)
		}
		if info.DType != safetensors.U8 || info.Elems() != nb {
			return nil, "", false, fmt.Errorf("%s%s: %s %v, want U8 [%d]", name, keyAbsmax, info.DType, info.Shape, nb)
		}
		qa, err := c.Bytes(name + keyAbsmax)
		if err != nil {
			return nil, "", false, err
		}
		q.Double = true
		q.QAbsmax = append([]byte(nil), qa...)
		q.NestedBlockSize = st.NestedBlockSize
		q.NestedOffset = float32(*st.NestedOffset)
		if q.NestedAbsmax, err = c.Float32s(name + keyNestedAbsmax); err != nil {
			return nil, "", false, err
		}
		if want := (nb + st.NestedBlockSize - 1) / st.NestedBlockSize; len(q.NestedAbsmax) != want {
			return nil, "", false, fmt.Errorf("%s%s: %d values, want %d", name, keyNestedAbsmax, len(q.NestedAbsmax), want)
		}
		if q.NestedCode, err = c.Float32s(name + keyNestedQuantMap); err != nil {
			return nil, "", false, err
		}
		if len(q.NestedCode) != 256 {
			return nil, "", false, fmt.Errorf("%s%s: %d entries, want 256", name, keyNestedQuantMap, len(q.NestedCode))
		}
		for _, chk := range []struct {
			n string
			v []float32
		}{{name + keyNestedAbsmax, q.NestedAbsmax}, {name + keyNestedQuantMap, q.NestedCode}, {stateKey + " nested_offset", []float32{q.NestedOffset}}} {
			if err := finite(chk.n, chk.v); err != nil {
				return nil, "", false, err
			}
		}
	} else {
		if q.Absmax, err = c.Float32s(name + keyAbsmax); err != nil {
			return nil, "", false, err
		}
		if len(q.Absmax) != nb {
			return nil, "", false, fmt.Errorf("%s%s: %d values, want %d blocks", name, keyAbsmax, len(q.Absmax), nb)
		}
		if err := finite(name+keyAbsmax, q.Absmax); err != nil {
			return nil, "", false, err
		}
	}
	return q, st.DType, true, nil
}

func int8FromCheckpoint(c *safetensors.Checkpoint, name, prefix string) (*Weight, error) {
	info, _, ok := c.Info(name)
	if !ok {
		return nil, fmt.Errorf("%s: missing (have %s.SCB)", name, prefix)
	}
	if info.DType != safetensors.I8 || len(info.Shape) != 2 {
		return nil, fmt.Errorf("%s: %s %v, want I8 [out, in] (LLM.int8)", name, info.DType, info.Shape)
	}
	if raw, err := c.Bytes(prefix + ".weight_format"); err == nil && len(raw) > 0 && raw[0] != 0 {
		return nil, fmt.Errorf("%s.weight_format: %d, only 0 (row) is supported", prefix, raw[0])
	}
	w, err := c.Bytes(name)
	if err != nil {
		return nil, err
	}
	scb, err := c.Float32s(prefix + ".SCB")
	if err != nil {
		return nil, err
	}
	if len(scb) != info.Shape[0] {
		return nil, fmt.Errorf("%s.SCB: %d values for %d rows", prefix, len(scb), info.Shape[0])
	}
	if err := finite(prefix+".SCB", scb); err != nil {
		return nil, err
	}
	return &Weight{Type: Int8, Shape: append([]int(nil), info.Shape...), BlockSize: info.Shape[1],
		Packed: append([]byte(nil), w...), Absmax: scb}, nil
}

func finite(name string, v []float32) error {
	for i, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return fmt.Errorf("%s: element %d is %v", name, i, x)
		}
	}
	return nil
}

// PyFloat is a float64 that marshals like Python's json.dumps (6.0, not 6).
type PyFloat float64

// MarshalJSON writes Python's float repr.
func (f PyFloat) MarshalJSON() ([]byte, error) { return []byte(pyFloat(float64(f))), nil }
