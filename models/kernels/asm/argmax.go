package main

//lint:file-ignore ST1001 avo's DSL reads as assembly through its dot imports, as in avo's own examples

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// argmaxKernels writes the two passes of Argmax (greedy sampling over a vocabulary of logits), 32 values per
// step, n % 32 == 0:
//
//	maxAVX2:  the largest value that is not NaN (−Inf if there is none), in four 8-lane maxima: VMAXPS with x as
//	          its first source returns the second (the running maximum) when x is NaN
//	findAVX2: the first index i with x[i] == v (VCMPPS ordered-equal: never for NaN), or n
//
// Registers: x at SI, n in CX, Y0–Y3 the maxima (then v broadcast in Y15 for find), Y4–Y9 scratch.
func argmaxKernels() {
	TEXT("maxAVX2", NOSPLIT, "func(x *float32, n int) float32")
	Pragma("noescape")
	Doc("maxAVX2 is the first pass of Argmax: the largest non-NaN value of x[:n], −Inf if none; n % 32 == 0 (generated).")
	Load(Param("x"), RSI)
	Load(Param("n"), RCX)
	MOVL(U32(0xff800000), EAX) // −Inf
	VMOVD(EAX, X0)
	VBROADCASTSS(X0, Y0)
	for i := 1; i < 4; i++ {
		VMOVAPS(Y0, yregs[i])
	}
	Label("max32")
	CMPQ(RCX, U8(32))
	JL(LabelRef("maxdone"))
	for i := range 4 {
		VMOVUPS(Mem{Base: RSI, Disp: 32 * i}, yregs[4+i])
	}
	for i := range 4 {
		VMAXPS(yregs[i], yregs[4+i], yregs[i])
	}
	ADDQ(U8(128), RSI)
	SUBQ(U8(32), RCX)
	JMP(LabelRef("max32"))
	Label("maxdone")
	VMAXPS(Y1, Y0, Y0)
	VMAXPS(Y3, Y2, Y2)
	VMAXPS(Y2, Y0, Y0)
	VEXTRACTF128(U8(1), Y0, X1)
	VMAXPS(X1, X0, X0)
	VPERMILPS(U8(0x4e), X0, X1)
	VMAXPS(X1, X0, X0)
	VPERMILPS(U8(0xb1), X0, X1)
	VMAXPS(X1, X0, X0)
	VZEROUPPER()
	Store(X0, ReturnIndex(0))
	RET()

	TEXT("findAVX2", NOSPLIT, "func(x *float32, n int, v float32) int")
	Pragma("noescape")
	Doc("findAVX2 is the second pass of Argmax: the first index i < n with x[i] == v, or n; n % 32 == 0 (generated).")
	Load(Param("x"), RSI)
	Load(Param("n"), RCX)
	VBROADCASTSS(NewParamAddr("v", 16), Y15)
	XORQ(RDX, RDX) // index of the step's first value
	Label("find32")
	CMPQ(RDX, RCX)
	JGE(LabelRef("none"))
	for i := range 4 {
		VCMPPS(U8(0), Mem{Base: RSI, Disp: 32 * i}, Y15, yregs[4+i]) // EQ_OQ
	}
	VORPS(Y5, Y4, Y8)
	VORPS(Y7, Y6, Y9)
	VORPS(Y9, Y8, Y8)
	VPTEST(Y8, Y8)
	JNZ(LabelRef("hit"))
	ADDQ(U8(128), RSI)
	ADDQ(U8(32), RDX)
	JMP(LabelRef("find32"))
	Label("hit")
	for i := range 4 { // the first register with a match (the last one has one if the others have none)
		VMOVMSKPS(yregs[4+i], EAX)
		if i == 3 {
			break
		}
		TESTL(EAX, EAX)
		JNZ(LabelRef("lane"))
		ADDQ(U8(8), RDX)
	}
	Label("lane")
	BSFL(EAX, EAX)
	ADDQ(RAX, RDX)
	VZEROUPPER()
	Store(RDX, ReturnIndex(0))
	RET()
	Label("none")
	VZEROUPPER()
	Store(RCX, ReturnIndex(0))
	RET()
}
