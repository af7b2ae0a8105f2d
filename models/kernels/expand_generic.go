//go:build !amd64 || purego

package kernels

func matMulAddBF16(y, t []float32, ldt int, b []uint16, m, n, k int) {
	refMatMulAddBF16(y, t, ldt, b, m, n, k, 0)
}

func matMulAddF32(y, t []float32, ldt int, b []float32, m, n, k int) {
	axpyRows(y, t, ldt, b, m, n, k, 0)
}
