//go:build amd64 && !purego

#include "textflag.h"

// NF4XARGS loads the arguments of the multi-row kernels (nf4Rows16x4AVX2, nf4Rows16x2AVX2): R10 groups per
// block (0 for bs = 32, when R9 counts groups of two blocks), the tables in Y0..Y2, x scales at AX; the
// flags are CX's (rows) test.
#define NF4XARGS \
	MOVQ y+0(FP), DI \
	MOVQ ystride+8(FP), R13 \
	SHLQ $2, R13 \
	MOVQ packed+16(FP), SI \
	MOVQ scales+24(FP), R8 \
	MOVQ xq+32(FP), R11 \
	MOVQ lut+48(FP), AX \
	MOVQ rows+56(FP), CX \
	MOVQ nb+64(FP), R9 \
	MOVQ bs+72(FP), R10 \
	SHRQ $6, R10 \
	TESTQ R10, R10 \
	JNZ  2(PC) \
	SHRQ $1, R9 \
	VBROADCASTI128 (AX), Y0 \
	VBROADCASTI128 16(AX), Y1 \
	VBROADCASTI128 32(AX), Y2 \
	MOVQ xs+40(FP), AX \
	TESTQ CX, CX

// NF4XABSMAX broadcasts the block's absmax into Y11 (bs = 32: the group's two blocks, one per 128-bit lane).
#define NF4XABSMAX \
	VBROADCASTSS (R8), Y11 \
	TESTQ R10, R10 \
	JNZ  3(PC) \
	VBROADCASTSS 4(R8), Y13 \
	VBLENDPS $0xf0, Y13, Y11, Y11

// NF4XNEXTBLOCK advances R8 past the absmax values just used (two for bs = 32).
#define NF4XNEXTBLOCK \
	ADDQ $4, R8 \
	TESTQ R10, R10 \
	JNZ  2(PC) \
	ADDQ $4, R8

// HSUMTO reduces the 8 lanes of acc to a scalar in xacc (clobbering X11) and stores it at dst.
#define HSUMTO(acc, xacc, dst) \
	VEXTRACTF128 $1, acc, X11 \
	VADDPS X11, xacc, xacc \
	VHADDPS xacc, xacc, xacc \
	VHADDPS xacc, xacc, xacc \
	MOVSS xacc, dst

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

// NF4CODES loads 32 packed bytes (64 elements) at SI and splits them into the odd elements' codes (lo:
// low nibbles) and the even elements' (hi: high nibbles), one per byte. Y2 holds the nibble mask.
#define NF4CODES(lo, hi) \
	VMOVDQU (SI), lo \
	VPSRLW  $4, lo, hi \
	VPAND   Y2, lo, lo \
	VPAND   Y2, hi, hi

// NF4LEVELS looks the 32 codes up in the levels' low- and high-byte tables (Y0, Y1) and joins the bytes
// into two vectors of 16 int16 levels, w0 and w1 (codes is clobbered).
#define NF4LEVELS(codes, t, w0, w1) \
	VPSHUFB codes, Y0, t \
	VPSHUFB codes, Y1, codes \
	VPUNPCKLBW codes, t, w0 \
	VPUNPCKHBW codes, t, w1

// func nf4Rows16AVX2(y *float32, packed *byte, scales *float32, xq *int16, xs *float32, lut *lut16, rows, nb, bs int)
//
// The integer row kernel (see x16.go) for one x row. Per 32 packed bytes (64 elements): the low and high
// nibbles are masked apart, each indexes the int16 levels' low- and high-byte tables (VPSHUFB), VPUNPCK
// joins the bytes to four vectors of 16 int16 levels, and VPMADDWD multiplies them with the kernel-
// ordered int16 x into int32. Each group's sum is converted and scaled by its block's absmax·step (bs = 64,
// bitsandbytes' default, is one group per block).
TEXT ·nf4Rows16AVX2(SB), NOSPLIT, $0-72
	MOVQ y+0(FP), DI
	MOVQ packed+8(FP), SI
	MOVQ scales+16(FP), R8
	MOVQ xq+24(FP), R11
	MOVQ xs+32(FP), R13
	MOVQ lut+40(FP), AX
	MOVQ rows+48(FP), CX
	MOVQ nb+56(FP), R9
	MOVQ bs+64(FP), R10
	SHRQ $6, R10
	TESTQ R10, R10
	JNZ  2(PC)
	SHRQ $1, R9
	VBROADCASTI128 (AX), Y0
	VBROADCASTI128 16(AX), Y1
	VBROADCASTI128 32(AX), Y2
	TESTQ CX, CX
	JZ   done16

row16:
	VXORPS Y3, Y3, Y3
	MOVQ R11, DX
	MOVQ R13, R14
	MOVQ R9, BX

block16:
	VBROADCASTSS (R8), Y11
	MOVQ R10, R12
	TESTQ R10, R10
	JNZ  scale16
	// bs == 32: a group is two blocks; its products' low 128-bit lane is the first, the high the second
	VBROADCASTSS 4(R8), Y13
	VBLENDPS $0xf0, Y13, Y11, Y11
	ADDQ $4, R8
	MOVQ $1, R12

scale16:
	VMULPS       (R14), Y11, Y11

group16:
	PREFETCHT0 2048(SI)
	NF4CODES(Y5, Y6)
	NF4LEVELS(Y6, Y7, Y9, Y10)
	VPMADDWD (DX), Y9, Y4
	VPMADDWD 32(DX), Y10, Y10
	NF4LEVELS(Y5, Y7, Y9, Y12)
	VPMADDWD 64(DX), Y9, Y9
	VPMADDWD 96(DX), Y12, Y12
	VPADDD  Y10, Y4, Y4
	VPADDD  Y12, Y9, Y9
	VPADDD  Y9, Y4, Y4
	VCVTDQ2PS   Y4, Y4
	VFMADD231PS Y11, Y4, Y3
	ADDQ $32, SI
	ADDQ $128, DX
	DECQ R12
	JNZ  group16
	ADDQ $4, R8
	ADDQ $32, R14
	DECQ BX
	JNZ  block16

	VEXTRACTF128 $1, Y3, X5
	VADDPS X5, X3, X3
	VHADDPS X3, X3, X3
	VHADDPS X3, X3, X3
	MOVSS X3, (DI)
	ADDQ $4, DI
	DECQ CX
	JNZ  row16

done16:
	VZEROUPPER
	RET

// NF4X4 multiplies the level vectors w0, w1 with x row i's two vectors at off bytes (in DX) into its int32
// accumulator acc; first selects whether the product initialises acc.
#define NF4X4FIRST(off, w0, w1, acc) \
	VPMADDWD off(DX), w0, acc \
	VPMADDWD off+32(DX), w1, Y15 \
	VPADDD   Y15, acc, acc

#define NF4X4NEXT(off, w0, w1, acc) \
	VPMADDWD off(DX), w0, Y15 \
	VPADDD   Y15, acc, acc \
	VPMADDWD off+32(DX), w1, Y15 \
	VPADDD   Y15, acc, acc

// NF4X4SCALE converts x row i's group sum iacc and adds it, times absmax (Y11) · the row's step at
// soff(R14), to its float accumulator facc.
#define NF4X4SCALE(soff, iacc, facc) \
	VCVTDQ2PS    iacc, iacc \
	VMULPS       soff(R14), Y11, Y12 \
	VFMADD231PS  Y12, iacc, facc

// func nf4Rows16x4AVX2(y *float32, ystride int, packed *byte, scales *float32, xq *int16, xs *float32, lut *lut16, rows, nb, bs int)
//
// nf4Rows16AVX2 for four x rows interleaved as x16 lays them out (per group, four runs of 64 int16; per
// block, four runs of 8 scales): each group of weights is decoded once for all four. Accumulators:
// Y3..Y6 float per x row, Y7..Y10 int32 per x row.
TEXT ·nf4Rows16x4AVX2(SB), NOSPLIT, $0-80
	NF4XARGS
	JZ   done16x4

row16x4:
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	MOVQ R11, DX
	MOVQ AX, R14
	MOVQ R9, BX

block16x4:
	MOVQ R10, R12
	TESTQ R12, R12
	JNZ  2(PC)
	MOVQ $1, R12

group16x4:
	PREFETCHT0 2048(SI)
	NF4CODES(Y11, Y12)
	NF4LEVELS(Y12, Y13, Y14, Y12)
	NF4X4FIRST(0, Y14, Y12, Y7)
	NF4X4FIRST(128, Y14, Y12, Y8)
	NF4X4FIRST(256, Y14, Y12, Y9)
	NF4X4FIRST(384, Y14, Y12, Y10)
	NF4LEVELS(Y11, Y13, Y14, Y12)
	NF4X4NEXT(64, Y14, Y12, Y7)
	NF4X4NEXT(192, Y14, Y12, Y8)
	NF4X4NEXT(320, Y14, Y12, Y9)
	NF4X4NEXT(448, Y14, Y12, Y10)
	NF4XABSMAX
	NF4X4SCALE(0, Y7, Y3)
	NF4X4SCALE(32, Y8, Y4)
	NF4X4SCALE(64, Y9, Y5)
	NF4X4SCALE(96, Y10, Y6)
	ADDQ $32, SI
	ADDQ $512, DX
	DECQ R12
	JNZ  group16x4
	NF4XNEXTBLOCK
	ADDQ $128, R14
	DECQ BX
	JNZ  block16x4

	HSUMTO(Y3, X3, (DI))
	HSUMTO(Y4, X4, (DI)(R13*1))
	HSUMTO(Y5, X5, (DI)(R13*2))
	LEAQ (DI)(R13*2), BX
	HSUMTO(Y6, X6, (BX)(R13*1))
	ADDQ $4, DI
	DECQ CX
	JNZ  row16x4

done16x4:
	VZEROUPPER
	RET

// func nf4Rows16x2AVX2(y *float32, ystride int, packed *byte, scales *float32, xq *int16, xs *float32, lut *lut16, rows, nb, bs int)
//
// nf4Rows16x4AVX2 for a chunk of two x rows (per group, two runs of 64 int16; per block, two runs of 8
// scales). Accumulators: Y3, Y4 float, Y7, Y8 int32.
TEXT ·nf4Rows16x2AVX2(SB), NOSPLIT, $0-80
	NF4XARGS
	JZ   done16x2

row16x2:
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	MOVQ R11, DX
	MOVQ AX, R14
	MOVQ R9, BX

block16x2:
	MOVQ R10, R12
	TESTQ R12, R12
	JNZ  2(PC)
	MOVQ $1, R12

group16x2:
	PREFETCHT0 2048(SI)
	NF4CODES(Y11, Y12)
	NF4LEVELS(Y12, Y13, Y14, Y12)
	NF4X4FIRST(0, Y14, Y12, Y7)
	NF4X4FIRST(128, Y14, Y12, Y8)
	NF4LEVELS(Y11, Y13, Y14, Y12)
	NF4X4NEXT(64, Y14, Y12, Y7)
	NF4X4NEXT(192, Y14, Y12, Y8)
	NF4XABSMAX
	NF4X4SCALE(0, Y7, Y3)
	NF4X4SCALE(32, Y8, Y4)
	ADDQ $32, SI
	ADDQ $256, DX
	DECQ R12
	JNZ  group16x2
	NF4XNEXTBLOCK
	ADDQ $64, R14
	DECQ BX
	JNZ  block16x2

	HSUMTO(Y3, X3, (DI))
	HSUMTO(Y4, X4, (DI)(R13*1))
	ADDQ $4, DI
	DECQ CX
	JNZ  row16x2

done16x2:
	VZEROUPPER
	RET

// func quantX16AVX2(q *int16, s *float32, x *float32, nb, bs, gstride int, lim, inv float32)
//
// Quantises one row of x for the integer kernels (the assembly twin of quantizeRow): per block (bs = 32:
// both blocks of each group of 64, one after the other), the
// step is max|x|/lim (the maximum taken over the bit patterns of |x|, so that a NaN wins as it does in Go's
// max and reaches the output) and each element becomes round-to-even(x·lim/max). Each group of 64 elements is
// written in kernel order (see groupPerm): VPERM2F128 pairs the 128-bit halves that share a destination
// lane, VSHUFPS splits even from odd elements, VPACKSSDW joins two such vectors to 16 int16. Consecutive
// groups of the row are gstride bytes apart in q, blocks' scale runs gstride/4 apart in s.
TEXT ·quantX16AVX2(SB), NOSPLIT, $0-56
	MOVQ q+0(FP), DI
	MOVQ s+8(FP), R8
	MOVQ x+16(FP), SI
	MOVQ nb+24(FP), CX
	MOVQ bs+32(FP), R9
	MOVQ gstride+40(FP), R10
	MOVSS lim+48(FP), X14
	MOVSS inv+52(FP), X13
	MOVQ R10, R11
	SHRQ $2, R11
	VPCMPEQD Y15, Y15, Y15
	VPSRLD $1, Y15, Y15
	TESTQ CX, CX
	JZ   doneqx

	CMPQ R9, $32
	JNE  blockqx
	SHRQ $1, CX

blockqx:
	VXORPS Y0, Y0, Y0
	MOVQ SI, DX
	MOVQ R9, BX
	SHRQ $3, BX

maxqx:
	VANDPS (DX), Y15, Y1
	VPMAXSD Y1, Y0, Y0
	ADDQ $32, DX
	DECQ BX
	JNZ  maxqx

	VEXTRACTI128 $1, Y0, X1
	VPMAXSD X1, X0, X0
	VPSHUFD $0x4e, X0, X1
	VPMAXSD X1, X0, X0
	VPSHUFD $0xb1, X0, X1
	VPMAXSD X1, X0, X0
	VXORPS X2, X2, X2
	VXORPS X3, X3, X3
	MOVL X0, AX
	TESTL AX, AX
	JZ   zeroqx
	VDIVSS X0, X14, X2
	VDIVSS X14, X0, X3
	VMULSS X13, X3, X3

zeroqx:
	CMPQ R9, $32
	JEQ  halfqx
	VBROADCASTSS X3, Y3
	VMOVUPS Y3, (R8)
	VBROADCASTSS X2, Y2
	VMOVAPS Y2, Y3
	MOVQ R9, BX
	SHRQ $6, BX
	JMP  groupqx

	// bs == 32: the group's second block (the max loop left DX on it) gets its own step; the scales are
	// stored as [first ×4, second ×4], the multipliers go to Y2 (elements 0..31) and Y3 (32..63)
halfqx:
	VMOVAPS X2, X4
	VMOVAPS X3, X5
	VANDPS (DX), Y15, Y0
	VANDPS 32(DX), Y15, Y1
	VPMAXSD Y1, Y0, Y0
	VANDPS 64(DX), Y15, Y1
	VPMAXSD Y1, Y0, Y0
	VANDPS 96(DX), Y15, Y1
	VPMAXSD Y1, Y0, Y0
	VEXTRACTI128 $1, Y0, X1
	VPMAXSD X1, X0, X0
	VPSHUFD $0x4e, X0, X1
	VPMAXSD X1, X0, X0
	VPSHUFD $0xb1, X0, X1
	VPMAXSD X1, X0, X0
	VXORPS X2, X2, X2
	VXORPS X3, X3, X3
	MOVL X0, AX
	TESTL AX, AX
	JZ   zero2qx
	VDIVSS X0, X14, X2
	VDIVSS X14, X0, X3
	VMULSS X13, X3, X3

zero2qx:
	VBROADCASTSS X5, Y5
	VBROADCASTSS X3, Y3
	VBLENDPS $0xf0, Y3, Y5, Y3
	VMOVUPS Y3, (R8)
	VBROADCASTSS X2, Y3
	VBROADCASTSS X4, Y2
	MOVQ $1, BX

groupqx:
	VMULPS (SI), Y2, Y4
	VMULPS 32(SI), Y2, Y5
	VMULPS 64(SI), Y2, Y6
	VMULPS 96(SI), Y2, Y7
	VMULPS 128(SI), Y3, Y8
	VMULPS 160(SI), Y3, Y9
	VMULPS 192(SI), Y3, Y10
	VMULPS 224(SI), Y3, Y11

	VPERM2F128 $0x20, Y8, Y4, Y12
	VPERM2F128 $0x31, Y8, Y4, Y1
	VSHUFPS $0x88, Y1, Y12, Y4
	VSHUFPS $0xdd, Y1, Y12, Y8
	VPERM2F128 $0x20, Y9, Y5, Y12
	VPERM2F128 $0x31, Y9, Y5, Y1
	VSHUFPS $0x88, Y1, Y12, Y5
	VSHUFPS $0xdd, Y1, Y12, Y9
	VPERM2F128 $0x20, Y10, Y6, Y12
	VPERM2F128 $0x31, Y10, Y6, Y1
	VSHUFPS $0x88, Y1, Y12, Y6
	VSHUFPS $0xdd, Y1, Y12, Y10
	VPERM2F128 $0x20, Y11, Y7, Y12
	VPERM2F128 $0x31, Y11, Y7, Y1
	VSHUFPS $0x88, Y1, Y12, Y7
	VSHUFPS $0xdd, Y1, Y12, Y11

	VCVTPS2DQ Y4, Y4
	VCVTPS2DQ Y5, Y5
	VCVTPS2DQ Y6, Y6
	VCVTPS2DQ Y7, Y7
	VCVTPS2DQ Y8, Y8
	VCVTPS2DQ Y9, Y9
	VCVTPS2DQ Y10, Y10
	VCVTPS2DQ Y11, Y11
	VPACKSSDW Y5, Y4, Y4
	VPACKSSDW Y7, Y6, Y6
	VPACKSSDW Y9, Y8, Y8
	VPACKSSDW Y11, Y10, Y10
	VMOVDQU Y4, (DI)
	VMOVDQU Y6, 32(DI)
	VMOVDQU Y8, 64(DI)
	VMOVDQU Y10, 96(DI)
	ADDQ $256, SI
	ADDQ R10, DI
	DECQ BX
	JNZ  groupqx

	ADDQ R11, R8
	DECQ CX
	JNZ  blockqx

doneqx:
	VZEROUPPER
	RET

// func int8Rows16AVX2(y *float32, packed *byte, scales *float32, xq *int16, xs *float32, rows, cols int)
//
// Row-wise int8 weights times x quantised to int16 in natural order (x16, one row): per block of 64,
// VPMOVSXBW widens 16 codes per load, VPMADDWD sums products exactly in int32, and the block's sum is
// converted and scaled by its x step once; each row's total is scaled by the row's absmax.
TEXT ·int8Rows16AVX2(SB), NOSPLIT, $0-56
	MOVQ y+0(FP), DI
	MOVQ packed+8(FP), SI
	MOVQ scales+16(FP), R8
	MOVQ xq+24(FP), R11
	MOVQ xs+32(FP), R13
	MOVQ rows+40(FP), CX
	MOVQ cols+48(FP), R9
	SHRQ $6, R9
	TESTQ CX, CX
	JZ   done816

row816:
	VXORPS Y3, Y3, Y3
	MOVQ R11, DX
	MOVQ R13, R14
	MOVQ R9, BX

block816:
	PREFETCHT0 2048(SI)
	VPMOVSXBW (SI), Y4
	VPMOVSXBW 16(SI), Y5
	VPMOVSXBW 32(SI), Y6
	VPMOVSXBW 48(SI), Y7
	VPMADDWD (DX), Y4, Y4
	VPMADDWD 32(DX), Y5, Y5
	VPMADDWD 64(DX), Y6, Y6
	VPMADDWD 96(DX), Y7, Y7
	VPADDD Y5, Y4, Y4
	VPADDD Y7, Y6, Y6
	VPADDD Y6, Y4, Y4
	VCVTDQ2PS Y4, Y4
	VFMADD231PS (R14), Y4, Y3
	ADDQ $64, SI
	ADDQ $128, DX
	ADDQ $32, R14
	DECQ BX
	JNZ  block816

	VEXTRACTF128 $1, Y3, X5
	VADDPS X5, X3, X3
	VHADDPS X3, X3, X3
	VHADDPS X3, X3, X3
	VMULSS (R8), X3, X3
	MOVSS X3, (DI)
	ADDQ $4, R8
	ADDQ $4, DI
	DECQ CX
	JNZ  row816

done816:
	VZEROUPPER
	RET

// INT8X16ROW multiplies the widened codes in Y4..Y7 with x row at off bytes into the float accumulator acc,
// scaled by the x steps at soff(R14).
#define INT8X16ROW(off, soff, acc) \
	VPMADDWD off(DX), Y4, Y8 \
	VPMADDWD off+32(DX), Y5, Y9 \
	VPADDD Y9, Y8, Y8 \
	VPMADDWD off+64(DX), Y6, Y9 \
	VPADDD Y9, Y8, Y8 \
	VPMADDWD off+96(DX), Y7, Y9 \
	VPADDD Y9, Y8, Y8 \
	VCVTDQ2PS Y8, Y8 \
	VFMADD231PS soff(R14), Y8, acc

// HSUMSTORE reduces acc (Y) to a scalar in its X register, scales it by X15 and stores it at dst.
#define HSUMSTORE(acc, xacc, dst) \
	VEXTRACTF128 $1, acc, X8 \
	VADDPS X8, xacc, xacc \
	VHADDPS xacc, xacc, xacc \
	VHADDPS xacc, xacc, xacc \
	VMULSS X15, xacc, xacc \
	MOVSS xacc, dst

// func int8Rows16x4AVX2(y *float32, ystride int, packed *byte, scales *float32, xq *int16, xs *float32, rows, cols int)
//
// int8Rows16AVX2 for a chunk of four x rows (x16's interleaved layout): each block of codes is widened once.
TEXT ·int8Rows16x4AVX2(SB), NOSPLIT, $0-64
	MOVQ y+0(FP), DI
	MOVQ ystride+8(FP), R13
	SHLQ $2, R13
	MOVQ packed+16(FP), SI
	MOVQ scales+24(FP), R8
	MOVQ xq+32(FP), R11
	MOVQ xs+40(FP), AX
	MOVQ rows+48(FP), CX
	MOVQ cols+56(FP), R9
	SHRQ $6, R9
	TESTQ CX, CX
	JZ   done816x4

row816x4:
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	MOVQ R11, DX
	MOVQ AX, R14
	MOVQ R9, BX

block816x4:
	PREFETCHT0 2048(SI)
	VPMOVSXBW (SI), Y4
	VPMOVSXBW 16(SI), Y5
	VPMOVSXBW 32(SI), Y6
	VPMOVSXBW 48(SI), Y7
	INT8X16ROW(0, 0, Y0)
	INT8X16ROW(128, 32, Y1)
	INT8X16ROW(256, 64, Y2)
	INT8X16ROW(384, 96, Y3)
	ADDQ $64, SI
	ADDQ $512, DX
	ADDQ $128, R14
	DECQ BX
	JNZ  block816x4

	VMOVSS (R8), X15
	HSUMSTORE(Y0, X0, (DI))
	HSUMSTORE(Y1, X1, (DI)(R13*1))
	HSUMSTORE(Y2, X2, (DI)(R13*2))
	LEAQ (DI)(R13*2), BX
	HSUMSTORE(Y3, X3, (BX)(R13*1))
	ADDQ $4, R8
	ADDQ $4, DI
	DECQ CX
	JNZ  row816x4

done816x4:
	VZEROUPPER
	RET
