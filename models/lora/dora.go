package lora

import (
	"fmt"
	"maps"
	"math"
	"slices"

	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/safetensors"
)

// DoRA (weight-decomposed LoRA, PEFT's use_dora) keeps the LoRA pair and adds a magnitude m [Out] per module
// (PEFT's lora_magnitude_vector). With V = W + s·B·A and ‖V‖ its row norms, the adapted weight is
//
//	W' = (m / ‖V‖) ⊙ V        (per output row; PEFT's merge)
//
// so the module computes y = g ⊙ (W·x + s·B·A·x) + b with the row scale g = m/‖V‖ (the bias b is not scaled).
// Training treats ‖V‖ as a constant (detached, section 4.3 of the DoRA paper, as PEFT does). A row with ‖V‖ = 0
// gets g = 0 (it is zero either way), never a NaN.

// doraChunk is the number of rows WeightNorm materialises at a time.
const doraChunk = 64

// RowReader writes rows [o0, o0+len(dst)/In) of a base weight [Out, In] as f32 into dst: a dense weight copies
// them, a 4-bit one dequantises them, so no whole f32 matrix need exist.
type RowReader func(o0 int, dst []float32)

// F32Rows reads rows of an f32 [out, in] matrix w.
func F32Rows(w []float32, in int) RowReader {
	return func(o0 int, dst []float32) { copy(dst, w[o0*in:o0*in+len(dst)]) }
}

// WeightNorm writes ‖W_o + s·(B·A)_o‖ for every output row o into dst [Out]: the norm DoRA divides by, computed
// in f32 from the base rows (PEFT's get_weight_norm: the weight plus scaling times lora_B @ lora_A). It uses p
// for the rank-R products (p may be nil).
func (q *Pair) WeightNorm(p *kernels.Pool, dst []float32, rows RowReader) {
	WeightNorm(p, dst, rows, q.A, q.B, q.Scale, q.R, q.In, q.Out)
}

// WeightNorm is Pair.WeightNorm on bare factors A [r, in], B [out, r] with scaling s: training calls it with its
// live parameters.
func WeightNorm(p *kernels.Pool, dst []float32, rows RowReader, a, b []float32, s float32, r, in, out int) {
	if len(dst) != out || len(a) != r*in || len(b) != out*r {
		panic(fmt.Sprintf("lora: WeightNorm of [%d×%d]·[%d×%d] with len(dst)=%d len(A)=%d len(B)=%d", out, r, r, in, len(dst), len(a), len(b)))
	}
	buf := make([]float32, min(doraChunk, out)*in)
	for o0 := 0; o0 < out; o0 += doraChunk {
		n := min(doraChunk, out-o0)
		v := buf[:n*in]
		rows(o0, v)
		kernels.Gemm(p, false, false, n, in, r, s, b[o0*r:], r, a, in, 1, v, in) // V = W + s·B·A
		for i := 0; i < n; i++ {
			row := v[i*in : (i+1)*in]
			dst[o0+i] = float32(math.Sqrt(float64(kernels.Dot(row, row))))
		}
	}
}

// DoRAScale writes g = m/‖V‖ into g (0 where ‖V‖ = 0) from the magnitude m and the row norms norm.
func DoRAScale(g, m, norm []float32) {
	for o, n := range norm {
		g[o] = 0
		if n != 0 {
			g[o] = m[o] / n
		}
	}
}

// MergeDoRA turns the base weight W [Out, In] (f32, in place) into PEFT's merged DoRA weight
// (m/‖W + s·B·A‖) ⊙ (W + s·B·A).
func (q *Pair) MergeDoRA(p *kernels.Pool, W []float32) {
	if len(W) != q.Out*q.In || len(q.Magnitude) != q.Out {
		panic(fmt.Sprintf("lora: MergeDoRA of a [%d×%d] pair into %d values with a magnitude of %d", q.Out, q.In, len(W), len(q.Magnitude)))
	}
	q.AddDelta(p, W, q.Scale)
	for o := 0; o < q.Out; o++ {
		row := W[o*q.In : (o+1)*q.In]
		n := float32(math.Sqrt(float64(kernels.Dot(row, row))))
		g := float32(0)
		if n != 0 {
			g = q.Magnitude[o] / n
		}
		kernels.Scale(g, row)
	}
}

// PrepareDoRA computes, for every DoRA module, the per-row scale g = m/‖W + s·B·A‖ and the shift (1−g)⊙b from
// the base weight and bias, once: then the unmerged module costs what a LoRA one does (Factors.Apply scales the
// row after adding s·B·A·x to the base output W·x + b). base.Rows gives the base weights; an adapter without
// magnitudes needs nothing.
func (a *Adapter) PrepareDoRA(p *kernels.Pool, base Base) error {
	for _, m := range a.Names() {
		q := a.Modules[m]
		if q.Magnitude == nil {
			continue
		}
		if base.Rows == nil {
			return fmt.Errorf("adapter %s is a DoRA adapter (use_dora): applying it unmerged needs the base weights, which are not available here; merge it into the base with `lorakit merge BASE %s OUT` and use the merged folder", a.Dir, a.Dir)
		}
		rows, bias, err := base.Rows(m)
		if err != nil {
			return fmt.Errorf("adapter %s: DoRA module %s: %w", a.Dir, m, err)
		}
		if bias != nil && len(bias) != q.Out {
			return fmt.Errorf("adapter %s: DoRA module %s: the base bias has %d values, want %d", a.Dir, m, len(bias), q.Out)
		}
		norm := make([]float32, q.Out)
		q.WeightNorm(p, norm, rows)
		q.RowScale = make([]float32, q.Out)
		DoRAScale(q.RowScale, q.Magnitude, norm)
		q.RowShift = nil
		if bias != nil {
			q.RowShift = make([]float32, q.Out)
			for o, b := range bias {
				q.RowShift[o] = (1 - q.RowScale[o]) * b
			}
		}
	}
	return nil
}

// IsDoRA reports whether the adapter has DoRA magnitudes.
func (a *Adapter) IsDoRA() bool {
	for _, q := range a.Modules {
		if q.Magnitude != nil {
			return true
		}
	}
	return false
}

// applyRowScale finishes a DoRA module's rows: y ← g⊙y + shift for each row of y [rows, Out], where y already
// holds W·x + b + s·B·A·x.
func (f *Factors) applyRowScale(y []float32, rows int) {
	out := f.Out
	for j := 0; j < rows; j++ {
		row := y[j*out : (j+1)*out]
		for o, g := range f.RowScale {
			row[o] *= g
		}
		if f.RowShift != nil {
			kernels.Axpy(1, f.RowShift, row)
		}
	}
}

// magnitudes collects the lora_magnitude_vector tensors of an adapter file by module.
type magnitudes map[string]struct {
	name string
	info safetensors.TensorInfo
}

// add records one magnitude tensor. PEFT saves "…lora_magnitude_vector" (it strips the ".weight" of its
// in-memory DoraLinearLayer); the forms with ".weight" or an adapter name are accepted as well.
func (ms magnitudes) add(name, module, suf string, info safetensors.TensorInfo) error {
	switch {
	case suf != "" && suf != "weight":
		return fmt.Errorf("tensor %q: unknown key (a DoRA magnitude is saved as lora_magnitude_vector)", name)
	case !info.DType.IsFloat():
		return fmt.Errorf("tensor %q: dtype %s, want F32, F16 or BF16", name, info.DType)
	case len(info.Shape) != 1:
		return fmt.Errorf("tensor %q: shape %v, want 1-D [out features] (a DoRA magnitude)", name, info.Shape)
	}
	if prev, dup := ms[module]; dup {
		return fmt.Errorf("tensor %q: module %s already has %q (several adapters in one file?)", name, module, prev.name)
	}
	ms[module] = struct {
		name string
		info safetensors.TensorInfo
	}{name, info}
	return nil
}

// check matches the magnitudes with the config and the linear pairs: use_dora needs one per linear module, of
// its out features, and nothing else.
func (ms magnitudes) check(a *Adapter) error {
	for _, m := range slices.Sorted(maps.Keys(ms)) {
		t := ms[m]
		switch q := a.Modules[m]; {
		case !a.Config.UseDoRA:
			return fmt.Errorf("tensor %q is a DoRA magnitude but adapter_config.json has use_dora false", t.name)
		case a.Embed[m] != nil:
			return fmt.Errorf("tensor %q: DoRA on an embedding (%s) is not supported", t.name, m)
		case q == nil:
			return fmt.Errorf("tensor %q has no matching lora_A/lora_B tensors", t.name)
		case t.info.Shape[0] != q.Out:
			return fmt.Errorf("tensor %q has shape %v, want [%d] (the out features of %s)", t.name, t.info.Shape, q.Out, m)
		}
	}
	if !a.Config.UseDoRA {
		return nil
	}
	for _, m := range a.Names() {
		if _, ok := ms[m]; !ok {
			return fmt.Errorf("adapter_config.json has use_dora true (DoRA) but module %s has no tensor %q", m, KeyPrefix+m+".lora_magnitude_vector")
		}
	}
	for _, m := range slices.Sorted(maps.Keys(a.Embed)) {
		return fmt.Errorf("adapter_config.json has use_dora true and module %s is an embedding: DoRA on an embedding is not supported", m)
	}
	return nil
}

// read loads the checked magnitudes into the pairs, refusing NaN or infinite values.
func (ms magnitudes) read(f *safetensors.File, a *Adapter) error {
	for m, t := range ms {
		v, err := finiteFloats(f, t.name)
		if err != nil {
			return err
		}
		a.Modules[m].Magnitude = v
	}
	return nil
}
