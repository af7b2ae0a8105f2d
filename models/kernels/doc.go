// Package kernels holds the numeric inner loops of lorakit: dot products,
// matrix-vector products over f32, bf16 and f16 weights, matrix products
// (prefill, training), RMSNorm, softmax, SiLU·mul and RoPE.
//
// Everything is row-major. Weight matrices use the Hugging Face [out, in]
// layout (rows = output features). Every exported function documents its
// reference loop; the amd64 build runs AVX2+FMA assembly when the CPU has it,
// and the pure-Go twins (build tag purego, or any other GOARCH) run the
// reference loops. Tests compare both over sweeps of sizes and alignments.
//
// Functions panic with a "kernels: ..." message when slice lengths do not
// match the given shapes: those are programming errors of the caller.
package kernels
