//go:build amd64 && !purego

#include "textflag.h"

// func nf4RowsAVX2(y *float32, packed *byte, scales *float32, x *float32, lut *[16]float32, rows, nb, bs int)
//
// Per 8 packed bytes (16 elements): VPMOVZXBD puts each byte in a dword d. The low nibble's value is
// VPERMPS(d, LUT[0:8]) or VPERMPS(d, LUT[8:16]) chosen by bit 3 (d<<28 as the VBLENDVPS mask); the high
// nibble's the same with d>>4 and bit 7 (d<<24). The two LUT halves are multiplied by the block's absmax
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
	VPMOVZXBD (SI), Y8
	VPSRLD    $4, Y8, Y9
	VPSLLD    $28, Y8, Y10
	VPSLLD    $24, Y8, Y11
	VPERMPS   Y2, Y8, Y12
	VPERMPS   Y3, Y8, Y13
	VBLENDVPS Y10, Y13, Y12, Y14
	VPERMPS   Y2, Y9, Y12
	VPERMPS   Y3, Y9, Y13
	VBLENDVPS Y11, Y13, Y12, Y15
	VFMADD231PS (DX), Y15, Y4
	VFMADD231PS 32(DX), Y14, Y5

	VPMOVZXBD 8(SI), Y8
	VPSRLD    $4, Y8, Y9
	VPSLLD    $28, Y8, Y10
	VPSLLD    $24, Y8, Y11
	VPERMPS   Y2, Y8, Y12
	VPERMPS   Y3, Y8, Y13
	VBLENDVPS Y10, Y13, Y12, Y14
	VPERMPS   Y2, Y9, Y12
	VPERMPS   Y3, Y9, Y13
	VBLENDVPS Y11, Y13, Y12, Y15
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
