//go:build amd64 && !purego

package quant

import (
	"fmt"
	"testing"
)

// BenchmarkDotYKernel calls the AVX2 dot kernels directly on codes in L1 (4 tiles × 18 blocks), without the
// quantisation and the pool around them, for each layout (kind: dotL4, dotQ4, dotB8) and row count.
func BenchmarkDotYKernel(b *testing.B) {
	if !useAVX2 {
		b.Skip("no AVX2")
	}
	const tiles, nb = 4, 18
	// The kernels prefetch up to 8 KiB past the codes they read (dotPrefetch in asm/): padding keeps those lines
	// inside this buffer, so the benchmark measures the kernel on cached codes, not lines fetched from beyond it
	// on every pass (k=4 read 11.7 MAC/ns without the padding, 21 with the prefetch removed: session 11, h3).
	codes := make([]byte, tiles*nb*512+8192)
	for i := range codes {
		codes[i] = byte(i * 7)
	}
	scales := make([]float32, tiles*nb*16)
	xq := make([]byte, dotKY*nb*32)
	xs := make([]float32, dotKY*nb)
	xc := make([]int32, dotKY*nb)
	y := make([]float32, dotKY*tiles*16)
	var lut [16]byte
	for kind := range 3 {
		for k := 1; k <= dotKY; k++ {
			b.Run(fmt.Sprintf("kind=%d/k=%d", kind, k), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					dotKernelsY[kind][k-1](&y[0], tiles*16, &codes[0], &scales[0], &xq[0], &xs[0], &xc[0], &lut[0], tiles, nb, 1, k)
				}
				b.ReportMetric(float64(b.N)*float64(k*tiles*16*nb*32)/float64(b.Elapsed().Nanoseconds()), "MAC/ns")
			})
		}
	}
}
