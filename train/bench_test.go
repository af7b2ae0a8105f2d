package train

import (
	"context"
	"encoding/json"
	"os"
	"testing"
)

func TestBenchTiny(t *testing.T) {
	for _, m := range []string{"lora", "qlora", "full"} {
		r, err := Bench(context.Background(), BenchConfig{Method: m, Shape: "tiny", SeqLen: 32, BatchSize: 2, Steps: 2, Warmup: 1, Threads: 2})
		if err != nil {
			t.Fatal(err)
		}
		if !(r.TokensPerSec > 0) || r.LastLoss >= r.FirstLoss+1 {
			t.Fatalf("%s: %+v", m, r)
		}
	}
}

// TestBenchEnv runs the real-shape benchmark when LORAKIT_BENCH_TRAIN is set to a JSON BenchConfig.
func TestBenchEnv(t *testing.T) {
	s := os.Getenv("LORAKIT_BENCH_TRAIN")
	if s == "" {
		t.Skip("LORAKIT_BENCH_TRAIN not set")
	}
	var c BenchConfig
	if err := json.Unmarshal([]byte(s), &c); err != nil {
		t.Fatal(err)
	}
	r, err := Bench(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(r)
	t.Logf("%s", b)
}
