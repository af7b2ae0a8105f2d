//go:build amd64 && !purego

#include "textflag.h"

// AVX2+FMA kernels not yet generated (the rest are in kernels_gen_amd64.s, from asm/). Each has a reference
// loop in ref.go and a Go declaration in amd64.go.

// exp constants, eight copies each: hi, lo, log2e, ln2 split c1 c2,
// polynomial p0..p5, 1.0, then the int32 exponent bias 127.
DATA expc<>+0(SB)/4, $0x42b00000 // hi = 88.0 keeps 2^n finite
DATA expc<>+4(SB)/4, $0x42b00000
DATA expc<>+8(SB)/4, $0x42b00000
DATA expc<>+12(SB)/4, $0x42b00000
DATA expc<>+16(SB)/4, $0x42b00000
DATA expc<>+20(SB)/4, $0x42b00000
DATA expc<>+24(SB)/4, $0x42b00000
DATA expc<>+28(SB)/4, $0x42b00000
DATA expc<>+32(SB)/4, $0xc2aeac50 // lo
DATA expc<>+36(SB)/4, $0xc2aeac50
DATA expc<>+40(SB)/4, $0xc2aeac50
DATA expc<>+44(SB)/4, $0xc2aeac50
DATA expc<>+48(SB)/4, $0xc2aeac50
DATA expc<>+52(SB)/4, $0xc2aeac50
DATA expc<>+56(SB)/4, $0xc2aeac50
DATA expc<>+60(SB)/4, $0xc2aeac50
DATA expc<>+64(SB)/4, $0x3fb8aa3b // log2e
DATA expc<>+68(SB)/4, $0x3fb8aa3b
DATA expc<>+72(SB)/4, $0x3fb8aa3b
DATA expc<>+76(SB)/4, $0x3fb8aa3b
DATA expc<>+80(SB)/4, $0x3fb8aa3b
DATA expc<>+84(SB)/4, $0x3fb8aa3b
DATA expc<>+88(SB)/4, $0x3fb8aa3b
DATA expc<>+92(SB)/4, $0x3fb8aa3b
DATA expc<>+96(SB)/4, $0x3f318000 // c1
DATA expc<>+100(SB)/4, $0x3f318000
DATA expc<>+104(SB)/4, $0x3f318000
DATA expc<>+108(SB)/4, $0x3f318000
DATA expc<>+112(SB)/4, $0x3f318000
DATA expc<>+116(SB)/4, $0x3f318000
DATA expc<>+120(SB)/4, $0x3f318000
DATA expc<>+124(SB)/4, $0x3f318000
DATA expc<>+128(SB)/4, $0xb95e8083 // c2
DATA expc<>+132(SB)/4, $0xb95e8083
DATA expc<>+136(SB)/4, $0xb95e8083
DATA expc<>+140(SB)/4, $0xb95e8083
DATA expc<>+144(SB)/4, $0xb95e8083
DATA expc<>+148(SB)/4, $0xb95e8083
DATA expc<>+152(SB)/4, $0xb95e8083
DATA expc<>+156(SB)/4, $0xb95e8083
DATA expc<>+160(SB)/4, $0x39506967 // p0
DATA expc<>+164(SB)/4, $0x39506967
DATA expc<>+168(SB)/4, $0x39506967
DATA expc<>+172(SB)/4, $0x39506967
DATA expc<>+176(SB)/4, $0x39506967
DATA expc<>+180(SB)/4, $0x39506967
DATA expc<>+184(SB)/4, $0x39506967
DATA expc<>+188(SB)/4, $0x39506967
DATA expc<>+192(SB)/4, $0x3ab743ce // p1
DATA expc<>+196(SB)/4, $0x3ab743ce
DATA expc<>+200(SB)/4, $0x3ab743ce
DATA expc<>+204(SB)/4, $0x3ab743ce
DATA expc<>+208(SB)/4, $0x3ab743ce
DATA expc<>+212(SB)/4, $0x3ab743ce
DATA expc<>+216(SB)/4, $0x3ab743ce
DATA expc<>+220(SB)/4, $0x3ab743ce
DATA expc<>+224(SB)/4, $0x3c088908 // p2
DATA expc<>+228(SB)/4, $0x3c088908
DATA expc<>+232(SB)/4, $0x3c088908
DATA expc<>+236(SB)/4, $0x3c088908
DATA expc<>+240(SB)/4, $0x3c088908
DATA expc<>+244(SB)/4, $0x3c088908
DATA expc<>+248(SB)/4, $0x3c088908
DATA expc<>+252(SB)/4, $0x3c088908
DATA expc<>+256(SB)/4, $0x3d2aa9c1 // p3
DATA expc<>+260(SB)/4, $0x3d2aa9c1
DATA expc<>+264(SB)/4, $0x3d2aa9c1
DATA expc<>+268(SB)/4, $0x3d2aa9c1
DATA expc<>+272(SB)/4, $0x3d2aa9c1
DATA expc<>+276(SB)/4, $0x3d2aa9c1
DATA expc<>+280(SB)/4, $0x3d2aa9c1
DATA expc<>+284(SB)/4, $0x3d2aa9c1
DATA expc<>+288(SB)/4, $0x3e2aaaaa // p4
DATA expc<>+292(SB)/4, $0x3e2aaaaa
DATA expc<>+296(SB)/4, $0x3e2aaaaa
DATA expc<>+300(SB)/4, $0x3e2aaaaa
DATA expc<>+304(SB)/4, $0x3e2aaaaa
DATA expc<>+308(SB)/4, $0x3e2aaaaa
DATA expc<>+312(SB)/4, $0x3e2aaaaa
DATA expc<>+316(SB)/4, $0x3e2aaaaa
DATA expc<>+320(SB)/4, $0x3f000000 // p5
DATA expc<>+324(SB)/4, $0x3f000000
DATA expc<>+328(SB)/4, $0x3f000000
DATA expc<>+332(SB)/4, $0x3f000000
DATA expc<>+336(SB)/4, $0x3f000000
DATA expc<>+340(SB)/4, $0x3f000000
DATA expc<>+344(SB)/4, $0x3f000000
DATA expc<>+348(SB)/4, $0x3f000000
DATA expc<>+352(SB)/4, $0x3f800000 // one
DATA expc<>+356(SB)/4, $0x3f800000
DATA expc<>+360(SB)/4, $0x3f800000
DATA expc<>+364(SB)/4, $0x3f800000
DATA expc<>+368(SB)/4, $0x3f800000
DATA expc<>+372(SB)/4, $0x3f800000
DATA expc<>+376(SB)/4, $0x3f800000
DATA expc<>+380(SB)/4, $0x3f800000
DATA expc<>+384(SB)/4, $0x0000007f
DATA expc<>+388(SB)/4, $0x0000007f
DATA expc<>+392(SB)/4, $0x0000007f
DATA expc<>+396(SB)/4, $0x0000007f
DATA expc<>+400(SB)/4, $0x0000007f
DATA expc<>+404(SB)/4, $0x0000007f
DATA expc<>+408(SB)/4, $0x0000007f
DATA expc<>+412(SB)/4, $0x0000007f
GLOBL expc<>(SB), RODATA|NOPTR, $416


// EXP8 replaces the eight floats of X by exp(X) (Cephes expf polynomial,
// max relative error ~2 ulp; inputs clamped to [-87.3, 88]). T1..T3 scratch.
#define EXP8(X, T1, T2, T3) \
	VMINPS expc<>+0(SB), X, X \
	VMAXPS expc<>+32(SB), X, X \
	VMULPS expc<>+64(SB), X, T1 \
	VROUNDPS $0, T1, T1 \
	VFNMADD231PS expc<>+96(SB), T1, X \
	VFNMADD231PS expc<>+128(SB), T1, X \
	VMOVUPS expc<>+160(SB), T2 \
	VFMADD213PS expc<>+192(SB), X, T2 \
	VFMADD213PS expc<>+224(SB), X, T2 \
	VFMADD213PS expc<>+256(SB), X, T2 \
	VFMADD213PS expc<>+288(SB), X, T2 \
	VFMADD213PS expc<>+320(SB), X, T2 \
	VMULPS X, X, T3 \
	VFMADD213PS X, T3, T2 \
	VADDPS expc<>+352(SB), T2, T2 \
	VCVTPS2DQ T1, T1 \
	VPADDD expc<>+384(SB), T1, T1 \
	VPSLLD $23, T1, T1 \
	VMULPS T1, T2, X

// func expSubSumAVX2(x *float32, n int, m float32) float32
// x[i] = exp(x[i] - m) for i < n (n % 8 == 0); returns the sum.
TEXT ·expSubSumAVX2(SB), NOSPLIT, $0-28
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSS m+16(FP), Y7
	VXORPS Y6, Y6, Y6

expsub8:
	CMPQ CX, $8
	JL   expsubdone
	VMOVUPS (SI), Y0
	VSUBPS Y7, Y0, Y0
	EXP8(Y0, Y1, Y2, Y3)
	VMOVUPS Y0, (SI)
	VADDPS Y0, Y6, Y6
	ADDQ $32, SI
	SUBQ $8, CX
	JMP  expsub8

expsubdone:
	VEXTRACTF128 $1, Y6, X1
	VADDPS X1, X6, X6
	VPSHUFD $0x4e, X6, X1
	VADDPS X1, X6, X6
	VPSHUFD $0xb1, X6, X1
	VADDSS X1, X6, X6
	VZEROUPPER
	MOVSS X6, ret+24(FP)
	RET

// func siluMulAVX2(y, gate, up *float32, n int)
// y[i] = gate[i] / (1 + exp(-gate[i])) * up[i] for i < n (n % 8 == 0).
TEXT ·siluMulAVX2(SB), NOSPLIT, $0-32
	MOVQ y+0(FP), DI
	MOVQ gate+8(FP), SI
	MOVQ up+16(FP), R8
	MOVQ n+24(FP), CX
	XORQ BX, BX

silu8:
	CMPQ CX, $8
	JL   siludone
	VMOVUPS (SI)(BX*1), Y4
	VXORPS Y0, Y0, Y0
	VSUBPS Y4, Y0, Y0
	EXP8(Y0, Y1, Y2, Y3)
	VADDPS expc<>+352(SB), Y0, Y0
	VDIVPS Y0, Y4, Y4
	VMULPS (R8)(BX*1), Y4, Y4
	VMOVUPS Y4, (DI)(BX*1)
	ADDQ $32, BX
	SUBQ $8, CX
	JMP  silu8

siludone:
	VZEROUPPER
	RET
