package merge

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/lorakit/lorakit/models/quant"
	"github.com/lorakit/lorakit/models/safetensors"
)

// quantInfo is a bitsandbytes-quantised weight of the base (4-bit NF4/FP4 or LLM.int8): the weight tensor plus
// its companion tensors.
type quantInfo struct {
	typ       quant.Type
	shape     []int  // original [out, in]
	origDType string // dtype bitsandbytes recorded ("bfloat16"), "" if unknown
	blockSize int
	double    bool
	aux       []string
}

// findQuantized finds the bitsandbytes weights of a checkpoint by their quant_state (4-bit) or SCB (int8) tensors.
func findQuantized(c *safetensors.Checkpoint) (map[string]*quantInfo, error) {
	out := map[string]*quantInfo{}
	for _, n := range c.Names() {
		switch {
		case strings.Contains(n, ".weight.quant_state.bitsandbytes__"):
			w := n[:strings.Index(n, ".quant_state.")]
			raw, err := c.Bytes(n)
			if err != nil {
				return nil, err
			}
			var st struct {
				QuantType       string   `json:"quant_type"`
				BlockSize       int      `json:"blocksize"`
				DType           string   `json:"dtype"`
				Shape           []int    `json:"shape"`
				NestedOffset    *float64 `json:"nested_offset"`
				NestedBlockSize int      `json:"nested_blocksize"`
			}
			if err := json.Unmarshal(raw, &st); err != nil {
				return nil, fmt.Errorf("tensor %q: bad quant_state JSON: %w", n, err)
			}
			if len(st.Shape) != 2 || st.Shape[0] <= 0 || st.Shape[1] <= 0 {
				return nil, fmt.Errorf("tensor %q: quant_state shape %v is not a 2-D weight", n, st.Shape)
			}
			q := &quantInfo{typ: quant.Type(st.QuantType), shape: st.Shape, origDType: st.DType, blockSize: st.BlockSize,
				double: st.NestedOffset != nil, aux: []string{n}}
			for _, s := range []string{".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map"} {
				if _, _, ok := c.Info(w + s); ok {
					q.aux = append(q.aux, w+s)
				}
			}
			out[w] = q
		case strings.HasSuffix(n, ".SCB"):
			prefix := strings.TrimSuffix(n, ".SCB")
			w := prefix + ".weight"
			info, _, ok := c.Info(w)
			if !ok || len(info.Shape) != 2 {
				return nil, fmt.Errorf("tensor %q has no 2-D int8 weight %q", n, w)
			}
			q := &quantInfo{typ: quant.Int8, shape: info.Shape, aux: []string{n}}
			if _, _, ok := c.Info(prefix + ".weight_format"); ok {
				q.aux = append(q.aux, prefix+".weight_format")
			}
			out[w] = q
		}
	}
	return out, nil
}

// addQuantized plans a quantised base weight: dequantised (and merged) in the output dtype, or — with
// --requantize — kept bit for bit when untouched and re-quantised to NF4 when merged.
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
	if len(ds) == 0 && saved == nil { // untouched: the quantised weight and its companions, bit for bit
		for _, n := range append([]string{name}, q.aux...) {
			info, _, _ := p.base.Info(n)
			p.items = append(p.items, &item{kind: kCopy, src: n, hdr: safetensors.Header{Name: n, DType: info.DType, Shape: info.Shape}})
			p.res.Copied++
		}
		return nil
	}
	if q.typ == quant.Int8 {
		return fmt.Errorf("merge: tensor %q is LLM.int8: --requantize nf4 only re-quantises 4-bit bases", name)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	var W []float32
	var err error
	if saved != nil {
		W = make([]float32, len(saved.Data)/saved.DType.Size())
		err = safetensors.Decode(saved.DType, saved.Data, W)
	} else if W, err = p.dequantize(name, q); err == nil {
		err = addDeltas(p.pool, name, W, ds)
	}
	if err != nil {
		return fmt.Errorf("merge: %w", err)
	}
	blocks, err := quant.Quantize4(quant.NF4, W, q.shape, q.blockSize, q.double)
	if err != nil {
		return fmt.Errorf("merge: re-quantise %q: %w", name, err)
	}
	for _, t := range quant.ToTensors(name, blocks, q.origDType) {
		p.items = append(p.items, &item{kind: kPrecomp, src: name, data: t.Data, hdr: safetensors.Header{Name: t.Name, DType: t.DType, Shape: t.Shape}})
	}
	p.res.Requantized++
	p.res.Merged++
	return nil
}

// dequantize reads a bitsandbytes weight and returns it as f32 [out, in].
func (p *plan) dequantize(name string, q *quantInfo) ([]float32, error) {
	b, ok, err := quant.FromCheckpoint(p.base, name)
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", name, err)
	}
	if !ok {
		return nil, fmt.Errorf("tensor %q: not a bitsandbytes weight", name)
	}
	W := make([]float32, b.Elems())
	b.Dequantize(W)
	return W, nil
}
