package main

import (
	"bytes"
	"testing"
)

// TestEVEX512 checks encodings against what binutils' objdump decodes them to (Go operand order: src2, src1,
// dst), registers on both sides of 8 and 16 included.
func TestEVEX512(t *testing.T) {
	for _, tc := range []struct {
		name            string
		pp, op          byte
		src2, src1, dst int
		want            []byte
	}{
		{"vdpbf16ps %zmm30,%zmm31,%zmm0", 2, 0x52, 30, 31, 0, []byte{0x62, 0x92, 0x06, 0x40, 0x52, 0xc6}},
		{"vdpbf16ps %zmm24,%zmm28,%zmm0", 2, 0x52, 24, 28, 0, []byte{0x62, 0x92, 0x1e, 0x40, 0x52, 0xc0}},
		{"vdpbf16ps %zmm26,%zmm30,%zmm23", 2, 0x52, 26, 30, 23, []byte{0x62, 0x82, 0x0e, 0x40, 0x52, 0xfa}},
		{"vcvtne2ps2bf16 %zmm0,%zmm1,%zmm2", 3, 0x72, 0, 1, 2, []byte{0x62, 0xf2, 0x77, 0x48, 0x72, 0xd0}},
		{"vcvtne2ps2bf16 %zmm0,%zmm1,%zmm5", 3, 0x72, 0, 1, 5, []byte{0x62, 0xf2, 0x77, 0x48, 0x72, 0xe8}},
	} {
		if got := evex512(tc.pp, tc.op, tc.dst, tc.src1, tc.src2); !bytes.Equal(got, tc.want) {
			t.Errorf("%s: % x, want % x", tc.name, got, tc.want)
		}
	}
}
