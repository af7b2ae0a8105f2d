package quant

import (
	"fmt"
	"math"
	"math/rand"
	"slices"
	"testing"
	"unsafe"

	"github.com/lorakit/lorakit/models/kernels"
)

// tol8 bounds, per row, how far the dot kernels may be from exact float arithmetic: x rounds to half a step
// (max|x|/127) of its 32-block, and a 4-bit code's level to its byte value (dotLevels: exact for Q4_0, int8
// and Q8_0), each error times the other factor.
func tol8(q *Weight, x []float32) []float64 {
	rows, cols := q.Rows(), q.Cols()
	w := make([]float32, q.Elems())
	q.Dequantize(w)
	var dl [16]float64 // per 4-bit code, the level error in code units
	four := q.Type != Int8 && q.Type != Q8_0
	if four {
		kind, u, unit := dotLevels(q.Type, &q.Code)
		z := l4Zero
		if kind == dotQ4 {
			z = 8
		}
		for c := range dl {
			dl[c] = math.Abs(float64(int(u[c])-z)*float64(unit) - float64(q.Code[c]))
		}
	}
	tol := make([]float64, rows)
	for b := 0; b < cols/xBlock; b++ {
		var xmax float64
		for _, v := range x[b*xBlock : (b+1)*xBlock] {
			xmax = math.Max(xmax, math.Abs(float64(v)))
		}
		dx := 0.5 * xmax / 127
		for r := range tol {
			for c := b * xBlock; c < (b+1)*xBlock; c++ {
				e := r*cols + c
				tol[r] += math.Abs(float64(w[e])) * dx
				if four {
					code := q.Packed[e/2] >> 4
					if e%2 == 1 {
						code = q.Packed[e/2] & 15
					}
					tol[r] += float64(q.BlockAbsmax(e/q.BlockSize)) * dl[code] * (math.Abs(float64(x[c])) + dx)
				}
			}
		}
	}
	return tol
}

// dotWeights makes one weight of every layout the dot kernels run, in shapes that tile.
func dotWeights(t *testing.T, r *rand.Rand) []*Weight {
	var ws []*Weight
	// odd numbers of x blocks (bytes), of 64-column groups and weight blocks (4 bits: their rows hold whole groups)
	for _, sh := range [][2]int{{16, 32}, {16, 64}, {16, 96}, {16, 192}, {32, 224}, {32, 384}, {48, 576}} {
		rows, cols := sh[0], sh[1]
		ws = append(ws, i8w(t, r, rows, cols), randQ8(r, rows, cols))
		if cols%group != 0 {
			continue
		}
		for _, typ := range []Type{NF4, FP4} {
			for _, bs := range []int{32, 64, 128} {
				if cols%bs != 0 {
					continue
				}
				q, err := Quantize4(typ, randW(r, rows*cols, 0.05), []int{rows, cols}, bs, bs == 64)
				if err != nil {
					t.Fatal(err)
				}
				ws = append(ws, q)
			}
		}
		q4, _ := Quantize4(NF4, randW(r, rows*cols, 0.05), []int{rows, cols}, 32, false)
		q4.Type, q4.Code = Q4_0, q40Code
		ws = append(ws, q4)
	}
	for _, q := range ws {
		if !q.dot8able() {
			t.Fatalf("%s bs %d %v: the dot kernels cannot run it", q.Type, q.BlockSize, q.Shape)
		}
	}
	return ws
}

// i8w makes a row-wise int8 weight of random values.
func i8w(t *testing.T, r *rand.Rand, rows, cols int) *Weight {
	q, err := Quantize8(randW(r, rows*cols, 0.05), []int{rows, cols})
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// TestQuantizeX8MatchesGo: the assembly x quantiser writes exactly what its portable twin writes, including
// zero blocks, outliers and values on a rounding tie.
func TestQuantizeX8MatchesGo(t *testing.T) {
	r := rand.New(rand.NewSource(31))
	for _, cols := range []int{32, 64, 576, 1536} {
		for _, k := range []int{1, 3, dotK} {
			x := randW(r, k*cols, 1)
			for c := 0; c < min(cols, 32); c++ {
				x[c] = 0 // a zero block
			}
			x[len(x)-1] = 127 // a step of exactly 1
			x[len(x)-2] = 2.5 // a tie
			nb := cols / xBlock
			mk := func() xDot {
				return xDot{k: k, q: make([]byte, k*cols), s: make([]float32, k*nb), c: make([]int32, k*nb)}
			}
			want := mk()
			for i := 0; i < k; i++ {
				quantizeX8Go(&want, i, x[i*cols:(i+1)*cols], 8)
			}
			for _, avx512 := range []bool{true, false} { // the VNNI machine's quantiser and the AVX2 one
				withAVX512(avx512, func() {
					got := mk()
					for i := 0; i < k; i++ {
						quantizeX8(&got, i, x[i*cols:(i+1)*cols], 8)
					}
					if !slices.Equal(got.q, want.q) || !slices.Equal(got.s, want.s) || !slices.Equal(got.c, want.c) {
						t.Fatalf("cols %d k %d avx512=%v: assembly and portable quantisers differ", cols, k, avx512)
					}
				})
			}
			if q := int8(want.q[len(want.q)-2]); q != 2 {
				t.Fatalf("a tie at 2.5 steps rounds to %d, want 2 (to even)", q)
			}
		}
	}
}

// TestDot8MatchesGo runs the dot kernels (the AVX-512 VNNI assembly where the CPU has it, and the AVX2 assembly)
// against the portable twin on the same quantised x for every row count up to dotK and every layout, and the
// twin's products against the float64 reference within tol8.
func TestDot8MatchesGo(t *testing.T) {
	r := rand.New(rand.NewSource(32))
	for _, q := range dotWeights(t, r) {
		rows, cols := q.Rows(), q.Cols()
		tl := q.makeDot8(q.packedRow)
		nb := cols / xBlock
		for k := 1; k <= dotK; k++ {
			x := randW(r, k*cols, 1)
			x[3] = 25 // an outlier
			xd := xDot{k: k, q: make([]byte, k*cols), s: make([]float32, k*nb), c: make([]int32, k*nb)}
			for i := 0; i < k; i++ {
				quantizeX8(&xd, i, x[i*cols:(i+1)*cols], tl.z)
			}
			want := make([]float32, k*rows)
			dot8Go(want, rows, tl, &xd, 0, rows/tileRows, cols)
			what := fmt.Sprintf("%s bs %d %v k %d", q.Type, q.BlockSize, q.Shape, k)
			for _, avx512 := range []bool{true, false} {
				withAVX512(avx512, func() {
					got := make([]float32, k*rows)
					dot8Rows(got, rows, tl, &xd, 0, rows/tileRows, cols)
					for i := range got {
						if math.Abs(float64(got[i]-want[i])) > 1e-5*math.Abs(float64(want[i]))+1e-5 {
							t.Fatalf("%s avx512=%v y[%d]: %v, portable %v", what, avx512, i, got[i], want[i])
						}
					}
				})
			}
			for i := 0; i < k; i++ {
				xi := x[i*cols : (i+1)*cols]
				ref, mag := refMatVec(q, xi)
				checkTol(t, fmt.Sprintf("%s row %d", what, i), tol8(q, xi), want[i*rows:(i+1)*rows], ref, mag)
			}
		}
	}
}

// TestDot8Error states the dot kernels' error against exact arithmetic on a smollm2-135m-sized product (x with
// an outlier, as activations have), in units of Σ|w·x|: within tol8 for every output, and the worst output below
// 2⁻⁸, one bf16 rounding (bitsandbytes' NF4 path, bf16 x and weights with f32 sums, is ~1e-4 on average and
// ~5e-4 at worst on such products: x's 8-bit rounding here is coarser). Q4_0, int8 and Q8_0 round only x.
func TestDot8Error(t *testing.T) {
	r := rand.New(rand.NewSource(33))
	rows, cols := 64, 1536
	nf4, _ := Quantize4(NF4, randW(r, rows*cols, 0.05), []int{rows, cols}, 64, true)
	q4, _ := Quantize4(NF4, randW(r, rows*cols, 0.05), []int{rows, cols}, 32, false)
	q4.Type, q4.Code = Q4_0, q40Code
	i8, _ := Quantize8(randW(r, rows*cols, 0.05), []int{rows, cols})
	for _, q := range []*Weight{nf4, q4, i8, randQ8(r, rows, cols)} {
		tl := q.makeDot8(q.packedRow)
		x := randW(r, cols, 1)
		x[17] = 30
		xd := xDot{k: 1, q: make([]byte, cols), s: make([]float32, cols/xBlock), c: make([]int32, cols/xBlock)}
		quantizeX8(&xd, 0, x, tl.z)
		y := make([]float32, rows)
		dot8Rows(y, rows, tl, &xd, 0, rows/tileRows, cols)
		vnni := vnniRows() > 0
		withAVX512(false, func() { // the AVX2 kernel: the same products
			y2 := make([]float32, rows)
			dot8Rows(y2, rows, tl, &xd, 0, rows/tileRows, cols)
			if vnni && !slices.Equal(y, y2) {
				t.Fatalf("%s: the AVX2 kernel's products differ from the VNNI kernel's", q.Type)
			}
		})
		want, mag := refMatVec(q, x)
		checkTol(t, string(q.Type), tol8(q, x), y, want, mag)
		var worst, mean float64
		for i := range y {
			d := math.Abs(float64(y[i])-want[i]) / mag[i]
			worst, mean = math.Max(worst, d), mean+d/float64(rows)
		}
		if worst > 0x1p-8 {
			t.Fatalf("%s: worst error %.2g of Σ|w·x|", q.Type, worst)
		}
		t.Logf("%s: error of Σ|w·x|: worst %.2g, mean %.2g", q.Type, worst, mean)
	}
}

// BenchmarkDot8DRAM times the dot kernels on weights larger than the caches (an int8 LM head of 65536 × 576 and
// an NF4 matrix of 16384 × 1536, about 38 MB each in the dot layout), for 1 and 8 rows of x: the decode case,
// where the codes stream from DRAM; with the VNNI kernels where the CPU has them, and the AVX2 ones. Bytes are the
// dot layout's codes, once per call.
func BenchmarkDot8DRAM(b *testing.B) {
	r := rand.New(rand.NewSource(5))
	i8, _ := Quantize8(randW(r, 65536*576, 0.05), []int{65536, 576})
	nf4, _ := Quantize4(NF4, randW(r, 16384*1536, 0.05), []int{16384, 1536}, 64, false)
	p := kernels.NewPool(0)
	for _, w := range []struct {
		name string
		q    *Weight
	}{{"int8", i8}, {"nf4", nf4}} {
		if !w.q.useDot8() {
			b.Skip("the dot kernels do not run here")
		}
		for _, m := range []int{1, 8} {
			for _, avx512 := range []bool{true, false} {
				x := randW(r, m*w.q.Cols(), 1)
				y := make([]float32, m*w.q.Rows())
				b.Run(fmt.Sprintf("%s/m=%d/avx512=%v", w.name, m, avx512), func(b *testing.B) {
					withAVX512(avx512, func() {
						b.SetBytes(int64(len(w.q.dot8Copy().codes)))
						for i := 0; i < b.N; i++ {
							w.q.MatMulT(p, y, x, m)
						}
					})
				})
			}
		}
	}
}

// BenchmarkDot8L2 times the dot kernels on one thread on weights whose dot layout fits in L2 (1536 × 576, a
// gate projection: 442 KB of NF4 codes) or L1 (64 × 576), for 1 to 16 rows of x: the compute-bound case of
// batched decode, quantisation and pool included. MAC/ns is weight elements times x rows per nanosecond (on a
// Zen 1 core at ~2.9 GHz the AVX2 kernels' floor for NF4 and int8 is ~23: two integer multiplies per 32 products
// on one pipe; see dotY in asm/).
func BenchmarkDot8L2(b *testing.B) {
	r := rand.New(rand.NewSource(5))
	nf4, _ := Quantize4(NF4, randW(r, 1536*576, 0.05), []int{1536, 576}, 64, false)
	q40, _ := Quantize4(NF4, randW(r, 1536*576, 0.05), []int{1536, 576}, 32, false)
	q40.Type, q40.Code = Q4_0, q40Code
	i8, _ := Quantize8(randW(r, 1536*576, 0.05), []int{1536, 576})
	l1, _ := Quantize4(NF4, randW(r, 64*576, 0.05), []int{64, 576}, 64, false)
	p := kernels.NewPool(1)
	for _, w := range []struct {
		name string
		q    *Weight
	}{{"nf4", nf4}, {"q4_0", q40}, {"int8", i8}, {"nf4-L1", l1}} {
		if !w.q.useDot8() {
			b.Skip("the dot kernels do not run here")
		}
		for _, m := range []int{1, 4, 8, 16} {
			x := randW(r, m*w.q.Cols(), 1)
			y := make([]float32, m*w.q.Rows())
			b.Run(fmt.Sprintf("%s/m=%d", w.name, m), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					w.q.MatMulT(p, y, x, m)
				}
				b.ReportMetric(float64(b.N)*float64(m*w.q.Elems())/float64(b.Elapsed().Nanoseconds()), "MAC/ns")
			})
		}
	}
}

// TestDot8BatchInvariant: with the dot kernels (VNNI and AVX2) a row of x gets bit-identical products whatever the number of rows
// it is multiplied with (1, a chunk of up to dotK, several chunks, a split quantisation): every row's sums are
// made in the same order, so a sequence decoded alone and inside a batch gets the same logits.
func TestDot8BatchInvariant(t *testing.T) {
	r := rand.New(rand.NewSource(34))
	p := kernels.NewPool(2)
	for _, q := range dotWeights(t, r) {
		if !q.useDot8() {
			t.Skip("the dot kernels do not run here")
		}
		rows, cols := q.Rows(), q.Cols()
		for _, avx512 := range []bool{true, false} { // the VNNI kernels where the CPU has them, and the AVX2 ones
			withAVX512(avx512, func() {
				for _, m := range []int{5, dotK + 1, quantSplitM + 3} {
					x := randW(r, m*cols, 1)
					y := make([]float32, m*rows)
					q.MatMulT(p, y, x, m)
					one := make([]float32, rows)
					for i := 0; i < m; i++ {
						q.MatVec(p, one, x[i*cols:(i+1)*cols])
						if !slices.Equal(one, y[i*rows:(i+1)*rows]) {
							t.Fatalf("%s bs %d %v m %d avx512=%v: row %d differs from its product alone", q.Type, q.BlockSize,
								q.Shape, m, avx512, i)
						}
					}
				}
			})
		}
	}
}

// TestMatMulTShared: weights that share x (a layer's q, k, v) get from MatMulTShared bit for bit what MatMulT
// gives each alone, for 1 to quantSplitM+3 rows, with the VNNI and the AVX2 kernels; weights of different zero
// points (Q4_0 beside NF4) or widths are refused and their outputs left untouched.
func TestMatMulTShared(t *testing.T) {
	r := rand.New(rand.NewSource(35))
	p := kernels.NewPool(2)
	nf4 := func(rows, cols int) *Weight {
		q, err := Quantize4(NF4, randW(r, rows*cols, 0.05), []int{rows, cols}, 64, false)
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	cols := 192
	ws := []*Weight{nf4(48, cols), nf4(16, cols), nf4(32, cols)}
	if !ws[0].useDot8() {
		t.Skip("the dot kernels do not run here")
	}
	for _, avx512 := range []bool{true, false} {
		withAVX512(avx512, func() {
			for _, m := range []int{1, 2, 8, dotK + 1, quantSplitM + 3} {
				x := randW(r, m*cols, 1)
				ys := make([][]float32, len(ws))
				for i, q := range ws {
					ys[i] = make([]float32, m*q.Rows())
				}
				if !MatMulTShared(p, ys, ws, x, m) {
					t.Fatalf("m %d: refused weights that can share x", m)
				}
				for i, q := range ws {
					want := make([]float32, m*q.Rows())
					q.MatMulT(p, want, x, m)
					if !slices.Equal(ys[i], want) {
						t.Fatalf("avx512=%v m %d weight %d: differs from MatMulT alone", avx512, m, i)
					}
				}
			}
		})
	}
	q4, _ := Quantize4(NF4, randW(r, 16*cols, 0.05), []int{16, cols}, 32, false)
	q4.Type, q4.Code = Q4_0, q40Code
	x := randW(r, 2*cols, 1)
	for _, other := range []*Weight{q4, nf4(16, 2*cols)} {
		ys := [][]float32{make([]float32, 2*48), make([]float32, 2*other.Rows())}
		if MatMulTShared(p, ys, []*Weight{ws[0], other}, x, 2) {
			t.Fatalf("%s %v: shared x with NF4 [48, %d]", other.Type, other.Shape, cols)
		}
		if slices.ContainsFunc(ys[0], func(v float32) bool { return v != 0 }) {
			t.Fatal("a refused call wrote an output")
		}
	}
}

// TestCompact: a compacted weight (the dot layout only) multiplies, dequantises and writes out exactly as the
// weight it came from, with AVX-512 on, and off (the other kernels then rebuild the row-major codes once).
func TestCompact(t *testing.T) {
	r := rand.New(rand.NewSource(35))
	p := kernels.NewPool(2)
	for _, q := range dotWeights(t, r) {
		if !q.useDot8() {
			t.Skip("the dot kernels do not run here")
		}
		c := &Weight{Type: q.Type, Shape: q.Shape, BlockSize: q.BlockSize, Packed: slices.Clone(q.Packed), Absmax: q.Absmax,
			Code: q.Code, Double: q.Double, QAbsmax: q.QAbsmax, NestedAbsmax: q.NestedAbsmax, NestedOffset: q.NestedOffset,
			NestedBlockSize: q.NestedBlockSize, NestedCode: q.NestedCode}
		if !c.Compact() || c.Packed != nil || c.Bytes() != q.Bytes() {
			t.Fatalf("%s: Compact kept the row-major codes (or changed Bytes)", q.Type)
		}
		what := fmt.Sprintf("%s bs %d %v", q.Type, q.BlockSize, q.Shape)
		// Q8_0 and Q4_0 keep their block scales in the dot layout only (exact: a power-of-two unit)
		if exact := (q.Type == Q8_0 || q.Type == Q4_0) && !q.Double; (c.Absmax == nil && !q.Double) != exact {
			t.Fatalf("%s: Absmax dropped %v, want %v", what, c.Absmax == nil, exact)
		}
		if !q.Double && !slices.Equal(c.absmaxes(), q.Absmax) {
			t.Fatalf("%s: block scales read back from the dot layout differ", what)
		}
		for b := range q.NumBlocks() {
			if c.BlockAbsmax(b) != q.BlockAbsmax(b) {
				t.Fatalf("%s: BlockAbsmax(%d) = %g, want %g", what, b, c.BlockAbsmax(b), q.BlockAbsmax(b))
			}
		}
		rows, cols := q.Rows(), q.Cols()
		want, got := make([]float32, q.Elems()), make([]float32, q.Elems())
		q.Dequantize(want)
		c.Dequantize(got)
		if !slices.Equal(got, want) {
			t.Fatalf("%s: dequantised values differ", what)
		}
		part := make([]float32, cols+7)
		c.DequantizeRange(part, cols/2+3)
		if !slices.Equal(part, want[cols/2+3:cols/2+3+len(part)]) {
			t.Fatalf("%s: DequantizeRange differs", what)
		}
		for _, avx512 := range []bool{true, false} {
			withAVX512(avx512, func() {
				x := randW(r, 3*cols, 1)
				yq, yc := make([]float32, 3*rows), make([]float32, 3*rows)
				q.MatMulT(p, yq, x, 3)
				c.MatMulT(p, yc, x, 3)
				if !slices.Equal(yc, yq) {
					t.Fatalf("%s avx512=%v: products differ", what, avx512)
				}
			})
		}
		if !slices.Equal(c.packed(), q.Packed) {
			t.Fatalf("%s: rebuilt codes differ", what)
		}
	}
}

// TestDot8AVX2MatchesVNNI: the AVX2 dot kernels make the VNNI kernels' integer sums and float operations, so on a
// CPU with both every product is bit-identical with AVX-512 on and off, for 1 to 16 x rows and a prefill-sized
// batch (whose quantisation the threads share).
func TestDot8AVX2MatchesVNNI(t *testing.T) {
	if vnniRows() == 0 {
		t.Skip("no AVX-512 VNNI on this CPU: nothing to compare the AVX2 kernels with")
	}
	r := rand.New(rand.NewSource(36))
	p := kernels.NewPool(2)
	for _, q := range dotWeights(t, r) {
		rows, cols := q.Rows(), q.Cols()
		for _, m := range []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, quantSplitM + 3} {
			x := randW(r, m*cols, 1)
			x[0] = -9 // an outlier
			var y [2][]float32
			for n, avx512 := range []bool{true, false} {
				withAVX512(avx512, func() {
					y[n] = make([]float32, m*rows)
					q.MatMulT(p, y[n], x, m)
				})
			}
			if !slices.Equal(y[0], y[1]) {
				t.Fatalf("%s bs %d %v m %d: the AVX2 and VNNI products differ", q.Type, q.BlockSize, q.Shape, m)
			}
		}
	}
}

// TestDot8Extremes multiplies weights whose every code is at the end of its range with x rows of ±max (every
// byte ±127), signs chosen so that every product has the same sign: the largest int16 pair sums the AVX2 kernels
// make (VPMADDUBSW saturates at 32767: Q4_0 2·15·127 per pair and 8·3810 = 30480 per block in int16; NF4's
// levels ±63, 2·63·127 per pair and 2·16002 = 32004 per two quads, and for 1–2 rows the unsigned 64 ± 63,
// 2·127·127 = 32258 per pair; bytes 2·128·127 = 32512), which must give the exact sums. Each kernel is checked against the portable twin and against the exact value.
func TestDot8Extremes(t *testing.T) {
	const rows, cols = 32, 192
	p := kernels.NewPool(2)
	for _, typ := range []Type{NF4, Q4_0, Int8, Q8_0} {
		for _, lo := range []bool{true, false} { // the lowest code everywhere, or the highest
			q := &Weight{Type: typ, Shape: []int{rows, cols}, BlockSize: xBlock}
			var code byte
			var level float64 // the code's value per unit of absmax
			switch typ {
			case NF4, Q4_0:
				q.Code = nf4Code
				if typ == Q4_0 {
					q.Code = q40Code
				}
				code = 15
				if lo {
					code = 0
				}
				level = float64(q.Code[code])
				q.Packed = slices.Repeat([]byte{code<<4 | code}, rows*cols/2)
				q.Absmax = slices.Repeat([]float32{0.5}, rows*cols/xBlock)
			case Int8:
				q.BlockSize = cols
				code = 127
				if lo {
					code = 0x81 // -127: Quantize8's codes are symmetric
				}
				level = float64(int8(code)) * float64(int8Scale)
				q.Packed = slices.Repeat([]byte{code}, rows*cols)
				q.Absmax = slices.Repeat([]float32{0.5}, rows)
			case Q8_0:
				code = 127
				if lo {
					code = 0x80 // -128: a GGUF file may hold it
				}
				level = float64(int8(code))
				q.Packed = slices.Repeat([]byte{code}, rows*cols)
				q.Absmax = slices.Repeat([]float32{0.5}, rows*cols/xBlock)
			}
			if !q.useDot8() {
				t.Skip("the dot kernels do not run here")
			}
			sign := float32(1)
			if level < 0 {
				sign = -1
			}
			x := slices.Repeat([]float32{sign}, 3*cols)
			exact := 0.5 * level * float64(sign) * cols
			for _, avx512 := range []bool{true, false} {
				withAVX512(avx512, func() {
					y := make([]float32, 6*rows) // 1, 2 and 3 x rows: the AVX2 kernels for 1, 2 and 3 rows differ
					for m, at := 1, 0; m <= 3; m, at = m+1, at+m*rows {
						q.MatMulT(p, y[at:at+m*rows], x[:m*cols], m)
					}
					tl := q.makeDot8(q.packedRow)
					xd := xDot{k: 1, q: make([]byte, cols), s: make([]float32, cols/xBlock), c: make([]int32, cols/xBlock)}
					quantizeX8Go(&xd, 0, x[:cols], tl.z)
					want := make([]float32, rows)
					dot8Go(want, rows, tl, &xd, 0, rows/tileRows, cols)
					for i, v := range y {
						if w := want[i%rows]; math.Abs(float64(v-w)) > 1e-5*math.Abs(float64(w)) || math.Abs(float64(v)-exact) > 2e-3*math.Abs(exact) {
							t.Fatalf("%s lo=%v avx512=%v y[%d] = %v, portable %v, exact %v", typ, lo, avx512, i, v, want[i%rows], exact)
						}
					}
				})
			}
		}
	}
}

// TestMoveDot: a compacted weight's dot layout moved into caller memory lies there whole (codes and scales), and
// products (1 row and a batch, AVX-512 on and off) and dequantised values are bit-identical to the heap layout's.
func TestMoveDot(t *testing.T) {
	r := rand.New(rand.NewSource(37))
	p := kernels.NewPool(2)
	for _, q := range dotWeights(t, r) {
		if !q.useDot8() {
			t.Skip("the dot kernels do not run here")
		}
		what := fmt.Sprintf("%s bs %d %v", q.Type, q.BlockSize, q.Shape)
		q.Compact()
		rows, cols := q.Rows(), q.Cols()
		want := make([]float32, q.Elems())
		q.Dequantize(want)
		x := randW(r, 70*cols, 1)
		ys := map[bool][]float32{}
		for _, avx512 := range []bool{true, false} {
			withAVX512(avx512, func() {
				ys[avx512] = make([]float32, 70*rows)
				q.MatMulT(p, ys[avx512], x, 70)
			})
		}
		buf := make([]byte, q.DotBytes()+64)
		dst := buf[(64-int(uintptr(unsafe.Pointer(&buf[0]))%64))%64:][:q.DotBytes()]
		q.MoveDot(dst)
		d := q.dots.Load()
		lo, hi := uintptr(unsafe.Pointer(&dst[0])), uintptr(unsafe.Pointer(&dst[0]))+uintptr(len(dst))
		for _, a := range []uintptr{uintptr(unsafe.Pointer(&d.codes[0])), uintptr(unsafe.Pointer(&d.codes[len(d.codes)-1])),
			uintptr(unsafe.Pointer(&d.scales[0])), uintptr(unsafe.Pointer(&d.scales[len(d.scales)-1]))} {
			if a < lo || a >= hi {
				t.Fatalf("%s: the dot layout is not inside the memory it was moved to", what)
			}
		}
		got := make([]float32, q.Elems())
		q.Dequantize(got)
		if !slices.Equal(got, want) {
			t.Fatalf("%s: dequantised values differ after MoveDot", what)
		}
		for _, avx512 := range []bool{true, false} {
			withAVX512(avx512, func() {
				y := make([]float32, 70*rows)
				q.MatMulT(p, y, x, 70)
				if !slices.Equal(y, ys[avx512]) {
					t.Fatalf("%s avx512=%v: products differ after MoveDot", what, avx512)
				}
				q.MatMulT(p, y[:rows], x[:cols], 1)
				if !slices.Equal(y[:rows], ys[avx512][:rows]) {
					t.Fatalf("%s avx512=%v: one-row product differs after MoveDot", what, avx512)
				}
			})
		}
	}
}

// BenchmarkSmolLM2Step16 runs the linear layers of all 30 SmolLM2-135M blocks for a 16-row serving step (NF4,
// lm_head excluded) on every thread, as the model calls them: q, k and v sharing x (MatMulTShared), o_proj, gate
// and up sharing x, down_proj.
func BenchmarkSmolLM2Step16(b *testing.B) {
	const m = 16
	r := rand.New(rand.NewSource(1))
	nf4 := func(rows, cols int) *Weight {
		q, _ := Quantize4(NF4, randW(r, rows*cols, 0.02), []int{rows, cols}, 64, false)
		return q
	}
	type layer struct{ q, k, v, o, g, u, d *Weight }
	var ls []layer
	for range 30 {
		ls = append(ls, layer{nf4(576, 576), nf4(192, 576), nf4(192, 576), nf4(576, 576), nf4(1536, 576), nf4(1536, 576), nf4(576, 1536)})
	}
	if !ls[0].q.useDot8() {
		b.Skip("the dot kernels do not run here")
	}
	p := kernels.NewPool(0)
	x, xi := randW(r, m*576, 1), randW(r, m*1536, 1)
	yq, yk, yv, yo := make([]float32, m*576), make([]float32, m*192), make([]float32, m*192), make([]float32, m*576)
	yg, yu, yd := make([]float32, m*1536), make([]float32, m*1536), make([]float32, m*576)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, l := range ls {
			MatMulTShared(p, [][]float32{yq, yk, yv}, []*Weight{l.q, l.k, l.v}, x, m)
			l.o.MatMulT(p, yo, x, m)
			MatMulTShared(p, [][]float32{yg, yu}, []*Weight{l.g, l.u}, x, m)
			l.d.MatMulT(p, yd, xi, m)
		}
	}
	b.ReportMetric(float64(b.N)*m/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkDot8Head times the LM head's product at the SmolLM2-135M shape (49152 × 576 row-wise int8, 28 MB of
// codes) on every thread, as decode (1 row of x) and a 16-row serving step multiply it. MAC/ns is weight
// elements times x rows per nanosecond (on a Zen 1 core at ~2.5 GHz the AVX2 kernel's floor is ~20 per core: 4
// cycles of the integer-multiply pipe per 32 products; see dotY in asm/).
func BenchmarkDot8Head(b *testing.B) {
	const rows, cols = 49152, 576
	r := rand.New(rand.NewSource(5))
	q, _ := Quantize8(randW(r, rows*cols, 0.05), []int{rows, cols})
	if !q.useDot8() {
		b.Skip("the dot kernels do not run here")
	}
	p := kernels.NewPool(0)
	for _, m := range []int{1, 2, 16} {
		x := randW(r, m*cols, 1)
		y := make([]float32, m*rows)
		q.MatMulT(p, y, x, m)
		b.Run(fmt.Sprintf("m=%d", m), func(b *testing.B) {
			b.SetBytes(int64(len(q.dot8Copy().codes)))
			for i := 0; i < b.N; i++ {
				q.MatMulT(p, y, x, m)
			}
			b.ReportMetric(float64(b.N)*float64(m*rows*cols)/float64(b.Elapsed().Nanoseconds()), "MAC/ns")
		})
	}
}
