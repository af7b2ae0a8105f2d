package quant

import (
	"sync"

	"github.com/lorakit/lorakit/models/kernels"
)

// The tiled layout. In the row-major kernels each zmm lane sums products of one weight row, so every group of
// 64 columns ends in converting and scaling a vector per (weight row, x row): as many float operations as
// integer ones. The tiled kernels give each of a zmm's 16 lanes its own weight row instead: the codes of 16
// rows are interleaved four columns ("a quad") at a time, the x values are broadcast, and one vector of
// float work serves 16 weight rows. The integer sums are the same ones (x quantised per block exactly as for
// the other kernels, levels as lut16 holds them), converted every 8 columns so that no int32 lane overflows.
// A weight keeps its bitsandbytes/ggml layout for everything else; the tiled copy is made on the first product
// that can use it (a few milliseconds per matrix) and kept beside it.

// Features names the quantised kernels in use beyond models/kernels' (for --version and bug reports).
func Features() []string {
	if vnniRows() > 0 {
		return []string{"AVX-512 VNNI (4-bit, int8, Q8_0)"}
	}
	return nil
}

// tileRows is the number of weight rows in a tile: one per zmm lane.
const tileRows = 16

// tileK is the most x rows a tiled kernel call takes (the generator makes one kernel per count).
const tileK = 8

// tiled is a weight in the tiled kernels' layout: per tile of 16 rows and quad of 4 columns, the codes of
// lane j (row j of the tile) — four bits: bytes 2j and 2j+1 hold columns 4q and 4q+1 in their high nibbles,
// 4q+2 and 4q+3 in their low ones; int8: bytes 2j and 2j+1 columns 4q and 4q+1, and 32 bytes further on
// columns 4q+2 and 4q+3. Then per tile and x block the 16 rows' weight scales.
type tiled struct {
	four   bool
	xbs    int // the columns of one x scale (and weight scale): the block, or 64 for row-wise int8
	codes  []byte
	scales []float32
	lut    lut16 // four bits: the levels
}

// quadBytes is the size of one quad of a tile.
func (t *tiled) quadBytes() int {
	if t.four {
		return 32
	}
	return 64
}

// tileable reports whether the tiled kernels can run q, and the x block they then use.
func (q *Weight) tileable() (xbs int, ok bool) {
	rows, cols, bs := q.Rows(), q.Cols(), q.BlockSize
	if rows%tileRows != 0 || rows == 0 || len(q.Shape) != 2 {
		return 0, false
	}
	switch q.Type {
	case NF4, FP4, Q4_0:
		if _, ok := q.lut16(); !ok || bs%8 != 0 {
			return 0, false
		}
		return bs, true
	case Int8:
		return group, q.int8x16()
	case Q8_0:
		return bs, bs == group/2 && cols%bs == 0
	}
	return 0, false
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
	t := &tiled{xbs: xbs, four: q.Type != Int8 && q.Type != Q8_0}
	if t.four {
		t.lut, _ = q.lut16()
	}
	nq, nb, qb := cols/4, cols/xbs, t.quadBytes()
	t.codes = make([]byte, rows/tileRows*nq*qb)
	t.scales = make([]float32, rows/tileRows*nb*tileRows)
	for r := 0; r < rows; r++ {
		tile, j := r/tileRows, r%tileRows
		dst := t.codes[tile*nq*qb:]
		if t.four {
			row := q.Packed[r*cols/2 : (r+1)*cols/2]
			for qd := 0; qd < nq; qd++ {
				b0, b1 := row[2*qd], row[2*qd+1]
				dst[qd*qb+2*j] = b0&0xf0 | b1>>4
				dst[qd*qb+2*j+1] = b0<<4 | b1&0x0f
			}
		} else {
			row := q.Packed[r*cols : (r+1)*cols]
			for qd := 0; qd < nq; qd++ {
				d := dst[qd*qb:]
				d[2*j], d[2*j+1], d[32+2*j], d[32+2*j+1] = row[4*qd], row[4*qd+1], row[4*qd+2], row[4*qd+3]
			}
		}
		for b := 0; b < nb; b++ {
			var s float32
			switch q.Type {
			case Int8:
				s = q.Absmax[r] * int8Scale
			default:
				s = q.BlockAbsmax(r*nb + b)
			}
			t.scales[(tile*nb+b)*tileRows+j] = s
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
	inv, lim := float32(1), xLimit(q.BlockSize)
	if t.four {
		inv = t.lut.inv
	} else {
		lim = xLimit(t.xbs)
	}
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
// rows of xt, y[i·ystride + (tile-t0)·16 + lane] = Σ_b w_b·s_i[b]·Σ_chunks float(Σ_{8 columns} level·x).
func tiledGo(y []float32, ystride int, t *tiled, xt *xTiled, t0, n, cols int) {
	k, nq, nb, qb := xt.k, cols/4, cols/t.xbs, t.quadBytes()
	for tile := t0; tile < t0+n; tile++ {
		codes := t.codes[tile*nq*qb : (tile+1)*nq*qb]
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
								sum[j] += t.code(codes[qd*qb:], j, e) * xv
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

// code is the int16 level (four bits) or int8 code of lane j's column e (0..3) in one quad.
func (t *tiled) code(quad []byte, j, e int) int32 {
	if !t.four {
		return int32(int8(quad[(e/2)*32+2*j+e%2]))
	}
	b := quad[2*j+e%2]
	c := b >> 4
	if e >= 2 {
		c = b & 0x0f
	}
	return int32(t.lut.level[c])
}
