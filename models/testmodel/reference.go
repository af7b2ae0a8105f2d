package testmodel

import (
	"fmt"
	"math"

	"github.com/lorakit/lorakit/models/safetensors"
)

// RefConfig is what RefHidden needs of a Llama-family config.
type RefConfig struct {
	Hidden, HeadDim, Heads, KVHeads, Layers int
	RMSNormEps                              float64
	InvFreq                                 []float32 // rotary inverse frequencies (scaling applied)
	QKNorm                                  bool      // qwen3's per-head q_norm/k_norm
	SlidingWindow                           int       // 0: none
	// RoundKV, if set, is a KV cache's storage rounding (to bf16, say), applied to every key (after RoPE) and
	// value before attention reads them.
	RoundKV func(float64) float64
}

// RefHidden is an independent float64 implementation of the Hugging Face Llama-family decoder (no cache),
// straight from the checkpoint tensors in dir: the final-norm hidden state of every position of tokens
// (last_hidden_state), which tests multiply by a head themselves.
func RefHidden(dir string, cfg RefConfig, tokens []int) ([][]float64, error) {
	ck, err := safetensors.OpenCheckpoint(dir)
	if err != nil {
		return nil, err
	}
	defer ck.Close()
	var ferr error
	out, err := RefHiddenFrom(func(name string) ([]float64, bool) {
		if _, _, ok := ck.Info(name); !ok {
			return nil, false
		}
		v, err := ck.Float32s(name)
		if err != nil && ferr == nil {
			ferr = err
		}
		out := make([]float64, len(v))
		for i, x := range v {
			out[i] = float64(x)
		}
		return out, true
	}, cfg, tokens)
	if err == nil {
		err = ferr
	}
	return out, err
}

// RefHiddenFrom is RefHidden over the tensors tensor gives by checkpoint name (false: absent), so that a test can
// run the reference on weights it computed (an adapter's effective weights, say).
//
// complexity: the decoder written out as the equations, one loop per step, so that it reads as the reference.
func RefHiddenFrom(tensor func(name string) ([]float64, bool), cfg RefConfig, tokens []int) ([][]float64, error) {
	var ferr error
	get := func(name string) []float64 {
		v, ok := tensor(name)
		if !ok && ferr == nil {
			ferr = fmt.Errorf("testmodel: no tensor %s", name)
		}
		return v
	}
	has := func(name string) bool { _, ok := tensor(name); return ok }
	H, D, nh, nkv := cfg.Hidden, cfg.HeadDim, cfg.Heads, cfg.KVHeads
	lin := func(name string, x []float64) []float64 {
		y := matvec(get(name+".weight"), x)
		if has(name + ".bias") {
			for i, b := range get(name + ".bias") {
				y[i] += b
			}
		}
		return y
	}
	rms := func(x, w []float64) []float64 { return rmsNorm(x, w, cfg.RMSNormEps) }
	emb := get("model.embed_tokens.weight")
	n := len(tokens)
	xs := make([][]float64, n)
	for p, tok := range tokens {
		if (tok+1)*H > len(emb) {
			return nil, fmt.Errorf("testmodel: token %d outside the embedding", tok)
		}
		xs[p] = append([]float64(nil), emb[tok*H:(tok+1)*H]...)
	}
	for l := range cfg.Layers {
		pre := fmt.Sprintf("model.layers.%d.", l)
		qs, ks, vs := make([][]float64, n), make([][]float64, n), make([][]float64, n)
		for p := range n {
			xn := rms(xs[p], get(pre+"input_layernorm.weight"))
			qs[p], ks[p], vs[p] = lin(pre+"self_attn.q_proj", xn), lin(pre+"self_attn.k_proj", xn), lin(pre+"self_attn.v_proj", xn)
			if cfg.QKNorm {
				for h := range nh {
					copy(qs[p][h*D:], rms(qs[p][h*D:(h+1)*D], get(pre+"self_attn.q_norm.weight")))
				}
				for h := range nkv {
					copy(ks[p][h*D:], rms(ks[p][h*D:(h+1)*D], get(pre+"self_attn.k_norm.weight")))
				}
			}
			rope(qs[p], p, D, cfg.InvFreq)
			rope(ks[p], p, D, cfg.InvFreq)
			if cfg.RoundKV != nil {
				for i := range ks[p] {
					ks[p][i], vs[p][i] = cfg.RoundKV(ks[p][i]), cfg.RoundKV(vs[p][i])
				}
			}
		}
		for p := range n {
			att := make([]float64, nh*D)
			for h := range nh {
				kh := h / (nh / nkv)
				var sc []float64
				mx := math.Inf(-1)
				for j := 0; j <= p; j++ {
					s := math.Inf(-1)
					if cfg.SlidingWindow == 0 || p-j < cfg.SlidingWindow {
						s = 0
						for i := range D {
							s += qs[p][h*D+i] * ks[j][kh*D+i]
						}
						s /= math.Sqrt(float64(D))
					}
					sc = append(sc, s)
					mx = math.Max(mx, s)
				}
				var sum float64
				for j := range sc {
					sc[j] = math.Exp(sc[j] - mx)
					sum += sc[j]
				}
				for j := range sc {
					for i := range D {
						att[h*D+i] += sc[j] / sum * vs[j][kh*D+i]
					}
				}
			}
			o := lin(pre+"self_attn.o_proj", att)
			for i := range H {
				xs[p][i] += o[i]
			}
			xn := rms(xs[p], get(pre+"post_attention_layernorm.weight"))
			g, u := lin(pre+"mlp.gate_proj", xn), lin(pre+"mlp.up_proj", xn)
			for i := range g {
				g[i] = g[i] / (1 + math.Exp(-g[i])) * u[i]
			}
			d := lin(pre+"mlp.down_proj", g)
			for i := range H {
				xs[p][i] += d[i]
			}
		}
	}
	out := make([][]float64, n)
	for p := range n {
		out[p] = rms(xs[p], get("model.norm.weight"))
	}
	return out, ferr
}

// RefMatVec is w·x for a row-major w [len(w)/len(x), len(x)] of float32 weights, in float64.
func RefMatVec(w []float32, x []float64) []float64 {
	w64 := make([]float64, len(w))
	for i, v := range w {
		w64[i] = float64(v)
	}
	return matvec(w64, x)
}

func matvec(w, x []float64) []float64 {
	in := len(x)
	y := make([]float64, len(w)/in)
	for o := range y {
		for i := range in {
			y[o] += w[o*in+i] * x[i]
		}
	}
	return y
}

func rmsNorm(x, w []float64, eps float64) []float64 {
	var ss float64
	for _, v := range x {
		ss += v * v
	}
	r := 1 / math.Sqrt(ss/float64(len(x))+eps)
	y := make([]float64, len(x))
	for i := range x {
		y[i] = x[i] * r * w[i]
	}
	return y
}

// rope rotates each head of x (rotate_half convention) to position pos.
func rope(x []float64, pos, D int, inv []float32) {
	for h := 0; h < len(x)/D; h++ {
		v := x[h*D : (h+1)*D]
		rot := make([]float64, D)
		for i := range D / 2 {
			rot[i] = -v[i+D/2]
			rot[i+D/2] = v[i]
		}
		for i := range D {
			th := float64(float32(pos) * inv[i%(D/2)])
			v[i] = v[i]*math.Cos(th) + rot[i]*math.Sin(th)
		}
	}
}
