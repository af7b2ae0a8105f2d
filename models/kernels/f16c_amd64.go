//go:build amd64 && !purego

package kernels

import "golang.org/x/sys/cpu"

// cpuHasF16C reads CPUID.1:ECX bit 29 through x/sys/cpu's view when
// available; x/sys/cpu does not export F16C, so AVX2 implies it (every AVX2
// CPU shipped has F16C).
func cpuHasF16C() bool { return cpu.X86.HasAVX2 }
