package lora

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/lorakit/lorakit/models/kernels"
	"github.com/lorakit/lorakit/models/safetensors"
)

// Load reads a PEFT LoRA adapter folder: adapter_config.json and adapter_model.safetensors. It is the one reader
// of adapter folders (merge, generate, eval, data score, serve and train --init-adapter all use it), and accepts
// what PEFT and the exporters around it write:
//
//   - "…q_proj.lora_A.weight" [r, in] and "…lora_B.weight" [out, r], also with the adapter name inside the key
//     ("…lora_A.default.weight", PEFT's in-memory names written by some exporters);
//   - full tensors of modules_to_save ("…lm_head.weight", or unstripped "…lm_head.modules_to_save.default.weight")
//     and biases (bias "all" / "lora_only") into Saved;
//   - LoRA on an embedding: "…embed_tokens.lora_embedding_A" [r, vocab] and "…lora_embedding_B" [dim, r] into
//     Embed, and the base layer PEFT saves beside it ("…embed_tokens.base_layer.weight") into BaseLayers;
//   - DoRA (use_dora): "…q_proj.lora_magnitude_vector" [out] as PEFT saves it (also with ".weight" or the adapter
//     name inside the key) into Pair.Magnitude;
//   - rank_pattern / alpha_pattern by suffix, full name or regex.
//
// It rejects, naming the file and the tensor or field: DoRA on an embedding or without its magnitudes, lora_bias,
// fan_in_fan_out, non-LoRA peft types, a file holding several adapters, keys it does not understand, A/B shapes
// that disagree with each other or with the rank the config gives the module, and an adapter_model.bin without
// safetensors. What only a merge can
// apply (Embed, Saved, BaseLayers that differ from the base) is accepted here; CheckUnmerged reports it for the
// commands that apply an adapter without merging it.
func Load(dir string) (*Adapter, error) { return load(dir, nil) }

// load is Load checking, when linear is set, every linear module's shapes against the base from the file's
// header, before any tensor is read: a file that claims gigabytes of weights for another model is refused without
// reading them.
func load(dir string, linear func(module string) (in, out int, ok bool)) (*Adapter, error) {
	cfg, err := LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, WeightsName)
	if _, err := os.Stat(path); err != nil {
		for _, bin := range []string{"adapter_model.bin", "adapter_model.pt", "adapter_model.pth"} {
			if _, binErr := os.Stat(filepath.Join(dir, bin)); binErr == nil {
				return nil, fmt.Errorf("load adapter %s: only %s (a PyTorch pickle) is present: lorakit reads %s only; convert it, e.g. in Python: "+
					"safetensors.torch.save_file(torch.load(%q), %q, metadata={\"format\": \"pt\"})", dir, bin, WeightsName, bin, WeightsName)
			}
		}
		return nil, fmt.Errorf("load adapter %s: %w", dir, err)
	}
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load adapter %s: %w", path, err)
	}
	defer f.Close()
	a := New(*cfg)
	a.Dir = dir
	if err := a.fromFile(f, linear); err != nil {
		var fit *fitError
		if errors.As(err, &fit) {
			return nil, fmt.Errorf("adapter %s does not fit the base model: %w", dir, fit.err)
		}
		return nil, fmt.Errorf("load adapter %s: %w", path, err)
	}
	return a, nil
}

// keyRE splits a saved key (after base_model.model.) into module, LoRA tensor kind, optional adapter name and
// suffix.
var keyRE = regexp.MustCompile(`^(.+?)\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector)((?:\.[^.]+){0,2})$`)

// splitRest splits what follows the LoRA tensor kind: "", ".weight", ".default", ".default.weight".
func splitRest(rest string) (adName, suf string) {
	parts := strings.Split(strings.TrimPrefix(rest, "."), ".")
	switch {
	case rest == "":
	case len(parts) == 2:
		adName, suf = parts[0], parts[1]
	case parts[0] == "weight" || parts[0] == "bias":
		suf = parts[0]
	default:
		adName = parts[0]
	}
	return adName, suf
}

// mtsRE matches the unstripped form of a modules_to_save tensor, baseLayerRE PEFT's base-layer tensors.
var (
	mtsRE       = regexp.MustCompile(`^(.+)\.modules_to_save\.([^.]+)\.([^.]+)$`)
	baseLayerRE = regexp.MustCompile(`^(.+)\.base_layer\.([^.]+)$`)
)

type abInfo struct {
	a, b   string // full tensor names
	ia, ib safetensors.TensorInfo
	embed  bool
}

// fitError is an adapter whose shapes do not fit the base (Check's summary), found from the header.
type fitError struct{ err error }

func (e *fitError) Error() string { return e.err.Error() }

// complexity: one branch per PEFT tensor key form (lora_A/B, embeddings, DoRA, biases, modules_to_save), each naming the key it rejects.
func (a *Adapter) fromFile(f *safetensors.File, linear func(module string) (in, out int, ok bool)) error {
	cfg := &a.Config
	pairs := map[string]*abInfo{}
	mags := magnitudes{}
	names := map[string]bool{} // adapter names found inside keys
	var dtype safetensors.DType
	for _, name := range f.Names() {
		info, _ := f.Info(name)
		key, ok := strings.CutPrefix(name, KeyPrefix)
		if !ok {
			return fmt.Errorf("tensor %q: unknown key (PEFT keys start with %q)", name, KeyPrefix)
		}
		if module, adName, ok := tokensModule(key); ok {
			if adName != "" {
				names[adName] = true
			}
			if err := a.addTokens(f, name, module, info); err != nil {
				return err
			}
			continue
		}
		if m := keyRE.FindStringSubmatch(key); m != nil {
			module, kind := m[1], m[2]
			adName, suf := splitRest(m[3])
			if adName != "" {
				names[adName] = true
			}
			switch kind {
			case "lora_magnitude_vector":
				if err := mags.add(name, module, suf, info); err != nil {
					return err
				}
				continue
			case "lora_A", "lora_B":
				if suf == "bias" {
					return fmt.Errorf("tensor %q: a bias on lora_B (lora_bias) is not supported", name)
				}
				if suf != "weight" {
					return fmt.Errorf("tensor %q: unknown key (want %s.weight)", name, kind)
				}
			default: // lora_embedding_A/B are nn.Parameters, saved without .weight
				if suf != "" {
					return fmt.Errorf("tensor %q: unknown key (%s is saved without a .%s suffix)", name, kind, suf)
				}
			}
			if !info.DType.IsFloat() {
				return fmt.Errorf("tensor %q: dtype %s, want F32, F16 or BF16", name, info.DType)
			}
			if len(info.Shape) != 2 {
				return fmt.Errorf("tensor %q: shape %v, want 2-D", name, info.Shape)
			}
			p := pairs[module]
			if p == nil {
				p = &abInfo{}
				pairs[module] = p
			}
			embed := strings.HasPrefix(kind, "lora_embedding")
			if (p.a != "" || p.b != "") && p.embed != embed {
				return fmt.Errorf("tensor %q: module %s has both linear (lora_A/B) and embedding (lora_embedding_A/B) tensors", name, module)
			}
			p.embed = embed
			if strings.HasSuffix(kind, "A") {
				if p.a != "" {
					return fmt.Errorf("tensor %q: module %s already has %q (several adapters in one file?)", name, module, p.a)
				}
				p.a, p.ia = name, info
			} else {
				if p.b != "" {
					return fmt.Errorf("tensor %q: module %s already has %q (several adapters in one file?)", name, module, p.b)
				}
				p.b, p.ib = name, info
			}
			if dtype == "" || info.DType == safetensors.F32 {
				dtype = info.DType
			}
			continue
		}
		// A full tensor: a base layer PEFT saved (embeddings), modules_to_save, or a bias (bias="all"/"lora_only").
		target, baseLayer := key, false
		if m := mtsRE.FindStringSubmatch(key); m != nil {
			target = m[1] + "." + m[3]
			names[m[2]] = true
		} else if m := baseLayerRE.FindStringSubmatch(key); m != nil {
			// a trainable-tokens wrapper saves its base as "<module>.token_adapter.base_layer.weight"
			target, baseLayer = strings.TrimSuffix(m[1], ".token_adapter")+"."+m[2], true
		}
		mod := target
		if i := strings.LastIndexByte(target, '.'); i > 0 {
			mod = target[:i]
		}
		isBias := strings.HasSuffix(target, ".bias")
		ok = baseLayer || cfg.SavesModule(mod) || (isBias && cfg.Bias != "" && cfg.Bias != "none")
		if !ok || !info.DType.IsFloat() {
			return fmt.Errorf("tensor %q: unknown key (not lora_A/lora_B, lora_embedding_A/B or a base_layer, and %q is not in modules_to_save)", name, mod)
		}
		raw, err := f.Bytes(name)
		if err != nil {
			return err
		}
		t := safetensors.Tensor{Name: target, DType: info.DType, Shape: append([]int(nil), info.Shape...), Data: append([]byte(nil), raw...)}
		dst := a.Saved
		if baseLayer {
			if a.BaseLayers == nil {
				a.BaseLayers = map[string]safetensors.Tensor{}
			}
			dst = a.BaseLayers
		}
		if _, dup := dst[target]; dup {
			return fmt.Errorf("tensor %q: %s is saved twice (several adapters in one file?)", name, target)
		}
		dst[target] = t
	}
	if len(names) > 1 {
		l := make([]string, 0, len(names))
		for n := range names {
			l = append(l, n)
		}
		sort.Strings(l)
		return fmt.Errorf("the file holds tensors of several adapters (%s); save each adapter on its own", strings.Join(l, ", "))
	}
	a.DType = dtype
	modules := make([]string, 0, len(pairs))
	for m := range pairs {
		modules = append(modules, m)
	}
	sort.Strings(modules)
	for _, m := range modules {
		p := pairs[m]
		if p.a == "" {
			return fmt.Errorf("tensor %q has no matching lora_A tensor", p.b)
		}
		if p.b == "" {
			return fmt.Errorf("tensor %q has no matching lora_B tensor", p.a)
		}
		// Linear: A [r, in], B [out, r]. Embedding: A [r, vocab], B [dim, r]; stored as a Pair with In = vocab,
		// Out = dim, so that B·A is [dim, vocab] and the table's delta is its transpose.
		r, in, out := p.ia.Shape[0], p.ia.Shape[1], p.ib.Shape[0]
		if p.ib.Shape[1] != r {
			return fmt.Errorf("rank mismatch: %q is %v but %q is %v (want [%d, %d])", p.a, p.ia.Shape, p.b, p.ib.Shape, out, r)
		}
		if want := cfg.RankFor(m); want != r {
			return fmt.Errorf("rank mismatch: %q is %v, but adapter_config.json gives module %s rank %d (r / rank_pattern)", p.a, p.ia.Shape, m, want)
		}
		if r == 0 || in == 0 || out == 0 {
			return fmt.Errorf("tensor %q: empty shape %v", p.a, p.ia.Shape)
		}
		alpha := cfg.AlphaFor(m)
		pr := &Pair{R: r, In: in, Out: out, Alpha: alpha, Scale: Scaling(alpha, r, cfg.UseRSLoRA)}
		if p.embed {
			if a.Embed == nil {
				a.Embed = map[string]*Pair{}
			}
			a.Embed[m] = pr
		} else {
			a.Modules[m] = pr
		}
	}
	if err := mags.check(a); err != nil {
		return err
	}
	if len(a.Modules) == 0 && len(a.Saved) == 0 && len(a.Embed) == 0 && len(a.Tokens) == 0 {
		return errors.New("no LoRA tensors (lora_A/lora_B or lora_embedding_A/B), no modules_to_save and no trainable_tokens_delta tensors")
	}
	if err := a.tokensMatchConfig(); err != nil {
		return err
	}
	if linear != nil {
		if err := a.Check(linear); err != nil {
			return &fitError{err}
		}
	}
	// Only now, with every shape known to fit, are the weights read, and refused if any is NaN or ±Inf.
	for _, m := range modules {
		p, pr := pairs[m], a.Modules[m]
		if p.embed {
			pr = a.Embed[m]
		}
		var err error
		if pr.A, err = finiteFloats(f, p.a); err != nil {
			return err
		}
		if pr.B, err = finiteFloats(f, p.b); err != nil {
			return err
		}
	}
	return mags.read(f, a)
}

// finiteFloats reads tensor name as f32, refusing a NaN or infinite value (a corrupt or diverged adapter would
// otherwise turn every output it touches into NaN).
func finiteFloats(f *safetensors.File, name string) ([]float32, error) {
	v, err := f.Float32s(name)
	if err != nil {
		return nil, err
	}
	for i, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return nil, fmt.Errorf("tensor %q holds %v at index %d: the adapter's weights are corrupt (NaN or infinite)", name, x, i)
		}
	}
	return v, nil
}

// Base describes the model an adapter is applied to without merging (generate, eval, data score, serve).
type Base struct {
	// Linear gives the [out, in] shape of a base linear module ("model.layers.0.self_attn.q_proj", "lm_head").
	Linear func(module string) (in, out int, ok bool)
	// Weights opens the base checkpoint, to compare the base layers an adapter saved with the base's own
	// (nil: an adapter with saved base layers is refused).
	Weights func() (*safetensors.Checkpoint, error)
	// Rows reads a base linear's weight as f32 rows (dequantised) and gives its bias (nil if none), for DoRA's
	// row norms (nil: a DoRA adapter is refused).
	Rows func(module string) (rows RowReader, bias []float32, err error)
	// Pool runs the products of PrepareDoRA (nil: single-threaded).
	Pool *kernels.Pool
	// Vocab and Dim are the base's embedding table [Vocab, Dim] (0: unknown, not checked) and TiedHead whether
	// its LM head is that table, for trainable token rows.
	Vocab, Dim int
	TiedHead   bool
}

// CheckUnmerged reports what the inference path cannot apply: it adds s·B·(A·x) after the base linear layers,
// row by row, on a base shared by every request, so LoRA on an embedding (the lookup has no delta hook), full
// tensors from modules_to_save or bias "all"/"lora_only" (they would replace shared base weights) and saved base
// layers that differ from the base all need `lorakit merge`. The error names the adapter and the tensor.
// Base layers equal to the base's tensors (PEFT saves the embedding or lm_head it was trained on) are dropped,
// which needs base.Weights.
func (a *Adapter) CheckUnmerged(base Base) error {
	merge := fmt.Sprintf("merge it into the base with `lorakit merge BASE %s OUT` and use the merged folder", a.Dir)
	if len(a.Embed) > 0 {
		m := slices.Sorted(maps.Keys(a.Embed))[0]
		return fmt.Errorf("adapter %s: tensor %q: LoRA on the embedding %s is applied only by a merge: %s", a.Dir, KeyPrefix+m+".lora_embedding_A", m, merge)
	}
	if len(a.Saved) > 0 {
		names := slices.Sorted(maps.Keys(a.Saved))
		return fmt.Errorf("adapter %s saves full tensors (modules_to_save / bias: %s), which replace base weights: they are applied only by a merge: %s",
			a.Dir, strings.Join(names, ", "), merge)
	}
	if len(a.BaseLayers) == 0 {
		return nil
	}
	names := slices.Sorted(maps.Keys(a.BaseLayers))
	if base.Weights == nil {
		return fmt.Errorf("adapter %s: tensor %q: a saved base layer is applied only by a merge: %s", a.Dir, baseLayerKey(names[0]), merge)
	}
	ck, err := base.Weights()
	if err != nil {
		return fmt.Errorf("adapter %s: compare its saved base layers with the base: %w", a.Dir, err)
	}
	defer ck.Close()
	for _, n := range names {
		same, err := sameAs(ck, n, a.BaseLayers[n])
		if err != nil {
			return fmt.Errorf("adapter %s: tensor %q: %w", a.Dir, baseLayerKey(n), err)
		}
		if !same {
			return fmt.Errorf("adapter %s: tensor %q differs from the base's %s (the adapter was trained over other weights, e.g. a resized vocabulary): it is applied only by a merge: %s",
				a.Dir, baseLayerKey(n), n, merge)
		}
	}
	a.BaseLayers = nil // the base's own values: nothing to apply
	return nil
}

// LoadUnmerged is Load, Check (from the header, before the weights are read), CheckUnmerged and, for a DoRA
// adapter, PrepareDoRA over base.Rows: the adapter as generate, eval, data score and serve apply it.
func LoadUnmerged(dir string, base Base) (*Adapter, error) {
	a, err := load(dir, base.Linear)
	if err != nil {
		return nil, err
	}
	a.TiedHead = base.TiedHead
	if err := a.checkTokens(base.Vocab, base.Dim); err != nil {
		return nil, fmt.Errorf("adapter %s does not fit the base model: %w", dir, err)
	}
	if err := a.CheckUnmerged(base); err != nil {
		return nil, err
	}
	if err := a.PrepareDoRA(base.Pool, base); err != nil {
		return nil, err
	}
	return a, nil // load checked the shapes against base.Linear
}

// baseLayerKey is the saved key of a base layer: "model.embed_tokens.weight" →
// "base_model.model.model.embed_tokens.base_layer.weight".
func baseLayerKey(name string) string {
	i := strings.LastIndexByte(name, '.')
	if i < 0 {
		return KeyPrefix + name
	}
	return KeyPrefix + name[:i] + ".base_layer" + name[i:]
}

// sameAs reports whether t holds the values of the checkpoint's tensor name (lm_head.weight of a tied base is
// the embedding).
func sameAs(ck *safetensors.Checkpoint, name string, t safetensors.Tensor) (bool, error) {
	info, _, ok := ck.Info(name)
	if !ok && name == "lm_head.weight" {
		name = "model.embed_tokens.weight"
		info, _, ok = ck.Info(name)
	}
	if !ok {
		return false, fmt.Errorf("the base has no tensor %s", name)
	}
	if len(info.Shape) != len(t.Shape) {
		return false, nil
	}
	for i := range info.Shape {
		if info.Shape[i] != t.Shape[i] {
			return false, nil
		}
	}
	if info.DType == t.DType {
		raw, err := ck.Bytes(name)
		if err != nil {
			return false, err
		}
		return string(raw) == string(t.Data), nil
	}
	if !info.DType.IsFloat() {
		return false, nil
	}
	w, err := ck.Float32s(name)
	if err != nil {
		return false, err
	}
	v := make([]float32, len(w))
	if err := safetensors.Decode(t.DType, t.Data, v); err != nil {
		return false, err
	}
	for i := range v {
		if v[i] != w[i] && !(v[i] != v[i] && w[i] != w[i]) {
			return false, nil
		}
	}
	return true, nil
}
