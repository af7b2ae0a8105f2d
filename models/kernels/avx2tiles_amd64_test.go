//go:build amd64 && !purego

package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// refAVXTile is the pure-Go twin of the AVX2 tiles mmT{rows}x{cols}{type}: C[i][j] (+)= Σ_l X[i][l]·W[j][l]
// summed as the kernel sums it: 8 lanes, each taking its columns 16 at a time (f32 and f16: column 16s+l
// then 16s+8+l; bf16, X in permuteBF16's order: the even column 16s+2l then the odd one), each step a
// fused multiply-add (as float32(float64 product + sum): the product of two float32 is exact in a float64, and
// rounding the sum twice, to float64 then float32, differs from the fused single rounding only when the
// first rounding lands exactly halfway between two float32 values, which the tests' data does not hit), then
// the lanes
// ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)), added to C with acc. k % 16 == 0.
func refAVXTile(kind int, x []float32, ldx int, wf []float32, wh []uint16, ldw, k, rows, cols int, c []float32, ldc int, acc bool) {
	for i := range rows {
		for j := range cols {
			var lane [8]float32
			for s := 0; s < k; s += 16 {
				for h := range 2 {
					for l := range 8 {
						var xv, wv float32
						switch kind {
						case wF32:
							xv, wv = x[i*ldx+s+8*h+l], wf[j*ldw+s+8*h+l]
						case wF16:
							xv, wv = x[i*ldx+s+8*h+l], f16ToF32(wh[j*ldw+s+8*h+l])
						default:
							xv, wv = x[i*ldx+s+8*h+l], bf16ToF32(wh[j*ldw+s+2*l+h])
						}
						lane[l] = float32(float64(xv)*float64(wv) + float64(lane[l]))
					}
				}
			}
			sum := ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]))
			if acc {
				sum += c[i*ldc+j]
			}
			c[i*ldc+j] = sum
		}
	}
}

// TestAVX2Tiles sweeps every AVX2 tile (rows × cols, every weight type) over K lengths that are multiples of
// 16, row strides, accumulate and prefetch settings: each result equals the pure-Go twin bit for bit, is
// within the tests' usual 1e-5·Σ|x·w| of float64, and equals what the 1×1 tile gives the same row and
// column (every shape sums in the same order); nothing outside the tile's rows × cols of C is written.
func TestAVX2Tiles(t *testing.T) {
	if !useAVX2 || !hasF16C {
		t.Skip("no AVX2/F16C")
	}
	r := rand.New(rand.NewPCG(33, 34))
	for _, k := range []int{16, 32, 48, 96, 576, 784} {
		for rows := 1; rows <= avxRows; rows++ {
			for cols := 1; cols <= avxCols; cols++ {
				ldx, ldw, ldc := k+r.IntN(3), k+r.IntN(3), cols+r.IntN(3)
				x := randF32(r, rows*ldx)
				wf := randF32(r, cols*ldw)
				wb := toBF16(randF32(r, cols*ldw))
				wh := toF16(r, cols*ldw)
				for kind := range 3 {
					for acc := range 2 {
						c, c0 := tileOut(r, rows, ldc)
						pf := [3]int{0, cols * ldw * 4, 4096}[r.IntN(3)]
						var wsrc []uint16
						switch kind {
						case wF32:
							avxF32Tiles[cols-1][rows-1](&x[0], ldx, &wf[0], ldw, k, &c[0], ldc, acc, pf)
						case wBF16:
							wsrc = wb
							avxBF16Tiles[cols-1][rows-1](&x[0], ldx, &wb[0], ldw, k, &c[0], ldc, acc, pf)
						case wF16:
							wsrc = wh
							avxF16Tiles[cols-1][rows-1](&x[0], ldx, &wh[0], ldw, k, &c[0], ldc, acc, pf)
						}
						twin := append([]float32(nil), c0...)
						refAVXTile(kind, x, ldx, wf, wsrc, ldw, k, rows, cols, twin, ldc, acc == 1)
						name := fmt.Sprintf("kind %d R%dC%d k%d acc%d", kind, rows, cols, k, acc)
						for i := range rows {
							for j := range ldc {
								got := c[i*ldc+j]
								if j >= cols {
									if got != c0[i*ldc+j] {
										t.Fatalf("%s: wrote C[%d,%d] outside the tile", name, i, j)
									}
									continue
								}
								if math.Float32bits(got) != math.Float32bits(twin[i*ldc+j]) {
									t.Fatalf("%s (%d,%d): got %v, twin %v", name, i, j, got, twin[i*ldc+j])
								}
								// the float64 reference over the same operands (bf16: X permuted back)
								var ref, mag float64
								for l := range k {
									var xv, wv float64
									switch kind {
									case wF32:
										xv, wv = float64(x[i*ldx+l]), float64(wf[j*ldw+l])
									case wF16:
										xv, wv = float64(x[i*ldx+l]), float64(f16ToF32(wh[j*ldw+l]))
									default:
										b, o := l&^15, l&15
										xv, wv = float64(x[i*ldx+b+o/2+8*(o&1)]), float64(bf16ToF32(wb[j*ldw+l]))
									}
									ref += xv * wv
									mag += math.Abs(xv * wv)
								}
								base := 0.0
								if acc == 1 {
									base = float64(c0[i*ldc+j])
								}
								if d := math.Abs(float64(got) - base - ref); d > 1e-5*mag+1e-5*math.Abs(base)+1e-6 {
									t.Fatalf("%s (%d,%d): got %v, float64 %v", name, i, j, float64(got)-base, ref)
								}
								// the 1×1 tile on this row and column
								one := c0[i*ldc+j]
								switch kind {
								case wF32:
									avxF32Tiles[0][0](&x[i*ldx], ldx, &wf[j*ldw], ldw, k, &one, 1, acc, 0)
								case wBF16:
									avxBF16Tiles[0][0](&x[i*ldx], ldx, &wb[j*ldw], ldw, k, &one, 1, acc, 0)
								case wF16:
									avxF16Tiles[0][0](&x[i*ldx], ldx, &wh[j*ldw], ldw, k, &one, 1, acc, 0)
								}
								if math.Float32bits(one) != math.Float32bits(got) {
									t.Fatalf("%s (%d,%d): %v, the 1×1 tile %v", name, i, j, got, one)
								}
							}
						}
					}
				}
			}
		}
	}
}

// TestCvtF16F32: the f16 widening kernel gives f16ToF32 (its pure-Go twin) bit for bit for all 65536 half
// values (subnormals and infinities included; a NaN gives a NaN), at lengths that take the 32-step loop, the 8-step tail
// or both, at unaligned offsets.
func TestCvtF16F32(t *testing.T) {
	if !hasF16C {
		t.Skip("no F16C")
	}
	src := make([]uint16, 1<<16+3)
	for i := range 1 << 16 {
		src[i+3] = uint16(i)
	}
	for _, n := range []int{8, 16, 24, 32, 40, 64, 72, 1 << 16} {
		for _, off := range []int{0, 1, 3} {
			dst := make([]float32, n+1)
			cvtF16F32(&dst[1], &src[off], n)
			for i := range n {
				got, want := dst[1+i], f16ToF32(src[off+i])
				if got != got && want != want { // NaN (VCVTPH2PS quiets a signalling one)
					continue
				}
				if math.Float32bits(got) != math.Float32bits(want) {
					t.Fatalf("n%d off%d [%d] %#04x: %v, want %v", n, off, i, src[off+i], got, want)
				}
			}
			if dst[0] != 0 {
				t.Fatalf("n%d off%d: wrote before dst", n, off)
			}
		}
	}
}

// TestAVX2BatchInvariant: on the AVX2 tiles (AVX-512 off) every row of a product of m ≥ 2 rows equals the same
// row inside a batch of any other size ≥ 2, bit for bit, for f32, bf16 and f16 weights (f16 blocks of more
// than avxF16Rows rows convert W once and run the f32 tiles), K with and without a tail of k % 16, through
// every pool (the one-row product takes the GEMV, whose sums differ).
func TestAVX2BatchInvariant(t *testing.T) {
	if !useAVX2 || !hasF16C {
		t.Skip("no AVX2/F16C")
	}
	saved := AVX512()
	defer SetAVX512(saved)
	SetAVX512(false)
	r := rand.New(rand.NewPCG(35, 36))
	for _, sh := range [][2]int{{192, 576}, {70, 1544}, {131, 40}} {
		n, k := sh[0], sh[1]
		x := randF32(r, 17*k)
		wf := randF32(r, n*k)
		wb := toBF16(randF32(r, n*k))
		wh := toF16(r, n*k)
		for kind := range 3 {
			var want []float32
			for pi, p := range pools() {
				for _, m := range []int{17, 2, 3, 4, 5, 8, 9, 16} {
					y := make([]float32, m*n)
					switch kind {
					case wF32:
						MatMulF32T(p, y, x[:m*k], wf, m, n, k)
					case wBF16:
						MatMulBF16T(p, y, x[:m*k], wb, m, n, k)
					case wF16:
						MatMulF16T(p, y, x[:m*k], wh, m, n, k)
					}
					if want == nil {
						want = y
						continue
					}
					for l, v := range y {
						if math.Float32bits(v) != math.Float32bits(want[l]) {
							t.Fatalf("kind %d n%d k%d pool %d m%d: Y[%d,%d] %v, in 17 rows %v", kind, n, k, pi, m, l/n, l%n, v, want[l])
						}
					}
				}
			}
		}
	}
}

// ymmFMAPeak is this AVX2 machine's register-only FMA rate of one thread (Zen 1: one 8-lane FMA per cycle;
// /tmp/fma_peak, one thread: 46.9 GFLOP/s = 2.93 ymm FMAs per ns).
const ymmFMAPeak = 2.93

// BenchmarkAVX2Tile reports the AVX2 tiles' FMA rate as a fraction of ymmFMAPeak: "hot" is the 4×3 tile over
// L1-resident operands, "mat" a whole product through MatMul*T on one thread (nil pool), W in L2 (1536×576).
func BenchmarkAVX2Tile(b *testing.B) {
	if !useAVX2 || !hasF16C {
		b.Skip("no AVX2/F16C")
	}
	saved := AVX512()
	defer SetAVX512(saved)
	SetAVX512(false)
	r := rand.New(rand.NewPCG(31, 32))
	report := func(b *testing.B, fmas float64) {
		rate := fmas * float64(b.N) / float64(b.Elapsed().Nanoseconds())
		b.ReportMetric(rate/ymmFMAPeak, "of-peak")
	}
	const k = 576
	x := randF32(r, avxRows*k)
	wf := randF32(r, avxCols*k)
	wh := toBF16(randF32(r, avxCols*k))
	c := make([]float32, avxRows*avxCols)
	for _, kind := range []int{wF32, wBF16, wF16} {
		name := map[int]string{wF32: "f32", wBF16: "bf16", wF16: "f16"}[kind]
		b.Run("hot/"+name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				switch kind {
				case wF32:
					avxF32Tiles[avxCols-1][avxRows-1](&x[0], k, &wf[0], k, k, &c[0], avxCols, 0, 0)
				case wBF16:
					avxBF16Tiles[avxCols-1][avxRows-1](&x[0], k, &wh[0], k, k, &c[0], avxCols, 0, 0)
				default:
					avxF16Tiles[avxCols-1][avxRows-1](&x[0], k, &wh[0], k, k, &c[0], avxCols, 0, 0)
				}
			}
			report(b, avxRows*avxCols*k/8)
		})
	}
	for _, sh := range [][3]int{{8, 1536, 576}, {128, 1536, 576}} {
		m, n, kk := sh[0], sh[1], sh[2]
		x := randF32(r, m*kk)
		y := make([]float32, m*n)
		wf := randF32(r, n*kk)
		wh := toBF16(randF32(r, n*kk))
		for _, kind := range []int{wF32, wBF16, wF16} {
			name := map[int]string{wF32: "f32", wBF16: "bf16", wF16: "f16"}[kind]
			b.Run(fmt.Sprintf("mat/m%d_%dx%d/%s", m, n, kk, name), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					matMulKind(kind, nil, y, x, wf, wh, m, n, kk)
				}
				report(b, float64(m*n*kk)/8)
			})
		}
	}
}
