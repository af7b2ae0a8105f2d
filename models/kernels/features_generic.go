//go:build !amd64 || purego

package kernels

// Features names the instruction sets the kernels use on this machine (for --version and bug reports).
func Features() []string { return []string{"pure Go"} }
