package train

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/nlpodyssey/spago/mat"

	"github.com/lorakit/lorakit/internal/atomicfile"
	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/safetensors"
)

// writeOutputs writes the final model (PEFT adapter, or a full HF folder for
// full fine-tuning) plus loss.svg into cfg.Out.
func writeOutputs(cfg Config, m *models.Model, net *Net, h []Metrics) error {
	if net.Method == Full {
		if err := writeFullModel(cfg.Out, m, net); err != nil {
			return err
		}
	} else if err := net.Adapter().WriteFiles(cfg.Out); err != nil {
		return err
	} else if err := atomicfile.WriteBytes(filepath.Join(cfg.Out, "README.md"), modelCard(cfg, h)); err != nil {
		return err
	}
	return writeLossSVG(filepath.Join(cfg.Out, "loss.svg"), h)
}

// modelCard is the adapter's README.md in the shape PEFT gives its adapters: YAML front matter naming the base
// model (its hub id when it came from the hub) and library_name peft, then the training settings.
func modelCard(cfg Config, h []Metrics) []byte {
	base := cfg.Model
	if cfg.BaseModelID != "" {
		base = cfg.BaseModelID
	}
	var b strings.Builder
	fmt.Fprintf(&b, "---\nbase_model: %s\nlibrary_name: peft\npipeline_tag: text-generation\ntags:\n- lora\n- sft\n- lorakit\n", yamlString(base))
	if Method(cfg.Method) == QLoRA {
		b.WriteString("- qlora\n")
	}
	if cfg.UseDoRA {
		b.WriteString("- dora\n")
	}
	fmt.Fprintf(&b, "---\n\n# %s\n\nA LoRA adapter (PEFT format) for `%s`, fine-tuned with lorakit on `%s`.\n\n",
		filepath.Base(filepath.Clean(cfg.Out)), base, filepath.Base(cfg.Data))
	b.WriteString("## Training settings\n\n| setting | value |\n|---|---|\n")
	row := func(k string, v any) { fmt.Fprintf(&b, "| %s | %v |\n", k, v) }
	row("method", cfg.Method)
	row("rank (r)", cfg.Rank)
	row("lora_alpha", cfg.Alpha)
	row("lora_dropout", cfg.Dropout)
	row("use_rslora", cfg.UseRSLoRA)
	if cfg.UseDoRA {
		row("use_dora", true)
	}
	row("target_modules", strings.Join(cfg.TargetModules, ", "))
	row("learning rate", cfg.LR)
	row("lr scheduler", cfg.Scheduler)
	row("batch size × grad accumulation", fmt.Sprintf("%d × %d", cfg.BatchSize, cfg.GradAccum))
	row("epochs", cfg.Epochs)
	if cfg.MaxSteps > 0 {
		row("max steps", cfg.MaxSteps)
	}
	row("max sequence length", cfg.MaxSeqLen)
	if cfg.Packing {
		row("packing", "examples packed into rows of max sequence length; batch size counts rows")
	}
	row("seed", cfg.Seed)
	if n := len(h); n > 0 {
		row("steps run", h[n-1].Step)
		row("final training loss", fmt.Sprintf("%.4f", h[n-1].Loss))
	}
	b.WriteString("\nAll settings are in `training_args.json`; the loss curve is `loss.svg`.\n")
	return []byte(b.String())
}

// yamlString quotes s when YAML would read it as something other than a plain string.
func yamlString(s string) string {
	if s == "" || strings.ContainsAny(s, ":#{}[],&*!|>'\"%@`") || strings.TrimSpace(s) != s {
		b, _ := json.Marshal(s) // a JSON string is a YAML double-quoted string
		return string(b)
	}
	return s
}

// writeFullModel writes model.safetensors (every tensor in its checkpoint
// dtype) and copies the folder's other files (config, tokenizer, templates).
func writeFullModel(out string, m *models.Model, net *Net) error {
	var ts []safetensors.Tensor
	add := func(name string, shape []int, v []float32) error {
		dt := safetensors.F32
		if info, _, ok := m.Checkpoint().Info(name); ok {
			switch dt = info.DType; dt {
			case safetensors.F32, safetensors.F16, safetensors.BF16:
			default: // a 4-bit base: full fine-tuning writes bf16
				dt = safetensors.BF16
			}
		}
		raw, err := safetensors.Encode(dt, v)
		if err != nil {
			return fmt.Errorf("encode %s: %w", name, err)
		}
		ts = append(ts, safetensors.Tensor{Name: name, DType: dt, Shape: shape, Data: raw})
		return nil
	}
	for i, p := range net.Params {
		shape := p.Shape()
		if shape[1] == 1 && (strings.HasSuffix(net.Names[i], "norm.weight") || strings.HasSuffix(net.Names[i], ".bias")) {
			shape = shape[:1]
		}
		if err := add(net.Names[i], shape, mat.Data[float32](p.Matrix)); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	if err := safetensors.Write(filepath.Join(out, "model.safetensors"), ts, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	ents, err := os.ReadDir(m.Dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		n := e.Name()
		if e.IsDir() || strings.HasSuffix(n, ".safetensors") || n == "model.safetensors.index.json" || strings.HasPrefix(n, ".") {
			continue
		}
		if n == "config.json" && m.Net.Config.Quantization != nil {
			if err := writeDequantizedConfig(filepath.Join(m.Dir, n), filepath.Join(out, n)); err != nil {
				return err
			}
			continue
		}
		if err := copyFile(filepath.Join(m.Dir, n), filepath.Join(out, n)); err != nil {
			return err
		}
	}
	return nil
}

// writeDequantizedConfig copies config.json without its quantization_config
// (full fine-tuning of a 4-bit base writes plain bf16 weights).
func writeDequantizedConfig(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal(b, &cfg); err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	delete(cfg, "quantization_config")
	cfg["torch_dtype"] = json.RawMessage(`"bfloat16"`)
	out, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteBytes(dst, append(out, '\n'))
}

func copyFile(src, dst string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	return atomicfile.Write(dst, func(w *bufio.Writer) error {
		_, err := io.Copy(w, f)
		return err
	})
}

// writeLossSVG draws the training loss (and eval loss points) against the step.
func writeLossSVG(path string, h []Metrics) error {
	const W, H, pad = 640.0, 360.0, 48.0
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" font-family="sans-serif" font-size="12">`+"\n", W, H)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	if len(h) > 0 {
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, m := range h {
			lo, hi = math.Min(lo, m.Loss), math.Max(hi, m.Loss)
			if m.EvalLoss != nil {
				lo, hi = math.Min(lo, *m.EvalLoss), math.Max(hi, *m.EvalLoss)
			}
			for _, p := range []*float64{m.GeneralPPL, m.GeneralBasePPL} {
				if p != nil && *p > 0 {
					lo, hi = math.Min(lo, math.Log(*p)), math.Max(hi, math.Log(*p))
				}
			}
		}
		if hi-lo < 1e-9 {
			hi = lo + 1
		}
		maxStep := float64(h[len(h)-1].Step)
		x := func(s int) float64 {
			if maxStep <= 1 {
				return pad
			}
			return pad + (float64(s)-1)/(maxStep-1)*(W-2*pad)
		}
		y := func(v float64) float64 { return H - pad - (v-lo)/(hi-lo)*(H-2*pad) }
		fmt.Fprintf(&b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/>`+"\n", pad, H-pad, W-pad, H-pad)
		fmt.Fprintf(&b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/>`+"\n", pad, pad, pad, H-pad)
		fmt.Fprintf(&b, `<text x="%g" y="%g">%.3g</text><text x="%g" y="%g">%.3g</text>`+"\n", 4.0, pad+4, hi, 4.0, H-pad, lo)
		fmt.Fprintf(&b, `<text x="%g" y="%g">step 1</text><text x="%g" y="%g" text-anchor="end">step %d</text>`+"\n", pad, H-pad+16, W-pad, H-pad+16, int(maxStep))
		b.WriteString(`<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="`)
		for _, m := range h {
			fmt.Fprintf(&b, "%.1f,%.1f ", x(m.Step), y(m.Loss))
		}
		b.WriteString(`"/>` + "\n")
		for _, m := range h {
			if m.EvalLoss != nil {
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="#d62728"/>`+"\n", x(m.Step), y(*m.EvalLoss))
			}
		}
		fmt.Fprintf(&b, `<text x="%g" y="20" fill="#1f77b4">train loss</text><text x="%g" y="20" fill="#d62728">● eval loss</text>`+"\n", pad, pad+90)
		writeGeneralSVG(&b, h, x, y, pad)
	}
	b.WriteString("</svg>\n")
	return atomicfile.WriteBytes(path, []byte(b.String()))
}
