package main

//lint:file-ignore ST1001 avo's DSL reads as assembly through its dot imports, as in avo's own examples

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// blas1 writes the AVX2 vector kernel op ("dot", "axpy", "scale" or "scaleMul") over n float32 values: 32 per
// step (four registers), then 8, then one at a time, each element summed or scaled in that order.
//
//	dotAVX2:      returns Σ a[i]·b[i], in four 8-lane accumulators reduced at the end (then the scalar tail)
//	axpyAVX2:     y[i] += alpha·x[i]
//	scaleAVX2:    x[i] *= alpha
//	scaleMulAVX2: y[i] = (x[i]·alpha)·w[i] (RMSNorm's last pass; y may be x)
//
// Registers: a or x at SI, b, y or w at DI (scaleMul's y at DX), n in CX, alpha broadcast in Y15.
func blas1(op string) {
	name := op + "AVX2"
	sig := map[string]string{
		"dot":      "func(a, b *float32, n int) float32",
		"axpy":     "func(alpha float32, x, y *float32, n int)",
		"scale":    "func(alpha float32, x *float32, n int)",
		"scaleMul": "func(alpha float32, x, w, y *float32, n int)",
	}[op]
	TEXT(name, NOSPLIT, sig)
	Pragma("noescape")
	Doc(fmt.Sprintf("%s is the AVX2 %s kernel (generated).", name, op))
	ptrs := []GPPhysical{RSI, RDI}
	switch op {
	case "dot":
		Load(Param("a"), RSI)
		Load(Param("b"), RDI)
		Load(Param("n"), RCX)
		for i := range 4 {
			VXORPS(yregs[i], yregs[i], yregs[i])
		}
	case "axpy":
		VBROADCASTSS(NewParamAddr("alpha", 0), Y15)
		Load(Param("x"), RSI)
		Load(Param("y"), RDI)
		Load(Param("n"), RCX)
	case "scaleMul":
		VBROADCASTSS(NewParamAddr("alpha", 0), Y15)
		Load(Param("x"), RSI)
		Load(Param("w"), RDI)
		Load(Param("y"), RDX)
		Load(Param("n"), RCX)
		ptrs = append(ptrs, RDX)
	default:
		VBROADCASTSS(NewParamAddr("alpha", 0), Y15)
		Load(Param("x"), RSI)
		Load(Param("n"), RCX)
		ptrs = ptrs[:1]
	}
	m := func(p GPPhysical, i int) Mem { return Mem{Base: p, Disp: 32 * i} }
	for _, nv := range []int{4, 1} {
		at, next := fmt.Sprintf("v%d", nv), "v1"
		if nv == 1 {
			next = "tail"
		}
		Label(at)
		CMPQ(RCX, U8(uint8(8*nv)))
		JL(LabelRef(next))
		switch op {
		case "dot":
			for i := range nv {
				VMOVUPS(m(RSI, i), yregs[4+i])
			}
			for i := range nv {
				VFMADD231PS(m(RDI, i), yregs[4+i], yregs[i])
			}
		case "axpy":
			for i := range nv {
				VMOVUPS(m(RDI, i), yregs[i])
			}
			for i := range nv {
				VFMADD231PS(m(RSI, i), Y15, yregs[i])
			}
			for i := range nv {
				VMOVUPS(yregs[i], m(RDI, i))
			}
		case "scaleMul":
			for i := range nv {
				VMULPS(m(RSI, i), Y15, yregs[i])
			}
			for i := range nv {
				VMULPS(m(RDI, i), yregs[i], yregs[i])
			}
			for i := range nv {
				VMOVUPS(yregs[i], m(RDX, i))
			}
		default:
			for i := range nv {
				VMULPS(m(RSI, i), Y15, yregs[i])
			}
			for i := range nv {
				VMOVUPS(yregs[i], m(RSI, i))
			}
		}
		for _, p := range ptrs {
			ADDQ(U32(uint32(32*nv)), p)
		}
		SUBQ(U8(uint8(8*nv)), RCX)
		JMP(LabelRef(at))
	}
	Label("tail")
	if op == "dot" {
		VADDPS(Y1, Y0, Y0)
		VADDPS(Y3, Y2, Y2)
		VADDPS(Y2, Y0, Y0)
		VEXTRACTF128(U8(1), Y0, X1)
		VADDPS(X1, X0, X0)
		VPSHUFD(U8(0x4e), X0, X1)
		VADDPS(X1, X0, X0)
		VPSHUFD(U8(0xb1), X0, X1)
		VADDSS(X1, X0, X0)
	}
	Label("v0")
	TESTQ(RCX, RCX)
	JE(LabelRef("done"))
	switch op {
	case "dot":
		VMOVSS(Mem{Base: RSI}, X1)
		VFMADD231SS(Mem{Base: RDI}, X1, X0)
	case "axpy":
		VMOVSS(Mem{Base: RDI}, X0)
		VFMADD231SS(Mem{Base: RSI}, X15, X0)
		VMOVSS(X0, Mem{Base: RDI})
	case "scaleMul":
		VMULSS(Mem{Base: RSI}, X15, X0)
		VMULSS(Mem{Base: RDI}, X0, X0)
		VMOVSS(X0, Mem{Base: RDX})
	default:
		VMULSS(Mem{Base: RSI}, X15, X0)
		VMOVSS(X0, Mem{Base: RSI})
	}
	for _, p := range ptrs {
		ADDQ(U8(4), p)
	}
	DECQ(RCX)
	JMP(LabelRef("v0"))
	Label("done")
	VZEROUPPER()
	if op == "dot" {
		Store(X0, ReturnIndex(0))
	}
	RET()
}
