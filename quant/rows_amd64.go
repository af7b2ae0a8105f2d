//go:build amd64 && !purego

package quant

import "golang.org/x/sys/cpu"

// useAVX2 selects the assembly row kernel (AVX2 + FMA). It is set once at initialisation.
var useAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// nf4RowsAVX2 is the assembly row kernel: for each of rows rows, y[r] = Σ_b scales[r·nb+b]·Σ_j
// lut[q_j]·x'[b·bs+j], packed advancing nb·bs/2 bytes per row. x' is x in kernel order (see kernelOrder);
// bs must be a multiple of 32.
//
//go:noescape
func nf4RowsAVX2(y *float32, packed *byte, scales *float32, x *float32, lut *[16]float32, rows, nb, bs int)

// kernelOrder copies x into the order the row kernel reads it: within each group of 16 elements the 8 even
// ones (high nibbles) first, then the 8 odd ones (low nibbles).
func kernelOrder(dst, x []float32) {
	if !useAVX2 {
		copy(dst, x)
		return
	}
	for g := 0; g+16 <= len(x); g += 16 {
		s := x[g : g+16 : g+16]
		d := dst[g : g+16 : g+16]
		for j := 0; j < 8; j++ {
			d[j] = s[2*j]
			d[8+j] = s[2*j+1]
		}
	}
}

// rows4 runs the row kernel on len(y) rows; x is in kernel order.
func rows4(y []float32, packed []byte, scales, x []float32, code *[16]float32, nb, bs int) {
	if len(y) == 0 {
		return
	}
	if !useAVX2 {
		rows4Go(y, packed, scales, x, code, nb, bs)
		return
	}
	if len(packed) < len(y)*nb*bs/2 || len(scales) < len(y)*nb || len(x) < nb*bs || bs%32 != 0 {
		panic("quant: rows4: slice lengths do not match")
	}
	nf4RowsAVX2(&y[0], &packed[0], &scales[0], &x[0], code, len(y), nb, bs)
}

// nf4Rows4xAVX2 is nf4RowsAVX2 for four x rows at once (x, x+xstride, x+2·xstride, x+3·xstride, each in
// kernel order); the result of x row i and weight row r goes to y[i·ystride + r].
//
//go:noescape
func nf4Rows4xAVX2(y *float32, ystride int, packed *byte, scales *float32, x *float32, xstride int, lut *[16]float32, rows, nb, bs int)

//go:noescape
func nf4Rows2xAVX2(y *float32, ystride int, packed *byte, scales *float32, x *float32, xstride int, lut *[16]float32, rows, nb, bs int)

// rowsNx runs the row kernel for k = 2 or 4 x rows over len(packed)/(nb·bs/2) weight rows; see
// nf4Rows4xAVX2.
func rowsNx(k int, y []float32, ystride int, packed []byte, scales, x []float32, xstride int, code *[16]float32, nb, bs int) {
	n := len(packed) / (nb * bs / 2)
	if n == 0 {
		return
	}
	if !useAVX2 {
		rowsNxGo(k, y, ystride, packed, scales, x, xstride, code, nb, bs)
		return
	}
	if len(y) < (k-1)*ystride+n || len(scales) < n*nb || len(x) < (k-1)*xstride+nb*bs || bs%16 != 0 {
		panic("quant: rowsNx: slice lengths do not match")
	}
	switch k {
	case 4:
		nf4Rows4xAVX2(&y[0], ystride, &packed[0], &scales[0], &x[0], xstride, code, n, nb, bs)
	case 2:
		nf4Rows2xAVX2(&y[0], ystride, &packed[0], &scales[0], &x[0], xstride, code, n, nb, bs)
	default:
		panic("quant: rowsNx: k must be 2 or 4")
	}
}

// int8RowsAVX2: y[r] = scales[r]·Σ_c int8(packed[r·cols+c])·x[c] for rows rows; cols % 32 == 0.
//
//go:noescape
func int8RowsAVX2(y *float32, packed *byte, scales *float32, x *float32, rows, cols int)

// rows8 computes y[r] = scales[r]·Σ_c int8(packed[r·cols+c])·x[c] for len(y) rows.
func rows8(y []float32, packed []byte, scales, x []float32, cols int) {
	if len(y) == 0 {
		return
	}
	if !useAVX2 || cols%32 != 0 {
		rows8Go(y, packed, scales, x, cols)
		return
	}
	if len(packed) < len(y)*cols || len(scales) < len(y) || len(x) < cols {
		panic("quant: rows8: slice lengths do not match")
	}
	int8RowsAVX2(&y[0], &packed[0], &scales[0], &x[0], len(y), cols)
}

// dequant4AVX2 writes nb·bs values code[q]·scales[b] in natural order; bs % 16 == 0.
//
//go:noescape
func dequant4AVX2(dst *float32, packed *byte, scales *float32, lut *[16]float32, nb, bs int)

// dequantBlocks writes the len(scales) whole blocks starting at packed into dst (natural order).
func dequantBlocks(dst []float32, packed []byte, scales []float32, code *[16]float32, bs int) {
	nb := len(scales)
	if nb == 0 {
		return
	}
	if !useAVX2 || bs%16 != 0 {
		dequantBlocksGo(dst, packed, scales, code, bs)
		return
	}
	if len(dst) < nb*bs || len(packed) < nb*bs/2 {
		panic("quant: dequantBlocks: slice lengths do not match")
	}
	dequant4AVX2(&dst[0], &packed[0], &scales[0], code, nb, bs)
}

//go:noescape
func nf4Rows16AVX2(y *float32, packed *byte, scales *float32, xq *int16, xs *float32, lut *lut16, rows, nb, bs int)

//go:noescape
func nf4Rows16x2AVX2(y *float32, ystride int, packed *byte, scales *float32, xq *int16, xs *float32, lut *lut16, rows, nb, bs int)

//go:noescape
func nf4Rows16x4AVX2(y *float32, ystride int, packed *byte, scales *float32, xq *int16, xs *float32, lut *lut16, rows, nb, bs int)

// rows16 runs the integer kernel for n weight rows and the xq.k (1, 2 or 4) x rows of one chunk; the result
// of x row i and weight row r goes to y[i·ystride + r].
func rows16(y []float32, ystride int, packed []byte, scales []float32, xq *x16, l *lut16, n, nb int) {
	if n == 0 {
		return
	}
	bs := xq.bs
	if !useAVX2 {
		rows16Go(y, ystride, packed, scales, xq, l, n, nb)
		return
	}
	if len(y) < (xq.k-1)*ystride+n || len(packed) < n*nb*bs/2 || len(scales) < n*nb ||
		len(xq.q) < xq.k*nb*bs || len(xq.s) < xq.k*nb*8 || bs%group != 0 {
		panic("quant: rows16: slice lengths do not match")
	}
	switch xq.k {
	case 1:
		nf4Rows16AVX2(&y[0], &packed[0], &scales[0], &xq.q[0], &xq.s[0], l, n, nb, bs)
	case 2:
		nf4Rows16x2AVX2(&y[0], ystride, &packed[0], &scales[0], &xq.q[0], &xq.s[0], l, n, nb, bs)
	case 4:
		nf4Rows16x4AVX2(&y[0], ystride, &packed[0], &scales[0], &xq.q[0], &xq.s[0], l, n, nb, bs)
	default:
		panic("quant: rows16: chunks hold 1, 2 or 4 rows")
	}
}

//go:noescape
func quantX16AVX2(q *int16, s *float32, x *float32, nb, bs, gstride int, lim, inv float32)

// quantizeRow writes row i of x into the chunk xq; see quantizeRowGo.
func quantizeRow(xq *x16, i int, x []float32, lim, inv float32) {
	if !useAVX2 {
		quantizeRowGo(xq, i, x, lim, inv, &groupPerm)
		return
	}
	nb := len(x) / xq.bs
	if nb == 0 {
		return
	}
	if len(x)%xq.bs != 0 || xq.bs%group != 0 || len(xq.q) < xq.k*len(x) || len(xq.s) < xq.k*nb*8 || i >= xq.k {
		panic("quant: quantizeRow: slice lengths do not match")
	}
	quantX16AVX2(&xq.q[i*group], &xq.s[i*8], &x[0], nb, xq.bs, xq.k*group*2, lim, inv)
}

//go:noescape
func int8Rows16AVX2(y *float32, packed *byte, scales *float32, xq *int16, xs *float32, rows, cols int)

//go:noescape
func int8Rows16x4AVX2(y *float32, ystride int, packed *byte, scales *float32, xq *int16, xs *float32, rows, cols int)

// rows8x16 runs the int8 integer kernel (see rows8x16Go) for n weight rows and one chunk of x rows in
// natural order (k = 1 or 4).
func rows8x16(y []float32, ystride int, packed []byte, scales []float32, xq *x16, n, cols int) {
	if n == 0 {
		return
	}
	if !useAVX2 {
		rows8x16Go(y, ystride, packed, scales, xq, n, cols)
		return
	}
	if len(y) < (xq.k-1)*ystride+n || len(packed) < n*cols || len(scales) < n || len(xq.q) < xq.k*cols ||
		len(xq.s) < xq.k*cols/group*8 || cols%group != 0 || xq.bs != group {
		panic("quant: rows8x16: slice lengths do not match")
	}
	switch xq.k {
	case 1:
		int8Rows16AVX2(&y[0], &packed[0], &scales[0], &xq.q[0], &xq.s[0], n, cols)
	case 4:
		int8Rows16x4AVX2(&y[0], ystride, &packed[0], &scales[0], &xq.q[0], &xq.s[0], n, cols)
	default:
		panic("quant: rows8x16: chunks hold 1 or 4 rows")
	}
}
