//go:build unix

package mmap

import (
	"os"
	"syscall"
	"unsafe"
)

// File maps the whole file read-only; the returned release func unmaps it.
func File(f *os.File, size int64) ([]byte, func() error, error) {
	if size == 0 {
		return nil, func() error { return nil }, nil
	}
	b, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, err
	}
	return b, func() error { return syscall.Munmap(b) }, nil
}

// Evict tells the kernel that the whole pages inside b, a part of a mapping made by File, are not needed for now:
// their resident pages are dropped (a later read faults them in again from the file), so a reader that copied or
// re-packed a tensor does not keep it resident twice. A failed hint is ignored: it changes no data.
func Evict(b []byte) {
	if len(b) == 0 {
		return
	}
	page := syscall.Getpagesize()
	lo := (page - int(uintptr(unsafe.Pointer(&b[0]))%uintptr(page))) % page // first whole page inside b
	n := (len(b) - lo) / page * page
	if lo >= len(b) || n <= 0 {
		return
	}
	_ = syscall.Madvise(b[lo:lo+n], syscall.MADV_DONTNEED) // a hint: failing changes no data
}
