// Command asm writes kernels_gen_amd64.s and its Go declarations (kernels_gen_amd64.go) with avo: every
// assembly kernel of models/kernels, each family from one Go function here instead of preprocessor macros: the
// AVX-512 tiles and rows kernels of the batched matrix products (decode batches of 2-16 rows, prefill; this
// file), the AVX2 tiles and matrix-vector kernels (avx2.go), the vector kernels dot/axpy/scale/scaleMul (blas1.go),
// the two passes of Argmax (argmax.go), the exp-based softmax and SiLU·mul kernels (exp.go), the broadcast
// Gemm tiles (bcast.go), the bf16 expand of a low-rank product and its f32 twin, attention's value sum
// (expand.go), and the fused low-rank products (lowrank.go, AVX-512; lowrank_avx2.go, AVX2). Run by `go generate` in
// models/kernels; the output is committed and .ci/check verifies it is up to date. It is its own module, as
// models/quant/asm is, so that avo stays out of lorakit's go.mod.
//
// Vector registers are physical (the tiles use all 32), general-purpose ones too.
package main

//lint:file-ignore ST1001 avo's DSL reads as assembly through its dot imports, as in avo's own examples

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// maxRows and maxCols bound the tiles: rows×cols accumulators plus cols weight registers and two
// activation registers must fit the 32 ZMM registers.
const (
	maxRows = 8
	maxCols = 3
)

func main() {
	ConstraintExpr("amd64,!purego")
	for _, f := range []family{f32FMA, bf16Wide, f16Wide} {
		for c := 1; c <= maxCols; c++ {
			for r := 1; r <= maxRows; r++ {
				tile(f, r, c)
			}
		}
	}
	rowsKernel(f32FMA)
	rowsKernel(bf16Wide)
	for _, w := range avx2Loads {
		avx2MatVec4(w)
		avx2MatVec4PF(w)
		avx2MatVecRows(w)
	}
	for _, w := range avx2Loads {
		for c := 1; c <= avx2Cols; c++ {
			for r := 1; r <= avx2Rows; r++ {
				avx2TileRC(w, r, c)
			}
		}
	}
	avx2CvtF16()
	for _, op := range []string{"dot", "axpy", "scale", "scaleMul"} {
		blas1(op)
	}
	argmaxKernels()
	expKernel("expSubSum")
	expKernel("siluMul")
	for _, wide := range []bool{false, true} {
		bcastTile(wide)
	}
	for _, f32 := range []bool{false, true} {
		for _, wide := range []bool{false, true} {
			expandKernel(2, wide, f32)
			expandKernel(1, wide, f32)
		}
	}
	for rows := 1; rows <= lrRows; rows++ {
		lowRank(rows)
		lowRankY(rows)
	}
	Generate()
}

// family is a tile kernel kind: the weight element, the columns per step and the inner product.
type family struct {
	name   string
	wtype  string // Go element type of W
	xtype  string // Go element type of X
	step   int    // columns of K per step
	xbytes int    // bytes of X per row per step
	// mul adds the products of activation registers xs (already loaded) and weight register w into acc
	mul func(acc, w VecPhysical, xs []VecPhysical)
	// xregs is how many registers one row of X takes per step
	xregs int
	// wbytes is the bytes of one W row per step; wload, when set, loads and widens one step of a W row
	// (masked by K1 in the tail) instead of a plain 64-byte load
	wbytes int
	wload  func(m Mem, w VecPhysical, masked bool)
}

var f32FMA = family{
	name: "fmaF32", wtype: "float32", xtype: "float32", step: 16, xbytes: 64, xregs: 1, wbytes: 64,
	mul: func(acc, w VecPhysical, xs []VecPhysical) { VFMADD231PS(w, xs[0], acc) },
}

// bf16Wide is bf16 weights widened in registers (a zero extension and a shift) against float32 X: exact
// products, the same instruction count per weight as VDPBF16PS on X split into two bf16 halves (hi + lo) at
// 30× less error (measured; README "Kernels by instruction set"), twice that of VDPBF16PS on X rounded to one
// bf16, whose error is 2⁸ times the split's.
var bf16Wide = family{
	name: "fmaBF16", wtype: "uint16", xtype: "float32", step: 16, xbytes: 64, xregs: 1, wbytes: 32,
	mul: f32FMA.mul,
	wload: func(m Mem, w VecPhysical, masked bool) {
		if masked {
			VMOVDQU16_Z(m, K1, Y31)
			VPMOVZXWD(Y31, w)
		} else {
			VPMOVZXWD(m, w)
		}
		VPSLLD(U8(16), w, w)
	},
}

// f16Wide is IEEE half weights converted by VCVTPH2PS against float32 X.
var f16Wide = family{
	name: "fmaF16", wtype: "uint16", xtype: "float32", step: 16, xbytes: 64, xregs: 1, wbytes: 32,
	mul: f32FMA.mul,
	wload: func(m Mem, w VecPhysical, masked bool) {
		if masked {
			VMOVDQU16_Z(m, K1, Y31)
			VCVTPH2PS(Y31, w)
		} else {
			VCVTPH2PS(m, w)
		}
	},
}

var zregs = []VecPhysical{Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z7, Z8, Z9, Z10, Z11, Z12, Z13, Z14, Z15, Z16, Z17,
	Z18, Z19, Z20, Z21, Z22, Z23, Z24, Z25, Z26, Z27, Z28, Z29, Z30, Z31}

var xregs = []VecPhysical{X0, X1, X2, X3, X4, X5, X6, X7, X8, X9, X10, X11, X12, X13, X14, X15, X16, X17,
	X18, X19, X20, X21, X22, X23, X24, X25, X26, X27, X28, X29, X30, X31}

var yregs = []VecPhysical{Y0, Y1, Y2, Y3, Y4, Y5, Y6, Y7, Y8, Y9, Y10, Y11, Y12, Y13, Y14, Y15, Y16, Y17,
	Y18, Y19, Y20, Y21, Y22, Y23, Y24, Y25, Y26, Y27, Y28, Y29, Y30, Y31}

// Register roles of a tile: accumulators Z0..Z(rows·cols−1), weights Z24..Z26, activations Z27..Z30
// (two sets, alternating by row), Z31 scratch. General-purpose registers: X row pointers R8 (rows 0-2),
// R9 (3-5), R10 (6-7) with stride R11; W at SI with stride DI; prefetch pointer R12; step count CX.
const (
	wReg = 24
	xReg = 27
)

// tile writes the family's rows×cols tile: C[r, c] (+)= Σ_l X[r, l]·W[c, l] over k columns, where X rows are
// ldx elements apart, W rows ldw elements apart and C rows ldc floats apart; acc != 0 adds to C. The steps
// prefetch one linear run from W+pf as fast as the tile consumes its cols rows (cols·wbytes per step): with W
// rows contiguous, the bytes pf ahead of the tile in the order the matrix is stored, one stream as the rows
// kernel's instead of cols interleaved ones (0: the tile's own rows, ahead of the loads). A k not a multiple
// of the step is finished with masked loads of W and X.
func tile(f family, rows, cols int) {
	name := fmt.Sprintf("%sR%dC%d", f.name, rows, cols)
	TEXT(name, NOSPLIT, fmt.Sprintf("func(x *%s, ldx int, w *%s, ldw int, k int, c *float32, ldc int, acc int, pf int)", f.xtype, f.wtype))
	Pragma("noescape")
	Doc(fmt.Sprintf("%s is the %d×%d tile of the %s family (generated).", name, rows, cols, f.name))
	xsz := 2
	if f.xtype == "float32" {
		xsz = 4
	}
	wsz := 2
	if f.wtype == "float32" {
		wsz = 4
	}
	Load(Param("x"), R8)
	Load(Param("ldx"), R11)
	shiftBytes(R11, xsz)
	Load(Param("w"), RSI)
	Load(Param("ldw"), RDI)
	shiftBytes(RDI, wsz)
	Load(Param("pf"), R12)
	ADDQ(RSI, R12)
	LEAQ(Mem{Base: R8, Index: R11, Scale: 2}, R9)
	ADDQ(R11, R9)
	LEAQ(Mem{Base: R9, Index: R11, Scale: 2}, R10)
	ADDQ(R11, R10)
	Load(Param("k"), RCX)
	MOVQ(RCX, RDX)
	ANDQ(U8(uint8(f.step-1)), RDX)
	shr := 5
	if f.step == 16 {
		shr = 4
	}
	SHRQ(U8(uint8(shr)), RCX)
	for i := 0; i < rows*cols; i++ {
		VPXORD(zregs[i], zregs[i], zregs[i])
	}
	JZ(LabelRef("tail"))
	Label("loop")
	step(f, rows, cols, false)
	DECQ(RCX)
	JNZ(LabelRef("loop"))
	Label("tail")
	TESTQ(RDX, RDX)
	JZ(LabelRef("reduce"))
	MOVL(U32(1), EAX)
	MOVQ(RDX, RCX)
	SHLL(CL, EAX)
	DECL(EAX)
	KMOVD(EAX, K1)
	step(f, rows, cols, true)
	Label("reduce")
	reduceStore(rows, cols)
	VZEROUPPER()
	RET()
}

func shiftBytes(r GPPhysical, size int) {
	if size == 2 {
		SHLQ(U8(1), r)
	} else {
		SHLQ(U8(2), r)
	}
}

// xrow is the address of X row r at byte offset disp.
func xrow(r, disp int) Mem {
	base := []GPPhysical{R8, R9, R10}[r/3]
	m := Mem{Base: base, Disp: disp}
	if r%3 > 0 {
		m.Index, m.Scale = R11, uint8(r%3)
	}
	return m
}

// wrow is the address of W row c (c < 3) from base b (SI or the prefetch pointer R12).
func wrow(b GPPhysical, c int) Mem {
	m := Mem{Base: b}
	if c > 0 {
		m.Index, m.Scale = RDI, uint8(c)
	}
	return m
}

// step emits one step of f over rows×cols: load the cols weight vectors (masked by K1 in the tail), prefetch
// the next cols·wbytes of the linear run at R12, then per row load its activations and multiply into the
// row's accumulators. The main loop advances the pointers.
func step(f family, rows, cols int, masked bool) {
	for c := 0; c < cols; c++ {
		w := zregs[wReg+c]
		switch {
		case f.wload != nil:
			f.wload(wrow(RSI, c), w, masked)
		case !masked:
			VMOVDQU32(wrow(RSI, c), w)
		case f.wtype == "uint16":
			VMOVDQU16_Z(wrow(RSI, c), K1, w)
		default:
			VMOVUPS_Z(wrow(RSI, c), K1, w)
		}
	}
	if !masked {
		for i := 0; i < (cols*f.wbytes+63)/64; i++ {
			PREFETCHT0(Mem{Base: R12, Disp: 64 * i})
		}
	}
	for r := 0; r < rows; r++ {
		xs := make([]VecPhysical, f.xregs)
		for i := range xs {
			xs[i] = zregs[xReg+(r%2)*f.xregs+i]
			m := xrow(r, 64*i)
			if masked && f.xtype == "float32" {
				VMOVUPS_Z(m, K1, xs[i])
			} else {
				VMOVDQU32(m, xs[i])
			}
		}
		for c := 0; c < cols; c++ {
			f.mul(zregs[r*cols+c], zregs[wReg+c], xs)
		}
	}
	if !masked {
		ADDQ(U8(uint8(f.wbytes)), RSI)
		if cols*f.wbytes < 128 {
			ADDQ(U8(uint8(cols*f.wbytes)), R12)
		} else {
			ADDQ(U32(uint32(cols*f.wbytes)), R12)
		}
		for _, p := range []GPPhysical{R8, R9, R10}[:(rows+2)/3] {
			ADDQ(U32(uint32(f.xbytes)), p)
		}
	}
}

// foldLanes folds the 16 lanes of accumulators 0..n-1 to 4 (upper halves added to lower, twice), in place in
// their xmm parts.
func foldLanes(n int) {
	for i := 0; i < n; i++ {
		z, y, x := zregs[i], yregs[i], xregs[i]
		VEXTRACTF64X4(U8(1), z, Y31)
		VADDPS(Y31, y, y)
		VEXTRACTF32X4(U8(1), y, X31)
		VADDPS(X31, x, x)
	}
}

// reduceStore sums the 16 lanes of every accumulator and writes row r's cols sums to C[r, 0:cols] (adding
// the old values when acc != 0) with a masked store.
func reduceStore(rows, cols int) {
	foldLanes(rows * cols)
	Load(Param("c"), RAX)
	Load(Param("ldc"), RBX)
	SHLQ(U8(2), RBX)
	MOVL(U32(1<<cols-1), ECX)
	KMOVW(ECX, K2)
	Load(Param("acc"), RCX)
	for r := 0; r < rows; r++ {
		s := sum4(r, cols)
		TESTQ(RCX, RCX)
		JZ(LabelRef(fmt.Sprintf("store%d", r)))
		VMOVUPS_Z(Mem{Base: RAX}, K2, X31)
		VADDPS(X31, s, s)
		Label(fmt.Sprintf("store%d", r))
		VMOVUPS(s, K2, Mem{Base: RAX})
		if r+1 < rows {
			ADDQ(RBX, RAX)
		}
	}
}

// sum4 reduces the 4-lane partial sums of row r's accumulators (a, b, c, d; missing ones repeat the last)
// to one register holding (Σa, Σb, Σc, Σd) and returns it (X27).
func sum4(r, cols int) VecPhysical {
	acc := func(c int) VecPhysical { return xregs[r*cols+min(c, cols-1)] }
	a, b, c, d := acc(0), acc(1), acc(2), acc(3)
	VUNPCKLPS(b, a, X28)
	VUNPCKHPS(b, a, X29)
	VADDPS(X29, X28, X28) // (a0+a2, b0+b2, a1+a3, b1+b3)
	VUNPCKLPS(d, c, X29)
	VUNPCKHPS(d, c, X30)
	VADDPS(X30, X29, X29) // the same for c, d
	VSHUFPS(U8(0x44), X29, X28, X30)
	VSHUFPS(U8(0xEE), X29, X28, X27)
	VADDPS(X30, X27, X27)
	return X27
}

// rowsKernel writes the family's matrix-vector kernel: y[r] = Σ_l X[l]·W[r, l] for r < rows, each row exactly as
// the 1×1 tile computes it (same steps, same reduction, which equal every other tile's for that element: a row's
// result does not depend on how many rows of X share the pass). Rows are read one after the other, so the
// weights stream from memory as one sequential run per thread (the hardware prefetchers follow it; the three
// interleaved row streams of a 1×3 pass reached 39 GB/s where this reaches 57, two threads, smollm2 bf16), and
// every step prefetches the line pf bytes ahead.
func rowsKernel(f family) {
	name := f.name + "Rows"
	TEXT(name, NOSPLIT, fmt.Sprintf("func(x *%s, w *%s, ldw int, k int, y *float32, rows int, pf int)", f.xtype, f.wtype))
	Pragma("noescape")
	Doc(fmt.Sprintf("%s is the matrix-vector kernel of the %s family: rows rows of W, one at a time (generated).", name, f.name))
	wsz := 2
	if f.wtype == "float32" {
		wsz = 4
	}
	Load(Param("x"), R10)
	Load(Param("w"), R13)
	Load(Param("ldw"), RDI)
	shiftBytes(RDI, wsz)
	Load(Param("y"), RAX)
	Load(Param("rows"), RBX)
	Load(Param("pf"), R9)
	Load(Param("k"), RCX)
	MOVQ(RCX, RDX)
	ANDQ(U8(uint8(f.step-1)), RDX)
	MOVL(U32(1), R11L)
	MOVQ(RDX, RCX)
	SHLL(CL, R11L)
	DECL(R11L)
	KMOVD(R11L, K1)
	MOVL(U32(1), R11L)
	KMOVW(R11L, K2)
	TESTQ(RBX, RBX)
	JZ(LabelRef("done"))
	Label("row")
	MOVQ(R10, R8)
	MOVQ(R13, RSI)
	LEAQ(Mem{Base: R13, Index: R9, Scale: 1}, R12)
	VPXORD(Z0, Z0, Z0)
	Load(Param("k"), RCX)
	SHRQ(U8(4), RCX)
	JZ(LabelRef("tail"))
	Label("loop")
	step(f, 1, 1, false)
	DECQ(RCX)
	JNZ(LabelRef("loop"))
	Label("tail")
	TESTQ(RDX, RDX)
	JZ(LabelRef("reduce"))
	step(f, 1, 1, true)
	Label("reduce")
	VEXTRACTF64X4(U8(1), Z0, Y31)
	VADDPS(Y31, Y0, Y0)
	VEXTRACTF32X4(U8(1), Y0, X31)
	VADDPS(X31, X0, X0)
	s := sum4(0, 1)
	VMOVUPS(s, K2, Mem{Base: RAX})
	ADDQ(U8(4), RAX)
	ADDQ(RDI, R13)
	DECQ(RBX)
	JNZ(LabelRef("row"))
	Label("done")
	VZEROUPPER()
	RET()
}
