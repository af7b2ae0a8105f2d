package kernels

// matMulTask computes Y = X·Wᵀ over tiles of mmRows rows of X by mmCols
// rows of W; tile t covers X rows block t%ti and W rows block t/ti, so that
// consecutive tiles reuse one block of W from cache.
type matMulTask struct {
	kind    int
	y, x    []float32
	wf      []float32
	wh      []uint16
	m, n, k int
	ti      int // number of row blocks of X
}

const (
	mmRows = 96 // multiple of 3 (tile kernel rows)
	mmCols = 64 // multiple of 4 (tile kernel columns)
	mmK    = 512
)

func (t *matMulTask) run(lo, hi int) {
	for b := lo; b < hi; b++ {
		ib, jb := b%t.ti, b/t.ti
		i0, j0 := ib*mmRows, jb*mmCols
		matMulTile(t, i0, min(i0+mmRows, t.m), j0, min(j0+mmCols, t.n))
	}
}

// matVecRows computes y[j] = W[j]·x for W rows [j0, j1).
func (t *matMulTask) matVecRows(y, x []float32, j0, j1 int) {
	switch t.kind {
	case wF32:
		matVecF32(y, t.wf, x, j0, j1, t.k)
	case wBF16:
		matVecBF16(y, t.wh, x, j0, j1, t.k)
	case wF16:
		matVecF16(y, t.wh, x, j0, j1, t.k)
	}
}

func (p *Pool) matMulT(t matMulTask) {
	if t.m == 0 || t.n == 0 {
		return
	}
	if t.m == 1 {
		p.matVec(matVecTask{kind: t.kind, y: t.y, wf: t.wf, wh: t.wh, x: t.x, rows: t.n, cols: t.k})
		return
	}
	t.ti = (t.m + mmRows - 1) / mmRows
	tiles := t.ti * ((t.n + mmCols - 1) / mmCols)
	if t.m*t.n*t.k < 1<<15 || !p.acquire() {
		t.run(0, tiles)
		return
	}
	p.mm = t
	p.runLocked(tiles, tiles, &p.mm)
	p.mm = matMulTask{}
	p.mu.Unlock()
}

// gemmTask computes rows [lo, hi) of C = alpha·op(A)·op(B) + beta·C.
type gemmTask struct {
	transA, transB bool
	m, n, k        int
	alpha, beta    float32
	a, b, c        []float32
	lda, ldb, ldc  int
}

func (t *gemmTask) run(lo, hi int) {
	n, k := t.n, t.k
	for i := lo; i < hi; i++ {
		ci := t.c[i*t.ldc : i*t.ldc+n]
		if t.beta == 0 {
			clear(ci)
		} else if t.beta != 1 {
			scale(t.beta, ci)
		}
		if t.transB {
			for j := 0; j < n; j++ {
				bj := t.b[j*t.ldb : j*t.ldb+k]
				var s float32
				if t.transA {
					for l := 0; l < k; l++ {
						s += t.a[l*t.lda+i] * bj[l]
					}
				} else {
					s = dot(t.a[i*t.lda:i*t.lda+k], bj)
				}
				ci[j] += t.alpha * s
			}
			continue
		}
		for l := 0; l < k; l++ {
			var av float32
			if t.transA {
				av = t.a[l*t.lda+i]
			} else {
				av = t.a[i*t.lda+l]
			}
			axpy(t.alpha*av, t.b[l*t.ldb:l*t.ldb+n], ci)
		}
	}
}

func (p *Pool) gemm(t gemmTask) {
	if t.m*t.n*t.k < 1<<15 || !p.acquire() {
		t.run(0, t.m)
		return
	}
	p.gem = t
	p.runLocked(t.m, 8*p.threads, &p.gem)
	p.gem = gemmTask{}
	p.mu.Unlock()
}

// weight returns element idx of W as float32.
func (t *matMulTask) weight(idx int) float32 {
	switch t.kind {
	case wBF16:
		return bf16ToF32(t.wh[idx])
	case wF16:
		return f16ToF32(t.wh[idx])
	}
	return t.wf[idx]
}
