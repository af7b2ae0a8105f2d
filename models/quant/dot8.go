package quant

import (
	"math"
	"sync"
	"unsafe"

	"github.com/lorakit/lorakit/models/kernels"
)

// The dot kernels (AVX-512 VNNI, VPDPBUSD; on CPUs without it AVX2, VPMADDUBSW, with the same integer sums and
// float operations, so the two give bit-identical products: see dotY in asm/). Every weight whose rows come in
// tiles of 16 runs here on a CPU with AVX2, at every batch size and in prefill. As llama.cpp does for its
// quantised types, x is rounded per block of 32 values to int8 (step max|x|/127, ties to even), so that one VPDPBUSD multiplies 64
// byte pairs (twice VPDPWSSD's 32 int16 pairs) and one int32 sum holds a whole block. VPDPBUSD takes unsigned
// weight bytes and signed x bytes; each weight code is stored as an unsigned byte u standing for the level
// u − z (z the zero point: 8 for Q4_0's codes, 64 for NF4 and FP4's, 128 for the others), and each x block's
// sum starts at −z·Σq, so the kernel's int32 sums are exactly Σ (u − z)·q:
//   - Q4_0: u is ggml's code itself (levels (u−8)/8·absmax = (u−8)·d): the same integer sums as llama.cpp's
//     Q4_0 × Q8_0 dot product, with x's scale kept in float32 (ggml rounds it to f16);
//   - int8 and Q8_0: u = code + 128, exact;
//   - NF4 and FP4: u = 64 + round(63·level/max|level|) through a 16-byte table (VPSHUFB), as llama.cpp
//     holds IQ4_NL's non-uniform levels (in [−127, 127]); this moves each level by at most 0.5/63 of the
//     block's absmax (NF4: rms 0.004 over Gaussian blocks of 64, where NF4's own rounding of a weight to its
//     nearest level is up to 0.04–0.15 of the absmax, rms 0.036; the two together stay at rms 0.036, as with
//     ±127), and lets the AVX2 kernel sum two quads in int16 before widening them (l4Max).
//
// The layout is tiled: each of a zmm register's 16 lanes (a ymm register's 8, for half a tile) is one weight
// row, and holds 4 columns (a quad) as 4 bytes; x quads are broadcast, so that one vector of float work per x
// block serves 16 (8) weight rows instead of one. Per tile of 16 rows and x block of 32 columns:
// 4-bit codes in 4 runs of 64 bytes (lane j's bytes 4j..4j+3; the low nibbles are columns 8p..8p+3 of run p,
// the high nibbles 8p+4..8p+7), byte codes in 8 runs of 64 bytes (run p: columns 4p..4p+3). Then per tile and
// weight block the 16 rows' scales, times the level unit. The copy is made on a weight's first product and
// kept beside its bitsandbytes/ggml layout.

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

// tileRows is the number of weight rows in a tile: one per zmm lane (two ymm halves in the AVX2 kernels).
const tileRows = 16

// dotK is the most x rows a dot kernel call takes (the generator makes one kernel per count).
const dotK = 12

// xBlock is the columns of one x scale in the dot kernels.
const xBlock = 32

// The layouts of the dot kernels (dotKinds in asm/).
const (
	dotL4 = iota // 4-bit codes through a level table (NF4, FP4)
	dotQ4        // 4-bit codes that are their own values (Q4_0)
	dotB8        // byte codes (int8, Q8_0)
)

// dot8 is a weight in the dot kernels' layout (see above).
type dot8 struct {
	kind   int
	z      int32 // the zero point: byte value u stands for u − z level units
	bpw    int   // x blocks per weight scale
	codes  []byte
	scales []float32
	unit   float32  // scales[·] = the block's absmax · unit
	lut    [16]byte // dotL4: the byte value of each code
}

// blockBytes is the size of one tile's codes for one x block.
func (t *dot8) blockBytes() int {
	if t.kind == dotB8 {
		return 512
	}
	return 256
}

// dot8able reports whether the dot kernels can run q: rows in tiles of 16, x blocks of 32 that never straddle
// a weight block.
func (q *Weight) dot8able() bool {
	rows, cols, bs := q.Rows(), q.Cols(), q.BlockSize
	if rows%tileRows != 0 || rows == 0 || len(q.Shape) != 2 || cols%xBlock != 0 {
		return false
	}
	switch q.Type {
	case NF4, FP4, Q4_0:
		_, ok := q.lut16()
		return ok && bs%xBlock == 0
	case Int8:
		return bs == cols
	case Q8_0:
		return bs == xBlock
	}
	return false
}

// useDot8 reports whether the dot kernels run q: they are in use (AVX-512 VNNI or AVX2) and q's shape tiles. Once
// q has its dot copy (only a weight that tiles gets one) the copy answers, so that the check's table (lut16) is
// not rebuilt on every product.
func (q *Weight) useDot8() bool { return dot8On() && (q.dots.Load() != nil || q.dot8able()) }

// dot8Copy returns q's copy in the dot kernels' layout, making it on first use (two concurrent first uses may
// both make one; one is kept).
func (q *Weight) dot8Copy() *dot8 {
	if t := q.dots.Load(); t != nil {
		return t
	}
	t := q.makeDot8(q.packedRow)
	if q.dots.CompareAndSwap(nil, t) {
		return t
	}
	return q.dots.Load()
}

// dotLevels returns the byte value of each 4-bit code and the level unit (code units per step of u), or for
// Q4_0's own table the codes themselves. Other tables (NF4, FP4) are scaled to l4Max: u = l4Zero +
// round(l4Max·level/max|level|), unit max|level|/l4Max.
func dotLevels(typ Type, code *[16]float32) (kind int, u [16]byte, unit float32) {
	if typ == Q4_0 && *code == q40Code {
		for i := range u {
			u[i] = byte(i)
		}
		return dotQ4, u, 1.0 / 8
	}
	var m float32
	for _, c := range code {
		m = max(m, abs32(c))
	}
	for i, c := range code {
		u[i] = byte(l4Zero + int(math.Round(float64(c)/float64(m)*l4Max)))
	}
	return dotL4, u, m / l4Max
}

// l4Max is the largest |level| of NF4 and FP4 in the dot kernels, in level units, and l4Zero their zero point: a
// level w ∈ [−63, 63] is the unsigned byte u = 64 + w ∈ [1, 127]. The AVX2 kernels for more than 2 x rows take
// the signed levels w = u − 64: their int16 pair sums (VPMADDUBSW of |w| and sign(w)·q) are at most 2·63·127 =
// 16002, so two quads' pair sums add to at most 32004 < 32767 before one VPMADDWD widens them (6 cycles of Zen
// 1's one integer-multiply pipe per two quads and x row instead of 8 with levels in [−127, 127]). The decode
// kernels (1 and 2 rows) multiply u by x's signed bytes as they are (pair sums at most 2·127·127 = 32258, a
// VPMADDWD per quad: no VPSIGNB, no table of |w|), each block's sum starting at −64·Σq. Both make exactly Σ w·q,
// the VNNI kernel's sums from the same bytes (see dotY in asm/).
const (
	l4Max  = 63
	l4Zero = 64
)

// packedRow is row r of Packed.
func (q *Weight) packedRow(r int) []byte {
	n := q.codeBytes() / q.Rows()
	return q.Packed[r*n : (r+1)*n]
}

// makeDot8 re-lays q's codes, given a row at a time by row (the row-major codes of row r, Cols bytes or half
// that for 4-bit types), and its scales (see dot8).
func (q *Weight) makeDot8(row func(r int) []byte) *dot8 {
	rows, cols := q.Rows(), q.Cols()
	nb := cols / xBlock
	t := &dot8{kind: dotB8, z: 128, bpw: 1}
	unit := float32(1)
	switch q.Type {
	case Int8:
		t.bpw, unit = nb, int8Scale
	case NF4, FP4, Q4_0:
		t.kind, t.lut, unit = dotLevels(q.Type, &q.Code)
		t.bpw = q.BlockSize / xBlock
		switch t.kind {
		case dotQ4:
			t.z = 8
		case dotL4:
			t.z = l4Zero
		}
	}
	t.unit = unit
	nwb, bb := nb/t.bpw, t.blockBytes()
	t.codes = make([]byte, rows/tileRows*nb*bb)
	t.scales = make([]float32, rows/tileRows*nwb*tileRows)
	for r := 0; r < rows; r++ {
		tile, j, codes := r/tileRows, r%tileRows, row(r)
		for b := 0; b < nb; b++ {
			dst := t.codes[(tile*nb+b)*bb:]
			if t.kind == dotB8 {
				src := codes[b*xBlock : (b+1)*xBlock]
				for p := 0; p < 8; p++ {
					d, s := dst[p*64+4*j:p*64+4*j+4:p*64+4*j+4], src[4*p:4*p+4:4*p+4]
					d[0], d[1], d[2], d[3] = s[0]^0x80, s[1]^0x80, s[2]^0x80, s[3]^0x80
				}
				continue
			}
			src := codes[b*xBlock/2 : (b+1)*xBlock/2]
			for p := 0; p < 4; p++ { // columns 8p..8p+7: four bytes, two codes each (the first in the high nibble)
				s, d := src[4*p:4*p+4:4*p+4], dst[p*64+4*j:p*64+4*j+4:p*64+4*j+4]
				d[0] = s[0]>>4 | s[2]&0xf0
				d[1] = s[0]&0x0f | s[2]<<4
				d[2] = s[1]>>4 | s[3]&0xf0
				d[3] = s[1]&0x0f | s[3]<<4
			}
		}
		for wb := 0; wb < nwb; wb++ {
			var s float32
			switch q.Type {
			case Int8:
				s = q.Absmax[r]
			default:
				s = q.BlockAbsmax(r*nwb + wb)
			}
			t.scales[(tile*nwb+wb)*tileRows+j] = s * unit
		}
	}
	return t
}

// code is the byte value u of weight row tile·16+j, column c of x block b (nb blocks per row).
func (t *dot8) code(tile, nb, b, c, j int) byte {
	if t.kind == dotB8 {
		return t.codes[(tile*nb+b)*512+(c/4)*64+4*j+c%4]
	}
	v := t.codes[(tile*nb+b)*256+(c/8)*64+4*j+c%4]
	if c%8 >= 4 {
		v >>= 4
	}
	v &= 0x0f
	if t.kind == dotL4 {
		v = t.lut[v]
	}
	return v
}

// xDot is k rows of x quantised for the dot kernels: per x block, k runs of 32 int8 values (q), k steps (s)
// and k corrections −z·Σq (c).
type xDot struct {
	k, row0 int
	q       []byte
	s       []float32
	c       []int32
}

// quantizeX8Go writes row i of x into xd for zero point z (the portable twin of quantX8): per block of 32
// values m = max|x|, q = round-to-even(x·(127/max(m, 2⁻¹⁰⁰))), step m/127, correction −z·Σq.
func quantizeX8Go(xd *xDot, i int, x []float32, z int32) {
	k := xd.k
	for b := 0; b < len(x)/xBlock; b++ {
		blk := x[b*xBlock : (b+1)*xBlock : (b+1)*xBlock]
		var m float32
		for _, v := range blk {
			m = max(m, abs32(v))
		}
		r := 127 / max(m, 0x1p-100)
		xd.s[b*k+i] = m / 127
		dst := xd.q[(b*k+i)*xBlock : (b*k+i+1)*xBlock : (b*k+i+1)*xBlock]
		var sum int32
		for c, v := range blk {
			qv := roundEven(v * r)
			dst[c] = byte(int8(qv))
			sum += int32(qv)
		}
		xd.c[b*k+i] = -z * sum
	}
}

// dot8Go is the portable dot kernel and the reference for the assembly: for tiles [t0, t0+n) and the k x rows
// of xd, y[i·ystride + (tile−t0)·16 + lane] = Σ_b float(c_i[b] + Σ_{32 columns} u·q_i)·(ws_b·s_i[b]).
func dot8Go(y []float32, ystride int, t *dot8, xd *xDot, t0, n, cols int) {
	k, nb := xd.k, cols/xBlock
	nwb := nb / t.bpw
	for tile := t0; tile < t0+n; tile++ {
		for i := 0; i < k; i++ {
			var acc [tileRows]float32
			for b := 0; b < nb; b++ {
				var sum [tileRows]int32
				for j := range sum {
					sum[j] = xd.c[b*k+i]
				}
				xq := xd.q[(b*k+i)*xBlock : (b*k+i+1)*xBlock]
				for c, v := range xq {
					xv := int32(int8(v))
					for j := range sum {
						sum[j] += int32(t.code(tile, nb, b, c, j)) * xv
					}
				}
				ws := t.scales[(tile*nwb+b/t.bpw)*tileRows:]
				for j := range acc {
					acc[j] += float32(sum[j]) * (ws[j] * xd.s[b*k+i])
				}
			}
			copy(y[i*ystride+(tile-t0)*tileRows:], acc[:])
		}
	}
}

// dot8Out is one weight of a dot8Job: its dot layout, its products y[i·rows + r] and its first tile among the
// job's (the tiles of every weight of a job, one after another).
type dot8Out struct {
	t     *dot8
	y     []float32
	rows  int
	tile0 int
}

// dot8Job is the pool job of the dot products of one x: y[i·Rows + r] for every x row and weight.
type dot8Job struct {
	outs   []dot8Out
	x      []float32
	cols   int
	z      int32
	chunks []xDot
	q      []byte
	s      []float32
	c      []int32
}

var dot8Pool = sync.Pool{New: func() any { return new(dot8Job) }}

// matMulDot8 computes y[i·Rows + r] for the m rows of x with the dot kernels.
func (q *Weight) matMulDot8(p *kernels.Pool, y, x []float32, m int) {
	j := dot8Pool.Get().(*dot8Job)
	j.add(q.dot8Copy(), y, q.Rows())
	j.run(p, x, m)
}

// add appends a weight's products to j.
func (j *dot8Job) add(t *dot8, y []float32, rows int) {
	tile0 := 0
	if n := len(j.outs); n > 0 {
		tile0 = j.outs[n-1].tile0 + j.outs[n-1].rows/tileRows
	}
	j.outs = append(j.outs, dot8Out{t: t, y: y, rows: rows, tile0: tile0})
}

// run quantises the m rows of x once (in chunks of at most dotK rows) and computes every added weight's tiles
// for every chunk in one pool job, then puts j back in dot8Pool.
func (j *dot8Job) run(p *kernels.Pool, x []float32, m int) {
	cols := len(x) / m
	nb := cols / xBlock
	j.x, j.cols, j.z = x, cols, j.outs[0].t.z
	j.q = grow(j.q, m*cols)
	j.s = grow(j.s, m*nb)
	j.c = grow(j.c, m*nb)
	j.chunks = j.chunks[:0]
	n := (m + dotK - 1) / dotK // chunks of balanced sizes
	for c, i := 0, 0; c < n; c++ {
		k := (m - i) / (n - c)
		j.chunks = append(j.chunks, xDot{k: k, row0: i, q: j.q[i*cols : (i+k)*cols], s: j.s[i*nb : (i+k)*nb], c: j.c[i*nb : (i+k)*nb]})
		i += k
	}
	if m >= quantSplitM { // prefill: x is quantised by every thread, a share of the chunks each
		p.Run(len(j.chunks), (*dot8Quant)(j))
	} else {
		(*dot8Quant)(j).Run(0, len(j.chunks))
	}
	last := j.outs[len(j.outs)-1]
	if m >= balancedM {
		p.RunBalanced(last.tile0+last.rows/tileRows, j)
	} else {
		p.Run(last.tile0+last.rows/tileRows, j)
	}
	clear(j.outs)
	j.outs, j.x = j.outs[:0], nil
	dot8Pool.Put(j)
}

// MatMulTShared is MatMulT for weights that all multiply the same x (a layer's q, k and v projections; its gate
// and up projections), into ys[w] for ws[w]: where the dot kernels run every weight with one zero point, x is
// quantised once and one pool job computes every weight's tiles (each product as MatMulT makes it, bit for
// bit). It reports false, having done nothing, when they cannot share x; the caller then calls MatMulT for each.
func MatMulTShared(p *kernels.Pool, ys [][]float32, ws []*Weight, x []float32, m int) bool {
	if len(ws) == 0 || len(ys) != len(ws) || m <= 0 {
		return false
	}
	cols := ws[0].Cols()
	for i, q := range ws {
		if !q.useDot8() || q.Cols() != cols || len(x) != m*cols || len(ys[i]) != m*q.Rows() || q.dot8Copy().z != ws[0].dot8Copy().z {
			return false
		}
	}
	j := dot8Pool.Get().(*dot8Job)
	for i, q := range ws {
		j.add(q.dot8Copy(), ys[i], q.Rows())
	}
	j.run(p, x, m)
	return true
}

// balancedM is the number of x rows from which a product's tiles go to the pool in smaller chunks that an idle
// thread can take over (kernels.Pool.RunBalanced): the VNNI kernels are compute-bound from about 4 rows (the
// weights then stream from DRAM faster than they are multiplied), and one thread's share of a whole half then
// leaves the other spinning whenever it is slowed. Below it, each thread streams one contiguous half.
const balancedM = 4

// quantSplitM is the number of x rows from which the pool's threads share their quantisation (below it, waking
// them costs more than the quantisation itself).
const quantSplitM = 64

// dot8Quant is the pool job that quantises the x rows of a dot8Job's chunks.
type dot8Quant dot8Job

// Run quantises the x rows of chunks [lo, hi).
func (j *dot8Quant) Run(lo, hi int) {
	for ci := lo; ci < hi; ci++ {
		c := &j.chunks[ci]
		for r := 0; r < c.k; r++ {
			quantizeX8(c, r, j.x[(c.row0+r)*j.cols:(c.row0+r+1)*j.cols], j.z)
		}
	}
}

// Run computes tiles [lo, hi) of the job (numbered across its weights) for every chunk of x, two tiles of a
// weight at a time so that their codes stay in L1 while the chunks (and the kernel calls of one chunk) read
// them; when one kernel call reads every code once (a single chunk of at most wholeRows() x rows: decode), each
// weight's tiles go to the kernel in one call instead, which streams them without a Go call every two tiles.
func (j *dot8Job) Run(lo, hi int) {
	whole := len(j.chunks) == 1 && j.chunks[0].k <= wholeRows()
	for oi := range j.outs {
		o := &j.outs[oi]
		a, b := max(lo, o.tile0)-o.tile0, min(hi, o.tile0+o.rows/tileRows)-o.tile0
		step := 2
		if whole {
			step = max(1, b-a)
		}
		for t0 := a; t0 < b; t0 += step {
			n := min(step, b-t0)
			for ci := range j.chunks {
				c := &j.chunks[ci]
				dot8Rows(o.y[c.row0*o.rows+t0*tileRows:], o.rows, o.t, c, t0, n, j.cols)
			}
		}
	}
}

// Compact keeps q's codes in the dot kernels' layout only, when those kernels run q (AVX-512 VNNI or AVX2, rows in
// tiles of 16): it makes that copy now and drops Packed, so that one layout is resident instead of two. It reports
// whether it did. Call it before q is shared, and only for a weight that inference multiplies: dequantising then
// decodes the dot layout element by element (DequantizeRange), and a path that needs the row-major codes (the
// portable kernels of a purego build; writing the weight out) rebuilds them once (packed), after which
// both layouts are resident again.
func (q *Weight) Compact() bool {
	if !q.useDot8() || q.Packed == nil {
		return false
	}
	q.dot8Copy()
	q.Packed = nil
	q.dropAbsmax()
	return true
}

// DotBytes is the size MoveDot needs for q: its dot-layout codes and scales, each rounded up to a cache line; 0
// when q has no dot layout (it was not compacted, or the dot kernels do not run it).
func (q *Weight) DotBytes() int {
	t := q.dots.Load()
	if t == nil {
		return 0
	}
	return cacheLines(len(t.codes)) + cacheLines(4*len(t.scales))
}

// MoveDot copies q's dot-layout codes and scales into dst (DotBytes bytes starting on a 64-byte boundary: memory
// the caller owns, such as huge pages inference keeps the weights in) and multiplies from there on; the copy they
// came from becomes garbage. dst must outlive every use of q. Call it before q is shared; without a dot layout it
// does nothing.
func (q *Weight) MoveDot(dst []byte) {
	t := q.dots.Load()
	if t == nil {
		return
	}
	m := *t
	nc, ns := len(t.codes), len(t.scales)
	m.codes = dst[:nc:nc]
	copy(m.codes, t.codes)
	sb := dst[cacheLines(nc):]
	m.scales = unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(sb))), ns)
	copy(m.scales, t.scales)
	q.dots.Store(&m)
}

// cacheLines rounds n bytes up to whole 64-byte cache lines.
func cacheLines(n int) int { return (n + 63) &^ 63 }

// dropAbsmax drops Absmax too when the dot layout's scales give it back exactly (a power-of-two unit, a weight
// block per x block: Q8_0 and Q4_0), another 4 bytes per 32 weights; BlockAbsmax then reads the dot layout.
func (q *Weight) dropAbsmax() {
	t := q.dots.Load()
	if frac, _ := math.Frexp(float64(t.unit)); q.Double || t.bpw != 1 || t.kind == dotL4 || q.Type == Int8 || frac != 0.5 {
		return
	}
	q.Absmax = nil
}

// dotAbsmax is the absmax of block b read back from the dot layout (after dropAbsmax).
func (q *Weight) dotAbsmax(b int) float32 {
	t := q.dots.Load()
	nb := q.Cols() / xBlock
	r, wb := b/nb, b%nb
	return t.scales[((r/tileRows)*nb+wb)*tileRows+r%tileRows] / t.unit
}

// absmaxes returns Absmax, or after dropAbsmax a copy rebuilt from the dot layout on first use (for the kernels
// that take a row's scales as a slice).
func (q *Weight) absmaxes() []float32 {
	if q.Absmax != nil || q.Double {
		return q.Absmax
	}
	if a := q.reabsmax.Load(); a != nil {
		return *a
	}
	a := make([]float32, q.NumBlocks())
	for b := range a {
		a[b] = q.dotAbsmax(b)
	}
	q.reabsmax.CompareAndSwap(nil, &a)
	return *q.reabsmax.Load()
}

// FillCodes sets the codes of q, which has every other field, a row at a time: row writes the row-major codes
// of row r (Cols bytes, half that for 4-bit types) into dst. With compact, where the dot kernels run q, the codes
// go straight into their layout, as Compact leaves them, and no row-major copy is ever made (a converter that
// holds one whole tensor less while it loads); otherwise into Packed.
func (q *Weight) FillCodes(compact bool, row func(r int, dst []byte)) {
	rows := q.Rows()
	n := q.codeBytes() / max(rows, 1)
	if compact && q.useDot8() {
		buf := make([]byte, n)
		q.dots.Store(q.makeDot8(func(r int) []byte { row(r, buf); return buf }))
		q.Packed = nil
		q.dropAbsmax()
		return
	}
	q.Packed = make([]byte, rows*n)
	for r := range rows {
		row(r, q.Packed[r*n:(r+1)*n])
	}
}

// packed returns the row-major codes: Packed, or after Compact a copy rebuilt from the dot layout on first use.
func (q *Weight) packed() []byte {
	if q.Packed != nil {
		return q.Packed
	}
	if p := q.unpacked.Load(); p != nil {
		return *p
	}
	t, rows, cols := q.dots.Load(), q.Rows(), q.Cols()
	p := make([]byte, q.codeBytes())
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			v := t.rawCode(r, c, cols)
			if t.kind == dotB8 {
				p[r*cols+c] = v
				continue
			}
			e := r*cols + c
			if e&1 == 0 {
				p[e>>1] = v << 4
			} else {
				p[e>>1] |= v
			}
		}
	}
	q.unpacked.CompareAndSwap(nil, &p)
	return *q.unpacked.Load()
}

// rawCode is the stored code of weight row r, column c (cols per row): the int8 code byte, or the 4-bit code.
func (t *dot8) rawCode(r, c, cols int) byte {
	tile, j, nb, b := r/tileRows, r%tileRows, cols/xBlock, c/xBlock
	c %= xBlock
	if t.kind == dotB8 {
		return t.codes[(tile*nb+b)*512+(c/4)*64+4*j+c%4] ^ 0x80
	}
	v := t.codes[(tile*nb+b)*256+(c/8)*64+4*j+c%4]
	if c%8 >= 4 {
		v >>= 4
	}
	return v & 0x0f
}

// dequantDot is DequantizeRange for a compacted weight: from the dot layout, a run of an x block at a time (an x
// block never straddles a weight block).
func (q *Weight) dequantDot(dst []float32, e0 int) {
	t, cols, bs := q.dots.Load(), q.Cols(), q.BlockSize
	nb := cols / xBlock
	for len(dst) > 0 {
		r, c0 := e0/cols, e0%cols
		b := c0 / xBlock
		n := min(len(dst), (b+1)*xBlock-c0)
		a := q.BlockAbsmax(e0 / bs)
		tile, j := r/tileRows, r%tileRows
		d := dst[:n]
		if t.kind == dotB8 {
			base := t.codes[(tile*nb+b)*512+4*j:]
			for i := range d {
				c := c0%xBlock + i
				d[i] = q.value(base[(c/4)*64+c%4]^0x80, a)
			}
		} else {
			base := t.codes[(tile*nb+b)*256+4*j:]
			for i := range d {
				c := c0%xBlock + i
				v := base[(c/8)*64+c%4]
				if c%8 >= 4 {
					v >>= 4
				}
				d[i] = q.value(v&0x0f, a)
			}
		}
		dst, e0 = dst[n:], e0+n
	}
}
