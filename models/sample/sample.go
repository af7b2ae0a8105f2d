// Package sample picks the next token from logits: repetition, presence and frequency penalties, temperature,
// top-k, top-p and min-p (applied in the order Hugging Face's generate applies them), with a seeded generator.
package sample

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
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
}

// New returns a sampler; the same options and seed give the same choices for the same logits.
func New(o Options) *Sampler {
	return &Sampler{o: o, rng: rand.New(rand.NewPCG(uint64(o.Seed), 0x6c6f72616b6974))}
}

// Options returns the sampler's options.
func (s *Sampler) Options() Options { return s.o }

// Sample returns the next token id given the logits of the last position and the ids seen so far (prompt and
// generated, for the penalties). logits is not modified. Temperature 0 gives the argmax (lowest id on ties).
func (s *Sampler) Sample(logits []float32, history []int) int {
	n := len(logits)
	if n == 0 {
		return 0
	}
	if cap(s.x) < n {
		s.x = make([]float32, n)
		s.counts = make([]int32, n)
	}
	x := s.x[:n]
	copy(x, logits)
	s.penalise(x, history)
	o := s.o
	if o.Temperature <= 0 || math.IsNaN(float64(o.Temperature)) {
		return Argmax(x)
	}
	inv := 1 / o.Temperature
	for i := range x {
		x[i] *= inv
	}
	if (o.TopK <= 0 || o.TopK >= n) && (o.TopP <= 0 || o.TopP >= 1) && o.MinP <= 0 {
		// plain softmax sampling, no sort needed
		mx := x[Argmax(x)]
		var sum float64
		for i, v := range x {
			e := math.Exp(float64(v - mx))
			x[i] = float32(e)
			sum += e
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
	// candidates sorted by logit, descending, lowest id first on ties
	if cap(s.idx) < n {
		s.idx = make([]int32, n)
	}
	idx := s.idx[:0]
	for i, v := range x {
		if !math.IsNaN(float64(v)) && !math.IsInf(float64(v), -1) {
			idx = append(idx, int32(i))
		}
	}
	if len(idx) == 0 {
		return Argmax(logits)
	}
	slices.SortFunc(idx, func(a, b int32) int {
		if c := cmp.Compare(x[b], x[a]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	if o.TopK > 0 && o.TopK < len(idx) {
		idx = idx[:o.TopK]
	}
	// probabilities of the survivors (in x, reused)
	mx := x[idx[0]]
	var sum float64
	for _, i := range idx {
		e := math.Exp(float64(x[i] - mx))
		x[i] = float32(e)
		sum += e
	}
	if o.TopP > 0 && o.TopP < 1 {
		var cum float64
		keep := len(idx)
		for k, i := range idx {
			cum += float64(x[i]) / sum
			if cum >= float64(o.TopP) {
				keep = k + 1
				break
			}
		}
		idx = idx[:keep]
		sum = 0
		for _, i := range idx {
			sum += float64(x[i])
		}
	}
	if o.MinP > 0 {
		thr := float64(o.MinP) * float64(x[idx[0]])
		keep := 1
		for keep < len(idx) && float64(x[idx[keep]]) >= thr {
			keep++
		}
		idx = idx[:keep]
		sum = 0
		for _, i := range idx {
			sum += float64(x[i])
		}
	}
	r := s.rng.Float64() * sum
	for _, i := range idx {
		r -= float64(x[i])
		if r < 0 {
			return int(i)
		}
	}
	return int(idx[len(idx)-1])
}

// penalise applies the repetition, presence and frequency penalties for the tokens in history.
func (s *Sampler) penalise(x []float32, history []int) {
	o := s.o
	rep := o.RepetitionPenalty != 0 && o.RepetitionPenalty != 1
	if len(history) == 0 || (!rep && o.PresencePenalty == 0 && o.FrequencyPenalty == 0) {
		return
	}
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

// Argmax returns the index of the largest value (the lowest index on ties; NaNs are never chosen unless all are).
func Argmax(x []float32) int {
	best := -1
	for i, v := range x {
		if v != v {
			continue
		}
		if best < 0 || v > x[best] {
			best = i
		}
	}
	if best < 0 {
		return 0
	}
	return best
}
