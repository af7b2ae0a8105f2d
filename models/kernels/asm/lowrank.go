package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// lrRows is the most rows of X one low-rank kernel takes (the caller runs more as pairs: the factors are then
// in cache); lrCols is the rank rows of A one pass of the shrink reads side by side.
const (
	lrRows = 2
	lrCols = 4
)

// Register roles of the low-rank kernel: accumulators Z0..Z(rows·lrCols−1), factor vectors Z20..Z23, activations
// Z24 and Z25 (by row), the scale Z26, Z27..Z30 sum4's temporaries, Z31 scratch.
const (
	lrW     = 20
	lrX     = 24
	lrScale = 26
)

// lowRank writes lowRankBF16R{rows}: Y[i, :] += Σ_l T[i, l]·Bᵀ[l, :] with T[i, l] = s·Σ_j X[i, j]·A[l, j], for rows
// rows of X (ldx floats apart) and of Y (ldy floats apart), a bf16 A [r, k] and a bf16 Bᵀ [r, n]; r % 4 == 0,
// n % 16 == 0. T is written to t ([rows, r]). Each T element is summed as the tiles sum it (one 16-lane
// accumulator over the k steps, the masked tail step, then reduceStore's lane reduction), then multiplied by
// s; Y is added to as MatMulAddBF16 adds (from Y's value, l in order, one FMA each): the result equals the
// tiles', Scale's and the expand's. While it reads A it prefetches pfan elements from pfa at the same pace, and
// pfbn from pfb while it reads Bᵀ: the factors of the product the caller runs next.
func lowRank(rows int) {
	name := fmt.Sprintf("lowRankBF16R%d", rows)
	TEXT(name, NOSPLIT, "func(x *float32, ldx int, a *uint16, k int, r int, s float32, t *float32, bt *uint16, n int, y *float32, ldy int, pfa *uint16, pfan int, pfb *uint16, pfbn int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s is the low-rank product of %d row(s) of X: shrink, scale and expand in one pass (generated).", name, rows))
	// mask of the k tail, the scale
	Load(Param("k"), RDX)
	ANDQ(U8(15), RDX)
	MOVL(U32(1), EAX)
	MOVQ(RDX, RCX)
	SHLL(CL, EAX)
	DECL(EAX)
	KMOVD(EAX, K1)
	Load(Param("s"), X0)
	VBROADCASTSS(X0, zregs[lrScale])
	Load(Param("ldx"), R11)
	SHLQ(U8(2), R11)
	Load(Param("k"), RDI)
	SHLQ(U8(1), RDI)
	shrinkPrologue()

	// shrink: lrCols rows of A at a time against every row of X, over the whole k
	Label("group")
	for i := 0; i < rows*lrCols; i++ {
		VPXORD(zregs[i], zregs[i], zregs[i])
	}
	MOVQ(RAX, RSI)
	LEAQ(Mem{Base: RAX, Index: RDI, Scale: 2}, R10)
	ADDQ(RDI, R10)
	Load(Param("x"), R8)
	Load(Param("k"), RCX)
	SHRQ(U8(4), RCX)
	JZ(LabelRef("tail"))
	Label("loop")
	lrShrinkStep(rows, false)
	DECQ(RCX)
	JNZ(LabelRef("loop"))
	Label("tail")
	TESTQ(RDX, RDX)
	JZ(LabelRef("reduce"))
	lrShrinkStep(rows, true)
	Label("reduce")
	foldLanes(rows * lrCols)
	Load(Param("r"), RCX)
	SHLQ(U8(2), RCX)
	for r := 0; r < rows; r++ {
		s := sum4(r, lrCols)
		VMULPS(xregs[lrScale], s, s)
		m := Mem{Base: RBX}
		if r > 0 {
			m.Index, m.Scale = RCX, 1
		}
		VMOVUPS(s, m)
	}
	ADDQ(U8(16), RBX)
	LEAQ(Mem{Base: RAX, Index: RDI, Scale: 4}, RAX)
	DECQ(R9)
	JNZ(LabelRef("group"))

	// expand: blocks of 64 columns (then 16) of Y, the accumulators starting from Y, every row of Bᵀ in turn
	expandPrologue()
	for _, vecs := range []int{4, 1} {
		blk := fmt.Sprintf("cols%d", 16*vecs)
		Label(blk)
		CMPQ(RDX, U8(uint8(16*vecs)))
		JL(LabelRef(fmt.Sprintf("after%d", 16*vecs)))
		yrow := func(r, v int) Mem {
			m := Mem{Base: R8, Disp: 64 * v}
			if r > 0 {
				m.Index, m.Scale = R9, 1
			}
			return m
		}
		for r := 0; r < rows; r++ {
			for v := 0; v < vecs; v++ {
				VMOVUPS(yrow(r, v), zregs[r*vecs+v])
			}
		}
		MOVQ(RSI, RAX)
		Load(Param("t"), R10)
		Load(Param("r"), RCX)
		Label(fmt.Sprintf("l%d", 16*vecs))
		for v := 0; v < vecs; v++ {
			w := zregs[lrW+v]
			VPMOVZXWD(Mem{Base: RAX, Disp: 32 * v}, w)
			VPSLLD(U8(16), w, w)
		}
		prefetchStep((vecs + 1) / 2)
		for r := 0; r < rows; r++ {
			m := Mem{Base: R10}
			if r > 0 {
				m.Index, m.Scale = R11, 1
			}
			tb := zregs[lrX+r]
			VBROADCASTSS(m, tb)
			for v := 0; v < vecs; v++ {
				VFMADD231PS(zregs[lrW+v], tb, zregs[r*vecs+v])
			}
		}
		ADDQ(RDI, RAX)
		ADDQ(U8(4), R10)
		DECQ(RCX)
		JNZ(LabelRef(fmt.Sprintf("l%d", 16*vecs)))
		for r := 0; r < rows; r++ {
			for v := 0; v < vecs; v++ {
				VMOVUPS(zregs[r*vecs+v], yrow(r, v))
			}
		}
		ADDQ(U32(uint32(64*vecs)), R8)
		ADDQ(U8(uint8(32*vecs)), RSI)
		SUBQ(U8(uint8(16*vecs)), RDX)
		JMP(LabelRef(blk))
		Label(fmt.Sprintf("after%d", 16*vecs))
	}
	VZEROUPPER()
	RET()
}

// prefetchRange sets the prefetch cursor R12 to the uint16 parameter p and its end R13 to the last 128 bytes
// of its n elements (p itself when shorter): prefetchStep never runs past them.
func prefetchRange(p, n string) {
	Load(Param(p), R12)
	Load(Param(n), R13)
	SHLQ(U8(1), R13)
	SUBQ(U8(128), R13)
	XORQ(RCX, RCX)
	TESTQ(R13, R13)
	CMOVQLT(RCX, R13)
	ADDQ(R12, R13)
}

// prefetchStep prefetches lines cache lines from the cursor R12 and moves it on, stopping at R13.
func prefetchStep(lines int) {
	for i := 0; i < lines; i++ {
		PREFETCHT0(Mem{Base: R12, Disp: 64 * i})
	}
	ADDQ(U8(uint8(64*lines)), R12)
	CMPQ(R12, R13)
	CMOVQHI(R13, R12)
}

// lrShrinkStep is one step of the shrink: the lrCols rows of A (SI, SI+DI, SI+2·DI, R10) widened, two lines
// of the next factors prefetched, then each row of X (R8, R8+R11) multiplied into its accumulators.
func lrShrinkStep(rows int, masked bool) {
	cols := []Mem{{Base: RSI}, {Base: RSI, Index: RDI, Scale: 1}, {Base: RSI, Index: RDI, Scale: 2}, {Base: R10}}
	for c := 0; c < lrCols; c++ {
		bf16Wide.wload(cols[c], zregs[lrW+c], masked)
	}
	if !masked {
		prefetchStep(2)
	}
	for r := 0; r < rows; r++ {
		x := zregs[lrX+r%2]
		m := Mem{Base: R8}
		if r > 0 {
			m.Index, m.Scale = R11, 1
		}
		if masked {
			VMOVUPS_Z(m, K1, x)
		} else {
			VMOVDQU32(m, x)
		}
		for c := 0; c < lrCols; c++ {
			VFMADD231PS(zregs[lrW+c], x, zregs[r*lrCols+c])
		}
	}
	if !masked {
		ADDQ(U8(32), RSI)
		ADDQ(U8(32), R10)
		ADDQ(U8(64), R8)
	}
}

// shrinkPrologue ends the shrink's set-up in both low-rank kernel families: RAX = A, RBX = T, the next product's A
// prefetched, R9 = the groups of 4 rows of A (r/4).
func shrinkPrologue() {
	Load(Param("a"), RAX)
	Load(Param("t"), RBX)
	prefetchRange("pfa", "pfan")
	Load(Param("r"), R9)
	SHRQ(U8(2), R9)
}

// expandPrologue starts the expand of both low-rank kernel families: it prefetches the next product's Bᵀ and
// loads RDI = Bᵀ's row stride in bytes (n bf16), R11 = T's row stride in bytes (r f32), R8 = y, R9 = y's row
// stride in bytes, RSI = Bᵀ and RDX = n (the columns left).
func expandPrologue() {
	prefetchRange("pfb", "pfbn")
	Load(Param("n"), RDI)
	SHLQ(U8(1), RDI)
	Load(Param("r"), R11)
	SHLQ(U8(2), R11)
	Load(Param("y"), R8)
	Load(Param("ldy"), R9)
	SHLQ(U8(2), R9)
	Load(Param("bt"), RSI)
	Load(Param("n"), RDX)
}
