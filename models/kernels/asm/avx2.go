package main

//lint:file-ignore ST1001 avo's DSL reads as assembly through its dot imports, as in avo's own examples

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// wload8 is how an AVX2 kernel loads 8 weights of one type into 8 float32 lanes.
type wload8 struct {
	name  string // F32, BF16, F16: the kernel name's suffix
	wtype string // Go element type of W
	esz   int    // bytes per weight
	load  func(m Mem, y VecPhysical)
}

var avx2Loads = []wload8{
	{"F32", "float32", 4, func(m Mem, y VecPhysical) { VMOVUPS(m, y) }},
	// bf16: zero extension u16→u32, shift left 16 (float32frombits(u<<16))
	{"BF16", "uint16", 2, func(m Mem, y VecPhysical) { VPMOVZXWD(m, y); VPSLLD(U8(16), y, y) }},
	// IEEE half: VCVTPH2PS (F16C)
	{"F16", "uint16", 2, func(m Mem, y VecPhysical) { VCVTPH2PS(m, y) }},
}

// hsum4 reduces the four 8-lane accumulators a, b, c, d to the low lanes of a: [Σa, Σb, Σc, Σd] (clobbers c; xt
// is scratch).
func hsum4(a, b, c, d int, xt VecPhysical) {
	VHADDPS(yregs[b], yregs[a], yregs[a])
	VHADDPS(yregs[d], yregs[c], yregs[c])
	VHADDPS(yregs[c], yregs[a], yregs[a])
	VEXTRACTF128(U8(1), yregs[a], xt)
	VADDPS(xt, xregs[a], xregs[a])
}

// avx2MatVec4 writes matVec4{type}: y[0..3] = Σ_c W[r][c]·x[c] for the four rows r at w, w+stride, w+2·stride,
// w+3·stride (stride in elements; 0 repeats one row) over n columns, n % 8 == 0, 16 columns per step into two
// accumulators per row (Y2r, Y2r+1: the even and odd 8-column halves), then 8. Each step prefetches the same
// bytes of the next four rows (w + 4·stride).
func avx2MatVec4(w wload8) {
	name := "matVec4" + w.name
	TEXT(name, NOSPLIT, fmt.Sprintf("func(w *%s, stride int, x *float32, n int, y *float32)", w.wtype))
	Pragma("noescape")
	Doc(fmt.Sprintf("%s is the AVX2 four-row matrix-vector kernel of %s weights (generated).", name, w.name))
	matVec4Start("x", w.esz, true, false, true)
	wlen := 8 * w.esz
	rows := []GPPhysical{RSI, R8, R9, R10}
	CMPQ(RCX, U8(16))
	JL(LabelRef("tail8"))
	Label("loop16")
	prefetchNext4(RDX)
	VMOVUPS(Mem{Base: RDI, Index: RBX, Scale: 1}, Y8)
	VMOVUPS(Mem{Base: RDI, Index: RBX, Scale: 1, Disp: 32}, Y9)
	for h := 0; h < 4; h += 2 {
		for i := range 2 {
			w.load(Mem{Base: rows[h+i], Index: RDX, Scale: 1}, yregs[10+2*i])
			w.load(Mem{Base: rows[h+i], Index: RDX, Scale: 1, Disp: wlen}, yregs[11+2*i])
		}
		for i := range 4 {
			VFMADD231PS(yregs[8+i%2], yregs[10+i], yregs[2*h+i])
		}
	}
	ADDQ(U8(64), RBX)
	ADDQ(U8(uint8(2*wlen)), RDX)
	SUBQ(U8(16), RCX)
	CMPQ(RCX, U8(16))
	JGE(LabelRef("loop16"))
	tail8(w)
	Label("reduce")
	matVec4End()
}

// pfRowsF32 is how far ahead (bytes) matVecRowsF32 prefetches. On an AVX2 Zen 1 (2 threads, the smollm2 and
// qwen2.5-0.5b decode products, A/B in the same minutes) the former single prefetch per 128-byte step 2 KiB
// ahead (every other line) read 19.5 GB/s where no prefetch read 23-24.5; one per line reads 24.5-26 at 256-768
// bytes ahead (512: +5% over none), 23.3-24.5 at 1-2 KiB (as none).
const pfRowsF32 = 512

// pfRows16 is how far ahead (bytes) matVecRowsBF16P and matVecRowsF16 prefetch, one line per 64-byte step. On
// an AVX2 Zen 1, 2 threads, bf16 decode (lorakit bench tg32, A/B alternated in the same minutes) ran at 1 KiB
// 84.6-93.5 tok/s on smollm2 against 77.8-82.4 at 2 KiB (+5-19% pair by pair) and 24.7-25.7 against 22.2-23.6
// on qwen2.5-0.5b (+5-14%); 768 bytes ran 0-4% below 1 KiB, 512 and 1536 6-12% below (smollm2). f16, bound by
// VCVTPH2PS, was no faster at 768 or 1024 bytes (smollm2 f16 GGUF 77-85 tok/s against 79-88 at 2 KiB) and keeps
// 2 KiB. Two rows per step (one x load for both, two W streams per thread; a scratch benchmark of one token's
// products) read 15-30% less.
var pfRows16 = map[string]int{"BF16": 1024, "F16": 2048}

// tail8 emits the four-row kernels' last 8 columns (when CX says there are), W at index DX.
func tail8(w wload8) {
	Label("tail8")
	CMPQ(RCX, U8(8))
	JL(LabelRef("reduce"))
	VMOVUPS(Mem{Base: RDI, Index: RBX, Scale: 1}, Y8)
	rows := []GPPhysical{RSI, R8, R9, R10}
	for i, p := range rows {
		w.load(Mem{Base: p, Index: RDX, Scale: 1}, yregs[10+i])
	}
	for i := range rows {
		VFMADD231PS(Y8, yregs[10+i], yregs[2*i])
	}
}

// matVec4Start loads the four-row kernels' arguments: W rows at SI, R8, R9, R10 and the next four at R11..R14
// (stride scaled by esz: IMULQ when imul, else a shift), x (the parameter named x) at DI, n in CX; with a pair
// mask, the bf16 high-half mask into Y15; the column offsets BX (x) and, when two, DX (W) start at 0 and the
// eight accumulators Y0..Y7 at zero.
func matVec4Start(x string, esz int, imul, mask, two bool) {
	Load(Param("w"), RSI)
	Load(Param("stride"), RAX)
	Load(Param(x), RDI)
	Load(Param("n"), RCX)
	if imul {
		IMUL3Q(U8(uint8(esz)), RAX, RAX)
	} else {
		shiftBytes(RAX, esz)
	}
	p := RSI
	for _, q := range []GPPhysical{R8, R9, R10, R11, R12, R13, R14} {
		LEAQ(Mem{Base: p, Index: RAX, Scale: 1}, q)
		p = q
	}
	if mask {
		VPBROADCASTD(bf16Hi(), Y15)
	}
	XORQ(RBX, RBX)
	if two {
		XORQ(RDX, RDX)
	}
	for i := range 8 {
		VXORPS(yregs[i], yregs[i], yregs[i])
	}
}

// prefetchNext4 prefetches the bytes at offset idx of the next four rows (R11..R14).
func prefetchNext4(idx GPPhysical) {
	for _, p := range []GPPhysical{R11, R12, R13, R14} {
		PREFETCHT0(Mem{Base: p, Index: idx, Scale: 1})
	}
}

// matVec4End adds each row's two accumulators, reduces the four rows to [y0, y1, y2, y3] and stores them at y.
func matVec4End() {
	for i := 0; i < 8; i += 2 {
		VADDPS(yregs[i+1], yregs[i], yregs[i])
	}
	hsum4(0, 2, 4, 6, X1)
	Load(Param("y"), RAX)
	VMOVUPS(X0, Mem{Base: RAX})
	VZEROUPPER()
	RET()
}

// bf16Hi is the mask of a bf16 pair's high half (the odd column of a 32-bit load), one copy in memory.
var bf16Hi = func() func() Mem {
	var m *Mem
	return func() Mem {
		if m == nil {
			g := GLOBL("bf16hi", RODATA|NOPTR)
			DATA(0, U32(0xffff0000))
			m = &g
		}
		return *m
	}
}()

// load16 loads 16 columns of one W row at m as two registers of 8 float32 lanes, lo and hi: f32 and f16 as the
// columns 0-7 and 8-15; bf16 (the pair form, x reordered by permuteBF16) as the even and the odd columns, one
// 32-byte load widened by a shift and by the mask in Y15.
func load16(w wload8, m Mem, lo, hi VecPhysical) {
	switch w.name {
	case "F32":
		VMOVUPS(m, lo)
		m.Disp += 32
		VMOVUPS(m, hi)
	case "F16":
		VCVTPH2PS(m, lo)
		m.Disp += 16
		VCVTPH2PS(m, hi)
	default:
		VMOVDQU(m, hi)
		VPSLLD(U8(16), hi, lo)
		VPAND(Y15, hi, hi)
	}
}

// fma16 multiplies 16 columns (x halves in Y8, Y9) of the four rows at SI, R8, R9, R10 (index idx, +off bytes)
// into Y0..Y7.
func fma16(w wload8, idx GPPhysical, off int) {
	rows := []GPPhysical{RSI, R8, R9, R10}
	for h := 0; h < 4; h += 2 {
		for i := range 2 {
			load16(w, Mem{Base: rows[h+i], Index: idx, Scale: 1, Disp: off}, yregs[10+2*i], yregs[11+2*i])
		}
		for i := range 4 {
			VFMADD231PS(yregs[8+i%2], yregs[10+i], yregs[2*h+i])
		}
	}
}

// avx2MatVec4PF writes matVec4{type}PF, the four-row kernel with a software prefetch of the same cache line of
// the next four rows (w + 4·stride): the next call's rows are in flight while these are summed. f32 takes 16
// columns (a line of each row) per step, then 8; f16 and bf16 32 (one line), then 16, and f16 then 8. The bf16
// form reads x reordered by permuteBF16 (xp) and n % 16 == 0; the others n % 8 == 0.
func avx2MatVec4PF(w wload8) {
	name := "matVec4" + w.name + "PF"
	x := "x"
	if w.name == "BF16" {
		x = "xp"
	}
	TEXT(name, NOSPLIT, fmt.Sprintf("func(w *%s, stride int, %s *float32, n int, y *float32)", w.wtype, x))
	Pragma("noescape")
	Doc(fmt.Sprintf("%s is the AVX2 four-row matrix-vector kernel of %s weights that prefetches the next four rows (generated).", name, w.name))
	matVec4Start(x, w.esz, false, w.name == "BF16", w.name != "F32")
	rows := []GPPhysical{RSI, R8, R9, R10}
	xload := func(disp int) {
		VMOVUPS(Mem{Base: RDI, Index: RBX, Scale: 1, Disp: disp}, Y8)
		VMOVUPS(Mem{Base: RDI, Index: RBX, Scale: 1, Disp: disp + 32}, Y9)
	}
	if w.name == "F32" {
		CMPQ(RCX, U8(16))
		JL(LabelRef("tail8"))
		Label("loop16")
		prefetchNext4(RBX)
		xload(0)
		fma16(w, RBX, 0)
		ADDQ(U8(64), RBX)
		SUBQ(U8(16), RCX)
		CMPQ(RCX, U8(16))
		JGE(LabelRef("loop16"))
		Label("tail8")
		CMPQ(RCX, U8(8))
		JL(LabelRef("reduce"))
		VMOVUPS(Mem{Base: RDI, Index: RBX, Scale: 1}, Y8)
		for i, p := range rows {
			VFMADD231PS(Mem{Base: p, Index: RBX, Scale: 1}, Y8, yregs[2*i])
		}
		Label("reduce")
		matVec4End()
		return
	}
	CMPQ(RCX, U8(32))
	JL(LabelRef("tail16"))
	Label("loop32")
	prefetchNext4(RDX)
	xload(0)
	fma16(w, RDX, 0)
	xload(64)
	fma16(w, RDX, 32)
	ADDQ(U8(128), RBX)
	ADDQ(U8(64), RDX)
	SUBQ(U8(32), RCX)
	CMPQ(RCX, U8(32))
	JGE(LabelRef("loop32"))
	Label("tail16")
	CMPQ(RCX, U8(16))
	if w.name == "BF16" {
		JL(LabelRef("reduce"))
		xload(0)
		fma16(w, RDX, 0)
	} else {
		JL(LabelRef("tail8"))
		xload(0)
		fma16(w, RDX, 0)
		ADDQ(U8(64), RBX)
		ADDQ(U8(32), RDX)
		SUBQ(U8(16), RCX)
		tail8(w)
	}
	Label("reduce")
	matVec4End()
}

// avx2MatVecRows writes matVecRows{type}: y[r] = Σ_c w[r·n+c]·x[c] for rows consecutive rows, one row at a time,
// n % 32 == 0: the weights are read as one sequential stream (the access the hardware prefetcher follows best),
// with a software prefetch of every 64-byte line of W: bf16 and f16 (one line per step) pfRows16 ahead, f32 (two
// lines per step) pfRowsF32 ahead; 32 columns per step into four
// accumulators. The bf16 form (matVecRowsBF16P) reads x reordered by permuteBF16 (xp): a 32-byte load of 16
// weights widens to the even columns with one shift and to the odd ones with one mask.
func avx2MatVecRows(w wload8) {
	name, x := "matVecRows"+w.name, "x"
	if w.name == "BF16" {
		name, x = name+"P", "xp"
	}
	TEXT(name, NOSPLIT, fmt.Sprintf("func(w *%s, %s *float32, n, rows int, y *float32)", w.wtype, x))
	Pragma("noescape")
	Doc(fmt.Sprintf("%s is the AVX2 matrix-vector kernel of %s weights, one row after the other (generated).", name, w.name))
	Load(Param("w"), RSI)
	Load(Param(x), RDI)
	Load(Param("n"), RCX)
	Load(Param("rows"), RDX)
	Load(Param("y"), R8)
	shiftBytes(RCX, w.esz)
	if w.name == "BF16" {
		VPBROADCASTD(bf16Hi(), Y15)
	}
	TESTQ(RDX, RDX)
	JZ(LabelRef("done"))
	Label("row")
	for i := range 4 {
		VXORPS(yregs[i], yregs[i], yregs[i])
	}
	XORQ(RBX, RBX)
	if w.name != "F32" {
		MOVQ(RDI, R9)
	}
	Label("loop")
	if w.name == "F32" {
		// both lines of the step's 128 bytes, 512 bytes ahead
		PREFETCHT0(Mem{Base: RSI, Index: RBX, Scale: 1, Disp: pfRowsF32})
		PREFETCHT0(Mem{Base: RSI, Index: RBX, Scale: 1, Disp: pfRowsF32 + 64})
	} else {
		PREFETCHT0(Mem{Base: RSI, Index: RBX, Scale: 1, Disp: pfRows16[w.name]})
	}
	wm := func(disp int) Mem { return Mem{Base: RSI, Index: RBX, Scale: 1, Disp: disp} }
	switch w.name {
	case "F32":
		for i := range 4 {
			VMOVUPS(Mem{Base: RDI, Index: RBX, Scale: 1, Disp: 32 * i}, yregs[4+i])
		}
		for i := range 4 {
			VFMADD231PS(wm(32*i), yregs[4+i], yregs[i])
		}
		ADDQ(U8(128), RBX)
	case "BF16":
		VMOVDQU(wm(0), Y4)
		VMOVDQU(wm(32), Y5)
		VPSLLD(U8(16), Y4, Y6)
		VPAND(Y15, Y4, Y4)
		VPSLLD(U8(16), Y5, Y7)
		VPAND(Y15, Y5, Y5)
		for i, y := range []VecPhysical{Y6, Y4, Y7, Y5} {
			VFMADD231PS(Mem{Base: R9, Disp: 32 * i}, y, yregs[i])
		}
	default:
		for i := range 4 {
			VCVTPH2PS(wm(16*i), yregs[4+i])
		}
		for i := range 4 {
			VFMADD231PS(Mem{Base: R9, Disp: 32 * i}, yregs[4+i], yregs[i])
		}
	}
	if w.name != "F32" {
		ADDQ(U8(64), RBX)
		ADDQ(U32(128), R9)
	}
	CMPQ(RBX, RCX)
	JL(LabelRef("loop"))
	// the row's sum to y, then the next row (CX bytes further)
	VADDPS(Y1, Y0, Y0)
	VADDPS(Y3, Y2, Y2)
	VADDPS(Y2, Y0, Y0)
	VEXTRACTF128(U8(1), Y0, X1)
	VADDPS(X1, X0, X0)
	VHADDPS(X0, X0, X0)
	VHADDPS(X0, X0, X0)
	MOVSS(X0, Mem{Base: R8})
	ADDQ(RCX, RSI)
	ADDQ(U8(4), R8)
	DECQ(RDX)
	JNZ(LabelRef("row"))
	Label("done")
	VZEROUPPER()
	RET()
}
