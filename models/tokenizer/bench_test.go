package tokenizer

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// benchText returns about 1 MB of real text: the Go standard library's documentation-heavy sources.
func benchText(b *testing.B) string {
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		b.Skipf("go env GOROOT: %v", err)
	}
	root := filepath.Join(strings.TrimSpace(string(goroot)), "src")
	var sb strings.Builder
	for _, dir := range []string{"strings", "bytes", "fmt", "net/http", "encoding/json", "sort", "os", "io"} {
		_ = filepath.WalkDir(filepath.Join(root, dir), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || sb.Len() >= 1<<20 {
				return nil
			}
			data, err := os.ReadFile(p)
			if err == nil {
				sb.Write(data)
			}
			return nil
		})
	}
	if sb.Len() < 1<<20 {
		b.Skipf("only %d bytes of Go sources found under %s", sb.Len(), root)
	}
	return sb.String()[:1<<20]
}

func benchEncode(b *testing.B, dir string) {
	tok, err := Load(dir)
	if err != nil {
		b.Fatal(err)
	}
	text := benchText(b)
	b.SetBytes(int64(len(text)))
	b.ResetTimer()
	n := 0
	for i := 0; i < b.N; i++ {
		tok.model.mu.Lock()
		clear(tok.model.cache) // measure cold-cache throughput on each pass
		tok.model.mu.Unlock()
		n += len(tok.Encode(text, false))
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "tokens/s")
}

func BenchmarkEncode(b *testing.B) {
	shared := sharedDir(b)
	for _, c := range []struct{ name, dir string }{
		{"llama3", filepath.Join(shared, "tokenizers", "llama3")},
		{"stories260K", filepath.Join(shared, "models", "stories260K")},
		{"qwen3", filepath.Join(shared, "tokenizers", "qwen3")},
		{"gemma3", filepath.Join(shared, "tokenizers", "gemma3")},
		{"llama2", filepath.Join(shared, "tokenizers", "llama2")},
	} {
		b.Run(c.name, func(b *testing.B) { benchEncode(b, c.dir) })
	}
}

func BenchmarkLoad(b *testing.B) {
	shared := sharedDir(b)
	for _, fam := range []string{"llama3", "gemma3"} {
		b.Run(fam, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, err := Load(filepath.Join(shared, "tokenizers", fam)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
