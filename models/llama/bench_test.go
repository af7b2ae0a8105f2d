package llama

import (
	"path/filepath"
	"testing"
)

// BenchmarkPrefill reports prompt tokens/s for a 128-token prompt on stories260K.
func BenchmarkPrefill(b *testing.B) {
	for _, dir := range []string{"stories260K", "stories260K-bf16"} {
		b.Run(dir, func(b *testing.B) {
			m := loadDir(b, filepath.Join(sharedDir(b), "models", dir), 0)
			toks := make([]int, 128)
			for i := range toks {
				toks[i] = 3 + (i*131)%500
			}
			c := m.NewCache(len(toks))
			b.ResetTimer()
			for range b.N {
				c.Reset()
				if _, err := m.Forward([]Seq{{Tokens: toks, Cache: c}}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*len(toks))/b.Elapsed().Seconds(), "tok/s")
		})
	}
}

// BenchmarkDecode reports generated tokens/s, one token per step at positions 64..191.
func BenchmarkDecode(b *testing.B) {
	for _, dir := range []string{"stories260K", "stories260K-bf16"} {
		for _, batch := range []int{1, 8} {
			b.Run(dir+"/batch="+string(rune('0'+batch)), func(b *testing.B) {
				m := loadDir(b, filepath.Join(sharedDir(b), "models", dir), 0)
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
			})
		}
	}
}
