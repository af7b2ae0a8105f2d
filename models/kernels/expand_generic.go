//go:build !amd64 || purego

package kernels

func matMulAddBF16(y, t []float32, ldt int, b []uint16, m, n, k int) {
	refMatMulAddBF16(y, t, ldt, b, m, n, k, 0)
}
