package kernels

import "sync"

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

	// strides (row lengths) of Y, X and W; accum adds to Y instead of
	// overwriting it (Gemm with beta != 0)
	ldy, ldx, ldw int
	accum         bool

	// mb and nb are the row and column blocks of the parallel split (mmRows and mmCols unless prepare
	// chose the generated tiles);
	// gen is the generated tile family that runs the product (0: the AVX2 tiles)
	mb, nb int
	gen    int
	// walk: the generated tiles run one W row at a time against every row of X, each thread over one
	// contiguous share of W (decode batches: the weight stream of the matrix-vector kernel)
	walk bool
	// xp is X reordered for the AVX2 bf16 tiles (permuteX)
	xp []float32
}

const (
	mmRows = 96 // multiple of avxRows (AVX2 tile rows)
	mmCols = 48 // multiple of avxCols (AVX2 tile columns)
)

func (t *matMulTask) run(lo, hi int) {
	for b := lo; b < hi; b++ {
		ib, jb := b%t.ti, b/t.ti
		i0, j0 := ib*t.mb, jb*t.nb
		matMulTile(t, i0, min(i0+t.mb, t.m), j0, min(j0+t.nb, t.n))
	}
}

func (p *Pool) matMulT(t matMulTask) {
	if t.m == 0 || t.n == 0 {
		return
	}
	if t.m == 1 && t.ldx == 0 {
		p.matVec(matVecTask{kind: t.kind, y: t.y, wf: t.wf, wh: t.wh, x: t.x, rows: t.n, cols: t.k})
		return
	}
	if t.ldx == 0 {
		t.ldy, t.ldx, t.ldw = t.n, t.k, t.k
	}
	t.mb, t.nb = mmRows, mmCols
	t.prepare()
	t.ti = (t.m + t.mb - 1) / t.mb
	tiles := t.ti * ((t.n + t.nb - 1) / t.nb)
	if t.m*t.n*t.k < 1<<15 || !p.acquire() {
		buf := gemmScratch.Get().(*[]float32)
		t.permuteX(buf)
		t.run(0, tiles)
		gemmScratch.Put(buf)
		return
	}
	t.permuteX(&p.xperm)
	p.mm = t
	p.runTiles(tiles, t.walk, &p.mm)
	p.mm = matMulTask{}
	p.mu.Unlock()
}

// runTiles runs a locked job of tiles tiles: one tile per chunk, or with walk (each thread one contiguous share of
// W, as the matrix-vector kernel streams it) one chunk per thread.
func (p *Pool) runTiles(tiles int, walk bool, t task) {
	chunks := tiles
	if walk {
		chunks = p.threads
	}
	p.runLocked(tiles, chunks, t)
}

// gemmScratch holds the transposition buffers of Gemms that cannot use their pool's (nil, or busy because the
// Gemm runs inside a pool task, as prefill attention's per-head products do without the broadcast kernel):
// without it each such call would allocate two buffers.
var gemmScratch = sync.Pool{New: func() any { return new([]float32) }}

// gemm runs C = alpha·op(A)·op(B) + beta·C as a matMulTask C (+)= X·Wᵀ with
// X = alpha·op(A) [m, k] and W = op(B)ᵀ [n, k]: operands already in that
// layout are used in place, the others are transposed (and scaled) into
// scratch buffers that the pool keeps between calls.
func (p *Pool) gemm(g gemmArgs) {
	t := matMulTask{kind: wF32, y: g.c, ldy: g.ldc, m: g.m, n: g.n, k: g.k}
	if g.k == 0 || g.alpha == 0 {
		for i := 0; i < g.m; i++ {
			ci := g.c[i*g.ldc : i*g.ldc+g.n]
			if g.beta == 0 {
				clear(ci)
			} else {
				scale(g.beta, ci)
			}
		}
		return
	}
	if !g.transB && bcastAvailable() {
		p.gemmBcast(g)
		return
	}
	locked := p.acquire()
	var bufA, bufB *[]float32
	if locked {
		bufA, bufB = &p.scratchA, &p.scratchB
	} else { // a nil or busy pool (a Gemm inside a pool task): buffers shared by every such call
		bufA, bufB = gemmScratch.Get().(*[]float32), gemmScratch.Get().(*[]float32)
		defer gemmScratch.Put(bufA)
		defer gemmScratch.Put(bufB)
	}
	if !g.transA && g.alpha == 1 {
		t.x, t.ldx = g.a, g.lda
	} else {
		x := growF32(bufA, g.m*g.k)
		if g.transA {
			transpose(x, g.a, g.k, g.m, g.lda)
		} else {
			for i := 0; i < g.m; i++ {
				copy(x[i*g.k:(i+1)*g.k], g.a[i*g.lda:i*g.lda+g.k])
			}
		}
		if g.alpha != 1 {
			scale(g.alpha, x)
		}
		t.x, t.ldx = x, g.k
	}
	if g.transB {
		t.wf, t.ldw = g.b, g.ldb
	} else {
		w := growF32(bufB, g.n*g.k)
		transpose(w, g.b, g.k, g.n, g.ldb)
		t.wf, t.ldw = w, g.k
	}
	if g.beta != 0 {
		t.accum = true
		if g.beta != 1 {
			for i := 0; i < g.m; i++ {
				scale(g.beta, g.c[i*g.ldc:i*g.ldc+g.n])
			}
		}
	}
	t.mb, t.nb = mmRows, mmCols
	t.prepare()
	t.ti = (t.m + t.mb - 1) / t.mb
	tiles := t.ti * ((t.n + t.nb - 1) / t.nb)
	if !locked {
		t.run(0, tiles)
		return
	}
	p.mm = t
	p.runLocked(tiles, tiles, &p.mm)
	p.mm = matMulTask{}
	p.mu.Unlock()
}

// gemmBTask runs Gemm with op(B) = B (NN, TN) through the broadcast tile
// kernel over tiles of bcRows × bcCols of C; accum tells whether C already
// holds beta·C (else it is overwritten).
type gemmBTask struct {
	g     gemmArgs
	accum bool
	ti    int
}

const (
	bcRows = 96 // multiple of 6
	bcCols = 64 // multiple of 16
	bcK    = 256
)

func (t *gemmBTask) run(lo, hi int) {
	for b := lo; b < hi; b++ {
		ib, jb := b%t.ti, b/t.ti
		i0, j0 := ib*bcRows, jb*bcCols
		gemmBcastTile(&t.g, t.accum, i0, min(i0+bcRows, t.g.m), j0, min(j0+bcCols, t.g.n))
	}
}

func (p *Pool) gemmBcast(g gemmArgs) {
	t := gemmBTask{g: g}
	if g.beta != 0 {
		t.accum = true
		if g.beta != 1 {
			for i := 0; i < g.m; i++ {
				scale(g.beta, g.c[i*g.ldc:i*g.ldc+g.n])
			}
		}
	}
	t.ti = (g.m + bcRows - 1) / bcRows
	tiles := t.ti * ((g.n + bcCols - 1) / bcCols)
	if g.m*g.n*g.k < 1<<15 || !p.acquire() {
		t.run(0, tiles)
		return
	}
	p.gb = t
	p.runLocked(tiles, tiles, &p.gb)
	p.gb = gemmBTask{}
	p.mu.Unlock()
}

// gemmEdge computes C[i, j0:j1] (+)= alpha·Σ_l opA(i,l)·B[l, j0:j1] with axpy.
func gemmEdge(g *gemmArgs, accum bool, i, j0, j1 int) {
	if j0 >= j1 {
		return
	}
	c := g.c[i*g.ldc+j0 : i*g.ldc+j1]
	if !accum {
		clear(c)
	}
	for l := 0; l < g.k; l++ {
		var a float32
		if g.transA {
			a = g.a[l*g.lda+i]
		} else {
			a = g.a[i*g.lda+l]
		}
		axpy(g.alpha*a, g.b[l*g.ldb+j0:l*g.ldb+j1], c)
	}
}

// gemmArgs are Gemm's arguments.
type gemmArgs struct {
	transA, transB bool
	m, n, k        int
	alpha, beta    float32
	a, b, c        []float32
	lda, ldb, ldc  int
}

// growF32 returns (*buf)[:n], reallocating when too small.
func growF32(buf *[]float32, n int) []float32 {
	if cap(*buf) < n {
		*buf = make([]float32, n)
	}
	return (*buf)[:n]
}

// transpose writes dst[j*rows+i] = src[i*ld+j] for a [rows, cols] source, in
// 32×32 blocks.
func transpose(dst, src []float32, rows, cols, ld int) {
	const bs = 32
	for i0 := 0; i0 < rows; i0 += bs {
		i1 := min(i0+bs, rows)
		for j0 := 0; j0 < cols; j0 += bs {
			j1 := min(j0+bs, cols)
			for i := i0; i < i1; i++ {
				row := src[i*ld : i*ld+j1]
				for j := j0; j < j1; j++ {
					dst[j*rows+i] = row[j]
				}
			}
		}
	}
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
