package sample

import (
	"sort"

	"github.com/lorakit/lorakit/models/kernels"
)

// Logprob is a token with its log-probability under the model.
type Logprob struct {
	ID      int
	Logprob float32
}

// Logprobs returns log softmax(logits)[id] and the k most likely tokens with theirs (highest first, the lower id
// first on ties; none for k ≤ 0): the model's distribution, before any sampling filter reshapes it.
func Logprobs(logits []float32, id, k int) (float32, []Logprob) {
	lse := float32(kernels.LogSumExp(logits))
	return logits[id] - lse, topK(logits, k, lse)
}

func topK(logits []float32, k int, lse float32) []Logprob {
	if k <= 0 {
		return nil
	}
	k = min(k, len(logits))
	top := make([]Logprob, 0, k+1)
	for id, v := range logits {
		if len(top) == k && v <= top[k-1].Logprob {
			continue
		}
		i := sort.Search(len(top), func(i int) bool { return top[i].Logprob < v })
		top = append(top, Logprob{})
		copy(top[i+1:], top[i:])
		top[i] = Logprob{ID: id, Logprob: v}
		if len(top) > k {
			top = top[:k]
		}
	}
	for i := range top {
		top[i].Logprob -= lse
	}
	return top
}
