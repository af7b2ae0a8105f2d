package quant

import (
	"fmt"
	"github.com/lorakit/lorakit/models/kernels"
	"math"
	"math/rand"
	"testing"
)

// tol16 bounds, per row, how far the integer path may be from exact float arithmetic: x rounds to half a
// step of its block maximum and each level to half a unit of 1/lutScale, both times absmax.
func tol16(q *Weight, x []float32) []float64 {
	if q.int8x16() || q.Type == Q8_0 { // only x is rounded: half a step of each 64-column (Q8_0: 32) block's maximum
		rows, cols := q.Rows(), q.Cols()
		w := make([]float32, q.Elems())
		q.Dequantize(w)
		tol := make([]float64, rows)
		bw := group
		if q.Type == Q8_0 {
			bw = group / 2
		}
		for b := 0; b < cols/bw; b++ {
			var xmax float64
			for _, v := range x[b*bw : (b+1)*bw] {
				xmax = math.Max(xmax, math.Abs(float64(v)))
			}
			dx := 0.5 * xmax / float64(xLimit(bw))
			for r := range tol {
				for _, v := range w[r*cols+b*bw : r*cols+(b+1)*bw] {
					tol[r] += math.Abs(float64(v)) * dx
				}
			}
		}
		return tol
	}
	l, ok := q.lut16()
	if !ok {
		return make([]float64, q.Rows())
	}
	rows, cols, bs := q.Rows(), q.Cols(), q.BlockSize
	lim := float64(xLimit(bs))
	dl := 0.5 * float64(l.inv)
	tol := make([]float64, rows)
	for r := 0; r < rows; r++ {
		for b := 0; b < cols/bs; b++ {
			var xmax, sx, sc float64
			for j := b * bs; j < (b+1)*bs; j++ {
				xmax = math.Max(xmax, math.Abs(float64(x[j])))
				sx += math.Abs(float64(x[j]))
				e := r*cols + j
				c := q.Packed[e/2] >> 4
				if e%2 == 1 {
					c = q.Packed[e/2] & 15
				}
				sc += math.Abs(float64(q.Code[c]))
			}
			dx := 0.5 * xmax / lim
			tol[r] += float64(q.BlockAbsmax(r*cols/bs+b)) * (dx*sc + dl*sx + dx*dl*float64(bs))
		}
	}
	return tol
}

func TestGroupPermIsAPermutation(t *testing.T) {
	var seen [group]bool
	for _, e := range groupPerm {
		if seen[e] {
			t.Fatalf("element %d appears twice", e)
		}
		seen[e] = true
	}
}

func TestLUT16(t *testing.T) {
	for _, typ := range []Type{NF4, FP4} {
		code, _ := Code(typ)
		l, ok := makeLUT16(&code)
		if !ok {
			t.Fatalf("%s: table rejected", typ)
		}
		for i, c := range code {
			v := int16(uint16(l.lo[i]) | uint16(l.hi[i])<<8)
			if v != l.level[i] || math.Abs(float64(v)*float64(l.inv)-float64(c)) > 0.5*float64(l.inv) {
				t.Fatalf("%s code %d: level %d (bytes %d) for %v", typ, i, l.level[i], v, c)
			}
		}
	}
	bad := [16]float32{0: float32(math.NaN())}
	if _, ok := makeLUT16(&bad); ok {
		t.Fatal("NaN table accepted")
	}
	if _, ok := makeLUT16(&[16]float32{}); ok {
		t.Fatal("all-zero table accepted")
	}
}

// TestRows16MatchesGo runs the dispatching integer kernel (assembly when available) against the portable
// one on the same quantised x: the int32 sums are exact in both, so only float summation order differs.
func TestRows16MatchesGo(t *testing.T) {
	r := rand.New(rand.NewSource(11))
	for _, bs := range []int{32, 64, 128, 256} {
		for _, nb := range []int{1, 2, 9, 24} {
			if nb*bs%group != 0 {
				continue // rows of whole groups only
			}
			for _, wide := range wideModes() {
				for _, m := range []int{1, 2, 3, 4, 6, 7, 9, 16, 17} {
					rows, cols := 7, nb*bs
					q, _ := Quantize4(NF4, randW(r, rows*cols, 1), []int{rows, cols}, bs, false)
					l, _ := q.lut16()
					x := randW(r, m*cols, 1)
					xb := getX16(x, m, cols, bs, &l, wide)
					got, want := make([]float32, m*rows), make([]float32, m*rows)
					for _, c := range xb.chunks {
						rows16(got[c.row0*rows:], rows, q.Packed, q.Absmax, &c, &l, rows, nb)
						rows16Go(want[c.row0*rows:], rows, q.Packed, q.Absmax, &c, &l, rows, nb)
					}
					for i := range got {
						if math.Abs(float64(got[i]-want[i])) > 1e-6*(math.Sqrt(float64(cols))+math.Abs(float64(want[i]))) {
							t.Fatalf("wide %d bs %d nb %d m %d y[%d]: %v vs %v", wide, bs, nb, m, i, got[i], want[i])
						}
					}
				}
			}
		}
	}
}

// TestRows16Extremes drives every int32 lane to its largest sum: all levels ±1 and all x at ±max, so
// an overflow would flip the sign.
func TestRows16Extremes(t *testing.T) {
	for _, bs := range []int{32, 64, 128, 256, 1024} {
		for _, sign := range []float32{1, -1} {
			cols := 2 * bs
			w := make([]float32, 4*cols)
			for i := range w {
				w[i] = sign * 3
			}
			q, err := Quantize4(NF4, w, []int{4, cols}, bs, false)
			if err != nil {
				t.Fatal(err)
			}
			x := make([]float32, 5*cols)
			for i := range x {
				x[i] = -2
			}
			y := make([]float32, 5*4)
			q.MatMulT(nil, y, x, 5)
			want := float64(sign) * 3 * -2 * float64(cols)
			for i, v := range y {
				if math.Abs(float64(v)-want) > 1e-4*math.Abs(want) {
					t.Fatalf("bs %d sign %v: y[%d] = %v, want %v", bs, sign, i, v, want)
				}
			}
		}
	}
}

// TestMatVec16Error checks the integer path against exact arithmetic within tol16, and that the bound is
// tight enough to mean something: far below bf16's 2⁻⁹ relative rounding.
func TestMatVec16Error(t *testing.T) {
	r := rand.New(rand.NewSource(12))
	for _, typ := range []Type{NF4, FP4} {
		for _, bs := range []int{64, 128} {
			rows, cols := 33, 1536
			q, _ := Quantize4(typ, randW(r, rows*cols, 0.05), []int{rows, cols}, bs, true)
			x := randW(r, cols, 1)
			x[17] = 30 // an outlier, as activations have
			y := make([]float32, rows)
			q.MatVec(nil, y, x)
			want, mag := refMatVec(q, x)
			tol := tol16(q, x)
			var worst float64
			for i := range y {
				d := math.Abs(float64(y[i]) - want[i])
				if d > tol[i]+1e-5*mag[i]+1e-6 {
					t.Fatalf("%s bs %d y[%d] = %v, want %v (bound %v)", typ, bs, i, y[i], want[i], tol[i])
				}
				worst = math.Max(worst, d/mag[i])
			}
			if worst > 1e-4 {
				t.Fatalf("%s bs %d: worst error %.2g of Σ|w·x|", typ, bs, worst)
			}
			t.Logf("%s bs %d: worst error %.2g of Σ|w·x|", typ, bs, worst)
		}
	}
}

func BenchmarkRows16(b *testing.B) {
	r := rand.New(rand.NewSource(1))
	for _, sh := range [][2]int{{1536, 576}, {576, 1536}} {
		for _, dq := range []bool{false, true} {
			rows, cols := sh[0], sh[1]
			q, _ := Quantize4(NF4, randW(r, rows*cols, 1), []int{rows, cols}, 64, dq)
			x := randW(r, cols, 1)
			y := make([]float32, rows)
			b.Run(fmt.Sprintf("int16/%dx%d/dq=%v", rows, cols, dq), func(b *testing.B) {
				b.SetBytes(int64(q.Bytes()))
				for i := 0; i < b.N; i++ {
					q.MatVec(nil, y, x)
				}
			})
		}
	}
}

// BenchmarkMatMulT16 times decode batches through the integer kernels (weights read once per call).
func BenchmarkMatMulT16(b *testing.B) {
	r := rand.New(rand.NewSource(1))
	rows, cols := 1536, 576
	q, _ := Quantize4(NF4, randW(r, rows*cols, 1), []int{rows, cols}, 64, false)
	for _, m := range []int{1, 2, 4, 8} {
		x := randW(r, m*cols, 1)
		y := make([]float32, m*rows)
		b.Run(fmt.Sprintf("m=%d", m), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				q.MatMulT(nil, y, x, m)
			}
		})
	}
}

// TestQuantizeRowMatchesGo compares the dispatching x quantiser with the portable one bit for bit,
// including all-zero blocks, ties and an interleaved chunk.
func TestQuantizeRowMatchesGo(t *testing.T) {
	r := rand.New(rand.NewSource(13))
	code, _ := Code(NF4)
	l, _ := makeLUT16(&code)
	for _, bs := range []int{32, 64, 128, 256} {
		for _, k := range []int{1, 4} {
			cols := 3 * max(bs, group) // whole groups; for bs 32, six blocks
			x := randW(r, k*cols, 1)
			for j := 0; j < bs; j++ {
				x[bs+j] = 0 // an all-zero block
			}
			x[2*bs] = 4 // ties: 4 is the maximum, so 0.5·4/lim lands on half steps
			x[2*bs+1] = 0.5 * 4 / xLimit(bs)
			a := x16{k: k, bs: bs, q: make([]int16, k*cols), s: make([]float32, k*cols/bs*8)}
			b := x16{k: k, bs: bs, q: make([]int16, k*cols), s: make([]float32, k*cols/bs*8)}
			for i := 0; i < k; i++ {
				quantizeRow(&a, i, x[i*cols:(i+1)*cols], xLimit(bs), l.inv)
				quantizeRowGo(&b, i, x[i*cols:(i+1)*cols], xLimit(bs), l.inv, &groupPerm)
			}
			for i := range a.q {
				if a.q[i] != b.q[i] {
					t.Fatalf("bs %d k %d: q[%d] = %d, portable %d", bs, k, i, a.q[i], b.q[i])
				}
			}
			for i := range a.s {
				if a.s[i] != b.s[i] {
					t.Fatalf("bs %d k %d: s[%d] = %v, portable %v", bs, k, i, a.s[i], b.s[i])
				}
			}
		}
	}
}

// TestRows8x16MatchesGo runs the dispatching int8 integer kernel (assembly when available) against the
// portable one on the same quantised x, for chunks of one and four rows.
func TestRows8x16MatchesGo(t *testing.T) {
	r := rand.New(rand.NewSource(14))
	for _, cols := range []int{64, 128, 576} {
		for _, m := range []int{1, 4, 5, 9} {
			rows := 7
			q, err := Quantize8(randW(r, rows*cols, 1), []int{rows, cols})
			if err != nil {
				t.Fatal(err)
			}
			x := randW(r, m*cols, 1)
			for _, wide := range wideModes() {
				var xb *x16Batch
				if wide > 0 {
					xb = getX16Order(x, m, cols, group, 1, nil, false, wide)
				} else {
					xb = getX16Order(x, m, cols, group, 1, &naturalOrder, false, 0)
				}
				got, want := make([]float32, m*rows), make([]float32, m*rows)
				for _, c := range xb.chunks {
					rows8x16(got[c.row0*rows:], rows, q.Packed, q.Absmax, &c, rows, cols)
					rows8x16Go(want[c.row0*rows:], rows, q.Packed, q.Absmax, &c, rows, cols, c.order())
				}
				for i := range got {
					if math.Abs(float64(got[i]-want[i])) > 1e-5*math.Abs(float64(want[i]))+1e-3 {
						t.Fatalf("wide %d cols %d m %d y[%d]: %v vs %v", wide, cols, m, i, got[i], want[i])
					}
				}
			}
		}
	}
}

// TestMatMulTInt8 checks batches through the int8 integer kernels against exact arithmetic.
func TestMatMulTInt8(t *testing.T) {
	r := rand.New(rand.NewSource(15))
	p := kernels.NewPool(2)
	rows, cols := 37, 192
	q, err := Quantize8(randW(r, rows*cols, 0.05), []int{rows, cols})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []int{1, 2, 4, 5, 8, 11} {
		x := randW(r, m*cols, 1)
		y := make([]float32, m*rows)
		q.MatMulT(p, y, x, m)
		for i := 0; i < m; i++ {
			xi := x[i*cols : (i+1)*cols]
			want, mag := refMatVec(q, xi)
			checkClose(t, fmt.Sprintf("m=%d row %d", m, i), q, xi, y[i*rows:(i+1)*rows], want, mag)
		}
	}
}

// TestMatVec16NonFinite: a NaN or ±Inf in x reaches the output as a non-finite value, as it would through
// float arithmetic, instead of being rounded into a plausible number.
func TestMatVec16NonFinite(t *testing.T) {
	r := rand.New(rand.NewSource(16))
	rows, cols := 5, 128
	for _, typ := range []Type{NF4, Int8} {
		var q *Weight
		var err error
		if typ == Int8 {
			q, err = Quantize8(randW(r, rows*cols, 1), []int{rows, cols})
		} else {
			q, err = Quantize4(typ, randW(r, rows*cols, 1), []int{rows, cols}, 64, false)
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))} {
			x := randW(r, cols, 1)
			x[70] = bad
			y := make([]float32, rows)
			q.MatVec(nil, y, x)
			for i, v := range y {
				if !math.IsNaN(float64(v)) && !math.IsInf(float64(v), 0) {
					t.Fatalf("%s x[70]=%v: y[%d] = %v is finite", typ, bad, i, v)
				}
			}
		}
	}
}
