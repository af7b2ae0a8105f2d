package quant

// The assembly kernels (AVX-512 VNNI and AVX2) are generated (asm/ is the generator, its own module so that avo
// stays out of lorakit's dependencies); .ci/check runs this and fails when the committed files differ.
//go:generate go run -C asm . -out ../quant_gen_amd64.s -stubs ../quant_gen_amd64.go -pkg quant -table ../quant_table_amd64.go
