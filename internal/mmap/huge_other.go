//go:build unix && !linux

package mmap

// adviseHuge is a no-op where madvise has no transparent huge pages.
func adviseHuge([]byte) {}
