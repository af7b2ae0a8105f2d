package train

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/nlpodyssey/spago/ag"
	"github.com/nlpodyssey/spago/mat"
	spnn "github.com/nlpodyssey/spago/nn"

	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/nn"
	"github.com/lorakit/lorakit/models/quant"
	"github.com/lorakit/lorakit/models/safetensors"
)

// leaf is one differentiable input of an op under test.
type leaf struct {
	name  string
	shape [2]int
	data  []float32
	p     *spnn.Param
}

func randSlice(rng *rand.Rand, n int, s float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64() * s)
	}
	return v
}

func newLeaf(rng *rand.Rand, name string, rows, cols int, s float64) *leaf {
	l := &leaf{name: name, shape: [2]int{rows, cols}, data: randSlice(rng, rows*cols, s)}
	l.p = spnn.NewParam(newMat(rows, cols, append([]float32(nil), l.data...)))
	return l
}

// checkOp runs build (the f32 op under test) and backpropagates a random output
// gradient R; it then compares the forward value with ref (a float64 reference
// implementation) and every leaf gradient with central finite differences of
// Σ ref·R in float64.
func checkOp(t *testing.T, leaves []*leaf, build func() mat.Tensor, ref func(in [][]float64) []float64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, 7))
	// A first pass leaves dirty buffers in the Env's pool: ops must not rely on zeroed scratch.
	warm := build()
	ws := warm.Value().Shape()
	wc := 1
	if len(ws) > 1 {
		wc = ws[1]
	}
	dirty := make([]float32, warm.Value().Size())
	for i := range dirty {
		dirty[i] = float32(i%13) - 6
	}
	warm.AccGrad(newMat(ws[0], wc, dirty))
	if err := ag.Backward(warm); err != nil {
		t.Fatal(err)
	}
	for _, l := range leaves {
		l.p.ZeroGrad()
	}
	out := build()
	y := vals(out)
	r := make([]float64, len(y))
	rf := make([]float32, len(y))
	for i := range r {
		rf[i] = float32(rng.NormFloat64())
		r[i] = float64(rf[i])
	}
	shape := out.Value().Shape()
	rows, cols := shape[0], 1
	if len(shape) > 1 {
		cols = shape[1]
	}
	out.AccGrad(newMat(rows, cols, rf))
	if err := ag.Backward(out); err != nil {
		t.Fatal(err)
	}
	in := make([][]float64, len(leaves))
	for i, l := range leaves {
		in[i] = make([]float64, len(l.data))
		for j, v := range l.data {
			in[i][j] = float64(v)
		}
	}
	want := ref(in)
	if len(want) != len(y) {
		t.Fatalf("reference has %d outputs, op %d", len(want), len(y))
	}
	for i := range y {
		if d := math.Abs(float64(y[i]) - want[i]); d > 1e-4*(1+math.Abs(want[i])) {
			t.Fatalf("forward[%d] = %g, reference %g", i, y[i], want[i])
		}
	}
	obj := func() float64 {
		o := ref(in)
		var s float64
		for i := range o {
			s += o[i] * r[i]
		}
		return s
	}
	for i, l := range leaves {
		var g []float32
		if l.p.HasGrad() {
			g = vals(l.p.Grad())
		} else {
			g = make([]float32, len(l.data))
		}
		for j := range in[i] {
			v := in[i][j]
			h := 1e-6 * math.Max(1, math.Abs(v))
			in[i][j] = v + h
			fp := obj()
			in[i][j] = v - h
			fm := obj()
			in[i][j] = v
			num := (fp - fm) / (2 * h)
			if d := math.Abs(float64(g[j]) - num); d > 2e-3*(1+math.Abs(num)) {
				t.Fatalf("%s grad[%d] = %g, finite difference %g", l.name, j, g[j], num)
			}
		}
	}
}

// f64 helpers for the references.
func matmulT(x, w []float64, m, n, k int) []float64 { // x[m,k]·w[n,k]ᵀ
	y := make([]float64, m*n)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float64
			for c := 0; c < k; c++ {
				s += x[i*k+c] * w[j*k+c]
			}
			y[i*n+j] = s
		}
	}
	return y
}

func TestLinearLoRAGrad(t *testing.T) {
	for _, dt := range []string{"f32", "f32bias", "f32lowmem", "bf16", "nf4", "opaque", "full"} {
		t.Run(dt, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			m, in, r := 5, 6, 3
			outs := []int{4, 2}
			x := newLeaf(rng, "x", m, in, 1)
			leaves := []*leaf{x}
			env := NewEnv(kernels.NewPool(2))
			env.LowMemory = dt == "f32lowmem"
			var projs []*Proj
			var ws [][]float32
			biases := make([][]float32, len(outs))
			for i, out := range outs {
				p := &Proj{In: in, Out: out, R: r, Scale: 1.5}
				w := randSlice(rng, out*in, 0.5)
				if dt == "bf16" { // round to bf16 so the reference sees the same weight
					u := make([]uint16, len(w))
					for j := range w {
						u[j] = safetensors.F32ToBF16(w[j])
						w[j] = safetensors.BF16ToF32(u[j])
					}
					p.Base = &nn.Dense{Rows: out, Cols: in, DType: safetensors.BF16, U16: u}
				} else if dt == "nf4" { // dequantise so the reference sees the same weight
					q, err := quant.Quantize4(quant.NF4, w, []int{out, in}, 64, true)
					if err != nil {
						t.Fatal(err)
					}
					q.Dequantize(w)
					p.Base = &nf4Linear{q: q, rows: out, cols: in, scratch: NewEnv(nil)}
				} else {
					p.Base = &nn.Dense{Rows: out, Cols: in, DType: safetensors.F32, F32: w}
				}
				if dt == "f32bias" && i == 1 { // a base bias on one of the two projections
					bs := randSlice(rng, out, 1)
					p.Base.(*nn.Dense).Bias = bs
					biases[i] = bs
				}
				if dt == "opaque" {
					p.Base = opaque{p.Base}
				}
				ws = append(ws, w)
				if dt == "full" {
					wl := &leaf{name: "W", shape: [2]int{out, in}, data: w}
					wl.p = spnn.NewParam(newMat(out, in, append([]float32(nil), w...)))
					p.W, p.Base = wl.p, nil
					leaves = append(leaves, wl)
					if i == 0 {
						bl := newLeaf(rng, "bias", out, 1, 1)
						p.Bias = bl.p
						leaves = append(leaves, bl)
					}
				}
				if i == 0 || dt != "full" {
					a := newLeaf(rng, "A", r, in, 0.5)
					b := newLeaf(rng, "B", out, r, 0.5)
					p.A, p.B = a.p, b.p
					leaves = append(leaves, a, b)
				}
				projs = append(projs, p)
			}
			build := func() mat.Tensor { return env.Linear(x.p, m, projs, true, 0) }
			ref := func(v [][]float64) []float64 {
				n := 0
				for _, o := range outs {
					n += o
				}
				y := make([]float64, m*n)
				li, off := 1, 0
				for i, p := range projs {
					var w []float64
					if dt == "full" {
						w = v[li]
						li++
					} else {
						w = make([]float64, len(ws[i]))
						for j, x := range ws[i] {
							w[j] = float64(x)
						}
					}
					base := matmulT(v[0], w, m, p.Out, in)
					if bs := biases[i]; bs != nil {
						for rr := 0; rr < m; rr++ {
							for j := 0; j < p.Out; j++ {
								base[rr*p.Out+j] += float64(bs[j])
							}
						}
					}
					if p.Bias != nil {
						for rr := 0; rr < m; rr++ {
							for j := 0; j < p.Out; j++ {
								base[rr*p.Out+j] += v[li][j]
							}
						}
						li++
					}
					if p.A != nil {
						xa := matmulT(v[0], v[li], m, r, in)
						d := matmulT(xa, v[li+1], m, p.Out, r)
						li += 2
						for j := range base {
							base[j] += float64(p.Scale) * d[j]
						}
					}
					for rr := 0; rr < m; rr++ {
						copy(y[rr*n+off:rr*n+off+p.Out], base[rr*p.Out:(rr+1)*p.Out])
					}
					off += p.Out
				}
				return y
			}
			checkOp(t, leaves, build, ref)
		})
	}
}

// opaque hides the concrete layer type (exercises the generic weight recovery).
type opaque struct{ l BaseLinear }

func (o opaque) In() int  { return o.l.In() }
func (o opaque) Out() int { return o.l.Out() }
func (o opaque) Forward(p *kernels.Pool, y, x []float32, m int) {
	o.l.Forward(p, y, x, m)
}

func TestRMSNormGrad(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	m, d := 4, 7
	x := newLeaf(rng, "x", m, d, 1)
	w := newLeaf(rng, "w", d, 1, 1)
	env := NewEnv(nil)
	const eps = 1e-5
	checkOp(t, []*leaf{x, w}, func() mat.Tensor { return env.RMSNorm(x.p, m, d, w.p, nil, eps) },
		func(v [][]float64) []float64 {
			y := make([]float64, m*d)
			for r := 0; r < m; r++ {
				var ss float64
				for j := 0; j < d; j++ {
					ss += v[0][r*d+j] * v[0][r*d+j]
				}
				inv := 1 / math.Sqrt(ss/float64(d)+eps)
				for j := 0; j < d; j++ {
					y[r*d+j] = v[0][r*d+j] * inv * v[1][j]
				}
			}
			return y
		})
}

func refRope(x []float64, m, cols, rot, hd int, pos []int, inv []float32) []float64 {
	y := append([]float64(nil), x...)
	half := hd / 2
	for r := 0; r < m; r++ {
		for h := 0; h < rot; h += hd {
			for i := 0; i < half; i++ {
				s, c := math.Sincos(float64(float32(pos[r]) * inv[i]))
				a, b := x[r*cols+h+i], x[r*cols+h+i+half]
				y[r*cols+h+i] = a*c - b*s
				y[r*cols+h+i+half] = b*c + a*s
			}
		}
	}
	return y
}

func TestRoPEGrad(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	m, hd, heads, kv := 5, 4, 2, 1
	cols, rot := (heads+2*kv)*hd, (heads+kv)*hd
	x := newLeaf(rng, "x", m, cols, 1)
	pos := []int{0, 1, 2, 0, 1}
	inv := []float32{1, 0.1}
	env := NewEnv(nil)
	checkOp(t, []*leaf{x}, func() mat.Tensor { return env.RoPE(x.p, m, cols, rot, hd, pos, inv) },
		func(v [][]float64) []float64 { return refRope(v[0], m, cols, rot, hd, pos, inv) })
}

func refAttention(qkv []float64, m, h, kv, hd int, segs []Segment) []float64 {
	w, ow := (h+2*kv)*hd, h*hd
	out := make([]float64, m*ow)
	scale := 1 / math.Sqrt(float64(hd))
	for _, s := range segs {
		for head := 0; head < h; head++ {
			g := head / (h / kv)
			for i := 0; i < s.Len; i++ {
				sc := make([]float64, i+1)
				mx := math.Inf(-1)
				for j := 0; j <= i; j++ {
					var d float64
					for c := 0; c < hd; c++ {
						d += qkv[(s.Start+i)*w+head*hd+c] * qkv[(s.Start+j)*w+(h+g)*hd+c]
					}
					sc[j] = d * scale
					mx = math.Max(mx, sc[j])
				}
				var z float64
				for j := range sc {
					sc[j] = math.Exp(sc[j] - mx)
					z += sc[j]
				}
				for j := range sc {
					for c := 0; c < hd; c++ {
						out[(s.Start+i)*ow+head*hd+c] += sc[j] / z * qkv[(s.Start+j)*w+(h+kv+g)*hd+c]
					}
				}
			}
		}
	}
	return out
}

func TestAttentionGrad(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	h, kv, hd := 4, 2, 3
	segs := []Segment{{0, 4}, {4, 3}}
	m := 7
	x := newLeaf(rng, "qkv", m, (h+2*kv)*hd, 1)
	env := NewEnv(kernels.NewPool(2))
	checkOp(t, []*leaf{x}, func() mat.Tensor { return env.Attention(x.p, m, h, kv, hd, segs) },
		func(v [][]float64) []float64 { return refAttention(v[0], m, h, kv, hd, segs) })
}

// TestAttentionGradBlocks runs segments longer than attBlock (several query blocks, a last one shorter) and a
// head dimension that is no multiple of the broadcast tile's strips.
func TestAttentionGradBlocks(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 9))
	h, kv, hd := 2, 1, 5
	segs := []Segment{{0, attBlock + 5}, {attBlock + 5, 2*attBlock + 3}}
	m := 3*attBlock + 8
	x := newLeaf(rng, "qkv", m, (h+2*kv)*hd, 1)
	env := NewEnv(kernels.NewPool(2))
	checkOp(t, []*leaf{x}, func() mat.Tensor { return env.Attention(x.p, m, h, kv, hd, segs) },
		func(v [][]float64) []float64 { return refAttention(v[0], m, h, kv, hd, segs) })
}

func TestSwiGLUGrad(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	m, n := 3, 5
	x := newLeaf(rng, "x", m, 2*n, 2)
	env := NewEnv(nil)
	checkOp(t, []*leaf{x}, func() mat.Tensor { return env.SwiGLU(x.p, m, n) },
		func(v [][]float64) []float64 {
			y := make([]float64, m*n)
			for r := 0; r < m; r++ {
				for j := 0; j < n; j++ {
					a, u := v[0][r*2*n+j], v[0][r*2*n+n+j]
					y[r*n+j] = a / (1 + math.Exp(-a)) * u
				}
			}
			return y
		})
}

func TestLossGrad(t *testing.T) {
	for _, kind := range []string{"f32", "bf16", "full"} {
		full := kind == "full"
		rng := rand.New(rand.NewPCG(11, 12))
		m, d, v := 5, 4, 9
		if kind == "bf16" {
			v = 2*headChunk + 9 // several chunks of the chunked bf16 head gradient
		}
		h := newLeaf(rng, "h", m, d, 1)
		wl := newLeaf(rng, "W", v, d, 1)
		rows, targets := []int{1, 2, 4}, []int{3, v - 1, 0}
		denom := float32(5)
		env := NewEnv(nil)
		leaves := []*leaf{h}
		var head BaseLinear = &nn.Dense{Rows: v, Cols: d, DType: safetensors.F32, F32: wl.data}
		if kind == "bf16" {
			u := make([]uint16, len(wl.data))
			for i, x := range wl.data {
				u[i] = safetensors.F32ToBF16(x)
				wl.data[i] = safetensors.BF16ToF32(u[i])
			}
			head = &nn.Dense{Rows: v, Cols: d, DType: safetensors.BF16, U16: u}
		}
		var wp *spnn.Param
		if full {
			leaves, head, wp = append(leaves, wl), nil, wl.p
		}
		checkOp(t, leaves, func() mat.Tensor {
			out, _ := env.Loss(h.p, m, d, v, head, wp, rows, targets, denom)
			return out
		}, func(in [][]float64) []float64 {
			w := make([]float64, v*d)
			for i, x := range wl.data {
				w[i] = float64(x)
			}
			if full {
				w = in[1]
			}
			var loss float64
			for i, r := range rows {
				z := matmulT(in[0][r*d:(r+1)*d], w, 1, v, d)
				mx := math.Inf(-1)
				for _, x := range z {
					mx = math.Max(mx, x)
				}
				var s float64
				for _, x := range z {
					s += math.Exp(x - mx)
				}
				loss += mx + math.Log(s) - z[targets[i]]
			}
			return []float64{loss / float64(denom)}
		})
	}
}

func TestEmbedGrad(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	w := newLeaf(rng, "E", 6, 3, 1)
	env := NewEnv(nil)
	ids := []int{2, 5, 2}
	out, f := env.Embed(w.p, ids, 6, 3)
	g := randSlice(rng, 9, 1)
	out.AccGrad(newMat(3, 3, g))
	if err := ag.Backward(out); err != nil {
		t.Fatal(err)
	}
	// addGrad creates W's gradient the first time and adds into it after that (rows 2 and 5 only).
	for k := float32(1); k <= 2; k++ {
		f.addGrad()
		dw := vals(w.p.Grad())
		for j := 0; j < 3; j++ {
			if dw[2*3+j] != k*(g[j]+g[6+j]) || dw[5*3+j] != k*g[3+j] {
				t.Fatalf("embedding gradient wrong after %g additions: %v", k, dw)
			}
		}
		for _, r := range []int{0, 1, 3, 4} {
			for j := 0; j < 3; j++ {
				if dw[r*3+j] != 0 {
					t.Fatalf("embedding gradient of unused row %d: %v", r, dw)
				}
			}
		}
	}
}

// TestLinearDropout: dropout applies only in training, is reproducible from its
// seed, and its gradient matches finite differences of the op with the same mask.
func TestLinearDropout(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	m, in, out, r := 4, 8, 3, 2
	x := newLeaf(rng, "x", m, in, 1)
	a := newLeaf(rng, "A", r, in, 0.5)
	b := newLeaf(rng, "B", out, r, 0.5)
	p := &Proj{In: in, Out: out, R: r, Scale: 2, Dropout: 0.5, A: a.p, B: b.p,
		Base: &nn.Dense{Rows: out, Cols: in, DType: safetensors.F32, F32: randSlice(rng, out*in, 0.5)}}
	env := NewEnv(nil)
	y1 := vals(env.Linear(x.p, m, []*Proj{p}, true, 5))
	y2 := vals(env.Linear(x.p, m, []*Proj{p}, true, 5))
	y3 := vals(env.Linear(x.p, m, []*Proj{p}, true, 6))
	ye := vals(env.Linear(x.p, m, []*Proj{p}, false, 5))
	if maxDiff(y1, y2) != 0 || maxDiff(y1, y3) == 0 || maxDiff(y1, ye) == 0 {
		t.Fatal("dropout is not seeded, or not training-only")
	}
	// Gradient wrt B against central differences of the f32 op itself (same seed → same mask).
	yv := env.Linear(x.p, m, []*Proj{p}, true, 5)
	g := make([]float32, m*out)
	for i := range g {
		g[i] = 1
	}
	yv.AccGrad(newMat(m, out, g))
	if err := ag.Backward(yv); err != nil {
		t.Fatal(err)
	}
	gb := vals(b.p.Grad())
	bv := vals(b.p)
	for j := range bv {
		old := bv[j]
		sum := func() float64 {
			var s float64
			for _, v := range vals(env.Linear(x.p, m, []*Proj{p}, true, 5)) {
				s += float64(v)
			}
			return s
		}
		bv[j] = old + 1e-2
		fp := sum()
		bv[j] = old - 1e-2
		fm := sum()
		bv[j] = old
		if num := (fp - fm) / 2e-2; math.Abs(num-float64(gb[j])) > 1e-2*(1+math.Abs(num)) {
			t.Fatalf("dB[%d] = %g, finite difference %g", j, gb[j], num)
		}
	}
}

func TestQKNormGrad(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	m, h, kv, hd := 3, 2, 1, 4
	w := (h + 2*kv) * hd
	x := newLeaf(rng, "qkv", m, w, 1)
	qw := newLeaf(rng, "q_norm", hd, 1, 1)
	kw := newLeaf(rng, "k_norm", hd, 1, 1)
	env := NewEnv(nil)
	const eps = 1e-6
	checkOp(t, []*leaf{x, qw, kw}, func() mat.Tensor { return env.QKNorm(x.p, m, h, kv, hd, nil, nil, qw.p, kw.p, eps) },
		func(v [][]float64) []float64 {
			y := append([]float64(nil), v[0]...)
			for r := 0; r < m; r++ {
				for j := 0; j < h+kv; j++ {
					wt := v[1]
					if j >= h {
						wt = v[2]
					}
					o := r*w + j*hd
					var ss float64
					for i := 0; i < hd; i++ {
						ss += v[0][o+i] * v[0][o+i]
					}
					inv := 1 / math.Sqrt(ss/float64(hd)+eps)
					for i := 0; i < hd; i++ {
						y[o+i] = v[0][o+i] * inv * wt[i]
					}
				}
			}
			return y
		})
}
