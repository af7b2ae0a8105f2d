//go:build amd64 && !purego

#include "textflag.h"

// func nf4RowsAVX2(y *float32, packed *byte, scales *float32, x *float32, lut *[16]float32, rows, nb, bs int)
//
// Per 8 packed bytes (16 elements): VPMOVSXBD puts each byte in a dword d, sign-extended so that bit 7
// (the high nibble's top bit) is already bit 31. The low nibble's value is VPERMPS(d, LUT[0:8]) or
// VPERMPS(d, LUT[8:16]) chosen by bit 3 (d<<28 as the VBLENDVPS mask); the high nibble's the same with d>>4
// and d itself as the mask. The two LUT halves are multiplied by the block's absmax
// once per block. Four accumulators, two groups of 16 elements per iteration.
TEXT ·nf4RowsAVX2(SB), NOSPLIT, $0-64
	MOVQ y+0(FP), DI
	MOVQ packed+8(FP), SI
	MOVQ scales+16(FP), R8
	MOVQ x+24(FP), R11
	MOVQ lut+32(FP), AX
	MOVQ rows+40(FP), CX
	MOVQ nb+48(FP), R9
	MOVQ bs+56(FP), R10
	SHRQ $5, R10
	VMOVUPS (AX), Y0
	VMOVUPS 32(AX), Y1
	TESTQ CX, CX
	JZ   done

rowloop:
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	MOVQ R11, DX
	MOVQ R9, BX

blockloop:
	VBROADCASTSS (R8), Y15
	VMULPS Y15, Y0, Y2
	VMULPS Y15, Y1, Y3
	ADDQ $4, R8
	MOVQ R10, R12

grouploop:
	VPMOVSXBD (SI), Y8
	VPSRLD    $4, Y8, Y9
	VPSLLD    $28, Y8, Y10
	VPERMPS   Y2, Y8, Y12
	VPERMPS   Y3, Y8, Y13
	VBLENDVPS Y10, Y13, Y12, Y14
	VPERMPS   Y2, Y9, Y12
	VPERMPS   Y3, Y9, Y13
	VBLENDVPS Y8, Y13, Y12, Y15
	VFMADD231PS (DX), Y15, Y4
	VFMADD231PS 32(DX), Y14, Y5

	VPMOVSXBD 8(SI), Y8
	VPSRLD    $4, Y8, Y9
	VPSLLD    $28, Y8, Y10
	VPERMPS   Y2, Y8, Y12
	VPERMPS   Y3, Y8, Y13
	VBLENDVPS Y10, Y13, Y12, Y14
	VPERMPS   Y2, Y9, Y12
	VPERMPS   Y3, Y9, Y13
	VBLENDVPS Y8, Y13, Y12, Y15
	VFMADD231PS 64(DX), Y15, Y6
	VFMADD231PS 96(DX), Y14, Y7

	ADDQ $16, SI
	ADDQ $128, DX
	DECQ R12
	JNZ  grouploop
	DECQ BX
	JNZ  blockloop

	VADDPS Y5, Y4, Y4
	VADDPS Y7, Y6, Y6
	VADDPS Y6, Y4, Y4
	VEXTRACTF128 $1, Y4, X5
	VADDPS X5, X4, X4
	VHADDPS X4, X4, X4
	VHADDPS X4, X4, X4
	MOVSS X4, (DI)
	ADDQ $4, DI
	DECQ CX
	JNZ  rowloop

done:
	VZEROUPPER
	RET

// func nf4Rows4xAVX2(y *float32, ystride int, packed *byte, scales *float32, x *float32, xstride int, lut *[16]float32, rows, nb, bs int)
//
// Four input rows at once: each weight block is decoded once and multiplied with the four kernel-ordered
// x rows (x, x+xstride, ...), accumulating into Y[i][r] = y[i·ystride + r]. Accumulators: Y4..Y7 even
// elements of x rows 0..3, Y8..Y11 odd elements.
TEXT ·nf4Rows4xAVX2(SB), NOSPLIT, $0-80
	MOVQ y+0(FP), DI
	MOVQ ystride+8(FP), R13
	SHLQ $2, R13
	MOVQ packed+16(FP), SI
	MOVQ scales+24(FP), R8
	MOVQ x+32(FP), R11
	MOVQ xstride+40(FP), R14
	SHLQ $2, R14
	MOVQ lut+48(FP), AX
	MOVQ rows+56(FP), CX
	MOVQ nb+64(FP), R9
	MOVQ bs+72(FP), R10
	SHRQ $4, R10
	VMOVUPS (AX), Y0
	VMOVUPS 32(AX), Y1
	LEAQ (R14)(R14*2), AX
	TESTQ CX, CX
	JZ   done4

rowloop4:
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	VXORPS Y8, Y8, Y8
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11
	MOVQ R11, DX
	MOVQ R9, BX

blockloop4:
	VBROADCASTSS (R8), Y15
	VMULPS Y15, Y0, Y2
	VMULPS Y15, Y1, Y3
	ADDQ $4, R8
	MOVQ R10, R12

grouploop4:
	VPMOVSXBD (SI), Y12
	VPSLLD    $28, Y12, Y13
	VPERMPS   Y2, Y12, Y14
	VPERMPS   Y3, Y12, Y15
	VBLENDVPS Y13, Y15, Y14, Y14
	VFMADD231PS 32(DX), Y14, Y8
	VFMADD231PS 32(DX)(R14*1), Y14, Y9
	VFMADD231PS 32(DX)(R14*2), Y14, Y10
	VFMADD231PS 32(DX)(AX*1), Y14, Y11
	VPSRLD    $4, Y12, Y13
	VPERMPS   Y2, Y13, Y15
	VPERMPS   Y3, Y13, Y13
	VBLENDVPS Y12, Y13, Y15, Y15
	VFMADD231PS (DX), Y15, Y4
	VFMADD231PS (DX)(R14*1), Y15, Y5
	VFMADD231PS (DX)(R14*2), Y15, Y6
	VFMADD231PS (DX)(AX*1), Y15, Y7
	ADDQ $8, SI
	ADDQ $64, DX
	DECQ R12
	JNZ  grouploop4
	DECQ BX
	JNZ  blockloop4

	// y[i·ystride] = hsum(even_i + odd_i)
	VADDPS Y8, Y4, Y4
	VADDPS Y9, Y5, Y5
	VADDPS Y10, Y6, Y6
	VADDPS Y11, Y7, Y7
	// transpose-reduce four vectors to four sums
	VHADDPS Y5, Y4, Y4
	VHADDPS Y7, Y6, Y6
	VHADDPS Y6, Y4, Y4
	VEXTRACTF128 $1, Y4, X5
	VADDPS X5, X4, X4
	MOVQ DI, R12
	MOVSS X4, (R12)
	ADDQ R13, R12
	VPSRLDQ $4, X4, X4
	MOVSS X4, (R12)
	ADDQ R13, R12
	VPSRLDQ $4, X4, X4
	MOVSS X4, (R12)
	ADDQ R13, R12
	VPSRLDQ $4, X4, X4
	MOVSS X4, (R12)
	ADDQ $4, DI
	DECQ CX
	JNZ  rowloop4

done4:
	VZEROUPPER
	RET

// func int8RowsAVX2(y *float32, packed *byte, scales *float32, x *float32, rows, cols int)
//
// LLM.int8 rows: y[r] = scales[r]·Σ_c int8(packed[r·cols+c])·x[c] (the caller multiplies by 1/127).
// cols must be a multiple of 32.
TEXT ·int8RowsAVX2(SB), NOSPLIT, $0-48
	MOVQ y+0(FP), DI
	MOVQ packed+8(FP), SI
	MOVQ scales+16(FP), R8
	MOVQ x+24(FP), R11
	MOVQ rows+32(FP), CX
	MOVQ cols+40(FP), R9
	SHRQ $5, R9
	TESTQ CX, CX
	JZ   done8

rowloop8:
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	MOVQ R11, DX
	MOVQ R9, BX

loop8:
	VPMOVSXBD (SI), Y8
	VPMOVSXBD 8(SI), Y9
	VPMOVSXBD 16(SI), Y10
	VPMOVSXBD 24(SI), Y11
	VCVTDQ2PS Y8, Y8
	VCVTDQ2PS Y9, Y9
	VCVTDQ2PS Y10, Y10
	VCVTDQ2PS Y11, Y11
	VFMADD231PS (DX), Y8, Y4
	VFMADD231PS 32(DX), Y9, Y5
	VFMADD231PS 64(DX), Y10, Y6
	VFMADD231PS 96(DX), Y11, Y7
	ADDQ $32, SI
	ADDQ $128, DX
	DECQ BX
	JNZ  loop8

	VADDPS Y5, Y4, Y4
	VADDPS Y7, Y6, Y6
	VADDPS Y6, Y4, Y4
	VEXTRACTF128 $1, Y4, X5
	VADDPS X5, X4, X4
	VHADDPS X4, X4, X4
	VHADDPS X4, X4, X4
	VMULSS (R8), X4, X4
	MOVSS X4, (DI)
	ADDQ $4, R8
	ADDQ $4, DI
	DECQ CX
	JNZ  rowloop8

done8:
	VZEROUPPER
	RET

// func nf4Rows2xAVX2(y *float32, ystride int, packed *byte, scales *float32, x *float32, xstride int, lut *[16]float32, rows, nb, bs int)
//
// nf4Rows4xAVX2 for two x rows.
TEXT ·nf4Rows2xAVX2(SB), NOSPLIT, $0-80
	MOVQ y+0(FP), DI
	MOVQ ystride+8(FP), R13
	SHLQ $2, R13
	MOVQ packed+16(FP), SI
	MOVQ scales+24(FP), R8
	MOVQ x+32(FP), R11
	MOVQ xstride+40(FP), R14
	SHLQ $2, R14
	MOVQ lut+48(FP), AX
	MOVQ rows+56(FP), CX
	MOVQ nb+64(FP), R9
	MOVQ bs+72(FP), R10
	SHRQ $4, R10
	VMOVUPS (AX), Y0
	VMOVUPS 32(AX), Y1
	TESTQ CX, CX
	JZ   done2

rowloop2:
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y8, Y8, Y8
	VXORPS Y9, Y9, Y9
	MOVQ R11, DX
	MOVQ R9, BX

blockloop2:
	VBROADCASTSS (R8), Y15
	VMULPS Y15, Y0, Y2
	VMULPS Y15, Y1, Y3
	ADDQ $4, R8
	MOVQ R10, R12

grouploop2:
	VPMOVSXBD (SI), Y12
	VPSLLD    $28, Y12, Y13
	VPERMPS   Y2, Y12, Y14
	VPERMPS   Y3, Y12, Y15
	VBLENDVPS Y13, Y15, Y14, Y14
	VFMADD231PS 32(DX), Y14, Y8
	VFMADD231PS 32(DX)(R14*1), Y14, Y9
	VPSRLD    $4, Y12, Y13
	VPERMPS   Y2, Y13, Y15
	VPERMPS   Y3, Y13, Y13
	VBLENDVPS Y12, Y13, Y15, Y15
	VFMADD231PS (DX), Y15, Y4
	VFMADD231PS (DX)(R14*1), Y15, Y5
	ADDQ $8, SI
	ADDQ $64, DX
	DECQ R12
	JNZ  grouploop2
	DECQ BX
	JNZ  blockloop2

	VADDPS Y8, Y4, Y4
	VADDPS Y9, Y5, Y5
	VHADDPS Y5, Y4, Y4
	VEXTRACTF128 $1, Y4, X5
	VADDPS X5, X4, X4
	VHADDPS X4, X4, X4
	MOVSS X4, (DI)
	VPSRLDQ $4, X4, X4
	MOVSS X4, (DI)(R13*1)
	ADDQ $4, DI
	DECQ CX
	JNZ  rowloop2

done2:
	VZEROUPPER
	RET

// func dequant4AVX2(dst *float32, packed *byte, scales *float32, lut *[16]float32, nb, bs int)
//
// Writes nb·bs dequantised values lut[q]·scales[b] in natural order (bs a multiple of 16).
TEXT ·dequant4AVX2(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), DI
	MOVQ packed+8(FP), SI
	MOVQ scales+16(FP), R8
	MOVQ lut+24(FP), AX
	MOVQ nb+32(FP), CX
	MOVQ bs+40(FP), R10
	SHRQ $4, R10
	VMOVUPS (AX), Y0
	VMOVUPS 32(AX), Y1
	TESTQ CX, CX
	JZ   doneD

blockloopD:
	VBROADCASTSS (R8), Y15
	VMULPS Y15, Y0, Y2
	VMULPS Y15, Y1, Y3
	ADDQ $4, R8
	MOVQ R10, R12

grouploopD:
	VPMOVSXBD (SI), Y8
	VPSRLD    $4, Y8, Y9
	VPSLLD    $28, Y8, Y10
	VPERMPS   Y2, Y8, Y12
	VPERMPS   Y3, Y8, Y13
	VBLENDVPS Y10, Y13, Y12, Y14
	VPERMPS   Y2, Y9, Y12
	VPERMPS   Y3, Y9, Y13
	VBLENDVPS Y8, Y13, Y12, Y15
	VUNPCKLPS Y14, Y15, Y12
	VUNPCKHPS Y14, Y15, Y13
	VPERM2F128 $0x20, Y13, Y12, Y10
	VPERM2F128 $0x31, Y13, Y12, Y11
	VMOVUPS Y10, (DI)
	VMOVUPS Y11, 32(DI)
	ADDQ $8, SI
	ADDQ $64, DI
	DECQ R12
	JNZ  grouploopD
	DECQ CX
	JNZ  blockloopD

doneD:
	VZEROUPPER
	RET
