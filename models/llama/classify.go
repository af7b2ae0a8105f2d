package llama

import "fmt"

// Classify runs each sequence (no cache, no adapter) through a sequence classifier and returns its score
// head's outputs [num_labels] (raw logits: a reward model's reward), read where transformers'
// *ForSequenceClassification reads them: at the rightmost token that is not pad_token_id (position 0 when
// every token is), or at the last token when the config has no pad_token_id. Tokens after that position
// cannot change it (attention is causal), so they are not run.
func (m *Model) Classify(seqs [][]int) ([][]float32, error) {
	if m.Score == nil {
		return nil, fmt.Errorf("llama: classify: %v has no score head (not a *ForSequenceClassification)", m.Config.Architectures)
	}
	batch := make([]Seq, len(seqs))
	for i, s := range seqs {
		batch[i].Tokens = s
		if len(s) > 0 { // an empty sequence is refused by Hidden, naming it
			batch[i].Tokens = s[:ReadPosition(s, m.Config.PadTokenID)+1]
		}
	}
	hs, err := m.Hidden(batch)
	if err != nil {
		return nil, err
	}
	H, L := m.Config.HiddenSize, m.Score.Rows
	x := make([]float32, len(seqs)*H)
	for i, h := range hs {
		copy(x[i*H:], h[0])
	}
	y := make([]float32, len(seqs)*L)
	m.Score.Forward(m.Pool, y, x, len(seqs))
	out := make([][]float32, len(seqs))
	for i := range out {
		out[i] = y[i*L : (i+1)*L : (i+1)*L]
	}
	return out, nil
}

// ReadPosition is the position a sequence classifier reads: the rightmost token of seq that is not pad
// (transformers: argmax of position·(token != pad), 0 when all are pad); the last when pad < 0 (no pad token).
func ReadPosition(seq []int, pad int) int {
	if pad < 0 {
		return max(0, len(seq)-1)
	}
	for i := len(seq) - 1; i > 0; i-- {
		if seq[i] != pad {
			return i
		}
	}
	return 0
}
