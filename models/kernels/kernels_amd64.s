//go:build amd64 && !purego

#include "textflag.h"

// AVX2+FMA kernels. Each has a reference loop in ref.go and a Go declaration
// in amd64.go. Weight loaders widen 8 elements to 8 float32 lanes:
//   F32:  plain load
//   BF16: zero-extend u16→u32, shift left 16 (float32frombits(u<<16))
//   F16:  VCVTPH2PS (F16C)

#define LOADF32(addr, reg) VMOVUPS addr, reg
#define LOADBF16(addr, reg) VPMOVZXWD addr, reg; VPSLLD $16, reg, reg
#define LOADF16(addr, reg) VCVTPH2PS addr, reg

// HSUM4 reduces four 8-lane accumulators a, b, c, d to X(a) = [Σa, Σb, Σc, Σd].
// t is a scratch register. Clobbers b, c.
#define HSUM4(a, b, c, d, xa, xt, yt) \
	VHADDPS b, a, a \
	VHADDPS d, c, c \
	VHADDPS c, a, a \
	VEXTRACTF128 $1, a, xt \
	VADDPS xt, xa, xa

// MATVEC4 computes y[0..3] = Σ_c W[r][c]·x[c] for four rows r at w, w+stride,
// w+2·stride, w+3·stride (stride in elements), over n columns, n % 8 == 0.
// esz is the weight element size in bytes; LOAD widens 8 weights.
#define MATVEC4(LOAD, esz, wlen) \
	MOVQ w+0(FP), SI \
	MOVQ stride+8(FP), AX \
	MOVQ x+16(FP), DI \
	MOVQ n+24(FP), CX \
	IMULQ $esz, AX \
	LEAQ (SI)(AX*1), R8 \
	LEAQ (R8)(AX*1), R9 \
	LEAQ (R9)(AX*1), R10 \
	XORQ BX, BX \
	XORQ DX, DX \
	VXORPS Y0, Y0, Y0 \
	VXORPS Y1, Y1, Y1 \
	VXORPS Y2, Y2, Y2 \
	VXORPS Y3, Y3, Y3 \
	VXORPS Y4, Y4, Y4 \
	VXORPS Y5, Y5, Y5 \
	VXORPS Y6, Y6, Y6 \
	VXORPS Y7, Y7, Y7 \
	CMPQ CX, $16 \
	JL   tail8 \
loop16: \
	VMOVUPS (DI)(BX*1), Y8 \
	VMOVUPS 32(DI)(BX*1), Y9 \
	LOAD((SI)(DX*1), Y10) \
	LOAD(wlen(SI)(DX*1), Y11) \
	LOAD((R8)(DX*1), Y12) \
	LOAD(wlen(R8)(DX*1), Y13) \
	VFMADD231PS Y8, Y10, Y0 \
	VFMADD231PS Y9, Y11, Y1 \
	VFMADD231PS Y8, Y12, Y2 \
	VFMADD231PS Y9, Y13, Y3 \
	LOAD((R9)(DX*1), Y10) \
	LOAD(wlen(R9)(DX*1), Y11) \
	LOAD((R10)(DX*1), Y12) \
	LOAD(wlen(R10)(DX*1), Y13) \
	VFMADD231PS Y8, Y10, Y4 \
	VFMADD231PS Y9, Y11, Y5 \
	VFMADD231PS Y8, Y12, Y6 \
	VFMADD231PS Y9, Y13, Y7 \
	ADDQ $64, BX \
	ADDQ $(2*wlen), DX \
	SUBQ $16, CX \
	CMPQ CX, $16 \
	JGE  loop16 \
tail8: \
	CMPQ CX, $8 \
	JL   reduce \
	VMOVUPS (DI)(BX*1), Y8 \
	LOAD((SI)(DX*1), Y10) \
	LOAD((R8)(DX*1), Y11) \
	LOAD((R9)(DX*1), Y12) \
	LOAD((R10)(DX*1), Y13) \
	VFMADD231PS Y8, Y10, Y0 \
	VFMADD231PS Y8, Y11, Y2 \
	VFMADD231PS Y8, Y12, Y4 \
	VFMADD231PS Y8, Y13, Y6 \
reduce: \
	VADDPS Y1, Y0, Y0 \
	VADDPS Y3, Y2, Y2 \
	VADDPS Y5, Y4, Y4 \
	VADDPS Y7, Y6, Y6 \
	HSUM4(Y0, Y2, Y4, Y6, X0, X1, Y1) \
	MOVQ y+32(FP), AX \
	VMOVUPS X0, (AX) \
	VZEROUPPER \
	RET

// MMTILE computes the 3×4 tile C[i][j] (+)= Σ_l X[i][l]·W[j][l] for three
// rows of X (stride ldx floats) and four rows of W (stride ldw elements) over
// k columns, k % 8 == 0, k > 0. acc != 0 adds to C instead of overwriting it.
#define MMTILE(LOAD, esz) \
	MOVQ x+0(FP), SI \
	MOVQ ldx+8(FP), AX \
	SHLQ $2, AX \
	LEAQ (SI)(AX*1), R8 \
	LEAQ (R8)(AX*1), R9 \
	MOVQ w+16(FP), DI \
	MOVQ ldw+24(FP), AX \
	IMULQ $esz, AX \
	LEAQ (DI)(AX*1), R10 \
	LEAQ (R10)(AX*1), R11 \
	LEAQ (R11)(AX*1), R12 \
	MOVQ k+32(FP), CX \
	XORQ BX, BX \
	XORQ DX, DX \
	VXORPS Y0, Y0, Y0 \
	VXORPS Y1, Y1, Y1 \
	VXORPS Y2, Y2, Y2 \
	VXORPS Y3, Y3, Y3 \
	VXORPS Y4, Y4, Y4 \
	VXORPS Y5, Y5, Y5 \
	VXORPS Y6, Y6, Y6 \
	VXORPS Y7, Y7, Y7 \
	VXORPS Y8, Y8, Y8 \
	VXORPS Y9, Y9, Y9 \
	VXORPS Y10, Y10, Y10 \
	VXORPS Y11, Y11, Y11 \
loop: \
	VMOVUPS (SI)(BX*1), Y12 \
	VMOVUPS (R8)(BX*1), Y13 \
	VMOVUPS (R9)(BX*1), Y14 \
	LOAD((DI)(DX*1), Y15) \
	VFMADD231PS Y12, Y15, Y0 \
	VFMADD231PS Y13, Y15, Y4 \
	VFMADD231PS Y14, Y15, Y8 \
	LOAD((R10)(DX*1), Y15) \
	VFMADD231PS Y12, Y15, Y1 \
	VFMADD231PS Y13, Y15, Y5 \
	VFMADD231PS Y14, Y15, Y9 \
	LOAD((R11)(DX*1), Y15) \
	VFMADD231PS Y12, Y15, Y2 \
	VFMADD231PS Y13, Y15, Y6 \
	VFMADD231PS Y14, Y15, Y10 \
	LOAD((R12)(DX*1), Y15) \
	VFMADD231PS Y12, Y15, Y3 \
	VFMADD231PS Y13, Y15, Y7 \
	VFMADD231PS Y14, Y15, Y11 \
	ADDQ $32, BX \
	ADDQ $(8*esz), DX \
	SUBQ $8, CX \
	JG   loop \
	HSUM4(Y0, Y1, Y2, Y3, X0, X12, Y12) \
	HSUM4(Y4, Y5, Y6, Y7, X4, X12, Y12) \
	HSUM4(Y8, Y9, Y10, Y11, X8, X12, Y12) \
	MOVQ c+40(FP), AX \
	MOVQ ldc+48(FP), BX \
	SHLQ $2, BX \
	LEAQ (AX)(BX*1), CX \
	LEAQ (CX)(BX*1), DX \
	MOVQ acc+56(FP), R13 \
	TESTQ R13, R13 \
	JE   store \
	VADDPS (AX), X0, X0 \
	VADDPS (CX), X4, X4 \
	VADDPS (DX), X8, X8 \
store: \
	VMOVUPS X0, (AX) \
	VMOVUPS X4, (CX) \
	VMOVUPS X8, (DX) \
	VZEROUPPER \
	RET

// func dotAVX2(a, b *float32, n int) float32
TEXT ·dotAVX2(SB), NOSPLIT, $0-28
	MOVQ a+0(FP), SI
	MOVQ b+8(FP), DI
	MOVQ n+16(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3

dot32:
	CMPQ CX, $32
	JL   dot8
	VMOVUPS (SI), Y4
	VMOVUPS 32(SI), Y5
	VMOVUPS 64(SI), Y6
	VMOVUPS 96(SI), Y7
	VFMADD231PS (DI), Y4, Y0
	VFMADD231PS 32(DI), Y5, Y1
	VFMADD231PS 64(DI), Y6, Y2
	VFMADD231PS 96(DI), Y7, Y3
	ADDQ $128, SI
	ADDQ $128, DI
	SUBQ $32, CX
	JMP  dot32

dot8:
	CMPQ CX, $8
	JL   dotred
	VMOVUPS (SI), Y4
	VFMADD231PS (DI), Y4, Y0
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JMP  dot8

dotred:
	VADDPS Y1, Y0, Y0
	VADDPS Y3, Y2, Y2
	VADDPS Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VPSHUFD $0x4e, X0, X1
	VADDPS X1, X0, X0
	VPSHUFD $0xb1, X0, X1
	VADDSS X1, X0, X0

dot1:
	TESTQ CX, CX
	JE    dotdone
	VMOVSS (SI), X1
	VFMADD231SS (DI), X1, X0
	ADDQ $4, SI
	ADDQ $4, DI
	DECQ CX
	JMP  dot1

dotdone:
	VZEROUPPER
	MOVSS X0, ret+24(FP)
	RET

// func axpyAVX2(alpha float32, x, y *float32, n int)
TEXT ·axpyAVX2(SB), NOSPLIT, $0-32
	VBROADCASTSS alpha+0(FP), Y15
	MOVQ x+8(FP), SI
	MOVQ y+16(FP), DI
	MOVQ n+24(FP), CX

axpy32:
	CMPQ CX, $32
	JL   axpy8
	VMOVUPS (DI), Y0
	VMOVUPS 32(DI), Y1
	VMOVUPS 64(DI), Y2
	VMOVUPS 96(DI), Y3
	VFMADD231PS (SI), Y15, Y0
	VFMADD231PS 32(SI), Y15, Y1
	VFMADD231PS 64(SI), Y15, Y2
	VFMADD231PS 96(SI), Y15, Y3
	VMOVUPS Y0, (DI)
	VMOVUPS Y1, 32(DI)
	VMOVUPS Y2, 64(DI)
	VMOVUPS Y3, 96(DI)
	ADDQ $128, SI
	ADDQ $128, DI
	SUBQ $32, CX
	JMP  axpy32

axpy8:
	CMPQ CX, $8
	JL   axpy1
	VMOVUPS (DI), Y0
	VFMADD231PS (SI), Y15, Y0
	VMOVUPS Y0, (DI)
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JMP  axpy8

axpy1:
	TESTQ CX, CX
	JE    axpydone
	VMOVSS (DI), X0
	VFMADD231SS (SI), X15, X0
	VMOVSS X0, (DI)
	ADDQ $4, SI
	ADDQ $4, DI
	DECQ CX
	JMP  axpy1

axpydone:
	VZEROUPPER
	RET

// func scaleAVX2(alpha float32, x *float32, n int)
TEXT ·scaleAVX2(SB), NOSPLIT, $0-24
	VBROADCASTSS alpha+0(FP), Y15
	MOVQ x+8(FP), SI
	MOVQ n+16(FP), CX

scale32:
	CMPQ CX, $32
	JL   scale8
	VMULPS (SI), Y15, Y0
	VMULPS 32(SI), Y15, Y1
	VMULPS 64(SI), Y15, Y2
	VMULPS 96(SI), Y15, Y3
	VMOVUPS Y0, (SI)
	VMOVUPS Y1, 32(SI)
	VMOVUPS Y2, 64(SI)
	VMOVUPS Y3, 96(SI)
	ADDQ $128, SI
	SUBQ $32, CX
	JMP  scale32

scale8:
	CMPQ CX, $8
	JL   scale1
	VMULPS (SI), Y15, Y0
	VMOVUPS Y0, (SI)
	ADDQ $32, SI
	SUBQ $8, CX
	JMP  scale8

scale1:
	TESTQ CX, CX
	JE    scaledone
	VMULSS (SI), X15, X0
	VMOVSS X0, (SI)
	ADDQ $4, SI
	DECQ CX
	JMP  scale1

scaledone:
	VZEROUPPER
	RET

// func matVec4F32(w *float32, stride int, x *float32, n int, y *float32)
TEXT ·matVec4F32(SB), NOSPLIT, $0-40
	MATVEC4(LOADF32, 4, 32)

// func matVec4BF16(w *uint16, stride int, x *float32, n int, y *float32)
TEXT ·matVec4BF16(SB), NOSPLIT, $0-40
	MATVEC4(LOADBF16, 2, 16)

// func matVec4F16(w *uint16, stride int, x *float32, n int, y *float32)
TEXT ·matVec4F16(SB), NOSPLIT, $0-40
	MATVEC4(LOADF16, 2, 16)

// func mmTile3x4F32(x *float32, ldx int, w *float32, ldw int, k int, c *float32, ldc int, acc int)
TEXT ·mmTile3x4F32(SB), NOSPLIT, $0-64
	MMTILE(LOADF32, 4)

// func mmTile3x4BF16(x *float32, ldx int, w *uint16, ldw int, k int, c *float32, ldc int, acc int)
TEXT ·mmTile3x4BF16(SB), NOSPLIT, $0-64
	MMTILE(LOADBF16, 2)

// func mmTile3x4F16(x *float32, ldx int, w *uint16, ldw int, k int, c *float32, ldc int, acc int)
TEXT ·mmTile3x4F16(SB), NOSPLIT, $0-64
	MMTILE(LOADF16, 2)
