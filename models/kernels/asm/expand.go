package main

//lint:file-ignore ST1001 avo's DSL reads as assembly through its dot imports, as in avo's own examples

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// expandKernel writes mmAddBF16x{rows} (AVX2: 32 columns, then 8, per pass) or mmAddBF16x{rows}Z (AVX-512: 64,
// then 16), the expand of a low-rank product (MatMulAddBF16, reference loop in expand.go) on rows (1 or 2) rows:
// per block of columns the rows' accumulators start from Y, and every row l of B is widened from bf16 once (zero
// extension u16→u32, shift left 16) and multiplied by the broadcast T[i, l] of each row i, l in order.
//
// Registers: Y rows DI, SI; T rows R8, R9; B R10 (the pass's row pointer AX, l in BX); B's row bytes R11; k R12;
// columns left CX. Vectors: row i's accumulators 4i..4i+3, its broadcast T value 8+i, the widened B row 10..13.
//
// With f32 true it writes mmAddF32x{rows}{,Z} instead, B of float32 (loaded as it is): the same sum in the same
// order, one fused multiply-add per element and row of B, as an axpy per row of B (attention's value sum).
func expandKernel(rows int, wide, f32 bool) {
	elem, btype, base := 2, "uint16", "mmAddBF16"
	if f32 {
		elem, btype, base = 4, "float32", "mmAddF32"
	}
	name := fmt.Sprintf("%sx%d", base, rows)
	vr, lanes := yregs, 8
	if wide {
		name += "Z"
		vr, lanes = zregs, 16
	}
	yp, tp := []GPPhysical{RDI, RSI}[:rows], []GPPhysical{R8, R9}[:rows]
	sig := fmt.Sprintf("func(y0, t0 *float32, b *%s, ldb, k, n int)", btype)
	if rows == 2 {
		sig = fmt.Sprintf("func(y0, y1, t0, t1 *float32, b *%s, ldb, k, n int)", btype)
	}
	TEXT(name, NOSPLIT, sig)
	Pragma("noescape")
	switch {
	case wide:
		Doc(fmt.Sprintf("%s is the AVX-512 form of %sx%d, on the first n columns, n %% 16 == 0 (generated).", name, base, rows))
	case f32:
		Doc(fmt.Sprintf("%s is mmAddBF16x%d with B of float32: Y += T·B on %d row(s), the first n columns, n %% 8 == 0,", name, rows, rows),
			"k ≥ 1, each element summed over l in order with fused multiply-adds (as axpy would) (generated).")
	default:
		Doc(fmt.Sprintf("%s is MatMulAddBF16 on %d row(s) y0.. (T rows t0..) and the first n columns, n %% 8 == 0, k ≥ 1;", name, rows),
			"ldb is B's row length in elements (generated).")
	}
	for i := range rows {
		Load(Param(fmt.Sprintf("y%d", i)), yp[i])
	}
	for i := range rows {
		Load(Param(fmt.Sprintf("t%d", i)), tp[i])
	}
	Load(Param("b"), R10)
	Load(Param("ldb"), R11)
	SHLQ(U8(elem/2), R11)
	Load(Param("k"), R12)
	Load(Param("n"), RCX)
	expandPass(vr, lanes, elem, yp, tp, 4, "wide", "narrow", wide)
	expandPass(vr, lanes, elem, yp, tp, 1, "narrow", "done", wide)
	Label("done")
	VZEROUPPER()
	RET()
}

// expandPass emits the loop over blocks of nv vectors of columns (label at), leaving for next when fewer than
// that are left. The 4-vector pass prefetches B pfExpand (AVX2) or pfExpandZ (AVX-512) bytes ahead along its row:
// a pass reads k rows of B a block at a time, k strided streams too short for the hardware prefetcher, and
// without it the widening loads wait on memory (a many-adapter decode step reads each B once, from RAM).
// elem is B's element size (2: bf16, widened; 4: f32).
func expandPass(vr []VecPhysical, lanes, elem int, yp, tp []GPPhysical, nv int, at, next string, wide bool) {
	cols := nv * lanes
	Label(at)
	CMPQ(RCX, U32(uint32(cols)))
	JL(LabelRef(next))
	for i, p := range yp {
		for j := range nv {
			VMOVUPS(Mem{Base: p, Disp: j * lanes * 4}, vr[4*i+j])
		}
	}
	MOVQ(R10, RAX)
	XORQ(RBX, RBX)
	Label(at + "K")
	for i, p := range tp {
		VBROADCASTSS(Mem{Base: p, Index: RBX, Scale: 4}, vr[8+i])
	}
	for j := range nv {
		if elem == 4 {
			VMOVUPS(Mem{Base: RAX, Disp: j * lanes * 4}, vr[10+j])
			continue
		}
		VPMOVZXWD(Mem{Base: RAX, Disp: j * lanes * 2}, vr[10+j])
		VPSLLD(U8(16), vr[10+j], vr[10+j])
	}
	if nv == 4 {
		if wide {
			PREFETCHT0(Mem{Base: RAX, Disp: pfExpandZ})
			PREFETCHT0(Mem{Base: RAX, Disp: pfExpandZ + 64})
		} else {
			PREFETCHT0(Mem{Base: RAX, Disp: pfExpand})
		}
	}
	for i := range tp {
		for j := range nv {
			VFMADD231PS(vr[10+j], vr[8+i], vr[4*i+j])
		}
	}
	ADDQ(R11, RAX)
	INCQ(RBX)
	CMPQ(RBX, R12)
	JL(LabelRef(at + "K"))
	for i, p := range yp {
		for j := range nv {
			VMOVUPS(vr[4*i+j], Mem{Base: p, Disp: j * lanes * 4})
		}
	}
	for _, p := range yp {
		ADDQ(U32(uint32(cols*4)), p)
	}
	ADDQ(U32(uint32(cols*elem)), R10)
	SUBQ(U32(uint32(cols)), RCX)
	JMP(LabelRef(at))
}

// pfExpand and pfExpandZ are how far ahead along a row of B the 32- and 64-column passes prefetch (bytes: 2
// blocks; 1 and 4 measured no better).
const (
	pfExpand  = 128
	pfExpandZ = 256
)
