package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lorakit/lorakit/internal/atomicfile"
	"github.com/lorakit/lorakit/internal/progress"
	"github.com/lorakit/lorakit/models/gguf"
	"github.com/lorakit/lorakit/models/ggufconv"
)

func init() { register(newExportCmd) }

func newExportCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Write models and adapters in other ecosystems' formats (gguf)",
	}
	cmd.AddCommand(newExportGGUFCmd())
	return cmd
}

// complexity: one command's flag checks and messages, each a line; the export itself is in models/ggufconv.
func newExportGGUFCmd() *cobra.Command {
	var (
		model, adapter, typ, name, baseGGUF, baseType string
		force, asJSON, noModelfile                    bool
	)
	cmd := &cobra.Command{
		Use:   "gguf --model DIR [--adapter ADAPTER] OUT.gguf",
		Short: "Export a model (or a LoRA adapter) as a llama.cpp / Ollama GGUF file, with an Ollama Modelfile",
		Long: `Export gguf writes OUT.gguf for llama.cpp and Ollama.

Without --adapter it writes the Hugging Face folder --model (llama, mistral, qwen2, qwen3; merged folders
too) as a complete model file: hyperparameters, rope settings, tokenizer (SentencePiece scores and byte
fallback, or byte-level BPE merges and llama.cpp's pre-tokenizer name), special tokens and chat template.
--type sets the storage of the 2-D weights: f32, f16, bf16, q8_0 or q4_0 (ggml's reference blocks; with
q4_0 the embedding and output head are q8_0, and matrices whose rows are not whole 32-blocks are f16).
Norms and biases are f32. q_proj/k_proj rows are permuted for llama.cpp's "llama" architecture, as its own
converter does.

With --adapter it writes the PEFT LoRA adapter as a llama.cpp LoRA file (general.type adapter,
adapter.lora.alpha, blk.N.attn_q.weight.lora_a / .lora_b ...) for "llama-cli --lora" and Ollama's ADAPTER;
--model names the base the adapter was trained on. --base-gguf FILE also exports that base to FILE when
FILE does not exist yet, and names it in the Modelfile's FROM line.

A Modelfile is written beside OUT (FROM, ADAPTER, TEMPLATE translated from the chat template when the
translation renders the same text, PARAMETER stop for the end tokens) unless --no-modelfile; then
"ollama create NAME -f Modelfile" imports it. Files are written atomically; an existing OUT that is not a GGUF
file, or a Modelfile that lorakit did not write, is replaced only with --force.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := args[0]
			if model == "" {
				return errors.New("--model is required (the Hugging Face folder to export, or the adapter's base)")
			}
			var err error
			if model, err = resolveDir(cmd, "--model", model); err != nil {
				return err
			}
			if adapter, err = resolveDir(cmd, "--adapter", adapter); err != nil {
				return err
			}
			t, ok := gguf.ParseType(typ)
			if !ok {
				return fmt.Errorf("--type %q: want f32, f16, bf16, q8_0 or q4_0", typ)
			}
			if adapter != "" && cmd.Flags().Changed("type") && t != gguf.F32 && t != gguf.F16 && t != gguf.BF16 {
				return fmt.Errorf("--type %s: an adapter is written as f32, f16 or bf16", typ)
			}
			if err := checkReplace(out, force); err != nil {
				return err
			}
			run := func(ctx context.Context) error {
				w := cmd.OutOrStdout()
				report := struct {
					Out       string           `json:"out"`
					Base      *ggufconv.Result `json:"base,omitempty"`
					BaseOut   string           `json:"base_out,omitempty"`
					Result    *ggufconv.Result `json:"result"`
					Modelfile string           `json:"modelfile,omitempty"`
					Notes     []string         `json:"notes,omitempty"`
				}{Out: out}
				exportBase := func(dst string) (*ggufconv.Result, error) {
					opts := ggufconv.ExportOptions{Type: t, Name: name}
					var bar *progress.Bar
					if !asJSON {
						opts.Progress = func(done, total int) {
							if bar == nil {
								bar = progress.New(cmd.ErrOrStderr(), "export", int64(total), "tensors")
							}
							bar.Set(int64(done), "")
						}
					}
					if adapter != "" {
						if opts.Type, ok = gguf.ParseType(baseType); !ok {
							return nil, fmt.Errorf("--base-type %q: want f32, f16, bf16, q8_0 or q4_0", baseType)
						}
					}
					res, err := ggufconv.ExportModel(ctx, model, dst, opts)
					if bar != nil {
						bar.Finish()
					}
					return res, err
				}
				if adapter == "" {
					report.Result, err = exportBase(out)
				} else {
					if baseGGUF != "" {
						if _, statErr := os.Stat(baseGGUF); errors.Is(statErr, os.ErrNotExist) {
							if report.Base, err = exportBase(baseGGUF); err != nil {
								return interrupted(err)
							}
							report.BaseOut = baseGGUF
						}
					}
					at := t
					if !cmd.Flags().Changed("type") {
						at = gguf.F32
					}
					report.Result, err = ggufconv.ExportAdapter(model, adapter, out, ggufconv.AdapterOptions{Type: at, Name: name})
				}
				if err != nil {
					return interrupted(err)
				}
				if !noModelfile {
					mf := ggufconv.ModelfileOptions{Model: model}
					switch {
					case adapter == "":
						mf.From = out
					case baseGGUF != "":
						mf.From, mf.Adapter = baseGGUF, out
					default:
						mf.From, mf.Adapter = model, out
						report.Notes = append(report.Notes, "the Modelfile's FROM is the Hugging Face folder; --base-gguf FILE exports the base as GGUF and names it instead")
					}
					path, notes, err := writeModelfile(filepath.Dir(out), mf, force)
					if err != nil {
						return err
					}
					report.Modelfile = path
					report.Notes = append(report.Notes, notes...)
				}
				if report.Base != nil {
					report.Notes = append(report.Base.Notes, report.Notes...)
				}
				report.Notes = append(report.Result.Notes, report.Notes...)
				if asJSON {
					return printJSON(w, report)
				}
				if report.BaseOut != "" {
					fmt.Fprintf(w, "exported base %s → %s (%s, %d tensors)\n", model, report.BaseOut, report.Base.Arch, report.Base.Tensors)
				}
				what := model
				if adapter != "" {
					what = "adapter " + adapter
				}
				fmt.Fprintf(w, "exported %s → %s (%s, %d tensors)\n", what, out, report.Result.Arch, report.Result.Tensors)
				if report.Modelfile != "" {
					fmt.Fprintf(w, "wrote %s; import with: ollama create NAME -f %s\n", report.Modelfile, report.Modelfile)
				}
				for _, n := range report.Notes {
					fmt.Fprintf(w, "  note: %s\n", n)
				}
				return nil
			}
			return interruptible(cmd, func(ctx context.Context) (string, error) {
				if err := run(ctx); err != nil {
					return "nothing written at " + out, err
				}
				return "the export had completed: " + out, nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&model, "model", "", "Hugging Face model folder (the adapter's base with --adapter)")
	f.StringVar(&adapter, "adapter", "", "PEFT LoRA adapter folder to export instead of the model")
	f.StringVar(&typ, "type", "f16", "weights: f32 | f16 | bf16 | q8_0 | q4_0 (adapters: f32 | f16 | bf16, default f32)")
	f.StringVar(&baseType, "base-type", "f16", "with --adapter and --base-gguf: the base's weight type")
	f.StringVar(&baseGGUF, "base-gguf", "", "with --adapter: the base model's GGUF file for the Modelfile, exported there if missing")
	f.StringVar(&name, "name", "", "general.name (default: the folder's name)")
	f.BoolVar(&noModelfile, "no-modelfile", false, "do not write an Ollama Modelfile beside OUT")
	f.BoolVar(&force, "force", false, "replace an existing OUT that is not a GGUF file, or a Modelfile lorakit did not write")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

// interrupted maps a cancelled export to exit code 130 (the output was never renamed into place).
func interrupted(err error) error {
	if errors.Is(err, context.Canceled) {
		return withExitCode(130, err)
	}
	return err
}

// checkReplace refuses to overwrite a file that is not a GGUF file unless force.
func checkReplace(path string, force bool) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	var magic [4]byte
	if _, err := io.ReadFull(f, magic[:]); (err != nil || string(magic[:]) != gguf.Magic) && !force {
		return fmt.Errorf("%s exists and is not a GGUF file; use --force to replace it", path)
	}
	return nil
}

// writeModelfile writes dir/Modelfile unless a Modelfile lorakit did not write is there (then --force).
func writeModelfile(dir string, o ggufconv.ModelfileOptions, force bool) (string, []string, error) {
	path := filepath.Join(dir, "Modelfile")
	if b, err := os.ReadFile(path); err == nil && !strings.HasPrefix(string(b), ggufconv.ModelfileHeader) && !force {
		return "", nil, fmt.Errorf("%s exists and was not written by lorakit; use --force to replace it, or --no-modelfile", path)
	}
	text, notes, err := ggufconv.Modelfile(o, dir)
	if err != nil {
		return "", nil, err
	}
	if err := atomicfile.WriteBytes(path, []byte(text)); err != nil {
		return "", nil, err
	}
	return path, notes, nil
}
