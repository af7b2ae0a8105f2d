// Package quant stores weight matrices in 4-bit NF4/FP4 and 8-bit blocks exactly as bitsandbytes does, reads and
// writes them as bitsandbytes tensors, and multiplies with them without materialising the dequantised matrix.
// Turning a whole checkpoint folder into a quantised folder is the top-level package quant, which builds on this.
//
// Layout (bitsandbytes `quantize_4bit`): the weight is flattened row-major and cut into blocks of BlockSize
// consecutive elements (the last block may be partial). Each block keeps its absmax = max|w| as float32 and
// every element becomes the 4-bit index of the nearest code of the 16-entry table (NF4 or FP4) to w/absmax.
// Two codes share a byte: element 2j in the high nibble, element 2j+1 in the low nibble. With double
// quantisation the absmax values minus their mean are themselves quantised blockwise (256 per block) to uint8
// with bitsandbytes' signed dynamic map; the mean (NestedOffset) and one float32 absmax per 256 blocks
// (NestedAbsmax) are kept.
//
// Quantisation follows the CUDA kernels of bitsandbytes (csrc/kernels.cu), which produce the checkpoints
// people publish: the scaled value is w·(1/absmax) in float32 and the code is chosen by the decision tree on
// the float32 midpoints with strict '>', so a value exactly on a midpoint takes the lower code.
//
// Multiplication (MatVec, MatMulT) never materialises the weight: the AVX2 kernels (rows_amd64.s, pure-Go
// twins selected by the purego build tag or a CPU without AVX2+FMA) expand 8 packed bytes into 16 values with
// two VPERMPS lookups of the absmax-scaled 16-entry table per 8 values, chosen by VBLENDVPS on the nibble's
// top bit, and FMA them with x (copied once per call into the kernel's even/odd order). Small batches
// (MatMulT, m < 32) decode each block once for 2 or 4 rows of X; larger ones dequantise tiles into the f32
// GEMM of models/kernels. On CPUs with AVX-512 VNNI (and AVX-512 not turned off: kernels.SetAVX512, the CLI's
// --no-avx512) the generated kernels of vnni_amd64.s (asm/ is their avo generator) run instead: the dot kernels
// (dot8.go: VPDPBUSD, x rounded to int8 per 32 values, weights in tiles of 16 rows, up to 12 rows of X per call)
// for every weight whose rows come in tiles of 16, VPDPWSSD row kernels on int16 x for the others; they also run
// Q8_0 (GGUF int8 blocks of 32).
//
// Int8 is LLM.int8's row-wise format (bitsandbytes `int8_vectorwise_quant`): one float32 absmax per row (the
// block is the row), q = round-half-even(w·(127/absmax)), w ≈ q·absmax/127.
package quant

import (
	"errors"
	"fmt"
	"math"
	"sync/atomic"
)

// Type names a quantisation format.
type Type string

// The formats of this package.
const (
	NF4  Type = "nf4"
	FP4  Type = "fp4"
	Int8 Type = "int8"
	// Q4_0 is ggml's Q4_0 (GGUF files) held in this package's 4-bit layout so that the same kernels run it: the
	// levels are (code-8)/8 and each 32-block's absmax is 8·d, d being ggml's (possibly negative) block scale,
	// so that level·absmax = (code-8)·d exactly.
	Q4_0 Type = "q4_0"
	// Q8_0 is ggml's Q8_0 (GGUF files): one int8 code per byte and, per 32-block, the float32 value of ggml's f16
	// scale d as absmax, so that w = code·d (no 1/127 as in Int8).
	Q8_0 Type = "q8_0"
)

// q40Code is the level table of Q4_0.
var q40Code = func() [16]float32 {
	var c [16]float32
	for i := range c {
		c[i] = float32(i-8) / 8
	}
	return c
}()

// DefaultBlockSize is bitsandbytes' default block size for 4-bit weights.
const DefaultBlockSize = 64

// NestedBlockSize is the block size bitsandbytes uses to quantise the absmax values (double quantisation).
const NestedBlockSize = 256

// NF4Code is the NormalFloat4 table (index = 4-bit code), bitsandbytes `get_4bit_type("nf4")`.
var nf4Code = [16]float32{
	-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
	-0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
	0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
	0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
}

// fp4Code is bitsandbytes' FP4 table: bit 3 is the sign, bits 0..2 index the magnitudes
// 0, 0.0625, 8, 12, 4, 6, 2, 3, all divided by 12 in float32 (`get_4bit_type("fp4")`).
var fp4Code = func() [16]float32 {
	mag := [8]float32{0, 0.0625, 8, 12, 4, 6, 2, 3}
	var c [16]float32
	for i, m := range mag {
		c[i] = m / 12
		c[i+8] = -m / 12
	}
	return c
}()

// Code returns the 16-entry code table of a 4-bit type (a copy).
func Code(t Type) ([16]float32, error) {
	switch t {
	case NF4:
		return nf4Code, nil
	case FP4:
		return fp4Code, nil
	case Q4_0:
		return q40Code, nil
	}
	return [16]float32{}, fmt.Errorf("quant: %q is not a 4-bit type (want nf4, fp4 or q4_0)", t)
}

// Weight is a weight stored quantised: 4-bit NF4/FP4/Q4_0 blocks (two codes per byte), or row-wise Int8 or
// Q8_0 blocks (one code byte per element).
type Weight struct {
	Type      Type
	Shape     []int // original shape, HF [out, in] for linear weights
	BlockSize int   // elements per absmax block (Int8: the row length)
	// Packed holds the codes: two per byte for 4-bit types (element 2j high nibble), one int8 per byte for Int8.
	Packed []byte
	// Absmax is one float32 per block; nil when Double (then QAbsmax/Nested* describe it).
	Absmax []float32
	// Code is the 16-entry table the codes index (from the file's quant_map when loaded).
	Code [16]float32

	// Double quantisation: absmax[i] = NestedCode[QAbsmax[i]]·NestedAbsmax[i/NestedBlockSize] + NestedOffset.
	Double          bool
	QAbsmax         []byte
	NestedAbsmax    []float32
	NestedOffset    float32
	NestedBlockSize int
	NestedCode      []float32 // 256 entries, the dynamic map

	dots     atomic.Pointer[dot8]      // the dot kernels' copy, made on first use (dot8.go)
	unpacked atomic.Pointer[[]byte]    // after Compact, Packed rebuilt from dots for a path that needs it
	reabsmax atomic.Pointer[[]float32] // after Compact dropped Absmax, Absmax rebuilt from dots (absmaxes)
}

// Elems is the number of weight elements.
func (q *Weight) Elems() int {
	n := 1
	for _, s := range q.Shape {
		n *= s
	}
	return n
}

// Rows and Cols view the weight as [Shape[0], rest] (a 1-D weight is one row).
func (q *Weight) Rows() int {
	if len(q.Shape) < 2 {
		return 1
	}
	return q.Shape[0]
}

// Cols is the product of all dimensions but the first.
func (q *Weight) Cols() int { return q.Elems() / max(q.Rows(), 1) }

// NumBlocks is the number of absmax blocks.
func (q *Weight) NumBlocks() int { return (q.Elems() + q.BlockSize - 1) / q.BlockSize }

// Bytes is the resident size of the quantised data (codes plus statistics, tables excluded).
func (q *Weight) Bytes() int {
	n := q.codeBytes() + len(q.QAbsmax) + 4*len(q.NestedAbsmax)
	if !q.Double {
		n += 4 * q.NumBlocks() // in Absmax, or after Compact perhaps only in the dot layout
	}
	if q.Double {
		n += 4 // offset
	}
	return n
}

// codeBytes is the size of the codes in either layout: a byte per element for Int8 and Q8_0, half a byte for
// the 4-bit types.
func (q *Weight) codeBytes() int {
	if q.Type == Int8 || q.Type == Q8_0 {
		return q.Elems()
	}
	return (q.Elems() + 1) / 2
}

// BitsPerParam is the resident bits per weight element (codes plus statistics).
func (q *Weight) BitsPerParam() float64 {
	return float64(8*q.Bytes()) / float64(q.Elems())
}

// BlockAbsmax returns the absmax of block b, decoding double quantisation if needed.
func (q *Weight) BlockAbsmax(b int) float32 {
	if !q.Double {
		if q.Absmax == nil {
			return q.dotAbsmax(b)
		}
		return q.Absmax[b]
	}
	// bitsandbytes: dequantize_blockwise(qabsmax, state2) + offset, in float32 (no fused multiply-add).
	return float32(q.NestedCode[q.QAbsmax[b]]*q.NestedAbsmax[b/q.NestedBlockSize]) + q.NestedOffset
}

// AbsmaxRange writes the absmax of blocks [b0, b0+len(dst)) into dst.
func (q *Weight) AbsmaxRange(dst []float32, b0 int) {
	if !q.Double {
		copy(dst, q.absmaxes()[b0:b0+len(dst)])
		return
	}
	code := (*[256]float32)(q.NestedCode[:256]) // a byte index needs no bounds check
	qa := q.QAbsmax[b0 : b0+len(dst)]
	off, nbs := q.NestedOffset, q.NestedBlockSize
	for i := 0; i < len(dst); {
		b := b0 + i
		nested := q.NestedAbsmax[b/nbs]
		end := min(len(dst), (b/nbs+1)*nbs-b0)
		d, a := dst[i:end], qa[i:end]
		a = a[:len(d)]
		for j, c := range a {
			d[j] = float32(code[c]*nested) + off
		}
		i = end
	}
}

// ValidBlockSize reports whether bs is a block size bitsandbytes accepts for 4-bit weights.
func ValidBlockSize(bs int) bool {
	switch bs {
	case 32, 64, 128, 256, 512, 1024, 2048, 4096:
		return true
	}
	return false
}

// ErrNonFinite is wrapped by the error Quantize4/Quantize8 return for a NaN or ±Inf weight.
var ErrNonFinite = errors.New("weight is not finite")

func checkFinite(w []float32, shape []int) error {
	for i, v := range w {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("element %d %s is %v: %w", i, position(i, shape), v, ErrNonFinite)
		}
	}
	return nil
}

func position(i int, shape []int) string {
	if len(shape) < 2 {
		return fmt.Sprintf("[%d]", i)
	}
	cols := 1
	for _, s := range shape[1:] {
		cols *= s
	}
	return fmt.Sprintf("(row %d, col %d)", i/cols, i%cols)
}

func checkShape(w []float32, shape []int) error {
	n := 1
	for _, s := range shape {
		if s <= 0 {
			return fmt.Errorf("quant: shape %v has a non-positive dimension", shape)
		}
		n *= s
	}
	if len(shape) == 0 || n != len(w) {
		return fmt.Errorf("quant: shape %v does not match %d elements", shape, len(w))
	}
	return nil
}

// quantizeNF4 is bitsandbytes' dQuantizeNF4 (csrc/kernels.cu): a decision tree on the float32 midpoints of
// the NF4 table with strict '>' (a tie goes to the lower code; NaN gives code 0).
func quantizeNF4(x float32) byte {
	if x > 0.03979014977812767 {
		if x > 0.3893125355243683 {
			if x > 0.6427869200706482 {
				if x > 0.8614784181118011 {
					return 0b1111
				}
				return 0b1110
			}
			if x > 0.5016634166240692 {
				return 0b1101
			}
			return 0b1100
		}
		if x > 0.2035212516784668 {
			if x > 0.2920137718319893 {
				return 0b1011
			}
			return 0b1010
		}
		if x > 0.1202552504837513 {
			return 0b1001
		}
		return 0b1000
	}
	if x > -0.33967943489551544 {
		if x > -0.13791173323988914 {
			if x > -0.045525018125772476 {
				return 0b0111
			}
			return 0b0110
		}
		if x > -0.23460740596055984 {
			return 0b0101
		}
		return 0b0100
	}
	if x > -0.6106329262256622 {
		if x > -0.4599952697753906 {
			return 0b0011
		}
		return 0b0010
	}
	if x > -0.8480964004993439 {
		return 0b0001
	}
	return 0b0000
}

// quantizeFP4 is bitsandbytes' dQuantizeFP4: sign from x < 0, then a decision tree on |x| (NaN gives 0).
func quantizeFP4(x float32) byte {
	var sign byte
	if x < 0 {
		sign = 0b1000
	}
	x = float32(math.Abs(float64(x)))
	switch {
	case x > 0.29166667:
		if x > 0.583333 {
			if x > 0.8333333 {
				return 0b0011 + sign
			}
			return 0b0010 + sign
		}
		if x > 0.4166667 {
			return 0b0101 + sign
		}
		return 0b0100 + sign
	case x > 0.0859375:
		if x > 0.20833333 {
			return 0b0111 + sign
		}
		return 0b0110 + sign
	case x > 0.00260417:
		return 0b0001 + sign
	}
	return sign
}

// Quantize4 quantises w (row-major, of the given shape) to NF4 or FP4 with bitsandbytes' blockwise scheme;
// double enables double quantisation of the absmax values. NaN or ±Inf weights are an error.
func Quantize4(t Type, w []float32, shape []int, blockSize int, double bool) (*Weight, error) {
	var enc func(float32) byte
	switch t {
	case NF4:
		enc = quantizeNF4
	case FP4:
		enc = quantizeFP4
	default:
		return nil, fmt.Errorf("quant: Quantize4: type %q is not nf4 or fp4", t)
	}
	if !ValidBlockSize(blockSize) {
		return nil, fmt.Errorf("quant: block size %d is not one of 32, 64, ..., 4096", blockSize)
	}
	if err := checkShape(w, shape); err != nil {
		return nil, err
	}
	if err := checkFinite(w, shape); err != nil {
		return nil, err
	}
	code, _ := Code(t)
	n := len(w)
	nb := (n + blockSize - 1) / blockSize
	q := &Weight{Type: t, Shape: append([]int(nil), shape...), BlockSize: blockSize,
		Packed: make([]byte, (n+1)/2), Absmax: make([]float32, nb), Code: code}
	for b := 0; b < nb; b++ {
		lo, hi := b*blockSize, min((b+1)*blockSize, n)
		var amax float32
		for _, v := range w[lo:hi] {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		q.Absmax[b] = amax
		inv := 1 / amax // +Inf for an all-zero block: 0·Inf = NaN → code 0, as in bitsandbytes
		for i := lo; i < hi; i++ {
			c := enc(w[i] * inv)
			if i&1 == 0 {
				q.Packed[i>>1] = c << 4
			} else {
				q.Packed[i>>1] |= c
			}
		}
		if hi == n && n&1 == 1 {
			// the padding element (0) of an odd-length tensor fills the last low nibble
			q.Packed[n>>1] |= enc(0 * inv)
		}
	}
	if double {
		q.doubleQuantize()
	}
	return q, nil
}

// doubleQuantize replaces Absmax by its bitsandbytes double-quantised form.
func (q *Weight) doubleQuantize() {
	var sum float64
	for _, a := range q.Absmax {
		sum += float64(a)
	}
	offset := float32(sum / float64(len(q.Absmax)))
	centred := make([]float32, len(q.Absmax))
	for i, a := range q.Absmax {
		centred[i] = a - offset
	}
	codes, nabs := QuantizeBlockwise8(centred, NestedBlockSize)
	q.Double = true
	q.QAbsmax = codes
	q.NestedAbsmax = nabs
	q.NestedOffset = offset
	q.NestedBlockSize = NestedBlockSize
	q.NestedCode = DynamicMap()
	q.Absmax = nil
}

// QuantizeBlockwise8 is bitsandbytes' quantize_blockwise with the default signed dynamic map (the CUDA
// kernel's binary search, dQuantize<0>): per block of blockSize values absmax = max|v| and each value maps
// to the nearest map entry of v·(1/absmax).
func QuantizeBlockwise8(v []float32, blockSize int) (codes []byte, absmax []float32) {
	code := dynamicMap[:]
	nb := (len(v) + blockSize - 1) / blockSize
	codes = make([]byte, len(v))
	absmax = make([]float32, nb)
	for b := 0; b < nb; b++ {
		lo, hi := b*blockSize, min((b+1)*blockSize, len(v))
		var amax float32
		for _, x := range v[lo:hi] {
			amax = max(amax, float32(math.Abs(float64(x))))
		}
		absmax[b] = amax
		inv := 1 / amax
		for i := lo; i < hi; i++ {
			codes[i] = quantizeDynamic(code, v[i]*inv)
		}
	}
	return codes, absmax
}

// quantizeDynamic is bitsandbytes' dQuantize<0>: a binary search over the sorted 256-entry map followed by a
// midpoint test ((a+b)·0.5 in float32).
func quantizeDynamic(code []float32, x float32) byte {
	pivot, upperPivot, lowerPivot := 127, 255, 0
	var lower, upper float32 = -1, 1
	val := code[pivot]
	for i := 64; i > 0; i >>= 1 {
		if x > val {
			lowerPivot, lower = pivot, val
			pivot += i
		} else {
			upperPivot, upper = pivot, val
			pivot -= i
		}
		val = code[pivot]
	}
	if upperPivot == 255 {
		upper = code[upperPivot]
	}
	if lowerPivot == 0 {
		lower = code[lowerPivot]
	}
	if x > val {
		if x > (upper+val)*0.5 {
			return byte(upperPivot)
		}
		return byte(pivot)
	}
	if x < (lower+val)*0.5 {
		return byte(lowerPivot)
	}
	return byte(pivot)
}

// Quantize8 quantises w to LLM.int8's row-wise int8 format: one absmax per row of shape[0] rows,
// q = round-half-even(w·(127/absmax)) (bitsandbytes int8_vectorwise_quant, threshold 0). An all-zero row
// has absmax 0 and codes 0.
func Quantize8(w []float32, shape []int) (*Weight, error) {
	if err := checkShape(w, shape); err != nil {
		return nil, err
	}
	if err := checkFinite(w, shape); err != nil {
		return nil, err
	}
	cols := len(w) / max(1, shape[0])
	if len(shape) < 2 {
		cols = len(w)
	}
	return Quantize8Rows(shape, func(r int, dst []float32) { copy(dst, w[r*cols:(r+1)*cols]) })
}

// Quantize8Rows is Quantize8 for a weight given row by row (row(r, dst) fills dst with row r), so that
// no float32 copy of the whole weight is needed. A non-finite value is an error naming its row.
func Quantize8Rows(shape []int, row func(r int, dst []float32)) (*Weight, error) {
	q := &Weight{Type: Int8, Shape: append([]int(nil), shape...)}
	rows, cols := q.Rows(), q.Cols()
	q.BlockSize = cols
	q.Packed = make([]byte, rows*cols)
	q.Absmax = make([]float32, rows)
	buf := make([]float32, cols)
	for r := 0; r < rows; r++ {
		row(r, buf)
		var amax float32
		for _, v := range buf {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return nil, fmt.Errorf("quant: %w: row %d of %v", ErrNonFinite, r, shape)
			}
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		q.Absmax[r] = amax
		if amax == 0 {
			continue
		}
		s := 127 / amax
		for i, v := range buf {
			c := math.RoundToEven(float64(v * s))
			c = max(-127, min(127, c))
			q.Packed[r*cols+i] = byte(int8(c))
		}
	}
	return q, nil
}

// int8Scale is bitsandbytes' 1/127 constant (int8_vectorwise_dequant).
const int8Scale = float32(7.874015718698502e-3)

// Dequantize writes the dequantised weight (Elems() values, row-major) into dst.
func (q *Weight) Dequantize(dst []float32) {
	n := q.Elems()
	if len(dst) < n {
		panic(fmt.Sprintf("quant: Dequantize: dst has %d elements, want %d", len(dst), n))
	}
	q.DequantizeRange(dst[:n], 0)
}

// DequantizeRange writes elements [e0, e0+len(dst)) of the flattened weight into dst.
func (q *Weight) DequantizeRange(dst []float32, e0 int) {
	if q.Packed == nil { // compacted: the codes are in the dot kernels' copy only
		q.dequantDot(dst, e0)
		return
	}
	bs := q.BlockSize
	e := e0
	if q.Type != Int8 && q.Type != Q8_0 && bs%2 == 0 {
		// whole blocks in the middle go through the block kernel
		first := (e + bs - 1) / bs
		last := (e + len(dst)) / bs
		if last > first {
			q.dequantSlow(dst[:first*bs-e], e)
			var sbuf [256]float32
			mid := dst[first*bs-e : last*bs-e]
			for b := first; b < last; b += len(sbuf) {
				n := min(len(sbuf), last-b)
				sc := sbuf[:n]
				q.AbsmaxRange(sc, b)
				dequantBlocks(mid[(b-first)*bs:], q.Packed[b*bs/2:(b+n)*bs/2], sc, &q.Code, bs)
			}
			q.dequantSlow(dst[last*bs-e:], last*bs)
			return
		}
	}
	q.dequantSlow(dst, e)
}

// dequantBlocksGo is the portable block dequantiser: len(scales) whole blocks of bs values.
func dequantBlocksGo(dst []float32, packed []byte, scales []float32, code *[16]float32, bs int) {
	for b, a := range scales {
		var lut [16]float32
		for i, c := range code {
			lut[i] = c * a
		}
		pk := packed[b*bs/2 : (b+1)*bs/2]
		d := dst[b*bs : (b+1)*bs]
		for i, c := range pk {
			d[2*i] = lut[c>>4]
			d[2*i+1] = lut[c&0xF]
		}
	}
}

// dequantSlow dequantises any range element by element (partial blocks, Int8, Q8_0).
func (q *Weight) dequantSlow(dst []float32, e0 int) {
	bs := q.BlockSize
	e := e0
	for len(dst) > 0 {
		b := e / bs
		end := min((b+1)*bs, e+len(dst))
		a := q.BlockAbsmax(b)
		k := end - e
		switch q.Type {
		case Int8, Q8_0:
			for i := 0; i < k; i++ {
				dst[i] = q.value(q.Packed[e+i], a)
			}
		default:
			for i := 0; i < k; i++ {
				j := e + i
				c := q.Packed[j>>1]
				if j&1 == 0 {
					c >>= 4
				} else {
					c &= 0xF
				}
				dst[i] = q.value(c, a)
			}
		}
		dst = dst[k:]
		e = end
	}
}

// value is the weight of code (an int8 code byte, or a 4-bit code) in a block of absmax a.
func (q *Weight) value(code byte, a float32) float32 {
	switch q.Type {
	case Int8:
		return float32(float32(int8(code))*a) * int8Scale
	case Q8_0:
		return float32(int8(code)) * a
	}
	return q.Code[code] * a
}

// Codes returns the unpacked 4-bit codes (one per element), for tests and tools.
func (q *Weight) Codes() []byte {
	n := q.Elems()
	out := make([]byte, n)
	packed := q.packed()
	for j := range out {
		c := packed[j>>1]
		if j&1 == 0 {
			c >>= 4
		}
		out[j] = c & 0xF
	}
	return out
}
