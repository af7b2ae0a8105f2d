//go:build !amd64 || purego

package quant

// rows8 runs the portable int8 row kernel.
func rows8(y []float32, packed []byte, scales, x []float32, cols int) {
	rows8Go(y, packed, scales, x, cols)
}

// dequantBlocks runs the portable block dequantiser.
func dequantBlocks(dst []float32, packed []byte, scales []float32, code *[16]float32, bs int) {
	dequantBlocksGo(dst, packed, scales, code, bs)
}

// rows16 runs the portable integer kernel.
func rows16(y []float32, ystride int, packed []byte, scales []float32, xq *x16, l *lut16, n, nb int) {
	rows16Go(y, ystride, packed, scales, xq, l, n, nb)
}

// quantizeRow runs the portable x quantiser.
func quantizeRow(xq *x16, i int, x []float32, lim, inv float32) {
	quantizeRowGo(xq, i, x, lim, inv, &groupPerm)
}

// rows8x16 runs the portable int8 integer kernel.
func rows8x16(y []float32, ystride int, packed []byte, scales []float32, xq *x16, n, cols int) {
	rows8x16Go(y, ystride, packed, scales, xq, n, cols, xq.order())
}

// rowsQ8 runs the portable Q8_0 kernel.
func rowsQ8(y []float32, ystride int, packed []byte, scales []float32, xq *x16, n, cols int) {
	rowsQ8Go(y, ystride, packed, scales, xq, n, cols)
}

// vnniRows is 0: no VNNI kernels without assembly.
func vnniRows() int { return 0 }

// dot8On is false: the portable twins of the dot kernels are references, not the fast path.
func dot8On() bool { return false }

// wholeRows is the most x rows for which dot8Job.Run gives a weight's tiles to the kernel in one call (the
// portable kernel reads each tile's codes for every x row before the next tile).
func wholeRows() int { return dotK }

// dot8Rows runs the portable dot kernel.
func dot8Rows(y []float32, ystride int, t *dot8, xd *xDot, t0, n, cols int) {
	dot8Go(y, ystride, t, xd, t0, n, cols)
}

// quantizeX8 runs the portable x quantiser of the dot kernels.
func quantizeX8(xd *xDot, i int, x []float32, z int32) {
	quantizeX8Go(xd, i, x, z)
}
