package merge

import (
	"fmt"

	"github.com/lorakit/lorakit/models/lora"
)

// addTokens takes the adapter's trained token rows (trainable_token_indices): the embedding's replace rows of
// model.embed_tokens.weight (and, through the tie, of a tied head, which then stays tied); an untied head's
// replace rows of lm_head.weight. A weight other than 1 cannot scale a replacement and is reported.
func (p *plan) addTokens(c *collected, s *Source) error {
	a := s.Adapter
	for _, m := range []string{lora.EmbedModule, lora.HeadModule} {
		t := a.Tokens[m]
		if t == nil {
			continue
		}
		name := m + ".weight"
		if m == lora.HeadModule && p.tiedHead() {
			return fmt.Errorf("merge: adapter %s has trained rows for lm_head, but base ties lm_head to the embedding (its rows follow embed_tokens')", s.Dir)
		}
		info, _, ok := p.base.Info(name)
		if !ok || len(info.Shape) != 2 || info.Shape[1] != t.Dim {
			return fmt.Errorf("merge: adapter %s: trained token rows of %s are %d wide, base tensor %s is %v", s.Dir, m, t.Dim, name, info.Shape)
		}
		for _, id := range t.IDs {
			if id < 0 || id >= info.Shape[0] {
				return fmt.Errorf("merge: adapter %s: trained token id %d is outside %s's %d rows", s.Dir, id, name, info.Shape[0])
			}
		}
		for _, d := range c.deltas[name] {
			if d.tokens != nil {
				return fmt.Errorf("merge: tensor %q: two adapters replace token rows of it; cannot combine", name)
			}
		}
		c.deltas[name] = append(c.deltas[name], delta{tokens: t})
		if s.Weight != 1 {
			p.warn("adapter %s: its trained token rows replace rows of %s; its weight %v is not applied to them", s.Dir, name, s.Weight)
		}
		p.logf("adapter %s: %d trained token rows of %s", s.Dir, len(t.IDs), m)
	}
	return nil
}

// pairDeltas reports whether ds holds a LoRA pair (not only trained token rows).
func pairDeltas(ds []delta) bool {
	for _, d := range ds {
		if d.pair != nil {
			return true
		}
	}
	return false
}

// tokenDeltas are the trained-token-row entries of ds.
func tokenDeltas(ds []delta) []delta {
	var out []delta
	for _, d := range ds {
		if d.tokens != nil {
			out = append(out, d)
		}
	}
	return out
}
