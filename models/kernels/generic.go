//go:build !amd64 || purego

package kernels

func dot(a, b []float32) float32                    { return refDot(a, b) }
func axpy(alpha float32, x, y []float32)            { refAxpy(alpha, x, y) }
func scale(alpha float32, x []float32)              { refScale(alpha, x) }
func matVecF32(y, w, x []float32, r0, r1, cols int) { refMatVecF32(y, w, x, r0, r1, cols) }
func matVecBF16(y []float32, w []uint16, x []float32, r0, r1, c int) {
	refMatVecBF16(y, w, x, r0, r1, c)
}
func matVecF16(y []float32, w []uint16, x []float32, r0, r1, c int) { refMatVecF16(y, w, x, r0, r1, c) }
func rmsNorm(y, x, w []float32, eps float32)                        { refRMSNorm(y, x, w, eps) }
func softmax(x []float32)                                           { refSoftmax(x) }
func argmax(x []float32) int                                        { return refArgmax(x) }
func siluMul(y, gate, up []float32)                                 { refSiLUMul(y, gate, up) }

// SetAVX512 has no effect: this build runs no assembly.
func SetAVX512(on bool) {}

// AVX512 reports false: this build runs no assembly.
func AVX512() bool { return false }

// matMulTile computes Y rows [i0, i1) × columns [j0, j1) of X·Wᵀ.
func matMulTile(t *matMulTask, i0, i1, j0, j1 int) {
	for i := i0; i < i1; i++ {
		x := t.x[i*t.ldx : i*t.ldx+t.k]
		for j := j0; j < j1; j++ {
			var s float32
			switch t.kind {
			case wF32:
				s = refDot(x, t.wf[j*t.ldw:j*t.ldw+t.k])
			case wBF16:
				s = refDotBF16(t.wh[j*t.ldw:j*t.ldw+t.k], x)
			case wF16:
				s = refDotF16(t.wh[j*t.ldw:j*t.ldw+t.k], x)
			}
			if t.accum {
				t.y[i*t.ldy+j] += s
			} else {
				t.y[i*t.ldy+j] = s
			}
		}
	}
}

// bcastAvailable reports whether gemmBcastTile has a fast kernel.
func bcastAvailable() bool { return false }

// gemmBcastTile computes C rows [i0, i1) × columns [j0, j1) for op(B) = B.
func gemmBcastTile(g *gemmArgs, accum bool, i0, i1, j0, j1 int) {
	for i := i0; i < i1; i++ {
		gemmEdge(g, accum, i, j0, j1)
	}
}

// permuteBF16 reorders x for matVecBF16P; the pure-Go build has no such
// kernel and returns nil.
func permuteBF16(buf *[]float32, x []float32) []float32 { return nil }

func matVecBF16P(y []float32, w []uint16, xp, x []float32, r0, r1, cols int) {
	refMatVecBF16(y, w, x, r0, r1, cols)
}

// avxTiles reports false: this build has no AVX2 tiles.
func (t *matMulTask) avxTiles() bool { return false }

// permuteX has nothing to reorder: this build has no AVX2 tiles.
func (t *matMulTask) permuteX(buf *[]float32) bool { return false }

// prepare has nothing to choose: this build has no generated tiles.
func (t *matMulTask) prepare() {}
