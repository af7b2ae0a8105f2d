package merge

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/lorakit/lorakit/models/safetensors"
)

// quantInfo is a bitsandbytes 4-bit weight of the base: the packed weight tensor plus its companions.
type quantInfo struct {
	qtype string // "nf4" | "fp4"
	shape []int  // original [out, in]
	dtype string // original dtype as bitsandbytes records it ("bfloat16")
	aux   []string
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
		var st struct {
			QuantType string `json:"quant_type"`
			Shape     []int  `json:"shape"`
			DType     string `json:"dtype"`
		}
		if err := json.Unmarshal(raw, &st); err != nil {
			return nil, fmt.Errorf("tensor %q: bad quant_state JSON: %w", n, err)
		}
		q := &quantInfo{qtype: st.QuantType, shape: st.Shape, dtype: st.DType, aux: []string{n}}
		for _, s := range quantSuffixes {
			if _, _, ok := c.Info(w + s); ok {
				q.aux = append(q.aux, w+s)
			}
		}
		out[w] = q
	}
	return out, nil
}

// addQuantized plans a 4-bit base weight: dequantised (and merged) in the output dtype, or kept/re-quantised.
func (p *plan) addQuantized(ctx context.Context, name string, q *quantInfo, ds []delta, saved *safetensors.Tensor, opt Options) error {
	return fmt.Errorf("merge: tensor %q: 4-bit (bitsandbytes) bases are not supported by this build yet", name)
}

func (p *plan) dequantize(name string, q *quantInfo) ([]float32, error) {
	return nil, fmt.Errorf("tensor %q: 4-bit dequantisation not available", name)
}
