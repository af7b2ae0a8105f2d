package grammar

import (
	"math/rand/v2"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/lorakit/lorakit/internal/testenv"
	"github.com/lorakit/lorakit/models/tokenizer"
)

const benchSchema = `{"type":"object","properties":{"items":{"type":"array","minItems":50,"items":{"type":"object",
"properties":{"name":{"type":"string","maxLength":40},"kind":{"enum":["book","film","song","game"]},
"year":{"type":"integer","minimum":1900,"maximum":2030},"tags":{"type":"array","items":{"type":"string","maxLength":12},"maxItems":4},
"meta":{"type":"object","properties":{"rating":{"type":"number"},"ok":{"type":"boolean"}},"required":["rating","ok"]}},
"required":["name","kind","year","tags","meta"],"additionalProperties":false}}},"required":["items"],"additionalProperties":false}`

// BenchmarkMask measures one token step (mask, pick, advance) along a random walk over a 49,152-token
// byte-level vocabulary (the first tokens of Llama 3's): "new" compiles the grammar per walk, so every state's
// mask is computed (a trie walk through the lazily-built automaton); "cached" reuses one grammar whose states
// were all met before. Wall and process CPU time per token are reported (CPU is steadier on a loaded machine).
//
//	LORAKIT_SHARED=/work/shared go test ./models/grammar -run XXX -bench Mask
func BenchmarkMask(b *testing.B) {
	dir := testenv.Shared()
	if dir == "" {
		b.Skip("LORAKIT_SHARED not set")
	}
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizers", "llama3"))
	if err != nil {
		b.Fatal(err)
	}
	toks := append([][]byte(nil), tok.TokenBytes()[:49152]...)
	toks[49151] = nil
	v := NewVocab(toks, []int{49151})
	ok := make([]int, 0, 49152)
	walk := func(g *Grammar, seed uint64, steps int) {
		r := rand.New(rand.NewPCG(seed, 1))
		m := g.NewMatcher(v)
		for range steps {
			mask := m.Allowed()
			ok = ok[:0]
			for id := range 49151 {
				if mask[id>>6]&(1<<(id&63)) != 0 {
					ok = append(ok, id)
				}
			}
			if len(ok) == 0 || !m.AcceptToken(ok[r.IntN(len(ok))]) {
				b.Fatal("walk stuck")
			}
		}
	}
	const steps = 64
	report := func(b *testing.B, c0 float64) {
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*steps), "µs/token")
		b.ReportMetric((cpuSeconds()-c0)*1e6/float64(b.N*steps), "cpu-µs/token")
	}
	b.Run("new", func(b *testing.B) {
		c0 := cpuSeconds()
		for i := 0; i < b.N; i++ {
			g, err := JSONSchema([]byte(benchSchema))
			if err != nil {
				b.Fatal(err)
			}
			walk(g, uint64(i), steps)
		}
		report(b, c0)
	})
	g, err := JSONSchema([]byte(benchSchema))
	if err != nil {
		b.Fatal(err)
	}
	walk(g, 0, steps)
	b.Run("cached", func(b *testing.B) {
		c0 := cpuSeconds()
		for i := 0; i < b.N; i++ {
			walk(g, 0, steps)
		}
		report(b, c0)
	})
}

// cpuSeconds is the process's user and system CPU time.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}
