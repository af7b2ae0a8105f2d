package lora

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"

	"github.com/lorakit/lorakit/internal/atomicfile"
	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/safetensors"
)

// File names of a PEFT adapter folder.
const (
	ConfigName  = "adapter_config.json"
	WeightsName = "adapter_model.safetensors"
	// KeyPrefix starts every tensor key PEFT saves (PeftModel → LoraModel → the HF model).
	KeyPrefix = "base_model.model."
)

// Pair is one module's low-rank update: A [R, In], B [Out, R], both row-major f32, and its scaling s, so the
// module computes y += s·B·(A·x).
type Pair struct {
	A, B       []float32
	R, In, Out int
	Scale      float32
	Alpha      float64 // α used for Scale (from alpha_pattern or lora_alpha)
}

// Adapter is a loaded PEFT LoRA adapter.
type Adapter struct {
	Config  Config
	Modules map[string]*Pair // key "model.layers.0.self_attn.q_proj"
	// Saved holds full tensors saved by modules_to_save (or bias="all"/"lora_only"), keyed by the base
	// checkpoint's tensor name ("lm_head.weight"); Tensor.Name is that same name.
	Saved map[string]safetensors.Tensor
	// Embed holds LoRA on embedding tables, keyed by module ("model.embed_tokens"): A [R, vocab] is
	// lora_embedding_A, B [dim, R] is lora_embedding_B (In = vocab, Out = dim), and the [vocab, dim] table gets
	// s·(B·A)ᵀ (PEFT's Embedding.get_delta_weight). Only a merge applies them (see CheckUnmerged).
	Embed map[string]*Pair
	// BaseLayers are base weights PEFT saved beside an adapted embedding or head ("model.embed_tokens.weight"
	// from "…embed_tokens.base_layer.weight", save_embedding_layers): PEFT loads them into the base before the
	// adapter applies. Usually a copy of the base's own tensor.
	BaseLayers map[string]safetensors.Tensor
	// DType is the storage type of lora_A/lora_B on disk ("" or F32 when created in lorakit); Save writes it.
	DType safetensors.DType
	Dir   string // folder it was loaded from, if any
}

// New returns an empty adapter with cfg.
func New(cfg Config) *Adapter {
	return &Adapter{Config: cfg, Modules: map[string]*Pair{}, Saved: map[string]safetensors.Tensor{}}
}

// NewPair makes a zero pair for module with the rank, α and scaling cfg gives it.
func (c *Config) NewPair(module string, in, out int) *Pair {
	r := c.RankFor(module)
	alpha := c.AlphaFor(module)
	return &Pair{A: make([]float32, r*in), B: make([]float32, out*r), R: r, In: in, Out: out,
		Alpha: alpha, Scale: Scaling(alpha, r, c.UseRSLoRA)}
}

// Names returns the module names, sorted.
func (a *Adapter) Names() []string {
	names := make([]string, 0, len(a.Modules))
	for n := range a.Modules {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// LoadConfig reads and validates dir/adapter_config.json.
func LoadConfig(dir string) (*Config, error) {
	path := filepath.Join(dir, ConfigName)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load adapter %s: %w", dir, err)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return c, nil
}

// Save writes the adapter as a PEFT folder (adapter_config.json + adapter_model.safetensors with
// {"format":"pt"}), atomically: dir appears complete or not at all (an existing dir is replaced).
func (a *Adapter) Save(dir string) error {
	return atomicfile.Dir(dir, func(tmp string) error { return a.WriteFiles(tmp) })
}

// WriteFiles writes the two adapter files into an existing folder (each file atomically). Trainers that
// checkpoint into a folder of their own use it; Save is the whole-folder version.
func (a *Adapter) WriteFiles(dir string) error {
	cfgJSON, err := a.Config.MarshalJSON()
	if err != nil {
		return err
	}
	if err := atomicfile.WriteBytes(filepath.Join(dir, ConfigName), cfgJSON); err != nil {
		return err
	}
	dt := a.DType
	if dt == "" {
		dt = safetensors.F32
	}
	var ts []safetensors.Tensor
	for _, m := range a.Names() {
		p := a.Modules[m]
		if len(p.A) != p.R*p.In || len(p.B) != p.Out*p.R {
			return fmt.Errorf("save adapter: module %s: A has %d values, B %d, want %d×%d and %d×%d", m, len(p.A), len(p.B), p.R, p.In, p.Out, p.R)
		}
		for _, t := range []struct {
			suf   string
			v     []float32
			shape []int
		}{{".lora_A.weight", p.A, []int{p.R, p.In}}, {".lora_B.weight", p.B, []int{p.Out, p.R}}} {
			data, err := safetensors.Encode(dt, t.v)
			if err != nil {
				return fmt.Errorf("save adapter: module %s: %w", m, err)
			}
			ts = append(ts, safetensors.Tensor{Name: KeyPrefix + m + t.suf, DType: dt, Shape: t.shape, Data: data})
		}
	}
	for _, m := range slices.Sorted(maps.Keys(a.Embed)) {
		p := a.Embed[m]
		for _, t := range []struct {
			suf   string
			v     []float32
			shape []int
		}{{".lora_embedding_A", p.A, []int{p.R, p.In}}, {".lora_embedding_B", p.B, []int{p.Out, p.R}}} {
			data, err := safetensors.Encode(dt, t.v)
			if err != nil {
				return fmt.Errorf("save adapter: embedding %s: %w", m, err)
			}
			ts = append(ts, safetensors.Tensor{Name: KeyPrefix + m + t.suf, DType: dt, Shape: t.shape, Data: data})
		}
	}
	for k, t := range a.Saved {
		t.Name = KeyPrefix + k
		ts = append(ts, t)
	}
	for k, t := range a.BaseLayers {
		t.Name = baseLayerKey(k)
		ts = append(ts, t)
	}
	return safetensors.Write(filepath.Join(dir, WeightsName), ts, map[string]string{"format": "pt"})
}

// Check compares the adapter with a base model: shapes(module) gives the base Linear's in/out features.
// Mismatches are reported together (the first few, then a count), each naming the tensor and both shapes.
func (a *Adapter) Check(shapes func(module string) (in, out int, ok bool)) error {
	var errs []error
	for _, m := range a.Names() {
		p := a.Modules[m]
		in, out, ok := shapes(m)
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("tensor %q: the base model has no linear module %s (adapter made for another model?)", KeyPrefix+m+".lora_A.weight", m))
		case in != p.In:
			errs = append(errs, fmt.Errorf("tensor %q has shape [%d %d] but base %s.weight is [%d %d]: in features %d ≠ %d (adapter made for another model?)",
				KeyPrefix+m+".lora_A.weight", p.R, p.In, m, out, in, p.In, in))
		case out != p.Out:
			errs = append(errs, fmt.Errorf("tensor %q has shape [%d %d] but base %s.weight is [%d %d]: out features %d ≠ %d (adapter made for another model?)",
				KeyPrefix+m+".lora_B.weight", p.Out, p.R, m, out, in, p.Out, out))
		}
	}
	const show = 8
	if len(errs) > show {
		errs = append(errs[:show], fmt.Errorf("... and %d more mismatched modules (%d of %d do not fit)", len(errs)-show, len(errs), len(a.Modules)))
	}
	return errors.Join(errs...)
}

// Apply implements llama.Delta: for every row of x ([rows, in], row-major), y[row] += s·B·(A·x[row]). It does
// nothing for modules the adapter does not touch. Lengths that disagree with the module's shape are a
// programming error (Check the adapter against the base first) and panic.
func (a *Adapter) Apply(module string, y, x []float32, in, out int) {
	p := a.Modules[module]
	if p == nil {
		return
	}
	p.Apply(nil, y, x, in, out)
}

// Apply adds s·B·(A·x) to y for every row; p may be nil (single-threaded). It does not allocate: the [rows, R]
// intermediate comes from a sync.Pool, so different pairs (or adapters) may run Apply concurrently.
func (q *Pair) Apply(p *kernels.Pool, y, x []float32, in, out int) {
	if in != q.In || out != q.Out || in == 0 || len(x)%in != 0 || len(y) != len(x)/in*out {
		panic(fmt.Sprintf("lora: Apply with in=%d out=%d len(x)=%d len(y)=%d on a pair [%d×%d]·[%d×%d]", in, out, len(x), len(y), q.Out, q.R, q.R, q.In))
	}
	rows := len(x) / in
	if rows == 0 {
		return
	}
	if rows*q.R*(in+out) < inlineAt {
		p = nil // a pool hand-off costs more than this product
	}
	need := rows * q.R
	if rows == 1 {
		need += min(256, out)
	}
	bp := scratch.Get().(*[]float32)
	if cap(*bp) < need {
		*bp = make([]float32, need)
	}
	t := (*bp)[:rows*q.R]
	if rows == 1 { // decode: two GEMVs through the kernels
		kernels.MatVecF32(p, t, q.A, x, q.R, q.In)
		addScaledBt(y, q.B, t, q.Scale, (*bp)[q.R:need])
	} else {
		kernels.MatMulF32T(p, t, x, q.A, rows, q.R, q.In) // T[rows, r] = X·Aᵀ
		kernels.Scale(q.Scale, t)                         // alpha 1 below: the NT Gemm then needs no scratch
		// Y[rows, out] += (s·T)·Bᵀ
		kernels.Gemm(p, false, true, rows, out, q.R, 1, t, q.R, q.B, q.R, 1, y, out)
	}
	scratch.Put(bp)
}

var (
	// scratch holds Apply's intermediates (a pool of *[]float32).
	scratch  = sync.Pool{New: func() any { return new([]float32) }}
	inlineAt = 1 << 16 // multiply-adds below which Apply ignores the pool
)

// ApplyRows adds s·B·(A·x) to each of rows rows of y ([rows, out]) from x ([rows, in]) as one matrix product per
// module (llama.RowsDelta: Forward hands it every row of a batch that uses this adapter). Safe to run
// concurrently for different adapters or modules.
func (a *Adapter) ApplyRows(p *kernels.Pool, module string, y, x []float32, rows, in, out int) {
	if q := a.Modules[module]; q != nil && rows > 0 {
		q.Apply(p, y[:rows*out], x[:rows*in], in, out)
	}
}

// ApplyRows adds each row's own adapter to a batch that shares one base matmul (the S-LoRA/Punica idea):
// x is [len(rows), in], y is [len(rows), out], and rows[i] is the adapter of row i (nil = base only). Rows
// with the same adapter are gathered and go through A and B together.
func ApplyRows(p *kernels.Pool, module string, y, x []float32, in, out int, rows []*Adapter) {
	if len(x) != len(rows)*in || len(y) != len(rows)*out {
		panic(fmt.Sprintf("lora: ApplyRows %s: %d rows, len(x)=%d (in %d), len(y)=%d (out %d)", module, len(rows), len(x), in, len(y), out))
	}
	done := make([]bool, len(rows))
	var idx []int
	var gx, gy []float32
	for i, a := range rows {
		if done[i] || a == nil {
			continue
		}
		q := a.Modules[module]
		idx = idx[:0]
		for j := i; j < len(rows); j++ {
			if rows[j] == a {
				done[j] = true
				idx = append(idx, j)
			}
		}
		if q == nil {
			continue
		}
		if len(idx) == 1 {
			j := idx[0]
			q.Apply(p, y[j*out:(j+1)*out], x[j*in:(j+1)*in], in, out)
			continue
		}
		gx = grow(gx, len(idx)*in)
		gy = grow(gy, len(idx)*out)
		for k, j := range idx {
			copy(gx[k*in:(k+1)*in], x[j*in:(j+1)*in])
			clear(gy[k*out : (k+1)*out])
		}
		q.Apply(p, gy, gx, in, out)
		for k, j := range idx {
			kernels.Axpy(1, gy[k*out:(k+1)*out], y[j*out:(j+1)*out])
		}
	}
}

func grow(b []float32, n int) []float32 {
	if cap(b) < n {
		return make([]float32, n)
	}
	return b[:n]
}

// Delta is s·B·A as an [Out, In] f32 matrix, computed as PEFT's get_delta_weight does: (B @ A) in f32, then
// multiplied by the scaling.
func Delta(p *Pair) []float32 {
	d := make([]float32, p.Out*p.In)
	kernels.Gemm(nil, false, false, p.Out, p.In, p.R, 1, p.B, p.R, p.A, p.In, 0, d, p.In)
	kernels.Scale(p.Scale, d)
	return d
}

// addScaledBt does y[o] += s·Σ_k B[o,k]·t[k] for B [len(y), len(t)], a chunk of rows at a time through the
// GEMV kernel into buf.
func addScaledBt(y, B, t []float32, s float32, buf []float32) {
	r := len(t)
	for o0 := 0; o0 < len(y); o0 += len(buf) {
		n := min(len(buf), len(y)-o0)
		kernels.MatVecF32(nil, buf[:n], B[o0*r:(o0+n)*r], t, n, r)
		kernels.Axpy(s, buf[:n], y[o0:o0+n])
	}
}
