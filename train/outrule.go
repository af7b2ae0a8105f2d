package train

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/lorakit/lorakit/internal/atomicfile"
	"github.com/lorakit/lorakit/internal/outdir"
)

// outputNames are the names train writes at the top of its output folder.
var outputNames = map[string]bool{
	"adapter_config.json": true, "adapter_model.safetensors": true, "training_args.json": true,
	"metrics.jsonl": true, "loss.svg": true, "model.safetensors": true, "README.md": true, // the model card
}

// outRule is train's rule for an existing --out: its own earlier output (training_args.json) is replaced only
// with --force, and a folder holding anything train does not write is refused even with --force. A full
// fine-tune also copies the base's own files (config, tokenizer), so those names count as train's.
func outRule(model string) outdir.Rule {
	baseFiles := map[string]bool{}
	if ents, err := os.ReadDir(model); err == nil {
		for _, e := range ents {
			if !e.IsDir() {
				baseFiles[e.Name()] = true
			}
		}
	}
	return outdir.Rule{
		Command: "train", ForceOwn: true,
		OwnDesc: "the output of an earlier training run (training_args.json)",
		Own:     func(dir string) bool { return fileExists(filepath.Join(dir, "training_args.json")) },
		Writes: func(name string) bool {
			return strings.HasPrefix(name, "checkpoint-") || outputNames[name] || baseFiles[name] || strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp-")
		},
	}
}

// prepareOut applies outRule to cfg.Out unless the run resumes its own checkpoint there, removes what a killed
// earlier run left half-written, and, when --force replaces an earlier run, its checkpoints (so that a later
// --resume cannot continue the replaced run).
func prepareOut(cfg Config) error {
	resumingHere := cfg.Resume != "" && within(cfg.Resume, cfg.Out)
	if !resumingHere {
		if err := outRule(cfg.Model).Check(cfg.Out, cfg.Force); err != nil {
			if len(listCheckpoints(cfg.Out)) > 0 {
				return &outErr{err, cfg.Out}
			}
			return err
		}
		for _, s := range listCheckpoints(cfg.Out) {
			if err := os.RemoveAll(filepath.Join(cfg.Out, fmt.Sprintf("checkpoint-%d", s))); err != nil {
				return err
			}
		}
	}
	atomicfile.RemoveStale(cfg.Out, "")
	return nil
}

// outErr adds the way to continue an interrupted run to the refusal.
type outErr struct {
	err error
	out string
}

func (e *outErr) Error() string {
	return e.err.Error() + "; to continue its interrupted run instead: lorakit train --resume " + e.out
}
func (e *outErr) Unwrap() error { return e.err }

// within reports whether path is dir or inside it.
func within(path, dir string) bool {
	p, err1 := filepath.Abs(path)
	d, err2 := filepath.Abs(dir)
	if err1 != nil || err2 != nil {
		return false
	}
	rel, err := filepath.Rel(d, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
