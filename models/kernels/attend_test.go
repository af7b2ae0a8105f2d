package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestAttend sweeps group sizes, head dimensions and position counts, splits the positions into runs in several
// ways (one run, whole 16-position blocks, blocks of 4, a ragged last run), and checks that AttendF32 and
// AttendBF16 give the same result bit for bit however the positions are split, the same as the kernels the
// attention ran before (Gemm, MatMulBF16T, MatMulAddBF16 on one [n, d] matrix), and within f32 rounding of a
// float64 reference. Under purego it checks the pure-Go twins the same way.
func TestAttend(t *testing.T) {
	defer SetAVX512(AVX512())
	for _, wide := range []bool{true, false} {
		SetAVX512(wide)
		testAttend(t)
	}
}

func testAttend(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, m := range []int{1, 2, 3, 5, 6, 7, 8} {
		for _, d := range []int{8, 16, 20, 64, 128} {
			for _, n := range []int{1, 3, 4, 15, 16, 17, 40, 64, 100, 257, 300} {
				q := randF32(rng, m*d)
				kf, vf := randF32(rng, n*d), randF32(rng, n*d)
				kh, vh := toBF16(kf), toBF16(vf)
				scale := float32(1 / math.Sqrt(float64(d)))
				name := fmt.Sprintf("avx512=%v m=%d d=%d n=%d", AVX512(), m, d, n)

				// the kernels attention ran on one contiguous [n, d] matrix before the runs
				wantF := make([]float32, m*d)
				sF := make([]float32, m*n)
				Gemm(nil, false, true, m, n, d, 1, q, d, kf, d, 0, sF, n)
				softmaxRows(sF, m, n, scale)
				if m < 6 { // Gemm's value sum is AttendF32's for rows outside its 6-row tiles
					Gemm(nil, false, false, m, d, n, 1, sF, n, vf, d, 0, wantF, d)
				}
				wantH := make([]float32, m*d)
				sH := make([]float32, m*n)
				MatMulBF16T(nil, sH, q, kh, m, n, d)
				softmaxRows(sH, m, n, scale)
				MatMulAddBF16(wantH, sH, vh, m, d, n)

				for _, split := range []int{n, 16, 4, 32} {
					gotF, gotH := make([]float32, m*d), make([]float32, m*d)
					s := make([]float32, m*n)
					AttendF32(gotF, s, q, m, d, runsOf(kf, n, d, split), runsOf(vf, n, d, split), scale)
					if m < 6 {
						same(t, name+" f32 split "+fmt.Sprint(split), gotF, wantF)
					} else if split == n {
						wantF = gotF
					} else {
						same(t, name+" f32 split "+fmt.Sprint(split), gotF, wantF)
					}
					AttendBF16(gotH, s, q, m, d, runsOf(kh, n, d, split), runsOf(vh, n, d, split), scale)
					same(t, name+" bf16 split "+fmt.Sprint(split), gotH, wantH)
					closeTo(t, name+" f32", gotF, refAttend(q, m, d, n, func(j, c int) (float64, float64) {
						return float64(kf[j*d+c]), float64(vf[j*d+c])
					}, scale))
					closeTo(t, name+" bf16", gotH, refAttend(q, m, d, n, func(j, c int) (float64, float64) {
						return float64(bf16ToF32(kh[j*d+c])), float64(bf16ToF32(vh[j*d+c]))
					}, scale))
				}
			}
		}
	}
}

// runsOf cuts the [n, d] matrix x into runs of split positions (the last one shorter).
func runsOf[T float32 | uint16](x []T, n, d, split int) [][]T {
	var r [][]T
	for p := 0; p < n; p += split {
		r = append(r, x[p*d:min(p+split, n)*d])
	}
	return r
}

func same(t *testing.T, name string, got, want []float32) {
	t.Helper()
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s: element %d is %g, want %g (bit for bit)", name, i, got[i], want[i])
		}
	}
}

func closeTo(t *testing.T, name string, got []float32, want []float64) {
	t.Helper()
	for i := range want {
		if math.Abs(float64(got[i])-want[i]) > 1e-5*(1+math.Abs(want[i])) {
			t.Fatalf("%s: element %d is %g, float64 reference %g", name, i, got[i], want[i])
		}
	}
}

// refAttend is the float64 attention of q [m, d] over n positions (kv(j, c): key and value element c of
// position j).
func refAttend(q []float32, m, d, n int, kv func(j, c int) (float64, float64), scale float32) []float64 {
	out := make([]float64, m*d)
	for i := range m {
		s := make([]float64, n)
		mx := math.Inf(-1)
		for j := range n {
			for c := range d {
				k, _ := kv(j, c)
				s[j] += float64(q[i*d+c]) * k
			}
			s[j] *= float64(scale)
			mx = math.Max(mx, s[j])
		}
		var sum float64
		for j := range s {
			s[j] = math.Exp(s[j] - mx)
			sum += s[j]
		}
		for j := range n {
			for c := range d {
				_, v := kv(j, c)
				out[i*d+c] += s[j] / sum * v
			}
		}
	}
	return out
}

// TestMatMulAddF32 sweeps rows, columns (multiples of 16 and 8 and ragged ends), k and T strides, and checks
// that matMulAddF32 (the mmAddF32 kernels on amd64) gives axpyRows' result bit for bit, within f32 rounding of
// the float64 sum.
func TestMatMulAddF32(t *testing.T) {
	defer SetAVX512(AVX512())
	for _, wide := range []bool{true, false} {
		SetAVX512(wide)
		rng := rand.New(rand.NewPCG(5, 6))
		for _, m := range []int{1, 2, 3, 5} {
			for _, n := range []int{1, 7, 8, 9, 16, 20, 33, 64, 72, 128} {
				for _, k := range []int{1, 2, 16, 17, 300} {
					ldt := k + 3
					y0, tt, b := randF32(rng, m*n), randF32(rng, m*ldt), randF32(rng, k*n)
					got, want := slices.Clone(y0), slices.Clone(y0)
					matMulAddF32(got, tt, ldt, b, m, n, k)
					axpyRows(want, tt, ldt, b, m, n, k, 0)
					name := fmt.Sprintf("avx512=%v m=%d n=%d k=%d", AVX512(), m, n, k)
					same(t, name, got, want)
					ref := make([]float64, m*n)
					for i := range m {
						for j := range n {
							ref[i*n+j] = float64(y0[i*n+j])
							for l := range k {
								ref[i*n+j] += float64(tt[i*ldt+l]) * float64(b[l*n+j])
							}
						}
					}
					for i := range ref {
						if math.Abs(float64(got[i])-ref[i]) > 1e-6*float64(k+1)*(1+math.Abs(ref[i]))*4 {
							t.Fatalf("%s: element %d is %g, float64 %g", name, i, got[i], ref[i])
						}
					}
				}
			}
		}
	}
}
