//go:build unix

package mmap

import "testing"

// TestAnon: anonymous memory starts on a 2 MiB boundary, reads as zeros, keeps what is written and unmaps.
func TestAnon(t *testing.T) {
	for _, n := range []int{0, 1, 4096, 3<<20 + 5} {
		b, release, err := Anon(n)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != n {
			t.Fatalf("Anon(%d): %d bytes", n, len(b))
		}
		if n > 0 && alignOffset(b, hugePage) != 0 {
			t.Fatalf("Anon(%d) is not 2 MiB aligned", n)
		}
		for i := range b {
			if b[i] != 0 {
				t.Fatalf("Anon(%d): byte %d is %d, not zero", n, i, b[i])
			}
			b[i] = byte(i)
		}
		for i := range b {
			if b[i] != byte(i) {
				t.Fatalf("Anon(%d): byte %d lost its value", n, i)
			}
		}
		if err := release(); err != nil {
			t.Fatal(err)
		}
	}
}
