package merge

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/lorakit/lorakit/models/safetensors"
	"github.com/lorakit/lorakit/quant"
)

// quantInfo is a bitsandbytes 4-bit weight of the base: the packed weight tensor plus its companions.
type quantInfo struct {
	state bnbState
	shape []int // original [out, in]
	aux   []string
}

// bnbState is the JSON of a weight.quant_state.bitsandbytes__{nf4,fp4} tensor.
type bnbState struct {
	QuantType       string   `json:"quant_type"`
	BlockSize       int      `json:"blocksize"`
	DType           string   `json:"dtype"`
	Shape           []int    `json:"shape"`
	NestedBlockSize int      `json:"nested_blocksize"`
	NestedDType     string   `json:"nested_dtype"`
	NestedOffset    *float64 `json:"nested_offset"`
}

var quantSuffixes = []string{".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map"}

// findQuantized finds the bitsandbytes 4-bit weights of a checkpoint by their quant_state tensors.
func findQuantized(c *safetensors.Checkpoint) (map[string]*quantInfo, error) {
	out := map[string]*quantInfo{}
	for _, n := range c.Names() {
		i := strings.Index(n, ".quant_state.bitsandbytes__")
		if i < 0 {
			continue
		}
		w := n[:i]
		raw, err := c.Bytes(n)
		if err != nil {
			return nil, err
		}
		var st bnbState
		if err := json.Unmarshal(raw, &st); err != nil {
			return nil, fmt.Errorf("tensor %q: bad quant_state JSON: %w", n, err)
		}
		if st.QuantType != "nf4" && st.QuantType != "fp4" {
			return nil, fmt.Errorf("tensor %q: quant_type %q is not nf4 or fp4", n, st.QuantType)
		}
		if len(st.Shape) != 2 || st.Shape[0] <= 0 || st.Shape[1] <= 0 || !quant.ValidBlockSize(st.BlockSize) {
			return nil, fmt.Errorf("tensor %q: quant_state shape %v / blocksize %d not supported", n, st.Shape, st.BlockSize)
		}
		if _, _, ok := c.Info(w); !ok {
			return nil, fmt.Errorf("tensor %q has no packed weight %q", n, w)
		}
		q := &quantInfo{state: st, shape: st.Shape, aux: []string{n}}
		for _, s := range quantSuffixes {
			if _, _, ok := c.Info(w + s); ok {
				q.aux = append(q.aux, w+s)
			}
		}
		out[w] = q
	}
	return out, nil
}

// addQuantized plans a 4-bit base weight: dequantised (and merged) in the output dtype, or — with
// --requantize — kept bit for bit when untouched and re-quantised when merged.
func (p *plan) addQuantized(ctx context.Context, name string, q *quantInfo, ds []delta, saved *safetensors.Tensor, opt Options) error {
	if opt.Requantize == "" {
		dt := p.outDT
		if dt == "" {
			dt = safetensors.BF16
		}
		it := &item{src: name, hdr: safetensors.Header{Name: name, DType: dt, Shape: q.shape}}
		switch {
		case saved != nil:
			it.kind, it.saved = kReplace, saved
			p.res.Replaced++
		case len(ds) > 0:
			it.kind, it.deltas = kMerge, ds
			p.res.Merged++
			p.res.Dequantized++
		default:
			it.kind = kDequant
			p.res.Dequantized++
		}
		p.items = append(p.items, it)
		return nil
	}
	if len(ds) == 0 && saved == nil { // untouched: the packed weight and its companions, bit for bit
		for _, n := range append([]string{name}, q.aux...) {
			info, _, _ := p.base.Info(n)
			p.items = append(p.items, &item{kind: kCopy, src: n, hdr: safetensors.Header{Name: n, DType: info.DType, Shape: info.Shape}})
			p.res.Copied++
		}
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	var W []float32
	var err error
	if saved != nil {
		W = make([]float32, len(saved.Data)/saved.DType.Size())
		err = safetensors.Decode(saved.DType, saved.Data, W)
	} else {
		if W, err = p.dequantize(name, q); err == nil {
			err = addDeltas(p.pool, name, W, ds)
		}
	}
	if err != nil {
		return fmt.Errorf("merge: %w", err)
	}
	blocks, err := quant.Quantize4(quant.NF4, W, q.shape, q.state.BlockSize, q.state.NestedOffset != nil)
	if err != nil {
		return fmt.Errorf("merge: re-quantise %q: %w", name, err)
	}
	for _, t := range bnbTensors(name, blocks, q.state.DType) {
		p.items = append(p.items, &item{kind: kPrecomp, src: name, data: t.Data, hdr: safetensors.Header{Name: t.Name, DType: t.DType, Shape: t.Shape}})
	}
	p.res.Requantized++
	p.res.Merged++
	return nil
}

// dequantize reads a bitsandbytes 4-bit weight and returns it as f32 [out, in].
func (p *plan) dequantize(name string, q *quantInfo) ([]float32, error) {
	b, err := loadBnb(p.rawBytes, name, q)
	if err != nil {
		return nil, err
	}
	W := make([]float32, b.Elems())
	b.Dequantize(W)
	return W, nil
}

// tensorReader returns a tensor's raw bytes and header.
type tensorReader func(name string) ([]byte, safetensors.TensorInfo, error)

// checkpointReader reads through a checkpoint's mmap.
func checkpointReader(c *safetensors.Checkpoint) tensorReader {
	return func(name string) ([]byte, safetensors.TensorInfo, error) {
		info, _, ok := c.Info(name)
		if !ok {
			return nil, info, fmt.Errorf("tensor %q not found", name)
		}
		b, err := c.Bytes(name)
		return b, info, err
	}
}

// loadBnb builds quant.Blocks4 from the tensors transformers saves for a bitsandbytes Linear4bit.
func loadBnb(read tensorReader, name string, q *quantInfo) (*quant.Blocks4, error) {
	st := q.state
	n := q.shape[0] * q.shape[1]
	nb := (n + st.BlockSize - 1) / st.BlockSize
	packed, info, err := read(name)
	if err != nil {
		return nil, err
	}
	if info.DType != safetensors.U8 || len(packed) != (n+1)/2 {
		return nil, fmt.Errorf("tensor %q: %s %v, want U8 with %d bytes for shape %v", name, info.DType, info.Shape, (n+1)/2, q.shape)
	}
	f32s := func(suffix string, want int) ([]float32, error) {
		raw, info, err := read(name + suffix)
		if err != nil {
			return nil, err
		}
		if info.DType != safetensors.F32 || len(raw) != 4*want {
			return nil, fmt.Errorf("tensor %q: %s %v, want F32 [%d]", name+suffix, info.DType, info.Shape, want)
		}
		v := make([]float32, want)
		for i := range v {
			v[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
		return v, nil
	}
	b := &quant.Blocks4{Type: quant.Type(st.QuantType), Shape: append([]int(nil), q.shape...), BlockSize: st.BlockSize, Packed: packed}
	qm, err := f32s(".quant_map", 16)
	if err != nil {
		return nil, err
	}
	copy(b.Code[:], qm)
	if st.NestedOffset == nil {
		if b.Absmax, err = f32s(".absmax", nb); err != nil {
			return nil, err
		}
		return b, nil
	}
	nbs := st.NestedBlockSize
	if nbs <= 0 {
		return nil, fmt.Errorf("tensor %q: nested_blocksize %d", name, nbs)
	}
	qa, info, err := read(name + ".absmax")
	if err != nil {
		return nil, err
	}
	if info.DType != safetensors.U8 || len(qa) != nb {
		return nil, fmt.Errorf("tensor %q: %s %v, want U8 [%d] (double quantisation)", name+".absmax", info.DType, info.Shape, nb)
	}
	b.Double, b.QAbsmax, b.NestedOffset, b.NestedBlockSize = true, qa, float32(*st.NestedOffset), nbs
	if b.NestedAbsmax, err = f32s(".nested_absmax", (nb+nbs-1)/nbs); err != nil {
		return nil, err
	}
	if b.NestedCode, err = f32s(".nested_quant_map", 256); err != nil {
		return nil, err
	}
	return b, nil
}

// bnbTensors serialises q the way transformers saves a bitsandbytes Linear4bit (weight, absmax, quant_map,
// nested_*, quant_state.bitsandbytes__nf4 JSON bytes).
func bnbTensors(name string, q *quant.Blocks4, origDType string) []safetensors.Tensor {
	ts := []safetensors.Tensor{{Name: name, DType: safetensors.U8, Shape: []int{len(q.Packed), 1}, Data: q.Packed}}
	f32 := func(n string, v []float32) {
		ts = append(ts, safetensors.F32Tensor(n, []int{len(v)}, v))
	}
	st := "{\"quant_type\": \"" + string(q.Type) + "\", \"blocksize\": " + strconv.Itoa(q.BlockSize)
	if q.Double {
		ts = append(ts, safetensors.Tensor{Name: name + ".absmax", DType: safetensors.U8, Shape: []int{len(q.QAbsmax)}, Data: q.QAbsmax})
		f32(name+".nested_absmax", q.NestedAbsmax)
		f32(name+".nested_quant_map", q.NestedCode)
	} else {
		f32(name+".absmax", q.Absmax)
	}
	f32(name+".quant_map", q.Code[:])
	if origDType == "" {
		origDType = "bfloat16"
	}
	st += ", \"dtype\": \"" + origDType + "\", \"shape\": [" + strconv.Itoa(q.Shape[0]) + ", " + strconv.Itoa(q.Shape[1]) + "]"
	if q.Double {
		st += ", \"nested_blocksize\": " + strconv.Itoa(q.NestedBlockSize) + ", \"nested_dtype\": \"float32\", \"nested_offset\": " +
			strconv.FormatFloat(float64(q.NestedOffset), 'g', -1, 64)
	}
	st += "}"
	ts = append(ts, safetensors.Tensor{Name: name + ".quant_state.bitsandbytes__" + string(q.Type), DType: safetensors.U8,
		Shape: []int{len(st)}, Data: []byte(st)})
	return ts
}
