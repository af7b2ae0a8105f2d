//go:build amd64 && !purego

package kernels

import (
	"math/rand/v2"
	"os"
	"sort"
	"testing"
	"time"
)

// gemmBcastTileOld (before the whole-block A packing) computes C rows [i0, i1) × columns [j0, j1) for op(B) = B:
// 6×16 tiles (A broadcast, B rows loaded in place: no transposes) over K
// chunks of bcK, then the edge rows and columns with axpy.
func gemmBcastTileOld(g *gemmArgs, accum bool, i0, i1, j0, j1 int) {
	k := g.k
	rs, ls := 4*g.lda, 4
	if g.transA {
		rs, ls = 4, 4*g.lda
	}
	iq := i0 + (i1-i0)/6*6
	jq := j0 + (j1-j0)/16*16
	// packed K chunk of B for the tile's full 16-column strips, rows of
	// bpLd floats (80: five cache lines, so that the kc rows of one strip
	// spread over every L1 set), and, for TN, the 6×kc panel of A
	const bpLd = bcCols + 16
	var bp [bcK * bpLd]float32
	var apk [bcK * 6]float32
	w := jq - j0
	for kb := 0; kb < k && iq > i0; kb += bcK {
		kc := min(bcK, k-kb)
		acc := 0
		if kb > 0 || accum {
			acc = 1
		}
		for l := 0; l < kc; l++ {
			copy(bp[l*bpLd:l*bpLd+w], g.b[(kb+l)*g.ldb+j0:(kb+l)*g.ldb+jq])
		}
		for i := i0; i < iq; i += 6 {
			var ap *float32
			ars, als := rs, ls
			if !g.transA {
				ap = &g.a[i*g.lda+kb]
			} else {
				for l := 0; l < kc; l++ {
					copy(apk[l*6:l*6+6], g.a[(kb+l)*g.lda+i:(kb+l)*g.lda+i+6])
				}
				ap, ars, als = &apk[0], 4, 24
			}
			for j := j0; j < jq; {
				if useAVX512 && j+32 <= jq {
					gemmBcast6x32Z(ap, ars, als, &bp[j-j0], bpLd, kc, &g.c[i*g.ldc+j], g.ldc, acc, g.alpha)
					j += 32
					continue
				}
				gemmBcast6x16(ap, ars, als, &bp[j-j0], bpLd, kc, &g.c[i*g.ldc+j], g.ldc, acc, g.alpha)
				j += 16
			}
		}
	}
	for i := i0; i < i1; i++ {
		if i < iq {
			gemmEdge(g, accum, i, jq, j1)
		} else {
			gemmEdge(g, accum, i, j0, j1)
		}
	}
}

// TestABGemmTN compares the TN broadcast tile before and after packing A
// per block, 1 thread, alternating (LORAKIT_KERNELS_AB=1; not a unit test).
func TestABGemmTN(t *testing.T) {
	if os.Getenv("LORAKIT_KERNELS_AB") == "" {
		t.Skip("set LORAKIT_KERNELS_AB=1")
	}
	r := rand.New(rand.NewPCG(7, 7))
	for _, sh := range [][3]int{{1536, 576, 512}, {576, 1536, 256}, {512, 576, 1536}, {4864, 896, 256}, {151936, 64, 64}} {
		m, n, k := sh[0], sh[1], sh[2]
		a := randF32(r, k*m)
		b := randF32(r, k*n)
		c := make([]float32, m*n)
		an := randF32(r, m*k)
		var tOld, tNew, tNN []time.Duration
		for it := 0; it < 7; it++ {
			for v, f := range []func(*gemmArgs, bool, int, int, int, int){gemmBcastTileOld, gemmBcastTile, gemmBcastTile} {
				g := gemmArgs{transA: v < 2, m: m, n: n, k: k, alpha: 1, a: a, lda: m, b: b, ldb: n, c: c, ldc: n}
				if v == 2 {
					g.a, g.lda = an, k
				}
				tk := gemmBTask{g: g, ti: (m + bcRows - 1) / bcRows}
				tiles := tk.ti * ((n + bcCols - 1) / bcCols)
				t0 := time.Now()
				for bi := 0; bi < tiles; bi++ {
					ib, jb := bi%tk.ti, bi/tk.ti
					i0, j0 := ib*bcRows, jb*bcCols
					f(&tk.g, false, i0, min(i0+bcRows, m), j0, min(j0+bcCols, n))
				}
				d := time.Since(t0)
				switch v {
				case 0:
					tOld = append(tOld, d)
				case 1:
					tNew = append(tNew, d)
				default:
					tNN = append(tNN, d)
				}
			}
		}
		med := func(d []time.Duration) float64 {
			sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
			return d[len(d)/2].Seconds()
		}
		gf := 2 * float64(m*n*k) / 1e9
		t.Logf("m%d n%d k%d 1 thread: TN old %.0f GFLOP/s, TN new %.0f GFLOP/s (%.2f× old), NN %.0f GFLOP/s", m, n, k,
			gf/med(tOld), gf/med(tNew), med(tOld)/med(tNew), gf/med(tNN))
	}
}
