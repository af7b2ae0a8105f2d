package main

//lint:file-ignore ST1001 avo's DSL reads as assembly through its dot imports, as in avo's own examples

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// bcastTile writes the 6-row broadcast tile of Gemm NN/TN, gemmBcast6x16 (AVX2) or gemmBcast6x32Z (AVX-512):
// C[r][0:W] (+)= alpha·Σ_l A(r,l)·B[l][0:W] for r < 6, k > 0, with W two registers of lanes. A(r,l) is at byte
// address a + r·rs + l·ls (rows or columns of A: NN and TN), B's row l at b + 4·l·ldb; acc != 0 adds to C
// instead of overwriting it. Vectors: row r's accumulators 2r, 2r+1; B's row 12, 13; the broadcasts 14, 15
// (alternating by row). General-purpose: A rows R8..R13 (offset BX, step ls in DX), B at DI (row bytes SI), k
// in CX.
func bcastTile(wide bool) {
	name, vr, vb := "gemmBcast6x16", yregs, 32
	zero := func(v VecPhysical) { VXORPS(v, v, v) }
	if wide {
		name, vr, vb = "gemmBcast6x32Z", zregs, 64
		zero = func(v VecPhysical) { VPXORD(v, v, v) }
	}
	TEXT(name, NOSPLIT, "func(a *float32, rs, ls int, b *float32, ldb int, k int, c *float32, ldc int, acc int, alpha float32)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s is the 6-row broadcast tile of Gemm, %d columns wide (generated).", name, 2*vb/4))
	arow := []GPPhysical{R8, R9, R10, R11, R12, R13}
	Load(Param("a"), R8)
	Load(Param("rs"), RAX)
	for r := 1; r < 6; r++ {
		LEAQ(Mem{Base: arow[r-1], Index: RAX, Scale: 1}, arow[r])
	}
	Load(Param("ls"), RDX)
	Load(Param("b"), RDI)
	Load(Param("ldb"), RSI)
	SHLQ(U8(2), RSI)
	Load(Param("k"), RCX)
	XORQ(RBX, RBX)
	for i := range 12 {
		zero(vr[i])
	}
	Label("loop")
	VMOVUPS(Mem{Base: RDI}, vr[12])
	VMOVUPS(Mem{Base: RDI, Disp: vb}, vr[13])
	for r, p := range arow {
		t := vr[14+r%2]
		VBROADCASTSS(Mem{Base: p, Index: RBX, Scale: 1}, t)
		VFMADD231PS(t, vr[12], vr[2*r])
		VFMADD231PS(t, vr[13], vr[2*r+1])
	}
	ADDQ(RDX, RBX)
	ADDQ(RSI, RDI)
	DECQ(RCX)
	JNZ(LabelRef("loop"))
	VBROADCASTSS(NewParamAddr("alpha", 72), vr[14])
	for i := range 12 {
		VMULPS(vr[14], vr[i], vr[i])
	}
	Load(Param("c"), RAX)
	Load(Param("ldc"), RBX)
	SHLQ(U8(2), RBX)
	Load(Param("acc"), RCX)
	TESTQ(RCX, RCX)
	JE(LabelRef("store"))
	for _, add := range []bool{true, false} {
		if !add {
			Label("store")
		}
		for r := range 6 {
			c0, c1 := vr[2*r], vr[2*r+1]
			if add {
				VADDPS(Mem{Base: RAX}, c0, c0)
				VADDPS(Mem{Base: RAX, Disp: vb}, c1, c1)
			}
			VMOVUPS(c0, Mem{Base: RAX})
			VMOVUPS(c1, Mem{Base: RAX, Disp: vb})
			ADDQ(RBX, RAX)
		}
		VZEROUPPER()
		RET()
	}
}
