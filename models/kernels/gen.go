package kernels

// The AVX-512 tile families are generated (asm/ is the generator, its own module so that avo stays out of
// lorakit's dependencies); .ci/check runs this and fails when the committed files differ.
//go:generate go run -C asm . -out ../kernels_gen_amd64.s -stubs ../kernels_gen_amd64.go -pkg kernels
