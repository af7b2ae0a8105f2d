// Package sample picks the next token from logits: repetition, presence and frequency penalties, temperature,
// top-k, top-p and min-p (applied in the order Hugging Face's generate applies them), with a seeded generator.
package sample

import (
	"math"
	"math/rand/v2"

	"github.com/lorakit/lorakit/models/kernels"
)

// Options configure a Sampler. Zero values disable each filter; Temperature 0 is greedy argmax.
type Options struct {
	Temperature       float32
	TopP              float32 // keep the smallest set of most likely tokens whose probability reaches TopP (0 or 1: off)
	MinP              float32 // drop tokens less likely than MinP × the most likely one (0: off)
	TopK              int     // keep the TopK most likely tokens (0: off)
	RepetitionPenalty float32 // HF/CTRL: logits of seen tokens divided (if > 0) or multiplied (if < 0) by it; 0 or 1: off
	PresencePenalty   float32 // OpenAI: subtracted once from the logit of every seen token
	FrequencyPenalty  float32 // OpenAI: subtracted per occurrence of a seen token
	Seed              int64
}

// Sampler holds the random generator and scratch buffers; it is not safe for concurrent use.
type Sampler struct {
	o       Options
	rng     *rand.Rand
	x       []float32
	idx     []int32
	counts  []int32
	touched []int32
	kept    []int32
}

// New returns a sampler; the same options and seed give the same choices for the same logits.
func New(o Options) *Sampler {
	return &Sampler{o: o, rng: rand.New(rand.NewPCG(uint64(o.Seed), 0x6c6f72616b6974))}
}

// Options returns the sampler's options.
func (s *Sampler) Options() Options { return s.o }

// Sample returns the next token id given the logits of the last position and the ids seen so far (prompt and
// generated, for the penalties). logits is not modified. Temperature 0 gives the argmax (lowest id on ties).
//
// complexity: the sampling stages in their fixed order (penalties, temperature, top-k, top-p, min-p, draw), each a guarded step.
func (s *Sampler) Sample(logits []float32, history []int) int {
	n := len(logits)
	if n == 0 {
		return 0
	}
	o := s.o
	greedy := o.Temperature <= 0 || math.IsNaN(float64(o.Temperature))
	if greedy && !s.penalises(history) {
		return Argmax(logits) // nothing to change in a copy
	}
	if cap(s.x) < n {
		s.x = make([]float32, n)
		s.counts = make([]int32, n)
	}
	x := s.x[:n]
	copy(x, logits)
	s.penalise(x, history)
	if greedy {
		return Argmax(x)
	}
	inv := 1 / o.Temperature
	for i := range x {
		x[i] *= inv
	}
	mx := x[Argmax(x)]
	if math.IsNaN(float64(mx)) || math.IsInf(float64(mx), 0) {
		return Argmax(logits)
	}
	kernels.Softmax(x) // x now holds the probabilities
	if (o.TopK <= 0 || o.TopK >= n) && (o.TopP <= 0 || o.TopP >= 1) && o.MinP <= 0 {
		// plain softmax sampling, no ordering needed
		var sum float64
		for _, v := range x {
			sum += float64(v)
		}
		r := s.rng.Float64() * sum
		for i, v := range x {
			r -= float64(v)
			if r < 0 {
				return i
			}
		}
		return Argmax(x)
	}
	// Filtered sampling. The candidates are taken in order of decreasing probability (lowest id first on ties)
	// from a heap, so only as many tokens as the filters keep are ordered: O(vocab + kept·log vocab).
	if cap(s.idx) < n {
		s.idx = make([]int32, n)
	}
	h := s.idx[:0]
	var total float64
	for i, e := range x {
		if e > 0 { // masked (-inf) and underflowed tokens can never be drawn
			total += float64(e)
			h = append(h, int32(i))
		}
	}
	hp := heap{e: x, idx: h}
	hp.init()
	limit := len(h)
	if o.TopK > 0 && o.TopK < limit {
		limit = o.TopK
	}
	// With top-k, top-p and min-p apply to the top-k set renormalised; collect it first.
	kept := s.kept[:0] // candidates popped so far, in order
	defer func() { s.kept = kept[:0] }()
	if limit < len(h) {
		total = 0
		for range limit {
			i := hp.pop()
			kept = append(kept, i)
			total += float64(x[i])
		}
	}
	next := func(k int) (int32, bool) { // k-th most likely candidate
		if limit < len(h) {
			if k < len(kept) {
				return kept[k], true
			}
			return 0, false
		}
		if k < len(kept) {
			return kept[k], true
		}
		if hp.len() == 0 {
			return 0, false
		}
		i := hp.pop()
		kept = append(kept, i)
		return i, true
	}
	topP := o.TopP > 0 && o.TopP < 1
	first, _ := next(0)
	thr := float32(0)
	if o.MinP > 0 {
		thr = o.MinP * x[first]
	}
	var sum float64
	count := 0
	for k := 0; ; k++ {
		i, ok := next(k)
		if !ok {
			break
		}
		if k > 0 && x[i] < thr { // min-p (a prefix of the order)
			break
		}
		if k > 0 && topP && sum/total >= float64(o.TopP) { // top-p reached before this token
			break
		}
		sum += float64(x[i])
		count = k + 1
	}
	r := s.rng.Float64() * sum
	for k := range count {
		i, _ := next(k)
		r -= float64(x[i])
		if r < 0 {
			return int(i)
		}
	}
	i, _ := next(count - 1)
	return int(i)
}

// heap is a binary max-heap of token ids ordered by probability e (then by lower id).
type heap struct {
	e   []float32
	idx []int32
}

func (h *heap) len() int { return len(h.idx) }

func (h *heap) less(a, b int32) bool { // a comes before b
	if h.e[a] != h.e[b] {
		return h.e[a] > h.e[b]
	}
	return a < b
}

func (h *heap) init() {
	for i := len(h.idx)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

func (h *heap) down(i int) {
	n := len(h.idx)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		best := l
		if r := l + 1; r < n && h.less(h.idx[r], h.idx[l]) {
			best = r
		}
		if !h.less(h.idx[best], h.idx[i]) {
			return
		}
		h.idx[i], h.idx[best] = h.idx[best], h.idx[i]
		i = best
	}
}

func (h *heap) pop() int32 {
	top := h.idx[0]
	last := len(h.idx) - 1
	h.idx[0] = h.idx[last]
	h.idx = h.idx[:last]
	if last > 0 {
		h.down(0)
	}
	return top
}

// penalise applies the repetition, presence and frequency penalties for the tokens in history.
func (s *Sampler) penalise(x []float32, history []int) {
	if !s.penalises(history) {
		return
	}
	o := s.o
	rep := o.RepetitionPenalty != 0 && o.RepetitionPenalty != 1
	s.touched = s.touched[:0]
	for _, t := range history {
		if t < 0 || t >= len(x) {
			continue
		}
		if s.counts[t] == 0 {
			s.touched = append(s.touched, int32(t))
		}
		s.counts[t]++
	}
	for _, t := range s.touched {
		v := x[t]
		if rep {
			if v < 0 {
				v *= o.RepetitionPenalty
			} else {
				v /= o.RepetitionPenalty
			}
		}
		v -= o.PresencePenalty + o.FrequencyPenalty*float32(s.counts[t])
		x[t] = v
		s.counts[t] = 0
	}
}

// penalises reports whether penalise changes any logit for history.
func (s *Sampler) penalises(history []int) bool {
	o := s.o
	rep := o.RepetitionPenalty != 0 && o.RepetitionPenalty != 1
	return len(history) > 0 && (rep || o.PresencePenalty != 0 || o.FrequencyPenalty != 0)
}

// Argmax returns the index of the largest value (the lowest index on ties; NaNs are never chosen unless all are),
// with the vector kernel of models/kernels.
func Argmax(x []float32) int { return kernels.Argmax(x) }
