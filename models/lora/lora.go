package lora

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

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
	// Magnitude is DoRA's m [Out] (PEFT's lora_magnitude_vector), nil for a plain LoRA pair (see dora.go).
	Magnitude []float32
	// RowScale g = m/‖W + s·B·A‖ and RowShift (1−g)⊙b [Out] (nil without a base bias) are DoRA's unmerged form
	// over one base, set by Adapter.PrepareDoRA.
	RowScale, RowShift []float32
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
	// Tokens holds trainable rows (PEFT's trainable_token_indices) by module, EmbedModule or HeadModule; see
	// tokens.go. Generate, eval and serve apply them unmerged; merge copies them into the tables.
	Tokens map[string]*TokenRows
	// TiedHead is set when the adapter is applied to a base whose LM head is the embedding table: the head then
	// uses the embedding's trainable rows (set by LoadUnmerged from the base, or by the trainer).
	TiedHead bool
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
		if p.Magnitude != nil { // DoRA: PEFT's key, without a ".weight" suffix
			if len(p.Magnitude) != p.Out {
				return fmt.Errorf("save adapter: module %s: DoRA magnitude has %d values, want %d", m, len(p.Magnitude), p.Out)
			}
			data, err := safetensors.Encode(dt, p.Magnitude)
			if err != nil {
				return fmt.Errorf("save adapter: module %s: %w", m, err)
			}
			ts = append(ts, safetensors.Tensor{Name: KeyPrefix + m + ".lora_magnitude_vector", DType: dt, Shape: []int{p.Out}, Data: data})
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
	for _, m := range slices.Sorted(maps.Keys(a.Tokens)) {
		t := a.Tokens[m]
		if t.Dim <= 0 || len(t.Values) != len(t.IDs)*t.Dim {
			return fmt.Errorf("save adapter: trainable tokens of %s: %d values for %d rows of %d", m, len(t.Values), len(t.IDs), t.Dim)
		}
		data, err := safetensors.Encode(dt, t.Values)
		if err != nil {
			return fmt.Errorf("save adapter: trainable tokens of %s: %w", m, err)
		}
		ts = append(ts, safetensors.Tensor{Name: TokensKey(m), DType: dt, Shape: []int{len(t.IDs), t.Dim}, Data: data})
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
// An adapter for another base mismatches nearly every module, so the error is one summary line (how many
// tensors do not fit, the adapter's and the base's sizes, the base the adapter records), then the first few
// tensors, each with both shapes.
func (a *Adapter) Check(shapes func(module string) (in, out int, ok bool)) error {
	var lines []string
	var missing, inBad, outBad int
	var example string
	for _, m := range a.Names() {
		p := a.Modules[m]
		in, out, ok := shapes(m)
		var line string
		switch {
		case !ok:
			missing++
			line = fmt.Sprintf("tensor %q: the base model has no linear module %s", KeyPrefix+m+".lora_A.weight", m)
		case in != p.In:
			inBad++
			line = fmt.Sprintf("tensor %q has shape [%d %d] but base %s.weight is [%d %d]: in features %d ≠ %d",
				KeyPrefix+m+".lora_A.weight", p.R, p.In, m, out, in, p.In, in)
		case out != p.Out:
			outBad++
			line = fmt.Sprintf("tensor %q has shape [%d %d] but base %s.weight is [%d %d]: out features %d ≠ %d",
				KeyPrefix+m+".lora_B.weight", p.Out, p.R, m, out, in, p.Out, out)
		default:
			continue
		}
		if example == "" && ok {
			example = fmt.Sprintf("; e.g. %s: adapter [%d→%d], base [%d→%d]", m, p.In, p.Out, in, out)
		}
		lines = append(lines, line)
	}
	if len(lines) == 0 {
		return nil
	}
	n := len(lines)
	var kinds []string
	for _, k := range []struct {
		n    int
		what string
	}{{inBad, "in features"}, {outBad, "out features"}, {missing, "no such module in the base"}} {
		if k.n > 0 {
			kinds = append(kinds, fmt.Sprintf("%d %s", k.n, k.what))
		}
	}
	recorded := "records no base_model_name_or_path"
	if a.Config.BaseModel != "" {
		recorded = fmt.Sprintf("records base_model_name_or_path %q", a.Config.BaseModel)
	}
	summary := fmt.Sprintf("the adapter was made for another model: %d of %d adapted modules do not fit the base (%s)%s; the adapter %s",
		n, len(a.Modules), strings.Join(kinds, ", "), example, recorded)
	const show = 3
	if len(lines) > show {
		lines = append(lines[:show], fmt.Sprintf("... and %d more", n-show))
	}
	return fmt.Errorf("%s\n  %s", summary, strings.Join(lines, "\n  "))
}

// Apply adds s·B·(A·x) to y for every row of x ([rows, in]); p may be nil (single-threaded). It does not
// allocate (see Factors.Apply).
func (q *Pair) Apply(p *kernels.Pool, y, x []float32, in, out int) {
	if in != q.In || out != q.Out || in == 0 || len(x)%in != 0 || len(y) != len(x)/in*out {
		panic(fmt.Sprintf("lora: Apply with in=%d out=%d len(x)=%d len(y)=%d on a pair [%d×%d]·[%d×%d]", in, out, len(x), len(y), q.Out, q.R, q.R, q.In))
	}
	f := q.Factors()
	f.Apply(p, y, x, len(x)/in)
}
