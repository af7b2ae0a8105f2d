package data

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
)

// EvalSplit splits n examples (indices 0..n-1) into training and evaluation sets. The evaluation set
// holds round(fraction·n) examples (at least 1 when fraction > 0 and n ≥ 2; never all of them), chosen by
// a permutation seeded with seed; both index lists are returned in increasing order. The same n,
// fraction and seed always give the same split.
func EvalSplit(n int, fraction float64, seed int64) (train, eval []int, err error) {
	if n < 0 {
		return nil, nil, fmt.Errorf("data: eval split of %d examples", n)
	}
	if math.IsNaN(fraction) || fraction < 0 || fraction >= 1 {
		return nil, nil, fmt.Errorf("data: eval fraction %v not in [0, 1)", fraction)
	}
	k := int(math.Round(fraction * float64(n)))
	if fraction > 0 && k == 0 && n >= 2 {
		k = 1
	}
	if k >= n && n > 0 {
		k = n - 1
	}
	r := rand.New(rand.NewPCG(uint64(seed), 0x6c6f72616b6974)) // "lorakit"
	perm := r.Perm(n)
	eval = append([]int(nil), perm[:k]...)
	train = append([]int(nil), perm[k:]...)
	sort.Ints(eval)
	sort.Ints(train)
	return train, eval, nil
}
