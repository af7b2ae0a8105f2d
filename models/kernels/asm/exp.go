package main

//lint:file-ignore ST1001 avo's DSL reads as assembly through its dot imports, as in avo's own examples

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// expConsts are the constants of expPoly, eight copies each (one YMM load): hi = 88.0 (keeps 2^n finite), lo,
// log2e, ln2 split as c1 + c2, the polynomial p0..p5, 1.0, then the int32 exponent bias 127.
var expConsts = []uint32{0x42b00000, 0xc2aeac50, 0x3fb8aa3b, 0x3f318000, 0xb95e8083, 0x39506967, 0x3ab743ce,
	0x3c088908, 0x3d2aa9c1, 0x3e2aaaaa, 0x3f000000, 0x3f800000, 0x0000007f}

// Offsets of expConsts' entries (bytes).
const (
	expHi   = 0
	expLo   = 32
	expLog2 = 64
	expC1   = 96
	expC2   = 128
	expP0   = 160
	expOne  = 352
	expBias = 384
)

// expTable is the memory of expConsts, emitted once with the first kernel that uses it.
var expTable = func() func() Mem {
	var m *Mem
	return func() Mem {
		if m == nil {
			g := GLOBL("expc", RODATA|NOPTR)
			for i, v := range expConsts {
				for j := range 8 {
					DATA(32*i+4*j, U32(v))
				}
			}
			m = &g
		}
		return *m
	}
}()

// expPoly replaces the eight floats of x by exp(x) (Cephes expf polynomial, max relative error ~2 ulp; inputs
// clamped to [-87.3, 88]); t1..t3 are scratch.
func expPoly(c Mem, x, t1, t2, t3 VecPhysical) {
	VMINPS(c.Offset(expHi), x, x)
	VMAXPS(c.Offset(expLo), x, x)
	VMULPS(c.Offset(expLog2), x, t1)
	VROUNDPS(U8(0), t1, t1)
	VFNMADD231PS(c.Offset(expC1), t1, x)
	VFNMADD231PS(c.Offset(expC2), t1, x)
	VMOVUPS(c.Offset(expP0), t2)
	for i := 1; i <= 5; i++ {
		VFMADD213PS(c.Offset(expP0+32*i), x, t2)
	}
	VMULPS(x, x, t3)
	VFMADD213PS(x, t3, t2)
	VADDPS(c.Offset(expOne), t2, t2)
	VCVTPS2DQ(t1, t1)
	VPADDD(c.Offset(expBias), t1, t1)
	VPSLLD(U8(23), t1, t1)
	VMULPS(t1, t2, x)
}

// expKernel writes the AVX2 kernel op over n float32 values, n % 8 == 0, 8 per step through expPoly:
//
//	expSubSumAVX2: x[i] = exp(x[i] − m), returns the sum (one 8-lane accumulator, reduced at the end)
//	siluMulAVX2:   y[i] = gate[i] / (1 + exp(−gate[i])) · up[i]
func expKernel(op string) {
	name := op + "AVX2"
	sig := map[string]string{
		"expSubSum": "func(x *float32, n int, m float32) float32",
		"siluMul":   "func(y, gate, up *float32, n int)",
	}[op]
	TEXT(name, NOSPLIT, sig)
	Pragma("noescape")
	Doc(fmt.Sprintf("%s is the AVX2 %s kernel (generated).", name, op))
	c := expTable()
	if op == "expSubSum" {
		Load(Param("x"), RSI)
		Load(Param("n"), RCX)
		VBROADCASTSS(NewParamAddr("m", 16), Y7)
		VXORPS(Y6, Y6, Y6)
	} else {
		Load(Param("y"), RDI)
		Load(Param("gate"), RSI)
		Load(Param("up"), R8)
		Load(Param("n"), RCX)
		XORQ(RBX, RBX)
	}
	Label("loop")
	CMPQ(RCX, U8(8))
	JL(LabelRef("done"))
	if op == "expSubSum" {
		VMOVUPS(Mem{Base: RSI}, Y0)
		VSUBPS(Y7, Y0, Y0)
		expPoly(c, Y0, Y1, Y2, Y3)
		VMOVUPS(Y0, Mem{Base: RSI})
		VADDPS(Y0, Y6, Y6)
		ADDQ(U8(32), RSI)
	} else {
		VMOVUPS(Mem{Base: RSI, Index: RBX, Scale: 1}, Y4)
		VXORPS(Y0, Y0, Y0)
		VSUBPS(Y4, Y0, Y0)
		expPoly(c, Y0, Y1, Y2, Y3)
		VADDPS(c.Offset(expOne), Y0, Y0)
		VDIVPS(Y0, Y4, Y4)
		VMULPS(Mem{Base: R8, Index: RBX, Scale: 1}, Y4, Y4)
		VMOVUPS(Y4, Mem{Base: RDI, Index: RBX, Scale: 1})
		ADDQ(U8(32), RBX)
	}
	SUBQ(U8(8), RCX)
	JMP(LabelRef("loop"))
	Label("done")
	if op == "expSubSum" {
		VEXTRACTF128(U8(1), Y6, X1)
		VADDPS(X1, X6, X6)
		VPSHUFD(U8(0x4e), X6, X1)
		VADDPS(X1, X6, X6)
		VPSHUFD(U8(0xb1), X6, X1)
		VADDSS(X1, X6, X6)
		VZEROUPPER()
		Store(X6, ReturnIndex(0))
		RET()
		return
	}
	VZEROUPPER()
	RET()
}
