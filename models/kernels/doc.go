// Package kernels holds the numeric inner loops of lorakit: dot products,
// matrix-vector products over f32, bf16 and f16 weights, matrix products
// (prefill, training), RMSNorm, softmax, SiLU·mul and RoPE.
//
// Everything is row-major. Weight matrices use the Hugging Face [out, in]
// layout (rows = output features). Every exported function documents its
// reference loop; ref.go holds those loops as code.
//
// # Implementations
//
// On amd64 the kernels run hand-written Go assembly (kernels_amd64.s, written
// with preprocessor macros so that each loop body exists once) when the CPU
// has AVX2 and FMA (and F16C for f16 weights), detected at start-up with
// golang.org/x/sys/cpu:
//
//   - GEMV (decode): four weight rows per pass with two accumulators each,
//     16-bit weights widened in registers (bf16: one 32-byte load gives 16
//     weights by a shift and a mask against x reordered once per call; f16:
//     VCVTPH2PS); every pass covers whole cache lines and prefetches the
//     same lines of the next four rows. Rows are split over the pool in
//     blocks claimed dynamically. MatVecs runs several GEMVs (q, k, v;
//     gate, up) as one pool job.
//   - X·Wᵀ (MatMul*T, Gemm NT): a 3×4 register tile of dot products over K
//     chunks of 512, 16 lanes wide when the CPU has AVX-512 (F and BW), 8
//     otherwise, and a 2×4 tile for the one or two rows left over; weights
//     converted in registers, nothing packed. The first row pass over a
//     block prefetches the next W quad (decode batches read W from DRAM).
//   - Gemm NN and TN: a 6×16 (AVX2) or 6×32 (AVX-512) broadcast tile over a
//     packed K×64 panel of B; A is read in place (TN: stride lda per K step).
//   - Softmax and SiLUMul use a Cephes-style polynomial exp over 8 lanes.
//
// The pure-Go twins (build tag purego, or any other GOARCH) run the reference
// loops; tests sweep sizes and alignments and compare both, and also run the
// amd64 build with the AVX-512 tiles and with all assembly switched off.
//
// # Threads
//
// A Pool keeps threads-1 worker goroutines that poll for work for a few
// hundred microseconds after each job, then park; the caller takes a share
// of every job and waits only for chunks a worker has claimed (a worker that
// was descheduled before claiming one is not waited for: the caller runs the
// rest itself). Kernels allocate nothing per call: their jobs and scratch
// buffers live in the Pool. A nil Pool runs everything on the caller.
//
// Functions panic with a "kernels: ..." message when slice lengths do not
// match the given shapes: those are programming errors of the caller.
package kernels
