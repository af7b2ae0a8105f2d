package main

//lint:file-ignore ST1001 avo's DSL reads as assembly through its dot imports, as in avo's own examples

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// AVX2 tile shapes: up to avx2Rows rows of X by avx2Cols rows of W (rows×cols accumulators, cols widened weight
// registers and one activation register fill the 16 YMM registers).
const (
	avx2Rows = 4
	avx2Cols = 3
)

// avx2TileRC writes mmT{rows}x{cols}{type}: C[i][j] (+)= Σ_l X[i][l]·W[j][l] for rows rows of X (stride ldx
// floats) and cols rows of W (stride ldw elements) over k columns, k % 16 == 0, k > 0; acc != 0 adds to C
// instead of overwriting it; each step prefetches the bytes pf further on of every W row (pf = cols·ldw bytes
// streams the next tile's rows while these are summed; 0 re-touches the row being read). 16 columns per step:
// each accumulator Y(cols·i+j) gets two FMAs, columns 0-7 then 8-15 for f32 and f16; bf16 reads X in
// permuteBF16's order (each block of 16: the 8 even columns, then the 8 odd ones) and widens one 32-byte load
// of 16 weights to the even lanes by a shift and, loaded again, to the odd lanes by a mask, the even products
// first. Every shape sums each element in the same order, so a product's result does not depend on its
// number of rows. The row sums end in one horizontal reduction per row.
func avx2TileRC(w wload8, rows, cols int) {
	name := fmt.Sprintf("mmT%dx%d%s", rows, cols, w.name)
	TEXT(name, NOSPLIT, fmt.Sprintf("func(x *float32, ldx int, w *%s, ldw int, k int, c *float32, ldc int, acc int, pf int)", w.wtype))
	Pragma("noescape")
	Doc(fmt.Sprintf("%s is the AVX2 %d×%d tile of %s weights (generated).", name, rows, cols, w.name))
	xp := []GPPhysical{RSI, R8, R9, R10}[:rows]
	wp := []GPPhysical{RDI, R11, R12}[:cols]
	rowPointers(xp, "x", "ldx", RAX, 2)
	wshift := uint64(1)
	if w.esz == 4 {
		wshift = 2
	}
	rowPointers(wp, "w", "ldw", RAX, wshift)
	Load(Param("pf"), RBX)
	Load(Param("k"), RCX)
	acc := func(i, j int) VecPhysical { return yregs[cols*i+j] }
	for i := range rows * cols {
		VXORPS(yregs[i], yregs[i], yregs[i])
	}
	wr := func(j int) VecPhysical { return yregs[12+j] }
	Label("loop")
	for _, p := range wp {
		PREFETCHT0(Mem{Base: p, Index: RBX, Scale: 1})
	}
	for h := range 2 {
		for j, p := range wp {
			switch w.name {
			case "F32":
				VMOVUPS(Mem{Base: p, Disp: 32 * h}, wr(j))
			case "F16":
				VCVTPH2PS(Mem{Base: p, Disp: 16 * h}, wr(j))
			default:
				VMOVDQU(Mem{Base: p}, wr(j))
				if h == 0 {
					VPSLLD(U8(16), wr(j), wr(j))
				} else {
					VPAND(bf16HiY(), wr(j), wr(j))
				}
			}
		}
		for i, p := range xp {
			VMOVUPS(Mem{Base: p, Disp: 32 * h}, Y15)
			for j := range wp {
				VFMADD231PS(wr(j), Y15, acc(i, j))
			}
		}
	}
	for _, p := range xp {
		ADDQ(U8(64), p)
	}
	for _, p := range wp {
		ADDQ(U8(uint8(16*w.esz)), p)
	}
	SUBQ(U8(16), RCX)
	JG(LabelRef("loop"))

	// reduce: row i's cols sums to the low lanes of acc(i, 0)
	for i := range rows {
		a := acc(i, 0)
		// the same order for every cols: ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)) (a missing column repeats one)
		b, c := acc(i, min(1, cols-1)), acc(i, min(2, cols-1))
		VHADDPS(b, a, a)
		if cols == 3 {
			VHADDPS(c, c, c)
		}
		VHADDPS(c, a, a)
		VEXTRACTF128(U8(1), a, X15)
		VADDPS(X15, a.AsX(), a.AsX()) // [Σa Σb Σc ·]
	}
	cp := []GPPhysical{RAX, RCX, RDX, RSI}[:rows]
	rowPointers(cp, "c", "ldc", RBX, 2)
	// with acc, C's values (cols lanes of X15) added
	Load(Param("acc"), RDI)
	TESTQ(RDI, RDI)
	JE(LabelRef("store"))
	for i, p := range cp {
		a, t := acc(i, 0).AsX(), X15
		switch cols {
		case 1:
			VMOVSS(Mem{Base: p}, t)
		case 2:
			VMOVSD(Mem{Base: p}, t)
		default:
			VMOVSD(Mem{Base: p}, t)
			VINSERTPS(U8(2<<4), Mem{Base: p, Disp: 8}, t, t)
		}
		VADDPS(t, a, a)
	}
	Label("store")
	for i, p := range cp {
		a := acc(i, 0).AsX()
		switch cols {
		case 1:
			VMOVSS(a, Mem{Base: p})
		case 2:
			VMOVSD(a, Mem{Base: p})
		default:
			VMOVSD(a, Mem{Base: p})
			VEXTRACTPS(U8(2), a, Mem{Base: p, Disp: 8})
		}
	}
	VZEROUPPER()
	RET()
}

// bf16HiY is bf16Hi as a 32-byte vector (a memory operand of VPAND).
var bf16HiY = func() func() Mem {
	var m *Mem
	return func() Mem {
		if m == nil {
			g := GLOBL("bf16hiy", RODATA|NOPTR)
			for i := range 8 {
				DATA(4*i, U32(0xffff0000))
			}
			m = &g
		}
		return *m
	}
}()

// avx2CvtF16 writes cvtF16F32: dst[i] = f16(src[i]) as float32 for n % 8 == 0, n > 0 (VCVTPH2PS, exact), 32
// per step, then 8: the AVX2 f16 products of many rows convert a block of W once for all of them.
func avx2CvtF16() {
	TEXT("cvtF16F32", NOSPLIT, "func(dst *float32, src *uint16, n int)")
	Pragma("noescape")
	Doc("cvtF16F32 widens n IEEE half values to float32 (generated).")
	Load(Param("dst"), RDI)
	Load(Param("src"), RSI)
	Load(Param("n"), RCX)
	CMPQ(RCX, U8(32))
	JL(LabelRef("tail"))
	Label("loop32")
	for i := range 4 {
		VCVTPH2PS(Mem{Base: RSI, Disp: 16 * i}, yregs[i])
	}
	for i := range 4 {
		VMOVUPS(yregs[i], Mem{Base: RDI, Disp: 32 * i})
	}
	ADDQ(U8(64), RSI)
	ADDQ(U8(128), RDI)
	SUBQ(U8(32), RCX)
	CMPQ(RCX, U8(32))
	JGE(LabelRef("loop32"))
	Label("tail")
	TESTQ(RCX, RCX)
	JE(LabelRef("done"))
	Label("loop8")
	VCVTPH2PS(Mem{Base: RSI}, Y0)
	VMOVUPS(Y0, Mem{Base: RDI})
	ADDQ(U8(16), RSI)
	ADDQ(U8(32), RDI)
	SUBQ(U8(8), RCX)
	JG(LabelRef("loop8"))
	Label("done")
	VZEROUPPER()
	RET()
}

// rowPointers loads the parameter base into ptrs[0] and sets each next pointer one row further: the parameter
// stride (in elements) shifted left by shift into tmp, then ptrs[i] = ptrs[i-1] + tmp.
func rowPointers(ptrs []GPPhysical, base, stride string, tmp GPPhysical, shift uint64) {
	Load(Param(base), ptrs[0])
	Load(Param(stride), tmp)
	SHLQ(U8(shift), tmp)
	for i := 1; i < len(ptrs); i++ {
		LEAQ(Mem{Base: ptrs[i-1], Index: tmp, Scale: 1}, ptrs[i])
	}
}
