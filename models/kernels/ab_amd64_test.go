//go:build amd64 && !purego

package kernels

import (
	"math/rand/v2"
	"os"
	"sort"
	"testing"
	"time"
)

// matMulTileOld is the tile loop before the 2×4 tile (leftover rows through
// the one-row GEMV kernel), kept for the A/B comparison below.
// (old version)
// over K chunks of mmK (the X rows and W rows of a tile stay in L1), then the
// K tail (k % 8) of those tiles, then the edge rows and columns with the
// 4-row GEMV kernels.
func matMulTileOld(t *matMulTask, i0, i1, j0, j1 int) {
	k := t.k
	wide := useAVX512
	k8 := k &^ 7
	if wide {
		k8 = k &^ 15
	}
	if !useAVX2 || (t.kind == wF16 && !hasF16C) || k8 == 0 {
		iq, jq := i0, j0
		matMulEdges(t, i0, i1, j0, j1, iq, jq)
		return
	}
	ldy, ldx, ldw := t.ldy, t.ldx, t.ldw
	iq := i0 + (i1-i0)/3*3 // end of full row triples
	jq := j0 + (j1-j0)/4*4 // end of full column quads
	for kb := 0; kb < k8; kb += mmK {
		kc := min(mmK, k8-kb)
		acc := 0
		if kb > 0 || t.accum {
			acc = 1
		}
		for i := i0; i < iq; i += 3 {
			xp := &t.x[i*ldx+kb]
			for j := j0; j < jq; j += 4 {
				c := &t.y[i*ldy+j]
				if wide {
					switch t.kind {
					case wF32:
						mmTile3x4F32Z(xp, ldx, &t.wf[j*ldw+kb], ldw, kc, c, ldy, acc)
					case wBF16:
						mmTile3x4BF16Z(xp, ldx, &t.wh[j*ldw+kb], ldw, kc, c, ldy, acc)
					case wF16:
						mmTile3x4F16Z(xp, ldx, &t.wh[j*ldw+kb], ldw, kc, c, ldy, acc)
					}
					continue
				}
				switch t.kind {
				case wF32:
					mmTile3x4F32(xp, ldx, &t.wf[j*ldw+kb], ldw, kc, c, ldy, acc)
				case wBF16:
					mmTile3x4BF16(xp, ldx, &t.wh[j*ldw+kb], ldw, kc, c, ldy, acc)
				case wF16:
					mmTile3x4F16(xp, ldx, &t.wh[j*ldw+kb], ldw, kc, c, ldy, acc)
				}
			}
		}
	}
	if k8 < k { // K tail of the tiled part
		for i := i0; i < iq; i++ {
			for j := j0; j < jq; j++ {
				s := t.y[i*ldy+j]
				for l := k8; l < k; l++ {
					s += t.x[i*ldx+l] * t.weight(j*ldw+l)
				}
				t.y[i*ldy+j] = s
			}
		}
	}
	matMulEdges(t, i0, i1, j0, j1, iq, jq)
}

// TestABLeftoverRows compares the old and new tile loops on decode-batch
// shapes, alternating in one process (LORAKIT_KERNELS_AB=1; not a unit test).
func TestABLeftoverRows(t *testing.T) {
	if os.Getenv("LORAKIT_KERNELS_AB") == "" {
		t.Skip("set LORAKIT_KERNELS_AB=1")
	}
	r := rand.New(rand.NewPCG(9, 9))
	for _, nk := range [][2]int{{1536, 576}, {576, 1536}, {49152, 576}} {
		n, k := nk[0], nk[1]
		// enough copies of W that every product reads it from DRAM, as in
		// a decode step over all layers
		copies := max(1, 100<<20/(4*n*k))
		ws, whs := make([][]float32, copies), make([][]uint16, copies)
		for c := range ws {
			ws[c], whs[c] = randF32(r, n*k), toF16(r, n*k)
		}
		for _, kind := range []int{wF32, wBF16} {
			for _, m := range []int{8, 9} {
				x := randF32(r, m*k)
				y := make([]float32, m*n)
				tk := matMulTask{kind: kind, y: y, x: x, m: m, n: n, k: k, ldy: n, ldx: k, ldw: k}
				tk.ti = (m + mmRows - 1) / mmRows
				tiles := tk.ti * ((n + mmCols - 1) / mmCols)
				cur := 0
				run := func(f func(*matMulTask, int, int, int, int)) time.Duration {
					cur++
					tk.wf, tk.wh = ws[cur%copies], whs[cur%copies]
					t0 := time.Now()
					for b := 0; b < tiles; b++ {
						ib, jb := b%tk.ti, b/tk.ti
						i0, j0 := ib*mmRows, jb*mmCols
						f(&tk, i0, min(i0+mmRows, m), j0, min(j0+mmCols, n))
					}
					return time.Since(t0)
				}
				var old, nw []time.Duration
				for it := 0; it < 20+40000/n; it++ {
					old = append(old, run(matMulTileOld))
					nw = append(nw, run(matMulTile))
				}
				med := func(d []time.Duration) time.Duration {
					sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
					return d[len(d)/2]
				}
				t.Logf("n%d k%d kind %d m=%2d old %8v new %8v new/old %.2f  new per row %v", n, k, kind, m, med(old), med(nw),
					float64(med(nw))/float64(med(old)), med(nw)/time.Duration(m))
			}
		}
	}
}
