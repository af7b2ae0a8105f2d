package sample

import (
	"fmt"
	"math"
	"testing"
)

func TestGreedy(t *testing.T) {
	s := New(Options{})
	if got := s.Sample([]float32{1, 3, 3, 2}, nil); got != 1 {
		t.Fatalf("argmax tie: %d", got)
	}
	if got := Argmax([]float32{float32(math.NaN()), -1, -2}); got != 1 {
		t.Fatalf("NaN argmax: %d", got)
	}
	// repetition penalty applies in greedy mode too (HF): 3/2 = 1.5 < 2
	s = New(Options{RepetitionPenalty: 2})
	if got := s.Sample([]float32{0, 3, 2}, []int{1}); got != 2 {
		t.Fatalf("repetition penalty: %d", got)
	}
	// negative logits are multiplied
	s = New(Options{RepetitionPenalty: 2})
	if got := s.Sample([]float32{-1, -1.5, -5}, []int{0, 0}); got != 1 {
		t.Fatalf("negative repetition penalty: %d", got)
	}
	s = New(Options{PresencePenalty: 0.5, FrequencyPenalty: 0.5})
	if got := s.Sample([]float32{2, 1.2}, []int{0}); got != 1 {
		t.Fatalf("presence/frequency: %d", got)
	}
	if got := s.Sample([]float32{2, 1.2}, nil); got != 0 {
		t.Fatalf("counts not reset: %d", got)
	}
}

func hist(t *testing.T, o Options, logits []float32, n int) []float64 {
	t.Helper()
	s := New(o)
	c := make([]float64, len(logits))
	for range n {
		c[s.Sample(logits, nil)]++
	}
	for i := range c {
		c[i] /= float64(n)
	}
	return c
}

func TestDistributions(t *testing.T) {
	logits := []float32{2, 1, 0, -1, float32(math.Inf(-1))}
	// softmax probabilities: 0.6439, 0.2369, 0.0871, 0.0321, 0
	h := hist(t, Options{Temperature: 1, Seed: 1}, logits, 20000)
	want := []float64{0.6439, 0.2369, 0.0871, 0.0321, 0}
	for i := range h {
		if math.Abs(h[i]-want[i]) > 0.015 {
			t.Fatalf("temperature 1: %v", h)
		}
	}
	h = hist(t, Options{Temperature: 1, TopK: 2, Seed: 2}, logits, 20000)
	if h[2] != 0 || h[3] != 0 || math.Abs(h[0]-0.731) > 0.015 {
		t.Fatalf("top-k 2: %v", h)
	}
	h = hist(t, Options{Temperature: 1, TopP: 0.85, Seed: 3}, logits, 20000) // 0.644+0.237 >= 0.85
	if h[2] != 0 || h[3] != 0 || h[1] == 0 {
		t.Fatalf("top-p: %v", h)
	}
	h = hist(t, Options{Temperature: 1, TopP: 0.5, Seed: 3}, logits, 1000)
	if h[0] != 1 {
		t.Fatalf("top-p 0.5 keeps only the first: %v", h)
	}
	h = hist(t, Options{Temperature: 1, MinP: 0.3, Seed: 4}, logits, 20000) // 0.2369/0.6439 = 0.368 >= 0.3
	if h[2] != 0 || h[1] == 0 {
		t.Fatalf("min-p: %v", h)
	}
	h = hist(t, Options{Temperature: 0.01, Seed: 5}, logits, 1000)
	if h[0] != 1 {
		t.Fatalf("low temperature: %v", h)
	}
}

func TestSeeded(t *testing.T) {
	logits := make([]float32, 100)
	for i := range logits {
		logits[i] = float32(math.Sin(float64(i)))
	}
	for _, o := range []Options{{Temperature: 1, Seed: 42}, {Temperature: 0.8, TopK: 10, TopP: 0.9, Seed: 42}} {
		a, b := New(o), New(o)
		o2 := o
		o2.Seed = 43
		c := New(o2)
		same := true
		for range 50 {
			x, y, z := a.Sample(logits, nil), b.Sample(logits, nil), c.Sample(logits, nil)
			if x != y {
				t.Fatal("same seed, different choices")
			}
			same = same && x == z
		}
		if same {
			t.Fatal("different seeds gave identical sequences")
		}
	}
	in := append([]float32(nil), logits...)
	New(Options{Temperature: 1, TopK: 3, RepetitionPenalty: 1.3}).Sample(logits, []int{1, 2, 3})
	for i := range in {
		if in[i] != logits[i] {
			t.Fatal("logits modified")
		}
	}
}

func TestAllMasked(t *testing.T) {
	inf := float32(math.Inf(-1))
	if got := New(Options{Temperature: 1, TopK: 2}).Sample([]float32{inf, inf}, nil); got != 0 {
		t.Fatalf("all -inf: %d", got)
	}
	if got := New(Options{Temperature: 1}).Sample(nil, nil); got != 0 {
		t.Fatal("empty")
	}
}

// refKeep is the candidate set by a plain sort: top-k, then top-p, then min-p.
func refKeep(logits []float32, o Options) map[int]bool {
	type kv struct {
		i int
		v float64
	}
	var c []kv
	for i, v := range logits {
		if !math.IsInf(float64(v), -1) {
			c = append(c, kv{i, float64(v) / float64(o.Temperature)})
		}
	}
	for a := range c { // insertion sort, descending, low id first
		for b := a; b > 0 && (c[b].v > c[b-1].v || c[b].v == c[b-1].v && c[b].i < c[b-1].i); b-- {
			c[b], c[b-1] = c[b-1], c[b]
		}
	}
	if o.TopK > 0 && o.TopK < len(c) {
		c = c[:o.TopK]
	}
	var z float64
	for _, e := range c {
		z += math.Exp(e.v - c[0].v)
	}
	keep := len(c)
	if o.TopP > 0 && o.TopP < 1 {
		cum := 0.0
		for k, e := range c {
			cum += math.Exp(e.v-c[0].v) / z
			if cum >= float64(o.TopP) {
				keep = k + 1
				break
			}
		}
	}
	c = c[:keep]
	out := map[int]bool{}
	for k, e := range c {
		if k > 0 && o.MinP > 0 && math.Exp(e.v-c[0].v) < float64(o.MinP) {
			break
		}
		out[e.i] = true
	}
	return out
}

func TestFilteredMatchesSortReference(t *testing.T) {
	for trial := range 40 {
		n := 5 + trial*7
		logits := make([]float32, n)
		for i := range logits {
			logits[i] = float32(math.Sin(float64(i*(trial+3)))*4) + float32(i%3)
		}
		logits[n/2] = float32(math.Inf(-1))
		o := Options{Temperature: 0.7 + float32(trial%3)*0.3, TopK: trial % 5 * 3, TopP: []float32{0, 0.5, 0.9, 1}[trial%4],
			MinP: []float32{0, 0.05, 0.2}[trial%3], Seed: int64(trial)}
		want := refKeep(logits, o)
		s := New(o)
		seen := map[int]bool{}
		for range 3000 {
			id := s.Sample(logits, nil)
			if !want[id] {
				t.Fatalf("trial %d %+v: sampled %d outside %v", trial, o, id, want)
			}
			seen[id] = true
		}
		if len(want) <= 3 && len(seen) != len(want) {
			t.Fatalf("trial %d: sampled %v of %v", trial, seen, want)
		}
	}
}

func TestTopKAllowsAllWhenFewFinite(t *testing.T) {
	inf := float32(math.Inf(-1))
	logits := []float32{1, 1, inf, inf, inf}
	seen := map[int]bool{}
	s := New(Options{Temperature: 1, TopK: 3, Seed: 1})
	for range 200 {
		seen[s.Sample(logits, nil)] = true
	}
	if !seen[0] || !seen[1] || len(seen) != 2 {
		t.Fatalf("seen %v", seen)
	}
}

func BenchmarkSample(b *testing.B) {
	// A peaked, Zipf-like distribution as language models produce: p ∝ (rank+1)^-1.5, ranks scattered over ids.
	logits := make([]float32, 151936)
	for i := range logits {
		rank := (i * 7919) % len(logits)
		logits[i] = float32(-1.5 * math.Log(float64(rank+1)))
	}
	for _, o := range []Options{{Temperature: 0}, {Temperature: 1}, {Temperature: 0.7, TopK: 20, TopP: 0.8},
		{Temperature: 0.7, TopP: 0.9}, {Temperature: 1, MinP: 0.1}} {
		b.Run(fmt.Sprintf("T%g-k%d-p%g-minp%g", o.Temperature, o.TopK, o.TopP, o.MinP), func(b *testing.B) {
			s := New(o)
			for range b.N {
				s.Sample(logits, nil)
			}
		})
	}
}
