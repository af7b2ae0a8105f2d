//go:build !amd64 || purego

package kernels

func matMulAddBF16(y, t []float32, b []uint16, m, n, k int) { refMatMulAddBF16(y, t, b, m, n, k, 0) }
