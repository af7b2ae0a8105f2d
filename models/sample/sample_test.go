package sample

import (
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
