//go:build amd64 && !purego

package kernels

// Features names the instruction sets the kernels use on this machine (for --version and bug reports).
func Features() []string {
	if !useAVX2 {
		return []string{"pure Go (no AVX2+FMA on this CPU)"}
	}
	f := []string{"AVX2", "FMA"}
	if hasF16C {
		f = append(f, "F16C")
	}
	if useAVX512.Load() {
		f = append(f, "AVX-512 (GEMM tiles)")
		if hasTile512 {
			f[len(f)-1] = "AVX-512 (generated GEMM tiles and GEMV)"
		}
	}
	return f
}
