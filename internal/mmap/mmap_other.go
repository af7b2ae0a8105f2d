//go:build !unix

package mmap

import (
	"io"
	"os"
)

// File reads the whole file where mmap is unavailable.
func File(f *os.File, size int64) ([]byte, func() error, error) {
	b := make([]byte, size)
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, nil, err
	}
	return b, func() error { return nil }, nil
}

// Evict is a no-op where the file was read into memory.
func Evict([]byte) {}

// Anon returns size zeroed bytes from the Go heap where mmap is unavailable.
func Anon(size int) ([]byte, func() error, error) {
	return make([]byte, max(size, 0)), func() error { return nil }, nil
}
