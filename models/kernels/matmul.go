package kernels

// matMulTask computes Y = X·Wᵀ over blocks of mmBlock weight rows (output
// columns); every block streams all m rows of X.
type matMulTask struct {
	kind    int
	y, x    []float32
	wf      []float32
	wh      []uint16
	m, n, k int
}

const mmBlock = 16

func (t *matMulTask) run(lo, hi int) {
	j0, j1 := lo*mmBlock, hi*mmBlock
	if j1 > t.n {
		j1 = t.n
	}
	k := t.k
	for jb := j0; jb < j1; jb += mmBlock {
		je := min(jb+mmBlock, j1)
		for i := 0; i < t.m; i++ {
			xi := t.x[i*k : (i+1)*k]
			yi := t.y[i*t.n : (i+1)*t.n]
			switch t.kind {
			case wF32:
				matVecF32(yi, t.wf, xi, jb, je, k)
			case wBF16:
				matVecBF16(yi, t.wh, xi, jb, je, k)
			case wF16:
				matVecF16(yi, t.wh, xi, jb, je, k)
			}
		}
	}
}

func (p *Pool) matMulT(t matMulTask) {
	if t.m == 0 || t.n == 0 {
		return
	}
	blocks := (t.n + mmBlock - 1) / mmBlock
	if t.m*t.n*t.k < 1<<15 || !p.acquire() {
		t.run(0, blocks)
		return
	}
	p.mm = t
	p.runLocked(blocks, 8*p.threads, &p.mm)
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
