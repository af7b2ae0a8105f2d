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
	// Packed: two rows of four 8-token examples each, every token counted.
	r, err := Bench(context.Background(), BenchConfig{Shape: "tiny", SeqLen: 32, ExampleLen: 8, Packing: true, BatchSize: 2, Steps: 1, Warmup: 1, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	if r.Examples != 8 || !(r.TokensPerSec > 0) {
		t.Fatalf("packed bench: %+v", r)
	}
	// DoRA over LoRA and QLoRA: one magnitude per output row beside the factors.
	for _, m := range []string{"lora", "qlora"} {
		d, err := Bench(context.Background(), BenchConfig{Method: m, Shape: "tiny", SeqLen: 32, BatchSize: 1, Steps: 1, Warmup: 1, Threads: 2, DoRA: true})
		if err != nil {
			t.Fatal(err)
		}
		l, err := Bench(context.Background(), BenchConfig{Method: m, Shape: "tiny", SeqLen: 32, BatchSize: 1, Steps: 1, Warmup: 1, Threads: 2})
		if err != nil {
			t.Fatal(err)
		}
		if !d.DoRA || !(d.TokensPerSec > 0) || d.TrainableParams <= l.TrainableParams {
			t.Fatalf("dora bench %s: %+v (lora: %d trainable)", m, d, l.TrainableParams)
		}
	}
}

// BenchmarkTrainEnv runs Bench with the JSON BenchConfig in LORAKIT_BENCH_TRAIN (each iteration is a whole
// Bench: warm-up and timed steps), reporting its training tokens/s; `lorakit bench --train` is the same from
// the command line.
//
//	LORAKIT_BENCH_TRAIN='{"Method":"lora","Shape":"smollm2-135m"}' go test ./train -run X -bench TrainEnv -benchtime 1x
func BenchmarkTrainEnv(b *testing.B) {
	s := os.Getenv("LORAKIT_BENCH_TRAIN")
	if s == "" {
		b.Skip("LORAKIT_BENCH_TRAIN not set")
	}
	var c BenchConfig
	if err := json.Unmarshal([]byte(s), &c); err != nil {
		b.Fatal(err)
	}
	var r *BenchResult
	for range b.N {
		var err error
		if r, err = Bench(context.Background(), c); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(r.TokensPerSec, "tokens/s")
	js, _ := json.Marshal(r)
	b.Logf("%s", js)
}
