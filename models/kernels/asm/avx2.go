package main

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

// avx2Tile writes the AVX2 tile mmTile{rows}x4{type}[PF]: C[i][j] (+)= Σ_l X[i][l]·W[j][l] for rows (2 or 3) rows
// of X (stride ldx floats) and four rows of W (stride ldw elements) over k columns, k % 8 == 0, k > 0; acc != 0
// adds to C instead of overwriting it. Row i's accumulators are Y4i..Y4i+3, summed in the same order by every
// form. The 3-row form advances its pointers (BX holds 4·ldw bytes); pf makes it prefetch the same bytes of the
// next W quad, so that the first row pass over a tile streams W from memory without waiting on each quad. The
// 2-row form (the leftover rows of the 3-row blocking) walks indices instead; with ldx == 0 and ldc == 0 it
// computes one row: both results are read (acc) before either is stored, so the row is written twice with the
// same value.
func avx2Tile(w wload8, rows int, pf bool) {
	name := fmt.Sprintf("mmTile%dx4%s", rows, w.name)
	if pf {
		name += "PF"
	}
	TEXT(name, NOSPLIT, fmt.Sprintf("func(x *float32, ldx int, w *%s, ldw int, k int, c *float32, ldc int, acc int)", w.wtype))
	Pragma("noescape")
	Doc(fmt.Sprintf("%s is the AVX2 %d×4 tile of %s weights (generated).", name, rows, w.name))
	Load(Param("x"), RSI)
	Load(Param("ldx"), RAX)
	SHLQ(U8(2), RAX)
	LEAQ(Mem{Base: RSI, Index: RAX, Scale: 1}, R8)
	if rows == 3 {
		LEAQ(Mem{Base: R8, Index: RAX, Scale: 1}, R9)
	}
	Load(Param("w"), RDI)
	Load(Param("ldw"), RAX)
	IMUL3Q(U8(uint8(w.esz)), RAX, RAX)
	LEAQ(Mem{Base: RDI, Index: RAX, Scale: 1}, R10)
	LEAQ(Mem{Base: R10, Index: RAX, Scale: 1}, R11)
	LEAQ(Mem{Base: R11, Index: RAX, Scale: 1}, R12)
	wp := []GPPhysical{RDI, R10, R11, R12}
	if rows == 3 {
		SHLQ(U8(2), RAX)
		MOVQ(RAX, RBX)
		Load(Param("k"), RCX)
	} else {
		Load(Param("k"), RCX)
		XORQ(RBX, RBX)
		XORQ(RDX, RDX)
	}
	for i := range 4 * rows {
		VXORPS(yregs[i], yregs[i], yregs[i])
	}
	Label("loop")
	if rows == 3 {
		if pf {
			for _, p := range wp {
				PREFETCHT0(Mem{Base: p, Index: RBX, Scale: 1})
			}
		}
		for i, p := range []GPPhysical{RSI, R8, R9} {
			VMOVUPS(Mem{Base: p}, yregs[12+i])
		}
		for j, p := range wp {
			w.load(Mem{Base: p}, Y15)
			for i := range 3 {
				VFMADD231PS(yregs[12+i], Y15, yregs[4*i+j])
			}
		}
		for _, p := range []GPPhysical{RSI, R8, R9} {
			ADDQ(U8(32), p)
		}
		for _, p := range wp {
			ADDQ(U8(uint8(8*w.esz)), p)
		}
	} else {
		VMOVUPS(Mem{Base: RSI, Index: RBX, Scale: 1}, Y12)
		VMOVUPS(Mem{Base: R8, Index: RBX, Scale: 1}, Y13)
		for j := 0; j < 4; j += 2 {
			w.load(Mem{Base: wp[j], Index: RDX, Scale: 1}, Y14)
			w.load(Mem{Base: wp[j+1], Index: RDX, Scale: 1}, Y15)
			for c, wy := range []VecPhysical{Y14, Y15} {
				VFMADD231PS(Y12, wy, yregs[j+c])
				VFMADD231PS(Y13, wy, yregs[4+j+c])
			}
		}
		ADDQ(U8(32), RBX)
		ADDQ(U8(uint8(8*w.esz)), RDX)
	}
	SUBQ(U8(8), RCX)
	JG(LabelRef("loop"))
	for i := range rows {
		hsum4(4*i, 4*i+1, 4*i+2, 4*i+3, X12)
	}
	cp := []GPPhysical{RAX, RCX, RDX}[:rows]
	Load(Param("c"), RAX)
	Load(Param("ldc"), RBX)
	SHLQ(U8(2), RBX)
	for i := 1; i < rows; i++ {
		LEAQ(Mem{Base: cp[i-1], Index: RBX, Scale: 1}, cp[i])
	}
	Load(Param("acc"), R13)
	TESTQ(R13, R13)
	JE(LabelRef("store"))
	for i, p := range cp {
		VADDPS(Mem{Base: p}, xregs[4*i], xregs[4*i])
	}
	Label("store")
	for i, p := range cp {
		VMOVUPS(xregs[4*i], Mem{Base: p})
	}
	VZEROUPPER()
	RET()
}
