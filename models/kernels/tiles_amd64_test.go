//go:build amd64 && !purego

package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestGenTiles sweeps every generated tile (rows × cols, every family) over K lengths around the step, row
// strides, accumulate and prefetch settings, against the pure-Go twin (float64 over the same widened
// float32 operands) and the float64 reference, and checks that nothing outside
// the tile's rows × cols of C is written.
func TestGenTiles(t *testing.T) {
	if !hasTile512 {
		t.Skip("no AVX-512 VL on this CPU")
	}
	r := rand.New(rand.NewPCG(23, 24))
	for _, k := range []int{1, 15, 16, 17, 31, 32, 33, 64, 96, 100, 577} {
		for rows := 1; rows <= dpRows; rows++ {
			for cols := 1; cols <= dpCols; cols++ {
				ldx, ldw, ldc := k+r.IntN(3), k+r.IntN(3), cols+r.IntN(3)
				x := randF32(r, rows*ldx)
				wf := randF32(r, cols*ldw)
				wb := toBF16(wf)
				wh := toF16(r, cols*ldw)
				for acc := 0; acc < 2; acc++ {
					c, c0 := tileOut(r, rows, ldc)
					fmaF32Tiles[cols-1][rows-1](&x[0], ldx, &wf[0], ldw, k, &c[0], ldc, acc, 64*r.IntN(3))
					checkTile(t, "fmaF32", rows, cols, k, acc, c, c0, ldc, func(i, j int) (float64, float64, float64) {
						ref, mag := dot64(x[i*ldx:i*ldx+k], wf[j*ldw:j*ldw+k], func(f float32) float32 { return f })
						return ref, ref, mag
					})
					c, c0 = tileOut(r, rows, ldc)
					fmaBF16Tiles[cols-1][rows-1](&x[0], ldx, &wb[0], ldw, k, &c[0], ldc, acc, 64*r.IntN(3))
					checkTile(t, "fmaBF16", rows, cols, k, acc, c, c0, ldc, func(i, j int) (float64, float64, float64) {
						ref, mag := dot64(x[i*ldx:i*ldx+k], wb[j*ldw:j*ldw+k], bf16ToF32)
						return ref, ref, mag
					})
					if hasF16C {
						c, c0 = tileOut(r, rows, ldc)
						fmaF16Tiles[cols-1][rows-1](&x[0], ldx, &wh[0], ldw, k, &c[0], ldc, acc, 64*r.IntN(3))
						checkTile(t, "fmaF16", rows, cols, k, acc, c, c0, ldc, func(i, j int) (float64, float64, float64) {
							ref, mag := dot64(x[i*ldx:i*ldx+k], wh[j*ldw:j*ldw+k], f16ToF32)
							return ref, ref, mag
						})
					}
				}
			}
		}
	}
}

// tileOut returns C (rows × ldc, random) and a copy of it.
func tileOut(r *rand.Rand, rows, ldc int) (c, c0 []float32) {
	c = randF32(r, rows*ldc)
	return c, append([]float32(nil), c...)
}

// dot64 returns Σ x·conv(w) in float64 and Σ|x·conv(w)|.
func dot64[W any](x []float32, w []W, conv func(W) float32) (s, mag float64) {
	for l := range x {
		p := float64(x[l]) * float64(conv(w[l]))
		s += p
		mag += math.Abs(p)
	}
	return s, mag
}

// checkTile compares C with want(i, j) = (twin, reference, magnitude): within 1e-6·mag of the twin (float32
// accumulation only) and the tests' usual 1e-5·mag of the float64 reference; the rest of C unchanged.
func checkTile(t *testing.T, fam string, rows, cols, k, acc int, c, c0 []float32, ldc int, want func(i, j int) (float64, float64, float64)) {
	t.Helper()
	for i := 0; i < rows; i++ {
		for j := 0; j < ldc; j++ {
			got := float64(c[i*ldc+j])
			if j >= cols {
				if c[i*ldc+j] != c0[i*ldc+j] {
					t.Fatalf("%s R%dC%d k%d: wrote C[%d,%d] outside the tile", fam, rows, cols, k, i, j)
				}
				continue
			}
			base := 0.0
			if acc == 1 {
				base = float64(c0[i*ldc+j])
			}
			twin, ref, mag := want(i, j)
			if d := math.Abs(got - base - twin); d > 1e-6*mag+1e-6 {
				t.Fatalf("%s R%dC%d k%d acc%d (%d,%d): got %v, twin %v", fam, rows, cols, k, acc, i, j, got-base, twin)
			}
			if d := math.Abs(got - base - ref); d > 1e-5*mag+1e-6 {
				t.Fatalf("%s R%dC%d k%d acc%d (%d,%d): got %v, float64 reference %v", fam, rows, cols, k, acc, i, j, got-base, ref)
			}
		}
	}
}

// TestGenRowsMatchTiles: the rows kernels (matrix-vector products) give every row bit for bit what the tiles
// give it inside a batch of 8 rows, for f32 and bf16 weights, over row counts and K lengths with tails.
func TestGenRowsMatchTiles(t *testing.T) {
	if !hasTile512 {
		t.Skip("no AVX-512 VL on this CPU")
	}
	r := rand.New(rand.NewPCG(25, 26))
	p := NewPool(2)
	for _, k := range []int{1, 16, 33, 64, 100, 577} {
		for _, rows := range []int{1, 2, 3, 4, 5, 7, 31, 1000} {
			wf := randF32(r, rows*k)
			wb := toBF16(randF32(r, rows*k))
			x := randF32(r, 8*k)
			y, tile := make([]float32, rows), make([]float32, 8*rows)
			// batches of 2 rows take the walk (matMulWalkGen), 4, 5 and 8 the 3-column tiles; the
			// pool splits the larger shapes
			for _, m := range []int{2, 4, 5, 8} {
				i := min(3, m-1)
				matVecF32Gen(y, wf, x[i*k:(i+1)*k], 0, rows, k)
				MatMulF32T(p, tile, x, wf, m, rows, k)
				for j := range y {
					if y[j] != tile[i*rows+j] {
						t.Fatalf("f32 k%d rows%d m%d: row %d: %v, in a batch %v", k, rows, m, j, y[j], tile[i*rows+j])
					}
				}
				matVecBF16Gen(y, wb, x[i*k:(i+1)*k], 0, rows, k)
				MatMulBF16T(p, tile, x, wb, m, rows, k)
				for j := range y {
					if y[j] != tile[i*rows+j] {
						t.Fatalf("bf16 k%d rows%d m%d: row %d: %v, in a batch %v", k, rows, m, j, y[j], tile[i*rows+j])
					}
				}
			}
		}
	}
}

// zmmFMAPeak is the two threads' register-only FMA rate of the project machine (Zen 5, 2 cores): 12.4–12.75
// zmm VFMADD231PS per ns, 6.3–6.4 per core (24 independent accumulators, load 0.9–1.1), the bound the tile
// efficiencies below are stated against.
const zmmFMAPeak = 12.7

// BenchmarkGenTileFMA reports the generated bf16 tiles' FMA rate (zmm FMAs per ns, and as a fraction of the
// threads' share of zmmFMAPeak): "hot" is one 8-row tile over L1-resident operands and "one" the tiles over a
// whole matrix (resident in L2, or DRAM for the 49152-row head) in matMulTileGen's order, one thread; the
// others are smollm2-135m's decode matrices at 1, 8 and 16 rows through MatMulBF16T, two threads, cycling
// over enough copies (≥ 256 MB) that the weights come from DRAM as in a decode step (GB/s: weight bytes).
func BenchmarkGenTileFMA(b *testing.B) {
	if !hasTile512 {
		b.Skip("no AVX-512 VL on this CPU")
	}
	r := rand.New(rand.NewPCG(27, 28))
	report := func(b *testing.B, fmas, peak float64) {
		rate := fmas * float64(b.N) / float64(b.Elapsed().Nanoseconds())
		b.ReportMetric(rate, "zmmFMA/ns")
		b.ReportMetric(rate/peak, "of-peak")
	}
	b.Run("hot/R8", func(b *testing.B) {
		const k = 576
		x := randF32(r, dpRows*k)
		w := toBF16(randF32(r, dpCols*k))
		c := make([]float32, dpRows*dpCols)
		for i := 0; i < b.N; i++ {
			fmaBF16Tiles[dpCols-1][dpRows-1](&x[0], k, &w[0], k, k, &c[0], dpCols, 0, 0)
		}
		report(b, float64(dpRows*dpCols*k/16), zmmFMAPeak/2)
	})
	for _, sh := range [][3]int{{8, 48, 576}, {8, 576, 1536}, {8, 49152, 576}, {16, 49152, 576}} {
		m, n, k := sh[0], sh[1], sh[2]
		b.Run(fmt.Sprintf("one/m%d/%dx%d", m, n, k), func(b *testing.B) {
			x := randF32(r, m*k)
			w := toBF16(randF32(r, n*k))
			c := make([]float32, m*n)
			b.ResetTimer()
			for it := 0; it < b.N; it++ {
				for j := 0; j < n; j += dpCols {
					pf := pfRows
					for i := 0; i < m; i += dpRows {
						fmaBF16Tiles[dpCols-1][dpRows-1](&x[i*k], k, &w[j*k], k, k, &c[i*n+j], n, 0, pf)
						pf = 0
					}
				}
			}
			report(b, float64(m*n*k/16), zmmFMAPeak/2)
		})
	}
	p := NewPool(2)
	for _, sh := range [][2]int{{576, 576}, {1536, 576}, {576, 1536}, {49152, 576}} {
		n, k := sh[0], sh[1]
		b.Run(fmt.Sprintf("%dx%d", n, k), func(b *testing.B) {
			copies := max(1, (256<<20)/(2*n*k))
			ws := make([][]uint16, copies)
			w := toBF16(randF32(r, n*k))
			for i := range ws {
				ws[i] = append([]uint16(nil), w...)
			}
			for _, m := range []int{1, 8, 16} {
				x := randF32(r, m*k)
				y := make([]float32, m*n)
				b.Run(fmt.Sprintf("m%d", m), func(b *testing.B) {
					for i := 0; i < b.N; i++ {
						MatMulBF16T(p, y, x, ws[i%copies], m, n, k)
					}
					report(b, float64(m*n*k)/16, zmmFMAPeak)
					b.ReportMetric(float64(2*n*k)*float64(b.N)/float64(b.Elapsed().Nanoseconds()), "GB/s")
				})
			}
		})
	}
}
