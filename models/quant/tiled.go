package quant

import (
	"sync"

	"github.com/lorakit/lorakit/models/kernels"
)

// The tiled layout of Q8_0 for CPUs without AVX-512 VNNI (which run every tiled weight through the dot kernels,
// dot8.go). In the row-major kernels each vector lane sums products of one weight row, so every group of
// columns ends in converting and scaling a vector per (weight row, x row): as many float operations as integer
// ones. The tiled kernel gives each lane its own weight row instead: the codes of 16 rows are interleaved four
// columns ("a quad") at a time, the x values (int16, as for the row-major kernels) are broadcast, and one vector
// of float work serves 8 weight rows. The copy is made on the first product (a few milliseconds per matrix)
// and kept beside the ggml layout.

// Features names the quantised kernels in use beyond models/kernels' (for --version and bug reports).
func Features() []string {
	if vnniRows() > 0 {
		return []string{"AVX-512 VNNI (4-bit, int8, Q8_0)"}
	}
	if dot8On() {
		return []string{"AVX2 int8 dot kernels (4-bit, int8, Q8_0)"}
	}
	return nil
}

// tileRows is the number of weight rows in a tile: one per zmm lane (two ymm halves in the AVX2 kernel).
const tileRows = 16

// tileK is the most x rows one chunk of the tiled Q8_0 path holds (the AVX2 kernel takes them one at a time).
const tileK = 8

// tiledQuad is the size of one quad of a tile: the int8 codes of 16 rows × 4 columns.
const tiledQuad = 64

// tiled is a Q8_0 weight in the tiled kernel's layout: per tile of 16 rows and quad of 4 columns, the codes of
// lane j (row j of the tile) — bytes 2j and 2j+1 columns 4q and 4q+1, and 32 bytes further on columns 4q+2 and
// 4q+3. Then per tile and block the 16 rows' scales.
type tiled struct {
	xbs    int // the columns of one x scale (and weight scale): the block
	codes  []byte
	scales []float32
}

// tileable reports whether the tiled Q8_0 kernel can run q, and the x block it then uses.
func (q *Weight) tileable() (xbs int, ok bool) {
	rows, cols, bs := q.Rows(), q.Cols(), q.BlockSize
	if rows%tileRows != 0 || rows == 0 || len(q.Shape) != 2 || q.Type != Q8_0 {
		return 0, false
	}
	return bs, bs == group/2 && cols%bs == 0
}

// tiledCopy returns the tiled copy of q, making it on first use (two concurrent first uses may both make
// one; one is kept).
func (q *Weight) tiledCopy() *tiled {
	if t := q.tiles.Load(); t != nil {
		return t
	}
	xbs, _ := q.tileable()
	t := q.makeTiled(xbs)
	if q.tiles.CompareAndSwap(nil, t) {
		return t
	}
	return q.tiles.Load()
}

// makeTiled re-lays q's codes and scales (see tiled).
func (q *Weight) makeTiled(xbs int) *tiled {
	rows, cols := q.Rows(), q.Cols()
	t := &tiled{xbs: xbs}
	nq, nb := cols/4, cols/xbs
	t.codes = make([]byte, rows/tileRows*nq*tiledQuad)
	t.scales = make([]float32, rows/tileRows*nb*tileRows)
	for r := 0; r < rows; r++ {
		tile, j := r/tileRows, r%tileRows
		dst := t.codes[tile*nq*tiledQuad:]
		row := q.packed()[r*cols : (r+1)*cols]
		for qd := 0; qd < nq; qd++ {
			d := dst[qd*tiledQuad:]
			d[2*j], d[2*j+1], d[32+2*j], d[32+2*j+1] = row[4*qd], row[4*qd+1], row[4*qd+2], row[4*qd+3]
		}
		for b := 0; b < nb; b++ {
			t.scales[(tile*nb+b)*tileRows+j] = q.Absmax[r*nb+b]
		}
	}
	return t
}

// xTiled is k rows of x quantised for the tiled kernels: per quad, k runs of its 4 int16 values; per x block,
// k scales (step·inv, as x16 holds them).
type xTiled struct {
	k, row0 int
	q       []int16
	s       []float32
}

// quantizeTiled writes rows [row0, row0+k) of x (cols each) into xt, with the same steps and rounding as
// quantizeRowGo.
func quantizeTiled(xt *xTiled, x []float32, cols, xbs int, lim, inv float32) {
	k := xt.k
	for i := 0; i < k; i++ {
		xr := x[(xt.row0+i)*cols : (xt.row0+i+1)*cols]
		for b := 0; b < cols/xbs; b++ {
			blk := xr[b*xbs : (b+1)*xbs]
			var m float32
			for _, v := range blk {
				m = max(m, abs32(v))
			}
			var step, r float32
			if m != 0 {
				r, step = lim/m, m/lim
			}
			xt.s[b*k+i] = step * inv
			dst := xt.q[(b*xbs/4)*4*k+4*i:]
			for c := 0; c+4 <= len(blk); c += 4 { // one quad: 4 values of this row, then the next rows' quads
				d, v := dst[c*k:c*k+4:c*k+4], blk[c:c+4:c+4]
				d[0], d[1], d[2], d[3] = roundEven(v[0]*r), roundEven(v[1]*r), roundEven(v[2]*r), roundEven(v[3]*r)
			}
		}
	}
}

// tiledJob is the pool job of one tiled product: y[i·Rows + r] for every x row.
type tiledJob struct {
	t      *tiled
	y      []float32
	rows   int
	cols   int
	chunks []xTiled
	q      []int16
	s      []float32
}

var tiledPool = sync.Pool{New: func() any { return new(tiledJob) }}

// matMulTiled computes y[i·Rows + r] for the m rows of x with the tiled kernels.
func (q *Weight) matMulTiled(p *kernels.Pool, y, x []float32, m int) {
	t := q.tiledCopy()
	rows, cols := q.Rows(), q.Cols()
	j := tiledPool.Get().(*tiledJob)
	j.t, j.y, j.rows, j.cols = t, y, rows, cols
	j.q = grow(j.q, m*cols)
	j.s = grow(j.s, m*(cols/t.xbs))
	j.chunks = j.chunks[:0]
	inv, lim := float32(1), xLimit(t.xbs)
	n := (m + tileK - 1) / tileK // chunks of balanced sizes
	for c, i := 0, 0; c < n; c++ {
		k := (m - i) / (n - c)
		xt := xTiled{k: k, row0: i, q: j.q[i*cols : (i+k)*cols], s: j.s[i*(cols/t.xbs) : (i+k)*(cols/t.xbs)]}
		quantizeTiled(&xt, x, cols, t.xbs, lim, inv)
		j.chunks = append(j.chunks, xt)
		i += k
	}
	p.Run(rows/tileRows, j)
	j.t, j.y = nil, nil
	tiledPool.Put(j)
}

// Run computes tiles [lo, hi) for every chunk of x, two tiles at a time so that their codes stay in L1.
func (j *tiledJob) Run(lo, hi int) {
	const step = 2
	for t0 := lo; t0 < hi; t0 += step {
		n := min(step, hi-t0)
		for ci := range j.chunks {
			tiledRows(j.y[j.chunks[ci].row0*j.rows+t0*tileRows:], j.rows, j.t, &j.chunks[ci], t0, n, j.cols)
		}
	}
}

// tiledGo is the portable tiled kernel and the reference for the assembly: for tiles [t0, t0+n) and the k x
// rows of xt, y[i·ystride + (tile-t0)·16 + lane] = Σ_b w_b·s_i[b]·Σ_chunks float(Σ_{8 columns} code·x).
func tiledGo(y []float32, ystride int, t *tiled, xt *xTiled, t0, n, cols int) {
	k, nq, nb := xt.k, cols/4, cols/t.xbs
	for tile := t0; tile < t0+n; tile++ {
		codes := t.codes[tile*nq*tiledQuad : (tile+1)*nq*tiledQuad]
		for i := 0; i < k; i++ {
			var acc [tileRows]float32
			for b := 0; b < nb; b++ {
				var bsum [tileRows]float32
				for c := b * t.xbs / 8; c < (b+1)*t.xbs/8; c++ { // chunks of 8 columns
					var sum [tileRows]int32
					for qd := 2 * c; qd < 2*c+2; qd++ {
						for e := 0; e < 4; e++ {
							xv := int32(xt.q[qd*4*k+4*i+e])
							for j := range sum {
								sum[j] += int32(int8(codes[qd*tiledQuad+(e/2)*32+2*j+e%2])) * xv
							}
						}
					}
					for j := range sum {
						bsum[j] += float32(sum[j])
					}
				}
				ws := t.scales[(tile*nb+b)*tileRows:]
				for j := range acc {
					acc[j] += bsum[j] * (ws[j] * xt.s[b*k+i])
				}
			}
			copy(y[i*ystride+(tile-t0)*tileRows:], acc[:])
		}
	}
}
