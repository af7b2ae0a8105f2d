//go:build unix

package mmap

import (
	"syscall"
	"unsafe"
)

// hugePage is the size of a transparent huge page on amd64 and arm64 (with 4 KiB base pages).
const hugePage = 2 << 20

// Anon returns size bytes of zeroed anonymous memory outside the Go heap, starting on a 2 MiB boundary and
// advised for transparent huge pages (see adviseHuge), and the func that unmaps it. Nothing in it is resident
// until written; the slack mapped to align it is never touched.
func Anon(size int) ([]byte, func() error, error) {
	if size <= 0 {
		return nil, func() error { return nil }, nil
	}
	n := (size + hugePage - 1) / hugePage * hugePage
	full, err := syscall.Mmap(-1, 0, n+hugePage, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		return nil, nil, err
	}
	off := alignOffset(full, hugePage)
	b := full[off : off+n : off+n]
	adviseHuge(b)
	return b[:size:size], func() error { return syscall.Munmap(full) }, nil
}

// alignOffset is the offset of the first byte of b whose address is a multiple of align (a power of two).
func alignOffset(b []byte, align uintptr) int {
	return int((align - uintptr(unsafe.Pointer(&b[0]))%align) % align)
}
