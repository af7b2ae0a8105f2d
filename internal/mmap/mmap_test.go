package mmap

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestEvictKeepsData: evicting any part of a mapping (aligned or not, empty, smaller than a page) leaves every
// byte readable as the file holds it.
func TestEvictKeepsData(t *testing.T) {
	want := make([]byte, 5*os.Getpagesize()+123)
	for i := range want {
		want[i] = byte(i*7 + i>>9)
	}
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, want, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, release, err := File(f, int64(len(want)))
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	for _, r := range [][2]int{{0, 0}, {1, 10}, {100, 3 * os.Getpagesize()}, {0, len(want)}} {
		Evict(b[r[0] : r[0]+r[1]])
		if !bytes.Equal(b, want) {
			t.Fatalf("after Evict(b[%d:+%d]) the mapping differs from the file", r[0], r[1])
		}
	}
}
