package main

//lint:file-ignore ST1001 avo's DSL reads as assembly through its dot imports, as in avo's own examples

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// lowRankY writes lowRankBF16Y{rows}, the AVX2 form of lowRankBF16R{rows}: Y[i, :] += Σ_l T[i, l]·Bᵀ[l, :] with
// T[i, l] = s·Σ_j X[i, j]·A[l, j] for rows (1 or 2) rows of X (ldx floats apart) and of Y (ldy floats apart), a
// bf16 A [r, k] and a bf16 Bᵀ [r, n]; r % 4 == 0, k % 16 == 0, k > 0, n % 16 == 0. T is written to t ([rows, r]).
//
// Each element of T is summed as the AVX2 tiles of MatMulBF16T sum it (mmT*BF16, two or more rows): the rows of X
// are first put in permuteBF16's order into xp ([rows, k], each block of 16 the 8 even columns, then the 8 odd
// ones), one 32-byte load of 16 weights of A widened to the even lanes by a shift and to the odd lanes by a
// mask, the even products first, one 8-lane accumulator per element over a K chunk of kc columns (the tiles'
// split of K: avxK), the chunk's lanes reduced as ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)) and added to the sum of
// the chunks before; the sum is then multiplied by s, as Scale does. Y is added to as MatMulAddBF16 adds (from
// Y's value, l in order, one FMA each), but 16 columns of Bᵀ are widened from one 32-byte load by a shift (even
// columns) and a mask (odd ones) against Y's block held de-interleaved in registers (even columns, odd columns;
// interleaved back before it is stored): half the widening instructions of a zero extension per 8 columns,
// which on Zen 1 share the FMA pipes. While it reads A it prefetches pfan elements from pfa at the same pace,
// and pfbn from pfb while it reads Bᵀ: the factors of the product the caller runs next.
//
// Vector registers: shrink accumulators Y0..Y(4·rows−1) (row i, A row c: Y(4i+c)), widened A rows Y8..Y11, the
// bf16 high-half mask Y12, an X vector Y13, reduction scratch X14, s in Y15; expand accumulators (row i,
// 16-column block b: even Y(2(S·i+b)), odd Y(2(S·i+b)+1)), T broadcasts Y8, Y9, a Bᵀ vector Y10 (then its odd
// columns) and Y11 (its even ones), Y13..Y15 scratch.
func lowRankY(rows int) {
	name := fmt.Sprintf("lowRankBF16Y%d", rows)
	TEXT(name, NOSPLIT, "func(x *float32, ldx int, xp *float32, a *uint16, k int, kc int, r int, s float32, t *float32, bt *uint16, n int, y *float32, ldy int, pfa *uint16, pfan int, pfb *uint16, pfbn int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s is the AVX2 low-rank product of %d row(s) of X: shrink, scale and expand in one pass (generated).", name, rows))
	mask := Y12
	VPCMPEQD(mask, mask, mask)
	VPSLLD(U8(16), mask, mask)

	// X's rows into xp in permuteBF16's order
	Load(Param("x"), RSI)
	Load(Param("ldx"), R11)
	SHLQ(U8(2), R11)
	Load(Param("xp"), RDI)
	for i := range rows {
		if i > 0 {
			Load(Param("x"), RSI)
			ADDQ(R11, RSI)
		}
		Load(Param("k"), RCX)
		SHRQ(U8(4), RCX)
		Label(fmt.Sprintf("perm%d", i))
		VMOVUPS(Mem{Base: RSI}, Y0)
		VMOVUPS(Mem{Base: RSI, Disp: 32}, Y1)
		VSHUFPS(U8(0x88), Y1, Y0, Y2) // x0 x2 x8 x10 | x4 x6 x12 x14
		VSHUFPS(U8(0xDD), Y1, Y0, Y3) // the odd ones
		VPERMPD(U8(0xD8), Y2, Y2)     // x0 x2 x4 x6 | x8 x10 x12 x14
		VPERMPD(U8(0xD8), Y3, Y3)
		VMOVUPS(Y2, Mem{Base: RDI})
		VMOVUPS(Y3, Mem{Base: RDI, Disp: 32})
		ADDQ(U8(64), RSI)
		ADDQ(U8(64), RDI)
		DECQ(RCX)
		JNZ(LabelRef(fmt.Sprintf("perm%d", i)))
	}

	// shrink: 4 rows of A at a time against every row of X, chunk by chunk over K
	Load(Param("s"), X15)
	VBROADCASTSS(X15, Y15)
	Load(Param("k"), RDI)
	SHLQ(U8(1), RDI) // A's row bytes
	Load(Param("k"), R11)
	SHLQ(U8(2), R11) // xp's row bytes
	shrinkPrologue()
	Label("group")
	MOVQ(RAX, RSI)
	LEAQ(Mem{Base: RAX, Index: RDI, Scale: 2}, R10)
	ADDQ(RDI, R10)
	Load(Param("xp"), R8)
	Load(Param("k"), RDX) // columns of K left
	XORQ(R14, R14)        // chunks done
	Label("chunk")
	for i := 0; i < rows*lrCols; i++ {
		VXORPS(yregs[i], yregs[i], yregs[i])
	}
	Load(Param("kc"), RCX)
	CMPQ(RDX, RCX)
	CMOVQLT(RDX, RCX)
	SUBQ(RCX, RDX)
	SHRQ(U8(4), RCX)
	Label("step")
	lrShrinkStepY(rows)
	DECQ(RCX)
	JNZ(LabelRef("step"))
	// the chunk's sums of row i to Xi·4, plus the chunks before (t), times s after the last chunk
	for i := range rows {
		a := 4 * i
		VHADDPS(yregs[a+1], yregs[a], yregs[a])
		VHADDPS(yregs[a+3], yregs[a+2], yregs[a+2])
		VHADDPS(yregs[a+2], yregs[a], yregs[a])
		VEXTRACTF128(U8(1), yregs[a], X14)
		VADDPS(X14, xregs[a], xregs[a])
	}
	Load(Param("r"), RCX)
	SHLQ(U8(2), RCX) // T's row bytes
	trow := func(i int) Mem {
		m := Mem{Base: RBX}
		if i > 0 {
			m.Index, m.Scale = RCX, 1
		}
		return m
	}
	TESTQ(R14, R14)
	JZ(LabelRef("first"))
	for i := range rows {
		VADDPS(trow(i), xregs[4*i], xregs[4*i])
	}
	Label("first")
	TESTQ(RDX, RDX)
	JNZ(LabelRef("store"))
	for i := range rows {
		VMULPS(X15, xregs[4*i], xregs[4*i])
	}
	Label("store")
	for i := range rows {
		VMOVUPS(xregs[4*i], trow(i))
	}
	INCQ(R14)
	TESTQ(RDX, RDX)
	JNZ(LabelRef("chunk"))
	ADDQ(U8(16), RBX)
	LEAQ(Mem{Base: RAX, Index: RDI, Scale: 4}, RAX)
	DECQ(R9)
	JNZ(LabelRef("group"))

	// expand: blocks of 16·S columns of Y (S = 4 for one row, 2 for two; then S = 1), every row of Bᵀ in turn
	expandPrologue()
	for _, S := range []int{4 / rows, 1} {
		cols := 16 * S
		blk := fmt.Sprintf("cols%d", cols)
		Label(blk)
		CMPQ(RDX, U8(uint8(cols)))
		JL(LabelRef(fmt.Sprintf("after%d", cols)))
		yrow := func(i, disp int) Mem {
			m := Mem{Base: R8, Disp: disp}
			if i > 0 {
				m.Index, m.Scale = R9, 1
			}
			return m
		}
		ev := func(i, b int) VecPhysical { return yregs[2*(S*i+b)] }
		od := func(i, b int) VecPhysical { return yregs[2*(S*i+b)+1] }
		for i := range rows {
			for b := range S {
				VMOVUPS(yrow(i, 64*b), Y13)
				VMOVUPS(yrow(i, 64*b+32), Y14)
				VSHUFPS(U8(0x88), Y14, Y13, ev(i, b))
				VSHUFPS(U8(0xDD), Y14, Y13, od(i, b))
				VPERMPD(U8(0xD8), ev(i, b), ev(i, b))
				VPERMPD(U8(0xD8), od(i, b), od(i, b))
			}
		}
		MOVQ(RSI, RAX)
		Load(Param("t"), R10)
		Load(Param("r"), RCX)
		Label(fmt.Sprintf("l%d", cols))
		for i := range rows {
			m := Mem{Base: R10}
			if i > 0 {
				m.Index, m.Scale = R11, 1
			}
			VBROADCASTSS(m, yregs[8+i])
		}
		for b := range S {
			VMOVDQU(Mem{Base: RAX, Disp: 32 * b}, Y10)
			VPSLLD(U8(16), Y10, Y11)
			VPAND(mask, Y10, Y10)
			for i := range rows {
				VFMADD231PS(Y11, yregs[8+i], ev(i, b))
				VFMADD231PS(Y10, yregs[8+i], od(i, b))
			}
		}
		prefetchStep((S + 1) / 2)
		ADDQ(RDI, RAX)
		ADDQ(U8(4), R10)
		DECQ(RCX)
		JNZ(LabelRef(fmt.Sprintf("l%d", cols)))
		for i := range rows {
			for b := range S {
				VUNPCKLPS(od(i, b), ev(i, b), Y13) // e0 o0 e1 o1 | e4 o4 e5 o5
				VUNPCKHPS(od(i, b), ev(i, b), Y14) // e2 o2 e3 o3 | e6 o6 e7 o7
				VPERM2F128(U8(0x20), Y14, Y13, Y15)
				VPERM2F128(U8(0x31), Y14, Y13, Y13)
				VMOVUPS(Y15, yrow(i, 64*b))
				VMOVUPS(Y13, yrow(i, 64*b+32))
			}
		}
		ADDQ(U32(uint32(4*cols)), R8)
		ADDQ(U8(uint8(2*cols)), RSI)
		SUBQ(U8(uint8(cols)), RDX)
		JMP(LabelRef(blk))
		Label(fmt.Sprintf("after%d", cols))
	}
	VZEROUPPER()
	RET()
}

// lrShrinkStepY is one step (16 columns of K) of lowRankY's shrink: the lrCols rows of A (SI, SI+DI, SI+2·DI,
// R10) widened to their even lanes, two lines of the next factors prefetched, each row of X (R8, R8+R11: xp)
// multiplied into its accumulators; then the odd lanes against the odd half of X.
func lrShrinkStepY(rows int) {
	cols := []Mem{{Base: RSI}, {Base: RSI, Index: RDI, Scale: 1}, {Base: RSI, Index: RDI, Scale: 2}, {Base: R10}}
	w := func(c int) VecPhysical { return yregs[8+c] }
	for h := range 2 {
		for c := range lrCols {
			if h == 0 {
				VMOVDQU(cols[c], w(c))
				VPSLLD(U8(16), w(c), w(c))
			} else {
				VPAND(cols[c], Y12, w(c))
			}
		}
		if h == 0 {
			prefetchStep(2)
		}
		for i := range rows {
			m := Mem{Base: R8, Disp: 32 * h}
			if i > 0 {
				m.Index, m.Scale = R11, 1
			}
			VMOVUPS(m, Y13)
			for c := range lrCols {
				VFMADD231PS(w(c), Y13, yregs[4*i+c])
			}
		}
	}
	ADDQ(U8(32), RSI)
	ADDQ(U8(32), R10)
	ADDQ(U8(64), R8)
}
