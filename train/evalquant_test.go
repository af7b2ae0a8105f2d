package train

import (
	"os"
	"path/filepath"
	"testing"
)

func TestEvalQuantAutoFromTrainingArgs(t *testing.T) {
	dir := t.TempDir()
	if got := qloraQuant(dir); got != "" {
		t.Fatalf("no training_args.json: %q", got)
	}
	os.WriteFile(filepath.Join(dir, "training_args.json"), []byte(`{"method":"qlora","rank":16}`), 0o644)
	if got := qloraQuant(dir); got != "nf4" {
		t.Fatalf("qlora adapter: %q, want nf4", got)
	}
	os.WriteFile(filepath.Join(dir, "training_args.json"), []byte(`{"method":"lora"}`), 0o644)
	if got := qloraQuant(dir); got != "" {
		t.Fatalf("lora adapter: %q", got)
	}
}
