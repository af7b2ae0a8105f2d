//go:build amd64 && !purego

package kernels

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

// useAVX2 is fixed at start-up from the CPU's feature bits (read-only after).
var useAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA && cpu.X86.HasOSXSAVE

// hasF16C gates the f16 kernels (VCVTPH2PS); every AVX2 CPU has it in practice.
var hasF16C = useAVX2 && cpuHasF16C()

// HasAVX2 reports whether the AVX2+FMA assembly kernels are in use.
func HasAVX2() bool { return useAVX2 }

//go:noescape
func dotAVX2(a, b *float32, n int) float32

//go:noescape
func axpyAVX2(alpha float32, x, y *float32, n int)

//go:noescape
func scaleAVX2(alpha float32, x *float32, n int)

//go:noescape
func matVec4F32(w *float32, stride int, x *float32, n int, y *float32)

//go:noescape
func matVec4BF16(w *uint16, stride int, x *float32, n int, y *float32)

//go:noescape
func matVec4F16(w *uint16, stride int, x *float32, n int, y *float32)

func dot(a, b []float32) float32 {
	if !useAVX2 || len(a) == 0 {
		return refDot(a, b)
	}
	return dotAVX2(&a[0], &b[0], len(a))
}

func axpy(alpha float32, x, y []float32) {
	if !useAVX2 || len(x) == 0 {
		refAxpy(alpha, x, y)
		return
	}
	axpyAVX2(alpha, &x[0], &y[0], len(x))
}

func scale(alpha float32, x []float32) {
	if !useAVX2 || len(x) == 0 {
		refScale(alpha, x)
		return
	}
	scaleAVX2(alpha, &x[0], len(x))
}

// matVecF32 computes rows [r0, r1) of y = W·x, four rows per kernel call;
// the last (r1-r0)%4 rows call the kernel with stride 0 (one row four times).
func matVecF32(y, w, x []float32, r0, r1, cols int) {
	if !useAVX2 || cols < 8 {
		refMatVecF32(y, w, x, r0, r1, cols)
		return
	}
	c8 := cols &^ 7
	var out [4]float32
	for r := r0; r < r1; {
		nr, stride := 4, cols
		if r1-r < 4 {
			nr, stride = 1, 0
		}
		wr := w[r*cols : (r+nr-1)*cols+cols]
		matVec4F32(&wr[0], stride, &x[0], c8, &out[0])
		for i := 0; i < nr; i++ {
			s := out[i]
			row := wr[i*cols : (i+1)*cols]
			for c := c8; c < cols; c++ {
				s += row[c] * x[c]
			}
			y[r+i] = s
		}
		r += nr
	}
}

func matVecBF16(y []float32, w []uint16, x []float32, r0, r1, cols int) {
	if !useAVX2 || cols < 8 {
		refMatVecBF16(y, w, x, r0, r1, cols)
		return
	}
	matVec16(matVec4BF16, bf16ToF32, y, w, x, r0, r1, cols)
}

func matVecF16(y []float32, w []uint16, x []float32, r0, r1, cols int) {
	if !hasF16C || cols < 8 {
		refMatVecF16(y, w, x, r0, r1, cols)
		return
	}
	matVec16(matVec4F16, f16ToF32, y, w, x, r0, r1, cols)
}

func matVec16(kern func(w *uint16, stride int, x *float32, n int, y *float32), conv func(uint16) float32,
	y []float32, w []uint16, x []float32, r0, r1, cols int) {
	c8 := cols &^ 7
	var out [4]float32
	for r := r0; r < r1; {
		nr, stride := 4, cols
		if r1-r < 4 {
			nr, stride = 1, 0
		}
		wr := w[r*cols : (r+nr-1)*cols+cols]
		kern(&wr[0], stride, &x[0], c8, &out[0])
		for i := 0; i < nr; i++ {
			s := out[i]
			row := wr[i*cols : (i+1)*cols]
			for c := c8; c < cols; c++ {
				s += conv(row[c]) * x[c]
			}
			y[r+i] = s
		}
		r += nr
	}
}

func rmsNorm(y, x, w []float32, eps float32) { refRMSNorm(y, x, w, eps) }
func softmax(x []float32)                    { refSoftmax(x) }
func siluMul(y, gate, up []float32)          { refSiLUMul(y, gate, up) }

var _ = unsafe.Pointer(nil)
