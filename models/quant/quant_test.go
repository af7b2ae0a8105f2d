package quant

import (
	"errors"
	"math"
	"math/rand"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/models/kernels"
)

func randW(r *rand.Rand, n int, std float64) []float32 {
	w := make([]float32, n)
	for i := range w {
		w[i] = float32(r.NormFloat64() * std)
	}
	return w
}

// nearest is an independent reference: the index of the code nearest to x in float64, ties to the lower
// value (the decision trees' strict '>' on midpoints).
func nearest(code [16]float32, x float32) byte {
	best, bestD := -1, math.Inf(1)
	for i, c := range code {
		d := math.Abs(float64(x) - float64(c))
		if d < bestD || (d == bestD && c < code[best]) {
			best, bestD = i, d
		}
	}
	return byte(best)
}

func TestNF4TreeIsNearest(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for i := 0; i < 200000; i++ {
		x := float32(r.Float64()*2 - 1)
		got, want := quantizeNF4(x), nearest(nf4Code, x)
		if got != want && !nearMidpoint(nf4Code, x) {
			t.Fatalf("quantizeNF4(%v) = %d, nearest = %d", x, got, want)
		}
	}
	// exact codes map to themselves
	for i, c := range nf4Code {
		if got := quantizeNF4(c); got != byte(i) {
			t.Errorf("quantizeNF4(code[%d]=%v) = %d", i, c, got)
		}
	}
	// a threshold itself goes to the lower code, the next float up to the upper one
	th := float32(0.03979014977812767)
	if quantizeNF4(th) != 7 || quantizeNF4(math.Nextafter32(th, 2)) != 8 {
		t.Errorf("tie rule at %v: %d %d", th, quantizeNF4(th), quantizeNF4(math.Nextafter32(th, 2)))
	}
	if got := quantizeNF4(float32(math.NaN())); got != 0 {
		t.Errorf("NaN → %d, bitsandbytes gives 0", got)
	}
}

func nearMidpoint(code [16]float32, x float32) bool {
	for i := range code {
		for j := range code {
			if math.Abs(float64(x)-(float64(code[i])+float64(code[j]))/2) < 1e-6 {
				return true
			}
		}
	}
	return false
}

func TestFP4TreeIsNearest(t *testing.T) {
	r := rand.New(rand.NewSource(2))
	for i := 0; i < 200000; i++ {
		x := float32(r.Float64()*2 - 1)
		got := quantizeFP4(x)
		if fp4Code[got] != fp4Code[nearest(fp4Code, x)] && !nearMidpoint(fp4Code, x) {
			t.Fatalf("quantizeFP4(%v) = %d (%v), nearest %v", x, got, fp4Code[got], fp4Code[nearest(fp4Code, x)])
		}
	}
	// CUDA sign rule: a tiny negative value is the negative zero code 0b1000, -0 is 0b0000
	if quantizeFP4(-0.001) != 0b1000 || quantizeFP4(float32(math.Copysign(0, -1))) != 0 {
		t.Errorf("sign rule: %d %d", quantizeFP4(-0.001), quantizeFP4(float32(math.Copysign(0, -1))))
	}
	want := [16]float32{0, 0.0625 / 12, 8. / 12, 1, 4. / 12, 0.5, 2. / 12, 0.25}
	for i := 0; i < 8; i++ {
		if math.Abs(float64(fp4Code[i]-want[i])) > 1e-7 || fp4Code[i+8] != -fp4Code[i] {
			t.Errorf("fp4Code[%d] = %v / %v", i, fp4Code[i], fp4Code[i+8])
		}
	}
}

// TestHandBlock checks one block computed by hand: absmax 2, first element in the high nibble.
func TestHandBlock(t *testing.T) {
	// w/absmax: 1, -1, 0, 0.25 (→ 0.24611, code 10), 0.5 (< midpoint 0.50166 → code 12), -0.5 (→ -0.52507,
	// code 2), 0.1 (→ 0.07958, code 8), -0.0455 (just above midpoint -0.045525 → code 7)
	w := []float32{2, -2, 0, 0.5, 1, -1, 0.2, -0.091}
	q, err := Quantize4(NF4, w, []int{2, 4}, 64, false)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{0xF0, 0x7A, 0xC2, 0x87}
	if string(q.Packed) != string(want) || len(q.Absmax) != 1 || q.Absmax[0] != 2 {
		t.Fatalf("packed % x absmax %v, want % x [2]", q.Packed, q.Absmax, want)
	}
	got := make([]float32, len(w))
	q.Dequantize(got)
	for i, c := range []byte{15, 0, 7, 10, 12, 2, 8, 7} {
		if got[i] != nf4Code[c]*2 {
			t.Errorf("dequant[%d] = %v, want %v", i, got[i], nf4Code[c]*2)
		}
	}
	// FP4 on the same block: 1→0b0011, -1→0b1011, 0→0, 0.25→0b0111, 0.5→0b0101, -0.5→0b1101,
	// 0.1 (nearest 2/12) → 0b0110, -0.0455 (below 0.0859 → 0.0052 code) → 0b1001
	q, err = Quantize4(FP4, w, []int{8}, 32, false)
	if err != nil {
		t.Fatal(err)
	}
	if want := []byte{0x3B, 0x07, 0x5D, 0x69}; string(q.Packed) != string(want) {
		t.Fatalf("fp4 packed % x, want % x", q.Packed, want)
	}
}

func TestZeroMaxPartialOdd(t *testing.T) {
	// 3 blocks of 32: all zero, one with a negative max, and a partial odd block of 3
	w := make([]float32, 67)
	w[32], w[33] = -3, 1.5
	w[64], w[65], w[66] = 0.5, -0.25, 0.125
	q, err := Quantize4(NF4, w, []int{67}, 32, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(q.Packed) != 34 || len(q.Absmax) != 3 {
		t.Fatalf("len packed %d absmax %d", len(q.Packed), len(q.Absmax))
	}
	if q.Absmax[0] != 0 || q.Absmax[1] != 3 || q.Absmax[2] != 0.5 {
		t.Errorf("absmax %v", q.Absmax)
	}
	for i := 0; i < 16; i++ {
		if q.Packed[i] != 0 { // 0·(1/0) = NaN → code 0, as bitsandbytes
			t.Fatalf("all-zero block byte %d = %#x", i, q.Packed[i])
		}
	}
	if q.Packed[16] != 0x0C { // -3/3 = -1 → code 0; 1.5/3 = 0.5 (below the 0.50166 midpoint) → code 12
		t.Errorf("byte 16 = %#x, want 0x0c", q.Packed[16])
	}
	if q.Packed[32] != 0xF2 { // 0.5/0.5 = 1 → 15; -0.25/0.5 = -0.5 → 2
		t.Errorf("byte 32 = %#x, want 0xf2", q.Packed[32])
	}
	// last byte: element 66 (0.125/0.5 = 0.25 → code 10) in the high nibble, padding 0 → code 7 low
	if q.Packed[33] != 0xA7 {
		t.Errorf("last byte %#x, want 0xa7", q.Packed[33])
	}
	got := make([]float32, 67)
	q.Dequantize(got)
	for i := 0; i < 32; i++ {
		if got[i] != 0 {
			t.Fatalf("zero block dequantised to %v", got[i])
		}
	}
	if got[32] != -3 {
		t.Errorf("-max dequantised to %v", got[32])
	}
	if got[64] != 0.5 {
		t.Errorf("+max of partial block dequantised to %v", got[64])
	}
}

func TestNonFinite(t *testing.T) {
	for _, v := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))} {
		w := make([]float32, 8)
		w[5] = v
		_, err := Quantize4(NF4, w, []int{2, 4}, 64, true)
		if !errors.Is(err, ErrNonFinite) || !strings.Contains(err.Error(), "row 1, col 1") {
			t.Errorf("%v: err = %v", v, err)
		}
		if _, err := Quantize8(w, []int{2, 4}); !errors.Is(err, ErrNonFinite) {
			t.Errorf("int8 %v: err = %v", v, err)
		}
	}
	if _, err := Quantize4(NF4, make([]float32, 8), []int{3, 3}, 64, false); err == nil {
		t.Error("shape mismatch accepted")
	}
	if _, err := Quantize4(NF4, make([]float32, 8), []int{8}, 48, false); err == nil {
		t.Error("block size 48 accepted")
	}
}

func TestRoundTripError(t *testing.T) {
	r := rand.New(rand.NewSource(3))
	w := randW(r, 64*100+17, 0.02)
	for _, typ := range []Type{NF4, FP4} {
		for _, dq := range []bool{false, true} {
			q, err := Quantize4(typ, w, []int{len(w)}, 64, dq)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]float32, len(w))
			q.Dequantize(got)
			code := q.Code
			var maxGap float32
			for i := 1; i < 16; i++ {
				maxGap = max(maxGap, float32(math.Abs(float64(code[i]-code[i-1]))))
			}
			for i := range w {
				b := i / 64
				amax := q.BlockAbsmax(b)
				// FP4 codes are unsorted; the largest gap between sorted neighbours is 1/3 (8/12 → 12/12)
				tol := amax*0.34 + 1e-3*amax
				if dq {
					tol += 0.01 * amax // the absmax itself is 8-bit
				}
				if d := float32(math.Abs(float64(got[i] - w[i]))); d > tol {
					t.Fatalf("%s dq=%v: element %d: %v → %v (absmax %v)", typ, dq, i, w[i], got[i], amax)
				}
			}
		}
	}
}

func TestDoubleQuant(t *testing.T) {
	// every absmax equal: centred values are 0, nested absmax 0, codes 0, decode = offset exactly
	w := make([]float32, 64*4)
	for b := 0; b < 4; b++ {
		w[b*64+3] = 0.5
	}
	q, err := Quantize4(NF4, w, []int{4, 64}, 64, true)
	if err != nil {
		t.Fatal(err)
	}
	if !q.Double || q.NestedOffset != 0.5 || len(q.NestedAbsmax) != 1 || q.NestedAbsmax[0] != 0 {
		t.Fatalf("dq state %+v", q)
	}
	for b := 0; b < 4; b++ {
		if q.QAbsmax[b] != 0 || q.BlockAbsmax(b) != 0.5 {
			t.Errorf("block %d: code %d absmax %v", b, q.QAbsmax[b], q.BlockAbsmax(b))
		}
	}
	// absmax 1 and 3: offset 2, centred ±1, nested absmax 1 → codes 0 and 255 → 2-0.99296875 and 3
	w = make([]float32, 128)
	w[0], w[64] = 1, -3
	q, err = Quantize4(NF4, w, []int{128}, 64, true)
	if err != nil {
		t.Fatal(err)
	}
	if q.NestedOffset != 2 || q.QAbsmax[0] != 0 || q.QAbsmax[1] != 255 || q.NestedAbsmax[0] != 1 {
		t.Fatalf("offset %v codes %v nested %v", q.NestedOffset, q.QAbsmax, q.NestedAbsmax)
	}
	if a := q.BlockAbsmax(0); a != float32(-0.992968738079071)+2 {
		t.Errorf("absmax 0 = %v", a)
	}
	if a := q.BlockAbsmax(1); a != 3 {
		t.Errorf("absmax 1 = %v", a)
	}
	// many blocks: decoded absmax within the map's resolution; 300 blocks → 2 nested blocks
	r := rand.New(rand.NewSource(4))
	w = randW(r, 64*300, 0.05)
	q, _ = Quantize4(NF4, w, []int{300, 64}, 64, true)
	p, _ := Quantize4(NF4, w, []int{300, 64}, 64, false)
	if len(q.NestedAbsmax) != 2 || len(q.QAbsmax) != 300 {
		t.Fatalf("nested %d qabsmax %d", len(q.NestedAbsmax), len(q.QAbsmax))
	}
	for b := range p.Absmax {
		if d := math.Abs(float64(q.BlockAbsmax(b) - p.Absmax[b])); d > 0.02*float64(q.NestedAbsmax[b/256])+1e-7 {
			t.Errorf("block %d: %v vs %v", b, q.BlockAbsmax(b), p.Absmax[b])
		}
	}
	if string(q.Packed) != string(p.Packed) {
		t.Error("double quantisation changed the 4-bit codes")
	}
}

func TestQuantizeDynamic(t *testing.T) {
	code := dynamicMap[:]
	for i, c := range code {
		if got := quantizeDynamic(code, c); int(got) != i {
			t.Errorf("entry %d (%v) → %d", i, c, got)
		}
	}
	r := rand.New(rand.NewSource(5))
	for i := 0; i < 100000; i++ {
		x := float32(r.Float64()*2 - 1)
		if r.Intn(2) == 0 {
			x *= float32(math.Pow(10, -float64(r.Intn(7))))
		}
		g := quantizeDynamic(code, x)
		// nearest in float64, allowing a midpoint tie either way
		best := 0
		for j := range code {
			if math.Abs(float64(x-code[j])) < math.Abs(float64(x-code[best])) {
				best = j
			}
		}
		if g != byte(best) && math.Abs(math.Abs(float64(x-code[g]))-math.Abs(float64(x-code[best]))) > 1e-7 {
			t.Fatalf("quantizeDynamic(%v) = %d (%v), nearest %d (%v)", x, g, code[g], best, code[best])
		}
	}
}

func TestDynamicMap(t *testing.T) {
	m := DynamicMap()
	if len(m) != 256 || m[0] != -0.99296875 || m[127] != 0 || m[255] != 1 {
		t.Fatalf("ends %v %v %v", m[0], m[127], m[255])
	}
	// published values (bitsandbytes create_dynamic_map() under PyTorch)
	known := map[int]float32{1: -0.9789062738418579, 20: -0.7117187976837158, 126: -5.500000384017767e-07,
		128: 5.500000384017767e-07, 191: 0.10703125596046448, 254: 0.992968738079071}
	for i, v := range known {
		if m[i] != v {
			t.Errorf("map[%d] = %v, want %v", i, m[i], v)
		}
	}
	// every entry is within 4 ulp of the exact formula 10^(i-6)·(0.1 + 0.9·(k+0.5)/2^i)
	var exact []float64
	for i := 0; i < 7; i++ {
		n := 1 << i
		for k := 0; k < n; k++ {
			v := math.Pow(10, float64(i-6)) * (0.1 + 0.9*(float64(k)+0.5)/float64(n))
			exact = append(exact, v, -v)
		}
	}
	exact = append(exact, 0, 1)
	sortF64(exact)
	for i := range m {
		if i > 0 && m[i] < m[i-1] {
			t.Fatalf("not sorted at %d", i)
		}
		if i < 255 && m[i] != -m[254-i] {
			t.Errorf("not symmetric at %d", i)
		}
		ulp := math.Abs(float64(math.Nextafter32(float32(exact[i]), 2) - float32(exact[i])))
		if math.Abs(float64(m[i])-exact[i]) > 4*ulp {
			t.Errorf("map[%d] = %v, formula %v", i, m[i], exact[i])
		}
	}
}

func sortF64(v []float64) {
	for i := 1; i < len(v); i++ {
		for j := i; j > 0 && v[j] < v[j-1]; j-- {
			v[j], v[j-1] = v[j-1], v[j]
		}
	}
}

func TestInt8(t *testing.T) {
	w := []float32{1, -0.5, 0.25, 0, 0, 0, 0, 0, 2, 1, -2, 0.00787}
	q, err := Quantize8(w, []int{3, 4})
	if err != nil {
		t.Fatal(err)
	}
	want := []int8{127, -64, 32, 0, 0, 0, 0, 0, 127, 64, -127, 0}
	for i, c := range q.Packed {
		if int8(c) != want[i] { // -0.5·127 = -63.5 → -64 (half to even), 0.25·127 = 31.75 → 32
			t.Errorf("code %d = %d, want %d", i, int8(c), want[i])
		}
	}
	if q.Absmax[0] != 1 || q.Absmax[1] != 0 || q.Absmax[2] != 2 {
		t.Errorf("absmax %v", q.Absmax)
	}
	got := make([]float32, 12)
	q.Dequantize(got)
	for i := range w {
		if math.Abs(float64(got[i]-w[i])) > float64(q.Absmax[i/4])/254+1e-6 {
			t.Errorf("element %d: %v → %v", i, w[i], got[i])
		}
	}
}

func TestBitsPerParam(t *testing.T) {
	r := rand.New(rand.NewSource(6))
	w := randW(r, 576*1536, 0.02)
	q, _ := Quantize4(NF4, w, []int{576, 1536}, 64, true)
	if b := q.BitsPerParam(); math.Abs(b-4.127) > 0.001 {
		t.Errorf("NF4+DQ bits/param %v, want ≈4.127", b)
	}
	q, _ = Quantize4(NF4, w, []int{576, 1536}, 64, false)
	if b := q.BitsPerParam(); b != 4.5 {
		t.Errorf("NF4 bits/param %v, want 4.5", b)
	}
}

// TestDequantizeRangeExact checks the block kernel (assembly when available) against the element-by-element
// path bit for bit, over offsets and lengths that cut blocks anywhere.
func TestDequantizeRangeExact(t *testing.T) {
	r := rand.New(rand.NewSource(12))
	for _, bs := range []int{32, 64, 128, 256} {
		for _, dq := range []bool{false, true} {
			for _, typ := range []Type{NF4, FP4} {
				n := bs*37 + 5
				q, err := Quantize4(typ, randW(r, n, 0.1), []int{n}, bs, dq)
				if err != nil {
					t.Fatal(err)
				}
				for k := 0; k < 30; k++ {
					e0 := r.Intn(n)
					l := r.Intn(n - e0 + 1)
					got := make([]float32, l)
					want := make([]float32, l)
					q.DequantizeRange(got, e0)
					q.dequantSlow(want, e0)
					if k == 0 {
						all, allP := make([]float32, n), make([]float32, n)
						q.Dequantize(all)
						q.DequantizeP(kernels.NewPool(3), allP)
						for i := range all {
							if math.Float32bits(all[i]) != math.Float32bits(allP[i]) {
								t.Fatalf("DequantizeP differs at %d", i)
							}
						}
					}
					for i := range got {
						if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
							t.Fatalf("%s bs %d dq %v [%d,+%d): element %d: %v vs %v", typ, bs, dq, e0, l, i, got[i], want[i])
						}
					}
				}
			}
		}
	}
}
