package main

// This file adds to avo (github.com/mmcloughlin/avo, v0.5.0) the AVX-512 instructions that neither avo nor
// the Go assembler knows, emitted as raw EVEX bytes (LONG and WORD directives after a comment naming the
// instruction): the AVX512_BF16 dot product and conversion. Only register operands are supported and the registers
// must be physical (avo's allocator cannot see inside the bytes), so generators using these keep their
// vector registers physical. The test checks encodings against binutils' disassembly.

import (
	"fmt"

	"github.com/mmcloughlin/avo/build"
	"github.com/mmcloughlin/avo/ir"
	"github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"
)

// vdpbf16ps emits VDPBF16PS src2, src1, dst (Go operand order, 512 bits): for each of the 16 float32 lanes i,
// dst[i] += src1.bf16[2i]·src2.bf16[2i] + src1.bf16[2i+1]·src2.bf16[2i+1] (denormals flushed, round to
// nearest even).
func vdpbf16ps(src2, src1, dst reg.VecPhysical) {
	emit("VDPBF16PS", evex512(0x2, 0x52, num(dst), num(src1), num(src2)), src2, src1, dst)
}

// vcvtne2ps2bf16 emits VCVTNE2PS2BF16 src2, src1, dst (Go order, 512 bits): dst's 32 bfloat16 lanes are
// src2's 16 float32 lanes (low half) then src1's (high half), each rounded to nearest even.
func vcvtne2ps2bf16(src2, src1, dst reg.VecPhysical) {
	emit("VCVTNE2PS2BF16", evex512(0x3, 0x72, num(dst), num(src1), num(src2)), src2, src1, dst)
}

// evex512 encodes a 512-bit, W0, map-0F38 EVEX instruction with prefix pp (1: 66, 2: F3, 3: F2), opcode op
// and all-register operands dst (ModRM.reg), src1 (EVEX.vvvv) and src2 (ModRM.rm), no masking.
func evex512(pp, op byte, dst, src1, src2 int) []byte {
	inv := func(b int) byte { return byte(1 - b) }
	p0 := inv(dst>>3&1)<<7 | inv(src2>>4&1)<<6 | inv(src2>>3&1)<<5 | inv(dst>>4&1)<<4 | 0x2 // R X B R' 00 mm=0F38
	p1 := byte(^src1&15)<<3 | 1<<2 | pp                                                     // W=0 vvvv 1 pp
	p2 := byte(2)<<5 | inv(src1>>4&1)<<3                                                    // z=0 L'L=512 b=0 V' aaa=0
	modrm := 0xC0 | byte(dst&7)<<3 | byte(src2&7)
	return []byte{0x62, p0, p1, p2, op, modrm}
}

func num(r reg.VecPhysical) int {
	if r.Kind() != reg.KindVector || r.Size() != 64 {
		panic(fmt.Sprintf("avox: %s: want a ZMM register", r.Asm()))
	}
	return int(r.PhysicalIndex())
}

// emit writes the 6-byte encoding b as LONG and WORD directives after a comment naming the instruction.
func emit(name string, b []byte, ops ...reg.VecPhysical) {
	build.Comment(fmt.Sprintf("%s %s, %s, %s", name, ops[0].Asm(), ops[1].Asm(), ops[2].Asm()))
	l := uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
	w := uint16(b[4]) | uint16(b[5])<<8
	build.Instruction(&ir.Instruction{Opcode: "LONG", Operands: []operand.Op{operand.U32(l)}})
	build.Instruction(&ir.Instruction{Opcode: "WORD", Operands: []operand.Op{operand.U16(w)}})
}
