package main

//lint:file-ignore ST1001 avo's DSL reads as assembly through its dot imports, as in avo's own examples

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	"github.com/mmcloughlin/avo/ir"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// The AVX2 row kernels (the models/quant kernels for CPUs without AVX-512 VNNI, and the shapes the dot kernels
// do not tile). Registers are physical: each kernel fits the 16 YMM registers.

var ys = []VecPhysical{Y0, Y1, Y2, Y3, Y4, Y5, Y6, Y7, Y8, Y9, Y10, Y11, Y12, Y13, Y14, Y15}

var xs = []VecPhysical{X0, X1, X2, X3, X4, X5, X6, X7, X8, X9, X10, X11, X12, X13, X14, X15}

// hsumStore reduces the 8 lanes of ys[acc] to a scalar (xt scratch), multiplies it by scale when scale is not
// nil, and stores it at dst.
func hsumStore(acc int, xt VecPhysical, scale Op, dst Mem) {
	x := xs[acc]
	VEXTRACTF128(U8(1), ys[acc], xt)
	VADDPS(xt, x, x)
	VHADDPS(x, x, x)
	VHADDPS(x, x, x)
	if scale != nil {
		VMULSS(scale, x, x)
	}
	MOVSS(x, dst)
}

// yRow is where x row i's result goes: y (DI) plus i·ystride bytes (R13); row 3 needs BX = DI + 2·R13, set
// when it is asked for.
func yRow(i int) Mem {
	switch i {
	case 0:
		return Mem{Base: RDI}
	case 1, 2:
		return Mem{Base: RDI, Index: R13, Scale: uint8(i)}
	}
	LEAQ(Mem{Base: RDI, Index: R13, Scale: 2}, RBX)
	return Mem{Base: RBX, Index: R13, Scale: 1}
}

// rowsEnd ends a weight row of the row kernels (y at DI, one float further; with scales, the row scale pointer
// R8 too) and loops back to Label("row") while CX counts rows, then returns.
func rowsEnd(scales bool) {
	if scales {
		ADDQ(U8(4), R8)
	}
	ADDQ(U8(4), RDI)
	DECQ(RCX)
	JNZ(LabelRef("row"))
	Label("done")
	VZEROUPPER()
	RET()
}

// int8RowsF32 writes int8RowsAVX2, LLM.int8 rows against float x: y[r] = scales[r]·Σ_c int8(packed[r·cols+c])·x[c]
// (the caller multiplies by 1/127), cols % 32 == 0; 32 codes per step widened to float, four accumulators.
func int8RowsF32() {
	TEXT("int8RowsAVX2", NOSPLIT, "func(y *float32, packed *byte, scales *float32, x *float32, rows, cols int)")
	Pragma("noescape")
	Doc("int8RowsAVX2: y[r] = scales[r]·Σ_c int8(packed[r·cols+c])·x[c] for rows rows; cols % 32 == 0 (generated).")
	Load(Param("y"), RDI)
	Load(Param("packed"), RSI)
	Load(Param("scales"), R8)
	Load(Param("x"), R11)
	Load(Param("rows"), RCX)
	Load(Param("cols"), R9)
	SHRQ(U8(5), R9)
	TESTQ(RCX, RCX)
	JZ(LabelRef("done"))
	Label("row")
	for i := 4; i < 8; i++ {
		VXORPS(ys[i], ys[i], ys[i])
	}
	MOVQ(R11, RDX)
	MOVQ(R9, RBX)
	Label("loop")
	for i := range 4 {
		VPMOVSXBD(Mem{Base: RSI, Disp: 8 * i}, ys[8+i])
	}
	for i := range 4 {
		VCVTDQ2PS(ys[8+i], ys[8+i])
	}
	for i := range 4 {
		VFMADD231PS(Mem{Base: RDX, Disp: 32 * i}, ys[8+i], ys[4+i])
	}
	ADDQ(U8(32), RSI)
	ADDQ(U32(128), RDX)
	DECQ(RBX)
	JNZ(LabelRef("loop"))
	VADDPS(Y5, Y4, Y4)
	VADDPS(Y7, Y6, Y6)
	VADDPS(Y6, Y4, Y4)
	hsumStore(4, X5, Mem{Base: R8}, Mem{Base: RDI})
	rowsEnd(true)
}

// dequant4 writes dequant4AVX2: nb·bs values lut[q]·scales[b] in natural order, bs % 16 == 0. Per block the
// 16 levels times the absmax sit in Y2, Y3; per 8 packed bytes (16 codes) VPERMPS looks the low and the high
// nibbles up in both halves, VBLENDVPS picks by the code's top bit, and the two vectors interleave.
func dequant4() {
	TEXT("dequant4AVX2", NOSPLIT, "func(dst *float32, packed *byte, scales *float32, lut *[16]float32, nb, bs int)")
	Pragma("noescape")
	Doc("dequant4AVX2 writes nb·bs values code[q]·scales[b] in natural order; bs % 16 == 0 (generated).")
	Load(Param("dst"), RDI)
	Load(Param("packed"), RSI)
	Load(Param("scales"), R8)
	Load(Param("lut"), RAX)
	Load(Param("nb"), RCX)
	Load(Param("bs"), R10)
	SHRQ(U8(4), R10)
	VMOVUPS(Mem{Base: RAX}, Y0)
	VMOVUPS(Mem{Base: RAX, Disp: 32}, Y1)
	TESTQ(RCX, RCX)
	JZ(LabelRef("done"))
	Label("block")
	VBROADCASTSS(Mem{Base: R8}, Y15)
	VMULPS(Y15, Y0, Y2)
	VMULPS(Y15, Y1, Y3)
	ADDQ(U8(4), R8)
	MOVQ(R10, R12)
	Label("group")
	VPMOVSXBD(Mem{Base: RSI}, Y8)
	VPSRLD(U8(4), Y8, Y9)
	VPSLLD(U8(28), Y8, Y10)
	VPERMPS(Y2, Y8, Y12)
	VPERMPS(Y3, Y8, Y13)
	VBLENDVPS(Y10, Y13, Y12, Y14)
	VPERMPS(Y2, Y9, Y12)
	VPERMPS(Y3, Y9, Y13)
	VBLENDVPS(Y8, Y13, Y12, Y15)
	VUNPCKLPS(Y14, Y15, Y12)
	VUNPCKHPS(Y14, Y15, Y13)
	VPERM2F128(U8(0x20), Y13, Y12, Y10)
	VPERM2F128(U8(0x31), Y13, Y12, Y11)
	VMOVUPS(Y10, Mem{Base: RDI})
	VMOVUPS(Y11, Mem{Base: RDI, Disp: 32})
	ADDQ(U8(8), RSI)
	ADDQ(U8(64), RDI)
	DECQ(R12)
	JNZ(LabelRef("group"))
	DECQ(RCX)
	JNZ(LabelRef("block"))
	Label("done")
	VZEROUPPER()
	RET()
}

// nf4Codes loads 32 packed bytes (64 elements) at SI and splits them into the odd elements' codes (lo: low
// nibbles) and the even elements' (hi: high nibbles), one per byte; Y2 holds the nibble mask.
func nf4Codes(lo, hi VecPhysical) {
	VMOVDQU(Mem{Base: RSI}, lo)
	VPSRLW(U8(4), lo, hi)
	VPAND(Y2, lo, lo)
	VPAND(Y2, hi, hi)
}

// nf4Levels looks the 32 codes up in the levels' low- and high-byte tables (Y0, Y1) and joins the bytes into
// two vectors of 16 int16 levels, w0 and w1 (codes is clobbered).
func nf4Levels(codes, t, w0, w1 VecPhysical) {
	VPSHUFB(codes, Y0, t)
	VPSHUFB(codes, Y1, codes)
	VPUNPCKLBW(codes, t, w0)
	VPUNPCKHBW(codes, t, w1)
}

// nf4RowsY writes nf4Rows16AVX2 (k = 1) or nf4Rows16x{k}AVX2 (k = 2, 4), the integer row kernel (see x16.go)
// for k x rows. Per 32 packed bytes (64 elements): the low and high nibbles are masked apart, each indexes the
// int16 levels' low- and high-byte tables (VPSHUFB), VPUNPCK joins the bytes to four vectors of 16 int16
// levels, and VPMADDWD multiplies them with the kernel-ordered int16 x into int32. Each group's sum is
// converted and scaled by its block's absmax·step (bs = 64, bitsandbytes' default, is one group per block; bs
// = 32 makes a group of two blocks, one per 128-bit lane). With k > 1 the x rows are interleaved as x16 lays
// them out (per group, k runs of 64 int16; per block, k runs of 8 scales) and each group of weights is decoded
// once for all of them; accumulators Y3.. float and Y7.. int32 per x row. lut points at a lut16's lo, hi and
// mask tables (48 contiguous bytes).
func nf4RowsY(k int) {
	name := "nf4Rows16AVX2"
	sig := "func(y *float32, packed *byte, scales *float32, xq *int16, xs *float32, lut *byte, rows, nb, bs int)"
	if k > 1 {
		name = fmt.Sprintf("nf4Rows16x%dAVX2", k)
		sig = "func(y *float32, ystride int, packed *byte, scales *float32, xq *int16, xs *float32, lut *byte, rows, nb, bs int)"
	}
	TEXT(name, NOSPLIT, sig)
	Pragma("noescape")
	Doc(fmt.Sprintf("%s is the 4-bit integer row kernel for %d x row(s) (see rows16Go; generated).", name, k))
	Load(Param("y"), RDI)
	if k > 1 {
		Load(Param("ystride"), R13)
		SHLQ(U8(2), R13)
	}
	Load(Param("packed"), RSI)
	Load(Param("scales"), R8)
	Load(Param("xq"), R11)
	if k == 1 {
		Load(Param("xs"), R13)
	}
	Load(Param("lut"), RAX)
	Load(Param("rows"), RCX)
	Load(Param("nb"), R9)
	Load(Param("bs"), R10)
	SHRQ(U8(6), R10) // groups per block, 0 for bs = 32 (then R9 counts groups of two blocks)
	TESTQ(R10, R10)
	JNZ(LabelRef("tables"))
	SHRQ(U8(1), R9)
	Label("tables")
	for i := range 3 {
		VBROADCASTI128(Mem{Base: RAX, Disp: 16 * i}, ys[i])
	}
	if k > 1 {
		Load(Param("xs"), RAX)
	}
	TESTQ(RCX, RCX)
	JZ(LabelRef("done"))
	Label("row")
	for i := range k {
		VXORPS(ys[3+i], ys[3+i], ys[3+i])
	}
	MOVQ(R11, RDX)
	if k == 1 {
		MOVQ(R13, R14)
	} else {
		MOVQ(RAX, R14)
	}
	MOVQ(R9, RBX)
	Label("block")
	if k == 1 {
		nf4Rows1Group()
	} else {
		nf4RowsKGroup(k)
	}
	ADDQ(U8(uint8(32*k)), R14)
	DECQ(RBX)
	JNZ(LabelRef("block"))
	if k == 1 {
		hsumStore(3, X5, nil, Mem{Base: RDI})
	} else {
		for i := range k {
			hsumStore(3+i, X11, nil, yRow(i))
		}
	}
	rowsEnd(false)
}

// nf4Rows1Group is one block of nf4Rows16AVX2: the scale absmax·step once, then its groups.
func nf4Rows1Group() {
	VBROADCASTSS(Mem{Base: R8}, Y11)
	MOVQ(R10, R12)
	TESTQ(R10, R10)
	JNZ(LabelRef("scale"))
	// bs == 32: a group is two blocks; its products' low 128-bit lane is the first, the high the second
	VBROADCASTSS(Mem{Base: R8, Disp: 4}, Y13)
	VBLENDPS(U8(0xf0), Y13, Y11, Y11)
	ADDQ(U8(4), R8)
	MOVQ(U32(1), R12)
	Label("scale")
	VMULPS(Mem{Base: R14}, Y11, Y11)
	Label("group")
	PREFETCHT0(Mem{Base: RSI, Disp: 2048})
	nf4Codes(Y5, Y6)
	nf4Levels(Y6, Y7, Y9, Y10)
	VPMADDWD(Mem{Base: RDX}, Y9, Y4)
	VPMADDWD(Mem{Base: RDX, Disp: 32}, Y10, Y10)
	nf4Levels(Y5, Y7, Y9, Y12)
	VPMADDWD(Mem{Base: RDX, Disp: 64}, Y9, Y9)
	VPMADDWD(Mem{Base: RDX, Disp: 96}, Y12, Y12)
	VPADDD(Y10, Y4, Y4)
	VPADDD(Y12, Y9, Y9)
	VPADDD(Y9, Y4, Y4)
	VCVTDQ2PS(Y4, Y4)
	VFMADD231PS(Y11, Y4, Y3)
	ADDQ(U8(32), RSI)
	ADDQ(U32(128), RDX)
	DECQ(R12)
	JNZ(LabelRef("group"))
	ADDQ(U8(4), R8)
}

// nf4RowsKGroup is one block of nf4Rows16x{k}AVX2: per group the levels once, each x row's int32 sum, then its
// scaling by absmax (Y11) · the row's step.
func nf4RowsKGroup(k int) {
	MOVQ(R10, R12)
	TESTQ(R12, R12)
	JNZ(LabelRef("group"))
	MOVQ(U32(1), R12)
	Label("group")
	PREFETCHT0(Mem{Base: RSI, Disp: 2048})
	nf4Codes(Y11, Y12)
	for half, codes := range []VecPhysical{Y12, Y11} {
		nf4Levels(codes, Y13, Y14, Y12)
		for i := range k {
			acc, off := ys[7+i], 128*i+64*half
			if half == 0 {
				VPMADDWD(Mem{Base: RDX, Disp: off}, Y14, acc)
				VPMADDWD(Mem{Base: RDX, Disp: off + 32}, Y12, Y15)
				VPADDD(Y15, acc, acc)
			} else {
				VPMADDWD(Mem{Base: RDX, Disp: off}, Y14, Y15)
				VPADDD(Y15, acc, acc)
				VPMADDWD(Mem{Base: RDX, Disp: off + 32}, Y12, Y15)
				VPADDD(Y15, acc, acc)
			}
		}
	}
	// the block's absmax (bs = 32: the group's two blocks, one per 128-bit lane)
	VBROADCASTSS(Mem{Base: R8}, Y11)
	TESTQ(R10, R10)
	JNZ(LabelRef("scaled"))
	VBROADCASTSS(Mem{Base: R8, Disp: 4}, Y13)
	VBLENDPS(U8(0xf0), Y13, Y11, Y11)
	Label("scaled")
	for i := range k {
		VCVTDQ2PS(ys[7+i], ys[7+i])
		VMULPS(Mem{Base: R14, Disp: 32 * i}, Y11, Y12)
		VFMADD231PS(Y12, ys[7+i], ys[3+i])
	}
	ADDQ(U8(32), RSI)
	ADDQ(U32(uint32(128*k)), RDX)
	DECQ(R12)
	JNZ(LabelRef("group"))
	// past the absmax values just used (two for bs = 32)
	ADDQ(U8(4), R8)
	TESTQ(R10, R10)
	JNZ(LabelRef("next"))
	ADDQ(U8(4), R8)
	Label("next")
}

// int8RowsY writes int8Rows16AVX2 (k = 1) or int8Rows16x4AVX2 (k = 4): row-wise int8 weights times x quantised
// to int16 in natural order (x16): per block of 64, VPMOVSXBW widens 16 codes per load (once for all k x rows),
// VPMADDWD sums products exactly in int32, and the block's sum is converted and scaled by its x step once;
// each row's total is scaled by the row's absmax.
func int8RowsY(k int) {
	name := "int8Rows16AVX2"
	sig := "func(y *float32, packed *byte, scales *float32, xq *int16, xs *float32, rows, cols int)"
	if k > 1 {
		name = fmt.Sprintf("int8Rows16x%dAVX2", k)
		sig = "func(y *float32, ystride int, packed *byte, scales *float32, xq *int16, xs *float32, rows, cols int)"
	}
	TEXT(name, NOSPLIT, sig)
	Pragma("noescape")
	Doc(fmt.Sprintf("%s is the int8 integer row kernel for %d x row(s) (see rows8x16Go; generated).", name, k))
	Load(Param("y"), RDI)
	xsReg := R13
	if k > 1 {
		Load(Param("ystride"), R13)
		SHLQ(U8(2), R13)
		xsReg = RAX
	}
	Load(Param("packed"), RSI)
	Load(Param("scales"), R8)
	Load(Param("xq"), R11)
	Load(Param("xs"), xsReg)
	Load(Param("rows"), RCX)
	Load(Param("cols"), R9)
	SHRQ(U8(6), R9)
	TESTQ(RCX, RCX)
	JZ(LabelRef("done"))
	Label("row")
	acc := 3 // float accumulators: Y3 for one row, Y0..Y3 for four
	if k > 1 {
		acc = 0
	}
	for i := range k {
		VXORPS(ys[acc+i], ys[acc+i], ys[acc+i])
	}
	MOVQ(R11, RDX)
	MOVQ(xsReg, R14)
	MOVQ(R9, RBX)
	Label("block")
	PREFETCHT0(Mem{Base: RSI, Disp: 2048})
	for i := range 4 {
		VPMOVSXBW(Mem{Base: RSI, Disp: 16 * i}, ys[4+i])
	}
	if k == 1 {
		for i := range 4 {
			VPMADDWD(Mem{Base: RDX, Disp: 32 * i}, ys[4+i], ys[4+i])
		}
		VPADDD(Y5, Y4, Y4)
		VPADDD(Y7, Y6, Y6)
		VPADDD(Y6, Y4, Y4)
		VCVTDQ2PS(Y4, Y4)
		VFMADD231PS(Mem{Base: R14}, Y4, Y3)
	} else {
		for i := range k {
			off := 128 * i
			VPMADDWD(Mem{Base: RDX, Disp: off}, Y4, Y8)
			for j := 1; j < 4; j++ {
				VPMADDWD(Mem{Base: RDX, Disp: off + 32*j}, ys[4+j], Y9)
				VPADDD(Y9, Y8, Y8)
			}
			VCVTDQ2PS(Y8, Y8)
			VFMADD231PS(Mem{Base: R14, Disp: 32 * i}, Y8, ys[i])
		}
	}
	ADDQ(U8(64), RSI)
	ADDQ(U32(uint32(128*k)), RDX)
	ADDQ(U32(uint32(32*k)), R14)
	DECQ(RBX)
	JNZ(LabelRef("block"))
	if k == 1 {
		hsumStore(3, X5, Mem{Base: R8}, Mem{Base: RDI})
	} else {
		VMOVSS(Mem{Base: R8}, X15)
		for i := range k {
			hsumStore(i, X8, X15, yRow(i))
		}
	}
	rowsEnd(true)
}

// quantX16 writes quantX16AVX2, which quantises one row of x for the integer kernels (the assembly twin of
// quantizeRowGo): per block (bs = 32: both blocks of each group of 64, one after the other) the step is
// max|x|/lim (the maximum taken over the bit patterns of |x|, so that a NaN wins as it does in Go's max and
// reaches the output) and each element becomes round-to-even(x·lim/max). Each group of 64 elements is written
// in kernel order (see groupPerm): VPERM2F128 pairs the 128-bit halves that share a destination lane, VSHUFPS
// splits even from odd elements, VPACKSSDW joins two such vectors to 16 int16. Consecutive groups of the row
// are gstride bytes apart in q, blocks' scale runs gstride/4 apart in s.
func quantX16() {
	TEXT("quantX16AVX2", NOSPLIT, "func(q *int16, s *float32, x *float32, nb, bs, gstride int, lim, inv float32)")
	Pragma("noescape")
	Doc("quantX16AVX2 quantises one row of x for the integer kernels (see quantizeRowGo; generated).")
	Load(Param("q"), RDI)
	Load(Param("s"), R8)
	Load(Param("x"), RSI)
	Load(Param("nb"), RCX)
	Load(Param("bs"), R9)
	Load(Param("gstride"), R10)
	MOVSS(NewParamAddr("lim", 48), X14)
	MOVSS(NewParamAddr("inv", 52), X13)
	MOVQ(R10, R11)
	SHRQ(U8(2), R11)
	VPCMPEQD(Y15, Y15, Y15)
	VPSRLD(U8(1), Y15, Y15) // |x| mask
	TESTQ(RCX, RCX)
	JZ(LabelRef("done"))
	CMPQ(R9, U8(32))
	JNE(LabelRef("block"))
	SHRQ(U8(1), RCX)

	Label("block")
	VXORPS(Y0, Y0, Y0)
	MOVQ(RSI, RDX)
	MOVQ(R9, RBX)
	SHRQ(U8(3), RBX)
	Label("max")
	VANDPS(Mem{Base: RDX}, Y15, Y1)
	VPMAXSD(Y1, Y0, Y0)
	ADDQ(U8(32), RDX)
	DECQ(RBX)
	JNZ(LabelRef("max"))
	blockStep("zero")
	CMPQ(R9, U8(32))
	JE(LabelRef("half"))
	VBROADCASTSS(X3, Y3)
	VMOVUPS(Y3, Mem{Base: R8})
	VBROADCASTSS(X2, Y2)
	VMOVAPS(Y2, Y3)
	MOVQ(R9, RBX)
	SHRQ(U8(6), RBX)
	JMP(LabelRef("group"))

	// bs == 32: the group's second block (the max loop left DX on it) gets its own step; the scales are stored
	// as [first ×4, second ×4], the multipliers go to Y2 (elements 0..31) and Y3 (32..63)
	Label("half")
	VMOVAPS(X2, X4)
	VMOVAPS(X3, X5)
	VANDPS(Mem{Base: RDX}, Y15, Y0)
	for i := 1; i < 4; i++ {
		VANDPS(Mem{Base: RDX, Disp: 32 * i}, Y15, Y1)
		VPMAXSD(Y1, Y0, Y0)
	}
	blockStep("zero2")
	VBROADCASTSS(X5, Y5)
	VBROADCASTSS(X3, Y3)
	VBLENDPS(U8(0xf0), Y3, Y5, Y3)
	VMOVUPS(Y3, Mem{Base: R8})
	VBROADCASTSS(X2, Y3)
	VBROADCASTSS(X4, Y2)
	MOVQ(U32(1), RBX)

	Label("group")
	for i := range 8 {
		m := Y2
		if i >= 4 {
			m = Y3
		}
		VMULPS(Mem{Base: RSI, Disp: 32 * i}, m, ys[4+i])
	}
	for i := range 4 {
		a, b := ys[4+i], ys[8+i]
		VPERM2F128(U8(0x20), b, a, Y12)
		VPERM2F128(U8(0x31), b, a, Y1)
		VSHUFPS(U8(0x88), Y1, Y12, a)
		VSHUFPS(U8(0xdd), Y1, Y12, b)
	}
	for i := 4; i < 12; i++ {
		VCVTPS2DQ(ys[i], ys[i])
	}
	for i := 4; i < 12; i += 2 {
		VPACKSSDW(ys[i+1], ys[i], ys[i])
	}
	for i := range 4 {
		VMOVDQU(ys[4+2*i], Mem{Base: RDI, Disp: 32 * i})
	}
	ADDQ(U32(256), RSI)
	ADDQ(R10, RDI)
	DECQ(RBX)
	JNZ(LabelRef("group"))
	ADDQ(R11, R8)
	DECQ(RCX)
	JNZ(LabelRef("block"))
	Label("done")
	VZEROUPPER()
	RET()
}

// blockStep reduces the block's max |x| bit patterns in Y0 to X0 and sets X2 = lim/max (the multiplier) and
// X3 = max/lim·inv (the step), both 0 for an all-zero block (label zero is where that case joins).
func blockStep(zero string) {
	VEXTRACTI128(U8(1), Y0, X1)
	VPMAXSD(X1, X0, X0)
	VPSHUFD(U8(0x4e), X0, X1)
	VPMAXSD(X1, X0, X0)
	VPSHUFD(U8(0xb1), X0, X1)
	VPMAXSD(X1, X0, X0)
	VXORPS(X2, X2, X2)
	VXORPS(X3, X3, X3)
	movlXAX()
	TESTL(EAX, EAX)
	JZ(LabelRef(zero))
	VDIVSS(X0, X14, X2)
	VDIVSS(X14, X0, X3)
	VMULSS(X13, X3, X3)
	Label(zero)
}

// movlXAX emits MOVL X0, AX (the low 32 bits of X0 into EAX: the 4-byte MOVD), which avo's MOVL does not take
// and its MOVD spells as the 8-byte form.
func movlXAX() {
	Instruction(&ir.Instruction{Opcode: "MOVL", Operands: []Op{X0, EAX}, Inputs: []Op{X0}, Outputs: []Op{EAX}})
}
