package llama

import (
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/lorakit/lorakit/internal/testenv"
)

// BenchmarkPrefill reports prompt tokens/s for a 128-token prompt on stories260K.
func BenchmarkPrefill(b *testing.B) {
	for _, dir := range []string{"stories260K", "stories260K-bf16"} {
		for _, threads := range []int{1, 0} {
			b.Run(fmt.Sprintf("%s/threads=%d", dir, threads), func(b *testing.B) {
				m := loadDir(b, filepath.Join(testenv.Testdata(b), "models", dir), threads)
				toks := make([]int, 128)
				for i := range toks {
					toks[i] = 3 + (i*131)%500
				}
				c := m.NewCache(len(toks))
				b.ResetTimer()
				cpu0 := cpuTime(b)
				for range b.N {
					c.Reset()
					if _, err := m.Forward([]Seq{{Tokens: toks, Cache: c}}); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*len(toks))/b.Elapsed().Seconds(), "tok/s")
				b.ReportMetric(float64(b.N*len(toks))/cpuSince(b, cpu0), "tok/cpu-s")
			})
		}
	}
}

// BenchmarkDecode reports generated tokens/s, one token per step at positions 64..191 (threads=0: all CPUs).
func BenchmarkDecode(b *testing.B) {
	for _, dir := range []string{"stories260K", "stories260K-bf16"} {
		for _, bt := range [][2]int{{1, 1}, {1, 0}, {8, 0}} {
			batch, threads := bt[0], bt[1]
			b.Run(fmt.Sprintf("%s/batch=%d/threads=%d", dir, batch, threads), func(b *testing.B) {
				m := loadDir(b, filepath.Join(testenv.Testdata(b), "models", dir), threads)
				prompt := make([]int, 64)
				for i := range prompt {
					prompt[i] = 3 + (i*131)%500
				}
				seqs := make([]Seq, batch)
				for i := range seqs {
					seqs[i] = Seq{Tokens: []int{1}, Cache: m.NewCache(512)}
				}
				n := 0
				b.ResetTimer()
				cpu0 := cpuTime(b)
				for range b.N {
					if seqs[0].Cache.Len() == 0 || seqs[0].Cache.Len() >= 192 {
						b.StopTimer()
						for i := range seqs {
							seqs[i].Cache.Reset()
							if _, err := m.Forward([]Seq{{Tokens: prompt, Cache: seqs[i].Cache}}); err != nil {
								b.Fatal(err)
							}
						}
						b.StartTimer()
					}
					if _, err := m.Forward(seqs); err != nil {
						b.Fatal(err)
					}
					n += batch
				}
				b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "tok/s")
				b.ReportMetric(float64(n)/cpuSince(b, cpu0), "tok/cpu-s")
			})
		}
	}
}

// cpuTime is the process's user+system CPU time: on a shared machine, tokens per CPU-second (with threads=1)
// is a steadier figure than wall-clock tokens/s.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func cpuSince(b *testing.B, t0 time.Duration) float64 { return (cpuTime(b) - t0).Seconds() }
