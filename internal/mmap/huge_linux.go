package mmap

import "syscall"

// adviseHuge asks for transparent huge pages on b (MADV_HUGEPAGE), which the kernel honours in its "always" and
// "madvise" modes: a TLB entry then covers 2 MiB instead of 4 KiB. A refused hint changes no data.
func adviseHuge(b []byte) { _ = syscall.Madvise(b, syscall.MADV_HUGEPAGE) }
