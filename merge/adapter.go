package merge

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/lorakit/lorakit/models/lora"
	"github.com/lorakit/lorakit/models/safetensors"
)

// LoadAdapter reads a PEFT LoRA adapter folder for merging into src (Adapter, Embed and BaseLayers). It accepts
// what lora.Load accepts and, beyond it, what PEFT and other exporters write that only a merge can use:
//
//   - keys that still carry the adapter name, "…q_proj.lora_A.default.weight" (PEFT's in-memory names, written
//     by some exporters), and "…lm_head.modules_to_save.default.weight";
//   - LoRA on an embedding: "…embed_tokens.lora_embedding_A" [r, vocab] and "…lora_embedding_B" [dim, r]
//     (PEFT's Embedding layer, delta (B·A)ᵀ·s added to the [vocab, dim] table);
//   - the embedding base layer PEFT saves beside it ("…embed_tokens.base_layer.weight", save_embedding_layers):
//     it is loaded into the base before the delta is added, as PEFT does.
//
// It rejects, naming the file and the tensor or field: DoRA, lora_bias, fan_in_fan_out, non-LoRA peft types, a
// file holding several adapters, keys it does not understand, A/B shapes that disagree with each other or with
// the rank the config gives the module, and an adapter_model.bin without safetensors.
func LoadAdapter(dir string) (Source, error) {
	cfg, err := lora.LoadConfig(dir)
	if err != nil {
		return Source{}, err
	}
	path := filepath.Join(dir, lora.WeightsName)
	if _, err := os.Stat(path); err != nil {
		for _, bin := range []string{"adapter_model.bin", "adapter_model.pt", "adapter_model.pth"} {
			if _, binErr := os.Stat(filepath.Join(dir, bin)); binErr == nil {
				return Source{}, fmt.Errorf("load adapter %s: only %s (a PyTorch pickle) is present: lorakit reads %s only; convert it, e.g. in Python: "+
					"safetensors.torch.save_file(torch.load(%q), %q, metadata={\"format\": \"pt\"})", dir, bin, lora.WeightsName, bin, lora.WeightsName)
			}
		}
		return Source{}, fmt.Errorf("load adapter %s: %w", dir, err)
	}
	f, err := safetensors.Open(path)
	if err != nil {
		return Source{}, fmt.Errorf("load adapter %s: %w", path, err)
	}
	defer f.Close()
	src := Source{Dir: dir, Weight: 1}
	if err := fromFile(&src, cfg, f); err != nil {
		return Source{}, fmt.Errorf("load adapter %s: %w", path, err)
	}
	return src, nil
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

// savedRE matches the unstripped form of a modules_to_save tensor and PEFT's base-layer tensors.
var (
	mtsRE       = regexp.MustCompile(`^(.+)\.modules_to_save\.([^.]+)\.([^.]+)$`)
	baseLayerRE = regexp.MustCompile(`^(.+)\.base_layer\.([^.]+)$`)
)

type abInfo struct {
	a, b   string // full tensor names
	ia, ib safetensors.TensorInfo
	embed  bool
}

func fromFile(src *Source, cfg *lora.Config, f *safetensors.File) error {
	a := lora.New(*cfg)
	a.Dir = src.Dir
	pairs := map[string]*abInfo{}
	names := map[string]bool{} // adapter names found inside keys
	var dtype safetensors.DType
	for _, name := range f.Names() {
		info, _ := f.Info(name)
		key, ok := strings.CutPrefix(name, lora.KeyPrefix)
		if !ok {
			return fmt.Errorf("tensor %q: unknown key (PEFT keys start with %q)", name, lora.KeyPrefix)
		}
		if m := keyRE.FindStringSubmatch(key); m != nil {
			module, kind := m[1], m[2]
			adName, suf := splitRest(m[3])
			if adName != "" {
				names[adName] = true
			}
			switch kind {
			case "lora_magnitude_vector":
				return fmt.Errorf("tensor %q: DoRA magnitude vectors are not supported (use_dora adapters change the merge: W' = m·(W+ΔW)/‖W+ΔW‖)", name)
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
			target, baseLayer = m[1]+"."+m[2], true
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
			if src.BaseLayers == nil {
				src.BaseLayers = map[string]safetensors.Tensor{}
			}
			dst = src.BaseLayers
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
		A, err := f.Float32s(p.a)
		if err != nil {
			return err
		}
		B, err := f.Float32s(p.b)
		if err != nil {
			return err
		}
		alpha := cfg.AlphaFor(m)
		pr := &lora.Pair{A: A, B: B, R: r, In: in, Out: out, Alpha: alpha, Scale: lora.Scaling(alpha, r, cfg.UseRSLoRA)}
		if p.embed {
			if src.Embed == nil {
				src.Embed = map[string]*lora.Pair{}
			}
			src.Embed[m] = pr
		} else {
			a.Modules[m] = pr
		}
	}
	if len(a.Modules) == 0 && len(a.Saved) == 0 && len(src.Embed) == 0 {
		return errors.New("no LoRA tensors (lora_A/lora_B or lora_embedding_A/B) and no modules_to_save tensors")
	}
	src.Adapter = a
	return nil
}
