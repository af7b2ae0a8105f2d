package data

import (
	"fmt"

	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/llama"
)

// Scorer gives per-token negative log-likelihoods: for each sequence s, nll[t] = -log p(s[t+1] | s[:t+1])
// for t in [0, len(s)-1). Implementations may batch the sequences together.
type Scorer interface {
	TokenNLL(seqs [][]int) ([][]float64, error)
}

// ModelScorer scores with a Llama-family model (optionally with an adapter). Sequences are packed into
// Forward calls so that at most MaxLogitFloats logits exist at once; a sequence longer than that is fed
// in chunks through its KV cache. It is not safe for concurrent use.
type ModelScorer struct {
	Net            *llama.Model
	Adapter        llama.Delta // nil: the base model
	MaxLogitFloats int         // 0: 1<<25 (128 MiB of logits)
}

// TokenNLL implements Scorer.
func (s *ModelScorer) TokenNLL(seqs [][]int) ([][]float64, error) {
	vocab := s.Net.Config.VocabSize
	budget := s.MaxLogitFloats
	if budget <= 0 {
		budget = 1 << 25
	}
	maxRows := max(1, budget/vocab)
	out := make([][]float64, len(seqs))
	// group whole sequences into batches of at most maxRows rows
	var group []int
	rows := 0
	flush := func() error {
		if len(group) == 0 {
			return nil
		}
		batch := make([]llama.Seq, len(group))
		for i, gi := range group {
			batch[i] = llama.Seq{Tokens: seqs[gi], Adapter: s.Adapter, AllLogits: true}
		}
		logits, err := s.Net.Forward(batch)
		if err != nil {
			return err
		}
		for i, gi := range group {
			out[gi] = nllFromLogits(logits[i], seqs[gi], nil)
		}
		group, rows = group[:0], 0
		return nil
	}
	for i, seq := range seqs {
		if len(seq) < 2 {
			out[i] = []float64{}
			continue
		}
		if len(seq) > maxRows { // alone, in chunks through a cache
			if err := flush(); err != nil {
				return nil, err
			}
			nll, err := s.chunked(seq, maxRows)
			if err != nil {
				return nil, err
			}
			out[i] = nll
			continue
		}
		if rows+len(seq) > maxRows {
			if err := flush(); err != nil {
				return nil, err
			}
		}
		group = append(group, i)
		rows += len(seq)
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return out, nil
}

func (s *ModelScorer) chunked(seq []int, chunk int) ([]float64, error) {
	cache := s.Net.NewCache(len(seq))
	nll := make([]float64, 0, len(seq)-1)
	for lo := 0; lo < len(seq)-1; lo += chunk {
		hi := min(lo+chunk, len(seq)-1)
		logits, err := s.Net.Forward([]llama.Seq{{Tokens: seq[lo:hi], Cache: cache, Adapter: s.Adapter, AllLogits: true}})
		if err != nil {
			return nil, err
		}
		nll = nllFromLogits(logits[0], seq[lo:hi+1], nll)
	}
	return nll, nil
}

// nllFromLogits appends -log softmax(logits[t])[seq[t+1]] for every t with a next token.
func nllFromLogits(logits [][]float32, seq []int, dst []float64) []float64 {
	for t := 0; t+1 < len(seq) && t < len(logits); t++ {
		row := logits[t]
		dst = append(dst, kernels.LogSumExp(row)-float64(row[seq[t+1]]))
	}
	return dst
}

// checkNLL validates a Scorer's answer shape.
func checkNLL(seqs [][]int, nll [][]float64) error {
	if len(nll) != len(seqs) {
		return fmt.Errorf("scorer returned %d results for %d sequences", len(nll), len(seqs))
	}
	for i := range seqs {
		if want := max(0, len(seqs[i])-1); len(nll[i]) != want {
			return fmt.Errorf("scorer returned %d values for a sequence of %d tokens", len(nll[i]), len(seqs[i]))
		}
	}
	return nil
}
